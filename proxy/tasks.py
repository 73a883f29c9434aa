"""Celery tasks of the proxy app (with REDIS_URL: `celery -A iflow2api_site worker` + beat).
The schedule is the django-celery-beat PeriodicTask "delete expired stored responses"."""

from __future__ import annotations

from celery import shared_task

from proxy import responses_state


@shared_task(ignore_result=True)
def delete_expired_responses_task() -> int:
    return responses_state.delete_expired()
