"""Admin for instances, client keys and rate rules. A client key is shown once, on the page
the creation redirects to (post/redirect/get: a reload cannot make a second key); only its
hash is kept."""

from __future__ import annotations

import json
import time
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.options import IS_POPUP_VAR
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from accounts.crypto import decrypt, encrypt
from instances.admin_budgets import InstanceBudgetInline, KeyBudgetInline
from instances.models import ClientKey, Instance, RateRule, new_key
from instances.runtime import host_port
from instances.services import directory_of, invalidate_directory
from instances.state_messages import shown

NEW_KEY_SESSION = "instances_new_client_key"  # until the page that shows it is rendered
NEW_KEY_TTL = 600  # seconds: a key whose page was never opened is not shown later
STATE_COLOURS = {"running": "#2e7d32", "error": "#c62828", "stopped": "#757575"}

admin.site.site_header = gettext_lazy("iflow2api administration")
admin.site.site_title = gettext_lazy("iflow2api admin")


class ClientKeyInline(admin.TabularInline):
    model = ClientKey
    fields = ("name", "prefix", "enabled", "expires_at", "allowed_models", "created_at")
    readonly_fields = ("name", "prefix", "enabled", "expires_at", "allowed_models", "created_at")
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # keys are made on their own page, which shows the new key once


@admin.register(Instance)
class InstanceAdmin(admin.ModelAdmin):
    list_display = ("name", "address", "enabled", "state_badge", "state_note", "key_count")
    list_filter = ("enabled", "state")
    search_fields = ("name", "host")
    filter_horizontal = ("accounts",)
    readonly_fields = ("state", "state_note", "state_changed_at", "created_at", "updated_at")
    inlines = [ClientKeyInline, InstanceBudgetInline]
    actions = ["start_instances", "stop_instances"]
    fieldsets = (
        (None, {"fields": ("name", "host", "port", "enabled")}),
        (gettext_lazy("Models"), {"fields": ("default_model", "claude_tiers", "model_aliases",
                                             "vision_model", "preserve_reasoning_content")}),
        (gettext_lazy("Upstream"), {"fields": ("accounts", "upstream_proxy")}),
        (gettext_lazy("Browsers and logging"), {"fields": ("cors_allowed_origins",
                                                           "log_bodies")}),
        (gettext_lazy("State"), {"fields": ("state", "state_note", "state_changed_at",
                                            "created_at", "updated_at")}),
    )

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        fields = tuple(super().get_readonly_fields(request, obj))
        # Every account key this instance uses travels through its proxy (in clear for http
        # upstreams): choosing the proxy is choosing where the keys go, so superusers only.
        if not request.user.is_superuser:
            fields += ("upstream_proxy",)
        return fields

    @admin.display(description=gettext_lazy("address"), ordering="port")
    def address(self, obj: Instance) -> str:
        # Where the server bound it (--host/--port may override the row) while it runs.
        if obj.state == Instance.State.RUNNING and obj.listening_on:
            return obj.listening_on
        return host_port(obj.host, obj.port)

    @admin.display(description=gettext_lazy("state"), ordering="state")
    def state_badge(self, obj: Instance) -> str:
        return format_html('<b style="color:{}">{}</b>', STATE_COLOURS.get(obj.state, "inherit"),
                           obj.get_state_display())

    @admin.display(description=gettext_lazy("state message"))
    def state_note(self, obj: Instance) -> str:
        """What the server said about the instance, in the reader's language."""
        return shown(obj.state_message)

    @admin.display(description=gettext_lazy("keys"))
    def key_count(self, obj: Instance) -> int:
        return obj.keys.count()

    def save_model(self, request: HttpRequest, obj: Instance, form: Any, change: bool) -> None:
        if change:  # only what the form changed: the server writes the state columns meanwhile
            fields = [name for name in form.changed_data if name != "accounts"]
            if fields:
                obj.save(update_fields=[*fields, "updated_at"])
        else:
            super().save_model(request, obj, form, change)
        invalidate_directory(directory_of(request))

    @admin.action(description=gettext_lazy("Start (enable) the selected instances"))
    def start_instances(self, request: HttpRequest, queryset: Any) -> None:
        count = queryset.update(enabled=True)
        invalidate_directory(directory_of(request))
        self.message_user(request, _("%(count)d instance(s) enabled: they start within a few "
                                     "seconds.") % {"count": count}, messages.SUCCESS)

    @admin.action(description=gettext_lazy("Stop (disable) the selected instances"))
    def stop_instances(self, request: HttpRequest, queryset: Any) -> None:
        count = queryset.update(enabled=False)
        invalidate_directory(directory_of(request))
        self.message_user(request, _("%(count)d instance(s) disabled: they stop listening "
                                     "within a few seconds; open streams finish.")
                          % {"count": count}, messages.SUCCESS)


