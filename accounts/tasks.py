"""Celery tasks (with REDIS_URL: `celery -A iflow2api_site worker` + `beat -S django`).

One-line wrappers around accounts/refresh.py. The schedule is the django-celery-beat
PeriodicTask "refresh iFlow accounts" (admin → Periodic tasks).
"""

from __future__ import annotations

from typing import Any

from celery import shared_task

from accounts import refresh


@shared_task(ignore_result=True)
def refresh_due_accounts_task() -> list[dict[str, Any]]:
    return [result.as_dict() for result in refresh.refresh_due_accounts()]


@shared_task(ignore_result=True)
def refresh_account_task(account_id: int, force: bool = False) -> dict[str, Any]:
    return refresh.refresh_account(account_id, force=force).as_dict()
