"""The Celery app: token refresh on a schedule, when REDIS_URL is set.

    celery -A iflow2api_site worker -l info
    celery -A iflow2api_site beat -l info -S django

The schedule lives in the database (django-celery-beat's DatabaseScheduler): the PeriodicTask
"refresh iFlow accounts", editable in the admin. Without Redis, `iflow2api serve` runs the same
schedule in its own process (accounts/scheduler.py) and tasks run eagerly.
"""

from __future__ import annotations

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