@admin.register(ClientKey)
class ClientKeyAdmin(admin.ModelAdmin):
    list_display = ("__str__", "instance", "enabled", "expires_at", "allowed_models",
                    "created_at")
    list_filter = ("instance", "enabled")
    search_fields = ("name", "prefix")
    readonly_fields = ("prefix", "created_at")
    fields = ("instance", "name", "prefix", "enabled", "expires_at", "allowed_models",
              "created_at")
    inlines = [KeyBudgetInline]
    actions = ["enable_keys", "disable_keys"]

    def save_model(self, request: HttpRequest, obj: ClientKey, form: Any, change: bool) -> None:
        if not change:
            key = new_key()
            obj.set_key(key)
            request._new_client_key = key  # type: ignore[attr-defined]  # shown once, below
        super().save_model(request, obj, form, change)
        invalidate_directory(directory_of(request))

    def response_add(self, request: HttpRequest, obj: ClientKey,
                     post_url_continue: str | None = None) -> HttpResponse:
        key = getattr(request, "_new_client_key", None)
        if key is None:
            return super().response_add(request, obj, post_url_continue)
        # Post/redirect/get: the key waits in the session for the one page that shows it, which
        # takes it out again (instances/admin.py created_view). Opened from a "+" next to a key
        # field: "Done" then fills that field (new_key.js).
        popup = None
        if IS_POPUP_VAR in request.POST:
            popup = json.dumps({"value": str(obj.pk), "obj": str(obj)})
        # Encrypted like the upstream secrets: the session table never holds it in clear.
        request.session[NEW_KEY_SESSION] = {"pk": obj.pk, "key": encrypt(key), "popup": popup,
                                            "at": time.time()}
        url = reverse("admin:instances_clientkey_created", args=[obj.pk])
        return HttpResponseRedirect(url + (f"?{IS_POPUP_VAR}=1" if popup else ""))

    def get_urls(self) -> list[URLPattern]:
        created = self.admin_site.admin_view(self.created_view)
        return [path("<int:pk>/created/", created, name="instances_clientkey_created"),
                *super().get_urls()]

    def created_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """The new key, once: the session's copy is removed as the page is rendered, so a
        reload (or the back button) shows that it was already shown."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        pending = request.session.get(NEW_KEY_SESSION)
        key, popup = None, None
        if isinstance(pending, dict) and (pending.get("pk") == pk or
                                          time.time() - pending.get("at", 0) > NEW_KEY_TTL):
            del request.session[NEW_KEY_SESSION]
            if pending.get("pk") == pk and time.time() - pending.get("at", 0) <= NEW_KEY_TTL:
                key, popup = decrypt(pending["key"]), pending.get("popup")
        row = ClientKey.objects.select_related("instance").filter(pk=pk).first()
        if row is None:
            raise Http404
        return TemplateResponse(request, "instances/new_key.html", {
            **self.admin_site.each_context(request), "title": _("New client API key"),
            "key": key, "row": row, "opts": self.model._meta, "popup_response": popup,
            "connect_url": reverse("connect") + f"?instance={row.instance_id}&key={row.pk}",
        }, headers={"Cache-Control": "no-store"})

    @admin.action(description=gettext_lazy("Enable the selected keys"))
    def enable_keys(self, request: HttpRequest, queryset: Any) -> None:
        queryset.update(enabled=True)
        invalidate_directory(directory_of(request))

    @admin.action(description=gettext_lazy("Disable the selected keys"))
    def disable_keys(self, request: HttpRequest, queryset: Any) -> None:
        queryset.update(enabled=False)
        invalidate_directory(directory_of(request))


@admin.register(RateRule)
class RateRuleAdmin(admin.ModelAdmin):
    list_display = ("__str__", "scope", "instance", "key", "enabled", "requests_per_minute",
                    "requests_per_hour", "requests_per_day", "concurrent_streams",
                    "tokens_per_minute")
    list_filter = ("scope", "enabled", "instance")
    list_editable = ("enabled",)

    def save_model(self, request: HttpRequest, obj: RateRule, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        invalidate_directory(directory_of(request))
