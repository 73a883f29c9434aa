"""iflow2api: the Django project package."""

from iflow2api_lib import __version__

# The configured Celery app is current in every process that loads the settings (server,
# worker, commands), so the apps' tasks enqueue through it without importing the site.
from iflow2api_site.celery import app as celery_app

__all__ = ["__version__", "celery_app"]
