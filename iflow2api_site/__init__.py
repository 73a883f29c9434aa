"""iflow2api: the Django project package."""

from iflow2api_lib import __version__

__all__ = ["__version__"]
