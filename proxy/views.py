from __future__ import annotations

from django.http import HttpRequest, HttpResponse

from proxy.chat import openai_error
from proxy.errors import ApiError
from proxy.http import to_django


async def not_found(request: HttpRequest) -> HttpResponse:
    return to_django(openai_error(ApiError(404, f"unknown path {request.path}", "not_found")))
