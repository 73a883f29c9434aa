"""The API reference pages, Swagger UI at /docs and ReDoc at /redoc, from the assets Ninja
bundles (no CDN), in our own templates: the page follows the request's language (its `lang`,
title and links) and the admin's theme (light, dark or the system's; proxy/static/proxy/
docs.js reads the admin's choice from localStorage), and a Content-Security-Policy keeps the
browser from loading anything that is not on this server.

ReDoc's sidebar would show the Redocly logo from cdn.redoc.ly, which that policy blocks (a
console error): `redoc_script` serves Ninja's redoc.standalone.js with that one address
replaced by an empty data URL, so the logo hides itself without a request."""

from __future__ import annotations

import functools
import hashlib

from django.contrib.staticfiles import finders
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_safe
from ninja.openapi.docs import Redoc, Swagger

REDOCLY_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"
NO_IMAGE = b"data:,"  # not an image: the <img> fails to load at once and ReDoc removes it

DOCS_CSP = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self' 'unsafe-inline'",  # Swagger UI and ReDoc inject their styles
    "img-src 'self' data:",
    "font-src 'self' data:",
    "worker-src 'self' blob:",  # ReDoc's search index runs in a blob worker
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'self'",
    "frame-ancestors 'none'",
])


def with_csp(response: HttpResponse) -> HttpResponse:
    response["Content-Security-Policy"] = DOCS_CSP
    return response


class SwaggerPage(Swagger):
    template = "proxy/docs/swagger.html"

    def render_page(self, request: HttpRequest, api: object, **kwargs: object) -> HttpResponse:
        return with_csp(super().render_page(request, api, **kwargs))  # type: ignore[arg-type]


class RedocPage(Redoc):
    template = "proxy/docs/redoc.html"

    def render_page(self, request: HttpRequest, api: object, **kwargs: object) -> HttpResponse:
        return with_csp(super().render_page(request, api, **kwargs))  # type: ignore[arg-type]


# validatorUrl: none, or Swagger UI would show a badge from validator.swagger.io.
swagger_page = SwaggerPage(settings={"validatorUrl": None, "persistAuthorization": True})
redoc_page = RedocPage(settings={"expandResponses": "200", "hideDownloadButton": False})


@functools.cache
def _patched_redoc() -> tuple[bytes, str]:
    path = finders.find("ninja/redoc.standalone.js")
    with open(str(path), "rb") as source:
        script = source.read().replace(REDOCLY_LOGO, NO_IMAGE)
    return script, hashlib.sha256(script).hexdigest()[:16]


@require_safe
def redoc_script(request: HttpRequest) -> HttpResponse:
    script, etag = _patched_redoc()
    response = HttpResponse(script, content_type="text/javascript; charset=utf-8")
    response["Cache-Control"] = "public, max-age=86400"
    response["ETag"] = f'"{etag}"'
    return response
