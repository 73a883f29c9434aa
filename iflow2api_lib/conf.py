"""Settings read on the request path, without Django's LazySettings in between.

`settings.X` goes through LazyObject.__getattribute__ (a Python-level call and a look-up of
`_mask_wrapped` that fails) on every read: ~0.25 µs, and a request read ~14 of them. Here a
setting is read from Django once and kept until a setting changes (`setting_changed`: Django's
override_settings and pytest-django's `settings` fixture send it), so tests that change one see
it at once. `gateway()` is settings.IFLOW2API, the same dict object: a test that changes one of
its keys in place is seen as before.
"""

from __future__ import annotations

from typing import Any

from django.core.signals import setting_changed

_read: dict[str, Any] = {}
_MISSING = object()


def setting(name: str, default: Any = None) -> Any:
    """settings.<name>, or `default` when it is not set (not kept: a later one may be)."""
    value = _read.get(name, _MISSING)
    if value is _MISSING:
        from django.conf import settings  # when first read: the library reads none at import

        value = getattr(settings, name, _MISSING)
        if value is _MISSING:
            return default
        _read[name] = value
    return value


def gateway() -> dict[str, Any]:
    """settings.IFLOW2API."""
    return setting("IFLOW2API")  # type: ignore[no-any-return]


def _forget(**_: Any) -> None:
    _read.clear()


setting_changed.connect(_forget, dispatch_uid="iflow2api_lib.conf.forget")
