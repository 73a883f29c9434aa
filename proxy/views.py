from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import translation
from django.utils.translation import gettext

from iflow2api_lib import __version__
from iflow2api_lib.i18n import api_language
from proxy import routes
from proxy.chat import openai_error
from proxy.errors import ApiError
from proxy.http import to_django


async def not_found(request: HttpRequest) -> HttpResponse:
    with translation.override(api_language(request.headers)):  # None: English
        message = gettext("unknown path %(path)s") % {"path": request.path}
    render = routes.renderer_below(request.path) or openai_error
    return to_django(render(ApiError(404, message, "not_found")))


async def root(request: HttpRequest) -> HttpResponse:
    """What this server is (clients such as Claude Code probe `HEAD /`)."""
    return JsonResponse({"name": "iflow2api", "version": __version__, "openai_base": "/v1",
                         "anthropic_base": "/", "docs": "/docs", "admin": "/admin/"})
