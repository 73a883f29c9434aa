"""ASGI entry point. API paths go to a Django handler without middleware: under ASGI every sync
middleware costs two thread hops per request, and the API needs none of them (no sessions, no
CSRF, its own auth). Everything else (admin, docs) gets the full middleware stack."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "iflow2api_site.settings")
django_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402
from django.core.handlers.asgi import ASGIHandler  # noqa: E402
from django.core.handlers.exception import convert_exception_to_response  # noqa: E402

from iflow2api_lib.logs import with_request_id  # noqa: E402
from iflow2api_site.hosts import ServedHosts  # noqa: E402
from instances.routing import websocket_app  # noqa: E402
from proxy import adapter, fastpath, routes  # noqa: E402
from proxy.cors import cors, cors_policy_for  # noqa: E402
from proxy.runtime import Runtime, with_runtime  # noqa: E402


class ApiHandler(ASGIHandler):
    def load_middleware(self, is_async: bool = False) -> None:
        self._view_middleware = []
        self._template_response_middleware = []
        self._exception_middleware = []
        self._middleware_chain = convert_exception_to_response(self._get_response_async)


api_app = ApiHandler()


# Who carries a routed API request below the adapter (proxy/routes.py says more).
carrier = fastpath.carry if settings.IFLOW2API["FAST_PATH"] else adapter.django_carrier(api_app)


async def api(scope, receive, send):  # type: ignore[no-untyped-def]
    route = routes.find(scope["method"], scope["path"])
    if route is None and (served := routes.served_on(scope["path"])):
        await adapter.refuse_method(served, scope, send)  # a route's path, another method
    elif route is None:  # not an API route (an unknown /v1/ path): Django's JSON 404
        await api_app(scope, receive, send)
    else:
        await adapter.serve(route, scope, receive, send, carrier)


# The admin's and the API docs' assets, from the installed apps (no collectstatic needed).
static_app = ASGIStaticFilesHandler(django_app)
STATIC_PREFIX = "/" + settings.STATIC_URL.lstrip("/")


async def http_app(scope, receive, send):  # type: ignore[no-untyped-def]
    path = scope["path"]
    if routes.is_api_path(path):
        await cors(cors_policy_for, api, scope, receive, send)
    elif path.startswith(STATIC_PREFIX):
        await static_app(scope, receive, send)
    else:
        await django_app(scope, receive, send)


# Outermost: a request id (and an access line) for every request, whichever app serves it.
# The process's Runtime (proxy/runtime.py), built as the server starts; every scope carries it.
runtime = Runtime.build(write_at_exit=True)
if isinstance(settings.ALLOWED_HOSTS, ServedHosts):  # Django pages answer to the listeners too
    settings.ALLOWED_HOSTS.follow(runtime.listeners)
application = with_runtime(runtime, ProtocolTypeRouter({"http": with_request_id(http_app),
                                                        "websocket": websocket_app()}))
