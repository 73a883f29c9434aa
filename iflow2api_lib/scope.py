"""Where the gateway's ASGI app puts the process's Runtime (proxy/runtime.py) in every scope,
and how code below `proxy` finds it: the admin's views mark the Runtime's snapshots stale
after a change, the status page reads its publisher. Typed loosely on purpose: this package
knows no app (the callers name what they read through their own protocols)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

RUNTIME_SCOPE_KEY = "iflow2api.runtime"


def runtime_of(request: object) -> Any | None:
    """The Runtime of the process serving `request` (a Django request or an ASGI scope); None
    when it did not come through the gateway's ASGI app (Django's test client, a command)."""
    scope = request if isinstance(request, Mapping) else getattr(request, "scope", None)
    return scope.get(RUNTIME_SCOPE_KEY) if scope else None
