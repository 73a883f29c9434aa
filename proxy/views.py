from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse

from iflow2api_site import __version__
from proxy.chat import openai_error
from proxy.errors import ApiError
from proxy.http import to_django


async def not_found(request: HttpRequest) -> HttpResponse:
    return to_django(openai_error(ApiError(404, f"unknown path {request.path}", "not_found")))


async def root(request: HttpRequest) -> HttpResponse:
    """What this server is (clients such as Claude Code probe `HEAD /`)."""
    return JsonResponse({"name": "iflow2api", "version": __version__, "openai_base": "/v1",
                         "anthropic_base": "/", "docs": "/docs", "admin": "/admin/"})
