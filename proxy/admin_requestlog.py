"""The request log in the admin: read-only, filterable, searchable; and the link to the usage
page on the admin index."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
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
    list_display = ("started_at", "instance", "key_label", "api", "model", "account",
                    "stream", "status", "latency_ms", "ttft_ms", "tokens_in", "tokens_out",
                    "short_error")
    list_filter = (StatusFilter, "status", "instance", "model", "api", "stream",
                   ("account", admin.RelatedOnlyFieldListFilter), "started_at")
    # "=request_id": the id a client quotes (x-request-id, request-id), matched exactly.
    search_fields = ("model", "requested_model", "error", "key_label", "account__label",
                     "=request_id")
    date_hierarchy = "started_at"
    list_select_related = ("account",)
    list_per_page = 100
    show_full_result_count = False  # the log grows large: no second COUNT(*)

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


admin.site.index_template = "proxy/admin_index.html"  # adds the "Usage" link
