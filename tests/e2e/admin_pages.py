"""Every page of the admin, listed from the URLconf (issue 17's console-error check).

`admin_pages()` walks the URL patterns under /admin/ and /accounts/ and turns each into the
pages a browser can open: an object's pages with the pk of a row of that model (`make_rows()`
makes one of each), an app's index for every app, a few presets of the guided "add an
upstream" page. A pattern it cannot turn into a page fails (`UnknownPattern`) unless
`EXCUSED` says why no browser opens it, so a new admin page is checked without anyone
listing it. No browser here: tests/e2e/test_admin_browser.py opens them in Chromium and
tests/test_admin_urlconf.py asks Django's test client for each of them.
"""

from __future__ import annotations

import re
from typing import Any

# URL names a browser does not open as a page, and why.
EXCUSED = {
    "logout": "ends the session (POST only)",
    "autocomplete": "JSON for the admin's select widgets, no page",
    "jsi18n": "a script, no page",
    "view_on_site": "a redirect to the object's public page",
    "admin_theme": "POST only: the theme toggle remembers the choice",
    "oauth_start": "a redirect to iFlow's login page, outside this server",
}
# More than one page behind one URL: these query strings are opened as well.
VARIANTS = {
    "add_upstream": ("?preset=iflow", "?preset=deepseek", "?preset=openrouter",
                     "?preset=ollama", "?preset=openai-compatible",
                     "?preset=anthropic-anthropic"),
    "accounts_account_add": ("?expert=1",),  # the plain one redirects to add_upstream
}
# Non-admin patterns with an object in them: the model whose pk fills it in.
OBJECT_OF = {"add_upstream_models": "accounts.account"}
PREFIXES = ("admin/", "accounts/")
_PLACEHOLDER = re.compile(r"<(?:\w+:)?(\w+)>")
_APP_LIST = re.compile(r"\^\(\?P<app_label>([\w|]+)\)/\$$")


class UnknownPattern(AssertionError):
    pass


def url_patterns() -> list[tuple[str, str | None]]:
    """(route, name) of every URL pattern, routes joined from their includes."""
    from django.urls import URLPattern, URLResolver, get_resolver

    def walk(resolver: URLResolver, prefix: str) -> list[tuple[str, str | None]]:
        found: list[tuple[str, str | None]] = []
        for entry in resolver.url_patterns:
            if isinstance(entry, URLResolver):
                found += walk(entry, prefix + str(entry.pattern))
            elif isinstance(entry, URLPattern):
                found.append((prefix + str(entry.pattern), entry.name))
        return found

    return walk(get_resolver(), "")


def admin_models() -> dict[str, Any]:
    """The admin's models by "app_label.model_name"."""
    from django.contrib import admin

    return {model._meta.label_lower: model for model in admin.site._registry}


def _model_of(name: str, models: dict[str, Any]) -> str | None:
    if name in OBJECT_OF:
        return OBJECT_OF[name]
    for label in models:
        if name.startswith(label.replace(".", "_") + "_"):
            return label
    return None


def admin_pages(rows: dict[str, dict[str, Any]]) -> list[str]:
    """Every admin page as a path (query string included). `rows`, by model label: the pk of a
    row and what a superuser may do with it ({"pk": 1, "add": True, "delete": True}), as
    `rows_of()` reads them."""
    models = admin_models()
    pages: list[str] = []
    for route, name in url_patterns():
        if not route.startswith(PREFIXES) or name in EXCUSED:
            continue
        if name is None:
            # Django's own: <object_id>/ redirects to …/change/; (?P<url>.*)$ answers 404.
            if route.endswith(("<path:object_id>/", "(?P<url>.*)$")):
                continue
            raise UnknownPattern(f"{route}: a page without a name")
        apps = _APP_LIST.search(route)
        if apps is not None:
            pages += [f"/{route[:apps.start()]}{label}/" for label in apps.group(1).split("|")]
            continue
        if "(?P<" in route or "^" in route:
            raise UnknownPattern(f"{route} ({name}): a regular expression this list cannot fill")
        path = route
        if _PLACEHOLDER.search(route):
            label = _model_of(name, models)
            if label is None or label not in rows:
                raise UnknownPattern(f"{route} ({name}): no row to fill in {route}; "
                                     "make one in make_rows()")
            path = _PLACEHOLDER.sub(str(rows[label]["pk"]), route)
        label = _model_of(name, models)
        if (label is not None and name.endswith(("_add", "_delete"))
                and not rows.get(label, {}).get(name.rsplit("_", 1)[1])):
            continue  # the admin refuses it to everyone: no link leads there
        for query in ("", *VARIANTS.get(name, ())):
            pages.append(f"/{path}{query}")
    return list(dict.fromkeys(pages))


def rows_of(username: str) -> dict[str, dict[str, Any]]:
    """For each admin model: a row's pk, and whether `username` may add and delete."""
    from django.contrib import admin
    from django.contrib.auth import get_user_model
    from django.test import RequestFactory

    request = RequestFactory().get("/admin/")
    request.user = get_user_model().objects.get(username=username)
    found = {}
    for model, model_admin in admin.site._registry.items():
        row = model._default_manager.order_by("pk").first()
        if row is None:
            continue
        found[model._meta.label_lower] = {
            "pk": row.pk, "add": model_admin.has_add_permission(request),
            "delete": model_admin.has_delete_permission(request, row)}
    return found


def make_rows() -> None:
    """One row of every admin model that has none (the server's own rows are kept)."""
    from axes.models import AccessAttempt, AccessFailureLog, AccessLog
    from django.contrib.auth.models import Group
    from django.utils import timezone
    from django_celery_beat.models import (
        ClockedSchedule,
        CrontabSchedule,
        IntervalSchedule,
        PeriodicTask,
        SolarSchedule,
    )

    from accounts.models import Account
    from instances.models import ClientKey, Instance, RateRule
    from proxy.models import RequestLog

    seen = {"user_agent": "Chromium", "ip_address": "127.0.0.1", "username": "someone",
            "http_accept": "*/*", "path_info": "/admin/login/"}
    makers = {
        Group: lambda: Group.objects.create(name="operators"),
        IntervalSchedule: lambda: IntervalSchedule.objects.create(every=10, period="minutes"),
        CrontabSchedule: lambda: CrontabSchedule.objects.create(minute="0", hour="4"),
        SolarSchedule: lambda: SolarSchedule.objects.create(event="sunrise", latitude=31.2,
                                                            longitude=121.5),
        ClockedSchedule: lambda: ClockedSchedule.objects.create(clocked_time=timezone.now()),
        PeriodicTask: lambda: PeriodicTask.objects.create(
            name="every ten minutes", task="celery.backend_cleanup",
            interval=IntervalSchedule.objects.first()),
        AccessAttempt: lambda: AccessAttempt.objects.create(
            **seen, get_data="", post_data="", failures_since_start=1),
        AccessFailureLog: lambda: AccessFailureLog.objects.create(**seen),
        AccessLog: lambda: AccessLog.objects.create(**seen),
        Account: lambda: Account.objects.create(provider="openai", label="local",
                                                base_url="http://127.0.0.1:9/v1"),
        Instance: lambda: Instance.objects.create(name="second", port=28999),
        ClientKey: lambda: ClientKey.create(Instance.objects.first(), "browser"),
        RateRule: lambda: RateRule.objects.create(name="per key", requests_per_minute=60),
        RequestLog: lambda: RequestLog.objects.create(
            started_at=timezone.now(), instance="default", api="openai", model="glm-5",
            status=200, latency_ms=12),
    }
    for model, make in makers.items():
        if not model._default_manager.exists():
            make()
