"""Admin pages for logins: iFlow OAuth (start, callback, paste fallback) and the BXAuth cookie.

Staff only, with the right to add and change accounts. Secrets are never rendered back: a
failed form comes back empty. The OAuth states a browser session started are remembered in the
session (the last few, kept after use so that a replay says "already completed"); a callback
with any other state is refused, and not used up.
"""

from __future__ import annotations

import logging
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods

from accounts.logins import (
    LoginError,
    add_cookie_account,
    callback_url,
    finish_oauth_login,
    mask_secret,
    start_oauth_login,
)
from accounts.models import Account, Provider
from accounts.services import invalidate_routing, routing_of

log = logging.getLogger(__name__)

SESSION_STATES = "accounts_oauth_states"
MAX_SESSION_STATES = 10
LOGIN_PERMS = ("accounts.add_account", "accounts.change_account")


class PasteForm(forms.Form):
    url = forms.CharField(
        label=gettext_lazy("The URL you landed on"),
        widget=forms.Textarea(attrs={"rows": 3, "cols": 80, "autocomplete": "off",
                                     "placeholder": "http://…/accounts/oauth/callback/?code=…"
                                                    "&state=…"}),
        max_length=4000,
    )


class CookieForm(forms.Form):
    bxauth = forms.CharField(
        label=gettext_lazy("BXAuth cookie"),
        widget=forms.PasswordInput(render_value=False, attrs={"size": 80,
                                                              "autocomplete": "off"}),
        max_length=8000,
        help_text=gettext_lazy("From platform.iflow.cn (browser dev tools → Application → "
                               "Cookies → BXAuth). The value alone, `BXAuth=…;` or a whole "
                               "Cookie header."),
    )


def _check_perms(request: HttpRequest) -> None:
    if not request.user.has_perms(LOGIN_PERMS):
        raise PermissionDenied


def _page(request: HttpRequest, template: str, title: str, **context: Any) -> HttpResponse:
    return render(request, template, {
        **admin.site.each_context(request), "title": title, "opts": Account._meta, **context})


def _remember_state(request: HttpRequest, state: str) -> None:
    states = [s for s in request.session.get(SESSION_STATES, []) if s != state]
    request.session[SESSION_STATES] = [*states, state][-MAX_SESSION_STATES:]


def _finish(request: HttpRequest, pasted: str) -> Account:
    account = finish_oauth_login(pasted, allowed_states=request.session.get(SESSION_STATES, []))
    invalidate_routing(routing_of(request))
    who = account.email or account.phone or account.label
    messages.success(request, _("Logged in to iFlow as %(who)s: account “%(label)s” (key "
                                "%(key)s).") % {"who": who, "label": account.label,
                                                "key": mask_secret(account.api_key)})
    return account


def _done(account: Account) -> HttpResponseRedirect:
    return redirect("admin:accounts_account_change", account.pk)


def _back_to_list() -> HttpResponseRedirect:
    return redirect("admin:accounts_account_changelist")


@never_cache
@staff_member_required
@require_GET
def oauth_start(request: HttpRequest) -> HttpResponse:
    """Start an iFlow login (?account=<id> to log an existing account in again)."""
    _check_perms(request)
    account = None
    if request.GET.get("account"):
        try:
            account = Account.objects.get(pk=int(request.GET["account"]),
                                          provider=Provider.IFLOW)
        except (ValueError, Account.DoesNotExist) as exc:
            raise Http404(_("no such iFlow account")) from exc
    login, url = start_oauth_login(callback_url(request), account)
    _remember_state(request, login.state)
    return HttpResponseRedirect(url)


@never_cache
@staff_member_required
@require_GET
def oauth_callback(request: HttpRequest) -> HttpResponse:
    """Where iFlow sends the browser back with ?code=…&state=…."""
    _check_perms(request)
    try:
        account = _finish(request, request.get_full_path())
    except LoginError as exc:
        messages.error(request, exc.message)
        return _back_to_list()
    except Exception:
        log.exception("OAuth callback failed")
        messages.error(request, _("The iFlow login failed unexpectedly; see the server log."))
        return _back_to_list()
    return _done(account)


@never_cache
@staff_member_required
@require_http_methods(["GET", "POST"])
def oauth_paste(request: HttpRequest) -> HttpResponse:
    """The fallback when iFlow's redirect cannot reach this server: paste the URL."""
    _check_perms(request)
    error = ""
    if request.method == "POST":
        form = PasteForm(request.POST)
        if form.is_valid():
            try:
                return _done(_finish(request, form.cleaned_data["url"]))
            except LoginError as exc:
                error = exc.message
            except Exception:
                log.exception("pasted OAuth login failed")
                error = _("The iFlow login failed unexpectedly; see the server log.")
        else:
            error = _("Paste the whole URL.")
    return _page(request, "accounts/oauth_paste.html", _("Finish an iFlow login"),
                 form=PasteForm(), error=error, callback=callback_url(request))


@never_cache
@staff_member_required
@require_http_methods(["GET", "POST"])
def cookie_login(request: HttpRequest) -> HttpResponse:
    """Add (or renew) an iFlow account from a platform.iflow.cn BXAuth cookie."""
    _check_perms(request)
    error = ""
    if request.method == "POST":
        form = CookieForm(request.POST)
        if form.is_valid():
            try:
                account = add_cookie_account(form.cleaned_data["bxauth"])
                invalidate_routing(routing_of(request))
            except LoginError as exc:
                error = exc.message
            except Exception:
                log.exception("cookie login failed")
                error = _("The cookie login failed unexpectedly; see the server log.")
            else:
                messages.success(request, _("Account “%(label)s” saved (key %(key)s, platform "
                                            "name “%(name)s”).")
                                 % {"label": account.label, "key": mask_secret(account.api_key),
                                    "name": account.api_key_name})
                return _done(account)
        else:
            error = _("Paste the BXAuth cookie.")
    return _page(request, "accounts/cookie_login.html",
                 _("Add an iFlow account with a BXAuth cookie"), form=CookieForm(), error=error)
