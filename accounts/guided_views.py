"""The guided "add an upstream" admin page (Accounts → Add leads here; the raw form stays at
…/account/add/?expert=1).

1. Pick a preset (accounts/guided.py). iFlow offers its logins (accounts/views.py) too.
2. Enter what the preset needs and press "Test and save": the model list is read with the key;
   a failure is shown in the form (the key is never rendered back). On success the account is
   saved, still disabled, and the browser is redirected to step 3.
3. Tick the models to serve: they are brought into the catalogue as the model sync does, and
   the account is enabled.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from django import forms
from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from accounts import guided
from accounts.models import SECRET_FIELDS, Account, Provider
from accounts.services import invalidate_routing, routing_of
from accounts.sync import store_chosen
from accounts.upstream_calls import read_listing
from accounts.views import _check_perms, _page

SESSION_LISTINGS = "accounts_guided_listings"  # account id → its listing, until models are ticked
PRE_TICK_UP_TO = 30  # longer lists (OpenRouter) start with nothing ticked


class UpstreamForm(forms.Form):
    label = forms.CharField(label=gettext_lazy("Name"), max_length=100,
                            help_text=gettext_lazy("How the admin and the request log call it."))
    base_url = forms.CharField(label=gettext_lazy("Base URL"), max_length=300,
                               widget=forms.URLInput(attrs={"size": 60}))
    api_key = forms.CharField(
        label=gettext_lazy("API key"), required=False, max_length=4000,
        widget=forms.PasswordInput(render_value=False, attrs={"size": 60,
                                                              "autocomplete": "off"}))

    def __init__(self, preset: guided.Preset, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.preset = preset
        self.fields["label"].initial = str(preset.label)
        self.fields["base_url"].initial = preset.base_url
        if not preset.url_editable:
            self.fields["base_url"].disabled = True  # the vendor's documented address
        if preset.key == guided.NONE:
            del self.fields["api_key"]
        else:
            self.fields["api_key"].required = preset.key == guided.REQUIRED
            if preset.key == guided.OPTIONAL:
                self.fields["api_key"].help_text = _("Leave it empty for a server without keys.")

    def account(self) -> Account:
        data = self.cleaned_data
        provider = self.preset.provider
        account = Account(provider=provider, label=data["label"].strip(),
                          base_url=data["base_url"].strip().rstrip("/"),
                          api_key=(data.get("api_key") or "").strip(), enabled=False,
                          max_concurrency=0 if provider != Provider.IFLOW else 1,
                          **self.preset.extra)
        try:
            account.full_clean(exclude=list(SECRET_FIELDS))
        except ValidationError as exc:
            for name, problems in exc.message_dict.items():
                self.add_error(name if name in self.fields else None, problems)
            raise
        return account


def _preset(slug: str) -> guided.Preset:
    found = guided.find(slug)
    if found is None:
        raise Http404(_("no such preset"))
    return found


@never_cache
@staff_member_required
@require_http_methods(["GET", "POST"])
def add_upstream(request: HttpRequest) -> HttpResponse:
    _check_perms(request)
    slug = request.POST.get("preset") or request.GET.get("preset") or ""
    title = _("Add an upstream")
    expert_url = reverse("admin:accounts_account_add") + "?expert=1"
    if not slug:
        return _page(request, "accounts/add_upstream.html", title, groups=guided.grouped(),
                     expert_url=expert_url)
    preset = _preset(slug)
    form = UpstreamForm(preset, request.POST if request.method == "POST" else None)
    error = ""
    if request.method == "POST" and form.is_valid():
        try:
            account = form.account()
        except ValidationError:
            pass
        else:
            result = async_to_sync(guided.test_connection)(account, preset)
            if result.ok:
                return _saved(request, account, result.models)
            error = result.error
    return _page(request, "accounts/add_upstream_form.html", title, preset=preset, form=form,
                 error=error, expert_url=expert_url)


def _saved(request: HttpRequest, account: Account, entries: list[dict[str, Any]]) -> HttpResponse:
    account.save()
    if not entries:  # nothing listed: usable as it is (catalogue models of its provider)
        return _finish(request, account, _("The upstream lists no models; link models to it "
                                           "in the model catalogue."))
    listings = request.session.get(SESSION_LISTINGS, {})
    listings = {k: v for k, v in listings.items() if k != str(account.pk)}
    listings[str(account.pk)] = entries
    request.session[SESSION_LISTINGS] = dict(list(listings.items())[-5:])
    return redirect("accounts:add_upstream_models", account.pk)


def _finish(request: HttpRequest, account: Account, detail: str) -> HttpResponse:
    account.enabled = True
    account.save(update_fields=["enabled", "updated_at"])
    invalidate_routing(routing_of(request))
    messages.success(request, format_html(
        "{} {} <a href=\"{}\">{}</a>",
        _("Upstream “%(label)s” tested and saved.") % {"label": account.label}, detail,
        reverse("connect"), _("Next: connect a client.")))
    return redirect("admin:accounts_account_changelist")


@never_cache
@staff_member_required
@require_http_methods(["GET", "POST"])
def choose_models(request: HttpRequest, pk: int) -> HttpResponse:
    _check_perms(request)
    account = Account.objects.filter(pk=pk).first()
    if account is None:
        raise Http404(_("no such account"))
    entries = request.session.get(SESSION_LISTINGS, {}).get(str(pk))
    error = ""
    if entries is None:  # a reload later, another browser: ask the upstream again
        try:
            entries = [guided._small(e) for e in async_to_sync(read_listing)(account)]
        except Exception as exc:  # an upstream failure is shown, never a 500
            entries, error = [], guided.problem(exc, account)
    ids = sorted({e["id"] for e in entries})
    chosen: set[str] = set(ids) if len(ids) <= PRE_TICK_UP_TO else set()
    if request.method == "POST":
        chosen = set(request.POST.getlist("models")) & set(ids)
        if chosen:
            item = store_chosen(account, [e for e in entries if e["id"] in chosen])
            listings = request.session.get(SESSION_LISTINGS, {})
            listings.pop(str(pk), None)
            request.session[SESSION_LISTINGS] = listings
            return _finish(request, account, item.summary())
        error = _("Tick at least one model.")
    return _page(request, "accounts/add_upstream_models.html", _("Choose the models to serve"),
                 account=account, ids=ids, chosen=chosen, error=error)
