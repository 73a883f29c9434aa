"""The admin's live status page: staff (iflow2api_site/urls.py wraps it in admin_view) with
view access to the request log (status.VIEW_PERMISSION), like the usage page.

Rendered server-side from a snapshot, so it is useful without JavaScript; instances/static/
instances/status.js then keeps it current over the websocket (instances/consumers.py)."""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.translation import gettext as _

from accounts.models import Account, Provider
from instances import status
from instances.models import Instance
from instances.routing import WS_PATH

TIME_FIELDS = {
    "instances": ("state_changed_at",),
    "accounts": ("cooldown_until", "next_refresh"),
    "errors": ("time",),
}


def _parsed(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def displayable(snapshot: dict[str, Any]) -> dict[str, Any]:
    """The snapshot with its ISO times as datetimes, for the template's `date` filter."""
    shown = copy.deepcopy(snapshot)
    shown["generated_at"] = _parsed(shown["generated_at"])
    for table, fields in TIME_FIELDS.items():
        for row in shown[table]:
            for name in fields:
                row[name] = _parsed(row[name])
    shown["instances_running"] = sum(1 for i in shown["instances"] if i["state"] == "running")
    shown["accounts_active"] = sum(1 for a in shown["accounts"] if a["state"] == "active")
    return shown


def labels() -> dict[str, Any]:
    """The words status.js writes, translated here (no JavaScript catalogue needed)."""
    names = [*Instance.State.choices, *Account.State.choices, *Provider.choices]
    return {
        "names": {value: _(str(label)) for value, label in names},
        "live": _("live"),
        "connecting": _("connecting…"),
        "disconnected": _("disconnected, retrying…"),
        "forbidden": _("not allowed: log in again and reload"),
        "yes": _("yes"),
        "no": _("no"),
        "disabled": _("disabled"),
        "due": _("due now"),
        "refreshing": _("refreshing now"),
        "until": _("until %(time)s"),
        "no_instances": _("No instances."),
        "no_accounts": _("No accounts."),
        "no_errors": _("No errors recently."),
        "no_budgets": _("No budgets."),
        "budget_states": {"ok": _("ok"), "warning": _("warning"), "exceeded": _("exceeded")},
    }


def status_page(request: HttpRequest) -> HttpResponse:
    if not request.user.has_perm(status.VIEW_PERMISSION):
        raise PermissionDenied
    context = {
        **admin.site.each_context(request),
        "title": _("Live status"),
        "snapshot": displayable(status.snapshot(
            status.publisher_in(getattr(request, "scope", None)))),
        "ws_path": WS_PATH,
        "labels": labels(),
    }
    return render(request, "admin/instances/status.html", context)
