"""The proxy's admin: the request log (proxy/admin_requestlog.py)."""

from proxy import admin_requestlog  # noqa: F401
