"""Admin for accounts and models. Secrets are write-only: the form never renders them back."""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from django import forms
from django.contrib import admin, messages
from django.contrib.admin.options import IS_POPUP_VAR
from django.shortcuts import redirect
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext

from accounts import refresh
from accounts.models import DESTINATION_FIELDS, SECRET_FIELDS, Account, ModelInfo, Provider
from accounts.presets import PRESETS, preset
from accounts.refresh import refresh_account
from accounts.services import invalidate_routing, routing_of, served_model_ids
from accounts.sync import sync_models
from accounts.upstream_calls import probe_accounts

# RefreshResult.status codes as the "Refresh now" action reports them.
STATUS_WORDS = {
    refresh.REFRESHED: gettext_lazy("refreshed"),
    refresh.SKIPPED: gettext_lazy("skipped"),
    refresh.NOT_DUE: gettext_lazy("not due"),
    refresh.NEEDS_LOGIN: gettext_lazy("needs login"),
    refresh.FAILED: gettext_lazy("failed"),
    refresh.NOT_REFRESHABLE: gettext_lazy("not refreshable"),
}


class AccountForm(forms.ModelForm):
    class Meta:
        model = Account
        fields = "__all__"
        widgets = {name: forms.PasswordInput(render_value=False) for name in SECRET_FIELDS}

    preset = forms.ChoiceField(
        label=gettext_lazy("Anthropic-compatible preset"), required=False,
        choices=[("", "—")] + [(p.name, p.label) for p in PRESETS.values()],
        help_text=gettext_lazy("Sets the provider to Anthropic-compatible and fills in the "
                               "vendor's base URL (when left empty), key header and beta "
                               "policy (when left unchanged)."))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "base_url" in self.fields and not self.instance.pk:
            self.fields["base_url"].required = False  # a preset may fill it in
        for name in SECRET_FIELDS:
            field = self.fields[name]
            field.required = False
            is_set = bool(self.instance.pk and getattr(self.instance, name))
            field.help_text = (_("Set (hidden). Leave empty to keep it.") if is_set
                               else _("Not set."))
        if "base_url" in self.fields:
            self.fields["base_url"].help_text = _(
                "Changing it or the provider needs the API key entered again; stored secrets "
                "not entered again are cleared.")

    def _apply_preset(self, cleaned: dict[str, Any]) -> None:
        chosen = preset(cleaned.get("preset") or "")
        if chosen is None:
            if "base_url" in self.fields and not cleaned.get("base_url") \
                    and "base_url" not in self.errors:
                self.add_error("base_url", forms.Field.default_error_messages["required"])
            return
        cleaned["provider"] = Provider.ANTHROPIC
        if not cleaned.get("base_url"):
            cleaned["base_url"] = chosen.base_url
            self.errors.pop("base_url", None)
        for name in ("auth_header", "beta_policy"):
            if name not in self.changed_data:
                cleaned[name] = getattr(chosen, name)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        self._apply_preset(cleaned)
        if not self.instance.pk:
            return cleaned
        key_entered = bool(cleaned.get("api_key"))
        if self._moves_the_secrets(cleaned):
            # Never send a stored secret to a new address: only what is entered now is kept.
            if not cleaned.get("api_key") and self._holds_secrets():
                self.add_error("api_key", _(
                    "The base URL or provider changed: enter the API key again. Stored secrets "
                    "are not sent to a new address."))
        else:
            for name in SECRET_FIELDS:
                if not cleaned.get(name):
                    cleaned[name] = getattr(self.instance, name)  # empty input keeps it
        if (key_entered and "state" not in self.changed_data
                and self.instance.state == Account.State.NEEDS_LOGIN):
            cleaned["state"] = Account.State.ACTIVE  # a fresh key makes it usable again
            cleaned["last_error"] = ""
        return cleaned

    def _moves_the_secrets(self, cleaned: dict[str, Any]) -> bool:
        """The change sends the account somewhere else: typed in, or set by a preset."""
        return any(name in self.changed_data or (
            name in cleaned and cleaned[name] != getattr(self.instance, name))
            for name in DESTINATION_FIELDS)

    def _holds_secrets(self) -> bool:
        return any(getattr(self.instance, name) for name in SECRET_FIELDS)


# The expert form's fieldsets (AccountAdmin.get_fieldsets); fields not named here (another
# provider kind's settings) come right after the basic ones.
BASIC_FIELDS = ("label", "provider", "base_url", "api_key", "enabled", "max_concurrency")
LOGIN_FIELDS = ("oauth_access_token", "oauth_refresh_token", "cookie", "access_token_expires_at",
                "api_key_expires_at", "email", "phone", "api_key_name")
