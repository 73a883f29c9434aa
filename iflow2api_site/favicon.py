"""/favicon.ico: browsers ask for it on every page without a <link rel="icon">; the answer is
our SVG icon (iflow2api_site/static/iflow2api/favicon.svg), never a 404."""

from __future__ import annotations

import functools

from django.contrib.staticfiles import finders
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_safe

ICON = "iflow2api/favicon.svg"


@functools.cache
def _icon() -> bytes:
    with open(str(finders.find(ICON)), "rb") as source:
        return source.read()


@require_safe
def favicon(request: HttpRequest) -> HttpResponse:
    response = HttpResponse(_icon(), content_type="image/svg+xml")
    response["Cache-Control"] = "public, max-age=86400"
    return response
