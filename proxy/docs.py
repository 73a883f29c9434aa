"""ReDoc at /redoc, from the assets Ninja bundles (`ninja` is in INSTALLED_APPS): no CDN.

ReDoc's sidebar shows the Redocly logo from cdn.redoc.ly; the Content-Security-Policy below
keeps the browser from loading anything that is not on this server (the logo then hides
itself)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_safe
from ninja.openapi.docs import Redoc

from proxy.api import api

DOCS_CSP = "; ".join([
    "default-src 'self'",
    "script-src 'self' 'unsafe-inline'",  # the page's one inline Redoc.init()
    "style-src 'self' 'unsafe-inline'",  # ReDoc injects its styles
    "img-src 'self' data:",
    "font-src 'self' data:",
    "worker-src 'self' blob:",  # ReDoc's search index runs in a blob worker
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'self'",
    "frame-ancestors 'none'",
])

redoc_page = Redoc(settings={"expandResponses": "200", "hideDownloadButton": False})


@require_safe
def redoc(request: HttpRequest) -> HttpResponse:
    response = redoc_page.render_page(request, api)
    response["Content-Security-Policy"] = DOCS_CSP
    return response
