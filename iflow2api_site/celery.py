"""The Celery app: token refresh on a schedule, when REDIS_URL is set.

    celery -A iflow2api_site worker -l info
    celery -A iflow2api_site beat -l info -S django

The schedule lives in the database (django-celery-beat's DatabaseScheduler): the PeriodicTask
"refresh iFlow accounts", editable in the admin. Without Redis, `iflow2api serve` runs the same
schedule in its own process (accounts/scheduler.py) and tasks run eagerly.
"""

from __future__ import annotations

import contextlib
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "iflow2api_site.settings")

try:
    from celery import Celery
except ImportError:  # Celery is an extra: `pip install iflow2api[redis]`
    app = None
else:
    app = Celery("iflow2api")
    app.config_from_object("django.conf:settings", namespace="CELERY")
    # Defaults only: CELERY_* settings still win.
    app.add_defaults({
        "beat_scheduler": "django_celery_beat.schedulers:DatabaseScheduler",
        "broker_connection_retry_on_startup": True,
    })
    app.autodiscover_tasks()

    from celery import signals

    from iflow2api_lib.logs import request_id

    # Celery replaces the root logger's handlers with its own format unless a setup_logging
    # receiver answers: keep Django's LOGGING (LOG_FORMAT, request ids, secrets masked) and
    # take only the level from `-l`. celeryd_init comes first, before the worker's own
    # warnings (which go through logging too, as under Django).
    def use_django_logging(loglevel: int | str | None = None, **kwargs: object) -> None:
        import logging.config

        from django.conf import settings

        logging.config.dictConfig(settings.LOGGING)
        logging.captureWarnings(True)
        if loglevel:
            logging.getLogger().setLevel(loglevel)

    signals.celeryd_init.connect(use_django_logging)
    signals.setup_logging.connect(use_django_logging)

    # A task's log lines carry its task id as their request id (an eager task run inside a
    # request keeps the request's id).
    _task_tokens: dict[str, object] = {}

    @signals.task_prerun.connect
    def bind_task_id(task_id: str | None = None, **kwargs: object) -> None:
        if task_id and request_id.get() == "-":
            _task_tokens[task_id] = request_id.set(task_id)

    @signals.task_postrun.connect
    def unbind_task_id(task_id: str | None = None, **kwargs: object) -> None:
        token = _task_tokens.pop(task_id or "", None)
        if token is not None:
            # ValueError: it ran in another context, with nothing of ours to undo there.
            with contextlib.suppress(ValueError):
                request_id.reset(token)  # type: ignore[arg-type]