INTERNAL_FIELDS = ("state", "cooldown_until", "last_error", "refreshing_until",
                   "last_refreshed_at", "refresh_failures", "next_refresh_attempt_at",
                   "session_id", "conversation_id", "source", "created_at", "updated_at")


@admin.register(Account)
class AccountAdmin(admin.ModelAdmin):
    form = AccountForm
    list_display = ("label", "provider", "base_url", "enabled", "state_now", "max_concurrency")
    list_filter = ("provider", "enabled", "state")
    search_fields = ("label", "email", "base_url")
    readonly_fields = ("source", "created_at", "updated_at")
    # Login links (accounts/views.py): "Log in with iFlow", "Add with BXAuth cookie", re-login.
    change_list_template = "accounts/account_change_list.html"
    change_form_template = "accounts/account_change_form.html"

    def add_view(self, request: Any, form_url: str = "", extra_context: Any = None) -> Any:
        """Accounts → Add leads to the guided page (accounts/guided_views.py); this form stays
        for experts at ?expert=1 (and for the "+" next to an account field)."""
        wanted = request.GET.get("expert") or request.GET.get(IS_POPUP_VAR)
        if request.method == "GET" and not wanted:
            return redirect("accounts:add_upstream")
        return super().add_view(request, form_url, extra_context)

    def get_changeform_initial_data(self, request: Any) -> dict[str, Any]:
        # iFlow shut down: a new account is OpenAI-compatible unless the expert says otherwise.
        return {"provider": Provider.OPENAI, **super().get_changeform_initial_data(request)}

    def get_fieldsets(self, request: Any, obj: Any = None) -> Any:
        """What an account is first; logins, then the server's own bookkeeping collapsed."""
        fields = list(self.get_fields(request, obj))
        groups = [(None, BASIC_FIELDS, ()),
                  (gettext_lazy("Login (iFlow)"), LOGIN_FIELDS, ("collapse",)),
                  (gettext_lazy("Kept by the server"), INTERNAL_FIELDS, ("collapse",))]
        grouped = {name for _title, names, _classes in groups for name in names}
        rest = [name for name in fields if name not in grouped]  # other providers' settings
        fieldsets = [(title, {"fields": [n for n in names if n in fields], "classes": classes})
                     for title, names, classes in groups]
        if rest:
            fieldsets.insert(1, (gettext_lazy("More settings"), {"fields": rest}))
        return [group for group in fieldsets if group[1]["fields"]]

    def save_model(self, request: Any, obj: Account, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        invalidate_routing(routing_of(request))

    @admin.display(description=gettext_lazy("state"), ordering="state")
    def state_now(self, obj: Account) -> str:
        """The state, and for a cooldown the time left (a rate-limited account may still
        serve as the last one: see docs/accounts.md, "Accounts and the pool")."""
        left = (obj.cooldown_until - timezone.now()).total_seconds() if obj.cooldown_until else 0
        if obj.state != Account.State.COOLING or left <= 0:
            return str(obj.get_state_display())
        return _("%(state)s, %(seconds)d s left") % {"state": obj.get_state_display(),
                                                      "seconds": max(1, round(left))}

    # --- actions
    actions = ["refresh_now", "enable_accounts", "disable_accounts", "reset_cooldown",
               "test_account", "sync_account_models"]

    @admin.action(description=gettext_lazy("Refresh now (OAuth token or cookie key)"))
    def refresh_now(self, request: Any, queryset: Any) -> None:
        for account in queryset:
            result = refresh_account(account.pk, force=True)
            level = messages.SUCCESS if result.ok else messages.WARNING
            status = STATUS_WORDS.get(result.status, result.status)
            detail = f": {result.message}" if result.message else ""
            self.message_user(request, f"{account.label}: {status}{detail}", level)
        invalidate_routing(routing_of(request))

    def _changed(self, request: Any, message: str) -> None:
        invalidate_routing(routing_of(request))
        self.message_user(request, message, messages.SUCCESS)

    @admin.action(description=gettext_lazy("Enable selected accounts"))
    def enable_accounts(self, request: Any, queryset: Any) -> None:
        # Enabling vouches for the key: a blocked account goes back into rotation too.
        queryset.filter(state=Account.State.BLOCKED).update(state=Account.State.ACTIVE)
        count = queryset.update(enabled=True, updated_at=timezone.now())
        self._changed(request, ngettext("Enabled %(count)d account.",
                                        "Enabled %(count)d accounts.", count) % {"count": count})

    @admin.action(description=gettext_lazy("Disable selected accounts"))
    def disable_accounts(self, request: Any, queryset: Any) -> None:
        count = queryset.update(enabled=False, updated_at=timezone.now())
        self._changed(request, ngettext("Disabled %(count)d account.",
                                        "Disabled %(count)d accounts.", count)
                      % {"count": count})

    @admin.action(description=gettext_lazy("Reset cooldown (state active, clear the last error)"))
    def reset_cooldown(self, request: Any, queryset: Any) -> None:
        count = queryset.update(state=Account.State.ACTIVE, cooldown_until=None, last_error="",
                                updated_at=timezone.now())
        self._changed(request, ngettext("Reset the cooldown of %(count)d account.",
                                        "Reset the cooldown of %(count)d accounts.", count)
                      % {"count": count})


    @admin.action(description=gettext_lazy("Test account (a 1-token chat completion)"))
    def test_account(self, request: Any, queryset: Any) -> None:
        # async_to_sync: runs on the server's event loop; the database work stays on this thread.
        for result in async_to_sync(probe_accounts)(_selected(queryset)):
            self.message_user(request, result.summary(),
                              messages.SUCCESS if result.ok else messages.ERROR)

    @admin.action(description=gettext_lazy("Sync models from the upstream (OpenAI- and "
                                           "Anthropic-compatible accounts)"))
    def sync_account_models(self, request: Any, queryset: Any) -> None:
        report = async_to_sync(sync_models)(_selected(queryset))
        if report.changed:
            invalidate_routing(routing_of(request))
        for line in report.skipped:
            self.message_user(request, _("Skipped %(what)s.") % {"what": line},
                              messages.WARNING)
        for item in report.accounts:
            self.message_user(request, item.summary(),
                              messages.SUCCESS if item.ok else messages.ERROR)
        if report.accounts:
            self.message_user(request, report.summary(), messages.INFO)


def _selected(queryset: Any) -> list[int]:
    return list(queryset.order_by("pk").values_list("pk", flat=True))


class ServedFilter(admin.SimpleListFilter):
    title = gettext_lazy("served")
    parameter_name = "served"

    def lookups(self, request: Any, model_admin: Any) -> list[tuple[str, Any]]:
        return [("yes", gettext_lazy("served now")), ("no", gettext_lazy("not served"))]

    def queryset(self, request: Any, queryset: Any) -> Any:
        if self.value() == "yes":
            return queryset.filter(model_id__in=served_model_ids())
        if self.value() == "no":
            return queryset.exclude(model_id__in=served_model_ids())
        return queryset


@admin.register(ModelInfo)
class ModelInfoAdmin(admin.ModelAdmin):
    list_display = ("model_id", "display_name", "provider", "context_length",
                    "max_output_tokens", "vision", "enabled", "prices")
    list_filter = ("provider", "vision", "enabled")
    search_fields = ("model_id", "display_name")
    filter_horizontal = ("accounts",)

    def formfield_for_manytomany(self, db_field: Any, request: Any, **kwargs: Any) -> Any:
        if db_field.name == "accounts":  # the routing rule (accounts.services.Routing)
            kwargs["help_text"] = gettext_lazy(
                "Accounts serving this model. None: every account of the provider that is not "
                "linked to any model (an account linked to models serves those only).")
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    def get_list_filter(self, request: Any) -> Any:
        return (ServedFilter, *super().get_list_filter(request))

    def get_list_display(self, request: Any) -> Any:
        """The catalogue stays complete; a column says which models some usable account
        serves now (what GET /v1/models lists), read once for the page."""
        served_ids = served_model_ids()

        @admin.display(description=gettext_lazy("served"), boolean=True)
        def served(obj: ModelInfo) -> bool:
            return obj.model_id in served_ids

        first, *rest = super().get_list_display(request)
        return (first, served, *rest)

    @admin.display(description=gettext_lazy("prices per million tokens"))
    def prices(self, obj: ModelInfo) -> str:
        """input / cached input / output and the currency, or why costs are unknown."""
        if obj.price_input is None or obj.price_output is None:
            return _("cost unknown")
        cached = obj.price_cached_input if obj.price_cached_input is not None else \
            obj.price_input
        return (f"{obj.price_input.normalize():f} / {cached.normalize():f} / "
                f"{obj.price_output.normalize():f} {obj.price_currency}")

    def save_model(self, request: Any, obj: ModelInfo, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        invalidate_routing(routing_of(request))
