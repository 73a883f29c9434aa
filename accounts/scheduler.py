"""The in-process refresh scheduler, for servers without Redis (no Celery worker, no beat).

`iflow2api serve` starts it on Daphne's own event loop (an asyncio task: a side thread with its
own loop did not keep time). Every cycle it reads the schedule from django-celery-beat's
PeriodicTask "refresh iFlow accounts" (its interval and `enabled`, editable in the admin under
Periodic tasks), and runs `refresh_due_accounts` in a worker thread (the ORM and the OAuth
client are sync). Nothing it does can stop the server: every error is logged and the loop goes
on. Several processes running it at once are safe: refreshes are single-flight per account.

The worker threads are the Runtime's AccountWorkers (accounts/workers.py, shared with the
reactive refresh after a 401/439); a refresh that changes an account marks the Runtime's routing
snapshot stale.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db.models import F
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from accounts.refresh import refresh_due_accounts

if TYPE_CHECKING:
    from accounts.services import Routing
    from accounts.workers import AccountWorkers
    from iflow2api_lib.snapshot import Snapshot

log = logging.getLogger(__name__)

TASK_NAME = "refresh iFlow accounts"
TASK_PATH = "accounts.tasks.refresh_due_accounts_task"
# How often the schedule itself is re-read while waiting, so an edit in the admin (a shorter
# interval, enabling the task) takes effect within this time.
SCHEDULE_POLL_SECONDS = 30.0
MIN_INTERVAL_SECONDS = 1.0



def default_interval() -> float:
    return max(MIN_INTERVAL_SECONDS, float(settings.IFLOW2API["REFRESH_CHECK_SECONDS"]))


def read_schedule() -> tuple[bool, float]:
    """(enabled, interval in seconds) from the PeriodicTask; the settings' interval without one.
    A disabled task is still re-read on its interval, so enabling it takes effect as fast."""
    task = (PeriodicTask.objects.select_related("interval").filter(task=TASK_PATH)
            .order_by("-enabled", "id").first())
    if task is None:
        return True, default_interval()
    if task.interval is None:
        if task.enabled:
            log.warning("the %r periodic task has no interval schedule; the in-process "
                        "scheduler uses REFRESH_CHECK_SECONDS (%s s)", task.name,
                        default_interval())
        return task.enabled, default_interval()
    seconds = task.interval.schedule.run_every.total_seconds()
    return task.enabled, max(MIN_INTERVAL_SECONDS, seconds)


def run_cycle(routing: Snapshot[Routing] | None = None) -> list[Any]:
    """One scheduled run: refresh the due accounts, and note the run on the PeriodicTask."""
    results = refresh_due_accounts(routing=routing)
    # update(), not save(): no beat change signal, and no lost edit from the admin.
    PeriodicTask.objects.filter(task=TASK_PATH, enabled=True).update(
        last_run_at=timezone.now(), total_run_count=F("total_run_count") + 1)
    for result in results:
        if not result.ok:
            log.info("refresh of account %s: %s", result.account_id, result.status)
    return results


async def run_forever(workers: AccountWorkers,
                      routing: Snapshot[Routing] | None = None) -> None:
    loop = asyncio.get_running_loop()
    last_run: float | None = None
    enabled, interval = True, default_interval()
    while True:
        try:
            enabled, interval = await workers.run(read_schedule)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # e.g. the database is locked or away: keep the last schedule
            log.warning("could not read the refresh schedule (%s); keeping the last one",
                        type(exc).__name__)
        now = loop.time()
        if enabled and (last_run is None or now - last_run >= interval):
            last_run = now
            try:
                await workers.run(run_cycle, routing)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the token refresh cycle failed; the next one runs on schedule")
            wait = last_run + interval - loop.time()
        elif enabled and last_run is not None:
            wait = last_run + interval - now
        else:
            wait = interval
        await asyncio.sleep(min(max(wait, 0.05), SCHEDULE_POLL_SECONDS))


def start(workers: AccountWorkers, routing: Snapshot[Routing] | None = None,
          loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Task[None]:
    """Starts the scheduler on `loop` (default: the current event loop, which need not run
    yet), in `workers`' threads. The caller keeps the task (a server's Runtime,
    proxy/runtime.py: one per process) and cancels it to stop the scheduler."""
    loop = loop or asyncio.get_event_loop()
    task = loop.create_task(run_forever(workers, routing), name="iflow2api-refresh-scheduler")
    log.info("token refresh runs in this process (no REDIS_URL): PeriodicTask %r", TASK_NAME)
    return task
