"""The Celery app (token refresh on beat arrives with the accounts work)."""

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
    app.autodiscover_tasks()
