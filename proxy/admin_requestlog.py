"""The request log in the admin: read-only, filterable, searchable; the columns that matter fit
a 1366 px screen (proxy/templates/proxy/requestlog_change_list.html), the rest is on the row's
own page."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.timezone import localtime
from django.utils.translation import gettext_lazy as _

from proxy.models import RequestLog


class StatusFilter(admin.SimpleListFilter):
    title = _("outcome")
    parameter_name = "status_class"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("ok", _("2xx success")), ("errors", _("every error")),
                ("4xx", _("4xx client errors")), ("429", _("429 rate limited")),
                ("499", _("499 client went away")), ("5xx", _("5xx upstream / gateway errors"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        ranges = {"ok": (200, 299), "4xx": (400, 499), "5xx": (500, 599)}
        value = self.value()
        if value in ranges:
            return queryset.filter(status__range=ranges[value])
        if value == "errors":
            return queryset.exclude(status__range=(200, 299))
        if value in {"429", "499"}:
            return queryset.filter(status=int(value))
        return queryset


@admin.register(RequestLog)
class RequestLogAdmin(admin.ModelAdmin):
    change_list_template = "proxy/requestlog_change_list.html"
    # What matters at a glance, narrow enough for 1366 px; the row's page has everything.
    list_display = ("time", "instance", "key", "api", "model", "status", "latency_ms",
                    "tokens", "short_error")
    list_display_links = ("time",)
    list_filter = (StatusFilter, "status", "instance", "model", "api", "stream",
                   ("account", admin.RelatedOnlyFieldListFilter), "started_at")
    # "=request_id": the id a client quotes (x-request-id, request-id), matched exactly.
    search_fields = ("model", "requested_model", "error", "key_label", "account__label",
                     "=request_id")
    date_hierarchy = "started_at"
    list_select_related = ("account",)
    list_per_page = 100
    show_full_result_count = False  # the log grows large: no second COUNT(*)
    fieldsets = (
        (None, {"fields": ("started_at", "request_id", "instance", "key_label", "api",
                           "stream", "requested_model", "model", "account")}),
        (_("Outcome"), {"fields": ("status", "error", "latency_ms", "ttft_ms", "tokens_in",
                                   "tokens_out")}),
        (_("Bodies"), {"fields": ("request_body", "response_body"),
                       "classes": ("collapse",)}),
    )

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        # Fields other apps add to the model later (cached tokens, cost) go with the outcome.
        known = {name for _title, group in self.fieldsets for name in group["fields"]}
        extra = [f.name for f in RequestLog._meta.concrete_fields
                 if f.name not in known and f.name != "id"]
        if not extra:
            return self.fieldsets
        first, (title, outcome), bodies = self.fieldsets
        return (first, (title, {"fields": (*outcome["fields"], *extra)}), bodies)

    @admin.display(description=_("time"), ordering="started_at")
    def time(self, obj: RequestLog) -> str:
        when = localtime(obj.started_at)
        today = localtime().date()
        return when.strftime("%H:%M:%S" if when.date() == today else "%m-%d %H:%M:%S")

    @admin.display(description=_("client key"), ordering="key_label")
    def key(self, obj: RequestLog) -> str:
        """The key's name; its prefix is in the title (and on the row's page)."""
        name = obj.key_label.split(" (", 1)[0]
        return format_html('<span title="{}">{}</span>', obj.key_label, name) if name else "–"

    @admin.display(description=_("tokens in / out"))
    def tokens(self, obj: RequestLog) -> str:
        if obj.tokens_in is None and obj.tokens_out is None:
            return "–"
        return f"{obj.tokens_in or 0} / {obj.tokens_out or 0}"

    @admin.display(description=_("error"))
    def short_error(self, obj: RequestLog) -> str:
        if len(obj.error) <= 40:
            return obj.error
        return format_html('<span title="{}">{}</span>', obj.error, obj.error[:39] + "…")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

