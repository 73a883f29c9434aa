"""The page a locked-out admin login gets (django-axes' AXES_LOCKOUT_CALLABLE): it says the
lockout ends by itself and when, so the real admin waits rather than keeps trying."""

from __future__ import annotations

from datetime import timedelta

from axes.helpers import get_cool_off
from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

LOCKED_OUT = 429


def duration(length: timedelta) -> str:
    """`15 minutes`, `90 seconds`: whole minutes when it is a whole number of them."""
    seconds = max(1, round(length.total_seconds()))
    if seconds % 60 == 0:
        minutes = seconds // 60
        return ngettext("%(count)d minute", "%(count)d minutes", minutes) % {"count": minutes}
    return ngettext("%(count)d second", "%(count)d seconds", seconds) % {"count": seconds}


def lockout_response(request: HttpRequest, original_response: HttpResponse | None = None,
                     credentials: dict | None = None) -> HttpResponse:
    cool_off = get_cool_off(request) or timedelta(minutes=15)
    context = {
        **admin.site.each_context(request),
        "title": _("Too many failed logins"),
        "cool_off": duration(cool_off),
    }
    return render(request, "admin/lockout.html", context, status=LOCKED_OUT)
