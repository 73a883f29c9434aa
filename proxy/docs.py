"""ReDoc at /redoc (Swagger UI is Ninja's /docs, drawn by proxy/docs_pages.py too)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_safe

from proxy.api import api
from proxy.docs_pages import DOCS_CSP as DOCS_CSP
from proxy.docs_pages import redoc_page


@require_safe
def redoc(request: HttpRequest) -> HttpResponse:
    return redoc_page.render_page(request, api)
