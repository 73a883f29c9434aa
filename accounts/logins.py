"""Logins that create or renew accounts: iFlow OAuth, the BXAuth cookie, a plain API key.

Used by the admin views (accounts/views.py) and the commands (`iflow_login`, `addaccount`).
The HTTP is in accounts/oauth.py; this module keeps the state and the accounts. Errors are
`LoginError`, whose message is meant for the user and never contains a secret.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.models import DEFAULT_BASE_URLS, Account, ModelInfo, OAuthLogin, Provider
from accounts.oauth import OAuthClient, OAuthConfig, OAuthError, normalize_bxauth
from accounts.presets import preset

log = logging.getLogger(__name__)

STATE_MAX_AGE = timedelta(minutes=15)
# Pending logins older than this are deleted when a new one starts.
STATE_CLEANUP_AGE = timedelta(days=1)


class LoginError(Exception):
    """A login that did not work, with a message to show the user (no secrets in it)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def mask_secret(value: str) -> str:
    """`sk-…abcd`: enough to recognise a key, never enough to use it."""
    value = value or ""
    if not value:
        return _("(none)")
    prefix = value.split("-", 1)[0] + "-" if "-" in value[:6] else ""
    tail = value[-4:] if len(value) >= 12 else ""
    return f"{prefix}…{tail}"


@contextmanager
def _client(client: OAuthClient | None) -> Iterator[OAuthClient]:
    """The caller's client, or one of our own from the settings, closed afterwards."""
    if client is not None:
        yield client
        return
    own = OAuthClient(OAuthConfig.from_settings())
    try:
        yield own
    finally:
        own.close()


def _serve_base() -> str:
    conf = settings.IFLOW2API
    host = str(conf.get("HOST") or "127.0.0.1")
    if host in {"0.0.0.0", ""}:
        host = "127.0.0.1"
    elif host == "::":
        host = "[::1]"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{conf.get('PORT') or 28000}"


def callback_url(request=None) -> str:  # type: ignore[no-untyped-def]
    """Where iFlow sends the browser back: PUBLIC_BASE_URL, else the host the admin is using,
    else the serve address (HOST:PORT)."""
    path = reverse("accounts:oauth_callback")
    public = (settings.IFLOW2API.get("PUBLIC_BASE_URL") or "").strip().rstrip("/")
    if public:
        return public + path
    if request is not None:
        return f"{request.scheme}://{request.get_host()}{path}"
    return _serve_base() + path


# --- OAuth ---------------------------------------------------------------------------------


def start_oauth_login(
    redirect_uri: str, account: Account | None = None, client: OAuthClient | None = None
) -> tuple[OAuthLogin, str]:
    """A new single-use login state; returns it and iFlow's authorize URL for the browser."""
    now = timezone.now()
    OAuthLogin.objects.filter(created_at__lt=now - STATE_CLEANUP_AGE).delete()
    login = OAuthLogin.objects.create(
        state=secrets.token_urlsafe(32), redirect_uri=redirect_uri, account=account,
        created_at=now)
    with _client(client) as oauth:
        return login, oauth.authorize_url(redirect_uri, login.state)


def parse_callback(callback_url_or_query: str) -> dict[str, str]:
    """code/state/error from a pasted callback URL, a `?query` or a bare query. Also looks
    inside a `next=` parameter (the URL of a login page the callback was redirected to)."""
    text = (callback_url_or_query or "").strip()
    if "://" in text or text.startswith("/"):
        parts = urlsplit(text)
        query = parts.query or parts.fragment
    else:
        query = text.lstrip("?#")
    params = {k: v[0].strip() for k, v in parse_qs(query).items() if v}
    if "code" not in params and "error" not in params and params.get("next"):
        return parse_callback(params["next"])
    return params


def _oauth_message(exc: OAuthError, cookie: bool = False) -> str:
    if exc.kind == "invalid_grant":
        return (_("iFlow refused the cookie (expired or already used). Start the login again.")
                if cookie else _("iFlow refused the authorization code (expired or already "
                                 "used). Start the login again."))
    if exc.kind == "overloaded":
        return _("iFlow is overloaded right now; try again in a minute.")
    if exc.kind == "transient":
        return _("Could not reach iFlow (%(reason)s); try again.") % {"reason": exc.message}
    if exc.kind == "unauthorized":
        return _("iFlow refused the OAuth client credentials (IFLOW_OAUTH_CLIENT_ID / "
                 "IFLOW_OAUTH_CLIENT_SECRET).")
    return _("iFlow answered unexpectedly: %(reason)s") % {"reason": exc.message}


def _claim_state(state: str) -> OAuthLogin:
    """Mark the login used, atomically: of two concurrent uses exactly one wins."""
    now = timezone.now()
    with transaction.atomic():
        claimed = OAuthLogin.objects.filter(
            state=state, used_at__isnull=True, created_at__gte=now - STATE_MAX_AGE
        ).update(used_at=now)
    login = OAuthLogin.objects.select_related("account").filter(state=state).first()
    if claimed == 1 and login is not None:
        return login
    if login is None:
        raise LoginError(_("Unknown login: this URL does not belong to a login started here. "
                           "Start the login again."))
    if login.used_at is not None:
        raise LoginError(_("This login was already completed (each login link works once). "
                           "Start the login again if needed."))
    raise LoginError(_("This login expired (older than 15 minutes). Start the login again."))


def finish_oauth_login(
    callback_url_or_query: str,
    client: OAuthClient | None = None,
    *,
    allowed_states: Collection[str] | None = None,
) -> Account:
    """Finish a login from the callback: verify and use up the state, exchange the code,
    fetch the chat key, then create or update the iFlow account.

    `allowed_states`, when given, are the states this browser session started; a state not in
    it is refused without being used up (a callback URL pushed by someone else)."""
    params = parse_callback(callback_url_or_query)
    if params.get("error"):
        reason = params.get("error_description") or params["error"]
        raise LoginError(_("iFlow did not approve the login: %(reason)s")
                         % {"reason": reason[:200]})
    code, state = params.get("code", ""), params.get("state", "")
    if not code or not state:
        raise LoginError(_("The URL has no code and state: paste the whole address you "
                           "landed on after approving the login on iFlow."))
    if allowed_states is not None and state not in allowed_states:
        raise LoginError(_("This login was not started from this browser session. Start it "
                           "again from here."))
    login = _claim_state(state)
    try:
        with _client(client) as oauth:
            tokens = oauth.exchange_code(code, login.redirect_uri)
            info = oauth.user_info(tokens.access_token)
    except OAuthError as exc:
        log.warning("OAuth login failed: %s (%s)", exc.message, exc.kind)
        raise LoginError(_oauth_message(exc)) from exc

    with transaction.atomic():
        account = _find_oauth_account(login, info.email, info.phone)
        if account is None:
            account = Account(provider=Provider.IFLOW,
                              base_url=DEFAULT_BASE_URLS[Provider.IFLOW])
        who = info.email or info.phone or "account"
        if not account.label or account.pk is None:
            account.label = f"iFlow {who}"[:100]
        if not account.base_url:
            account.base_url = DEFAULT_BASE_URLS[Provider.IFLOW]
        account.provider = Provider.IFLOW
        account.api_key = info.api_key
        account.oauth_access_token = tokens.access_token
        account.oauth_refresh_token = tokens.refresh_token
        account.access_token_expires_at = tokens.expires_at
        account.email = info.email or account.email
        account.phone = info.phone or account.phone
        _mark_fresh(account)
        account.save()
    log.info("OAuth login: account %s (%s)", account.pk, account.label)
    return account


def _find_oauth_account(login: OAuthLogin, email: str, phone: str) -> Account | None:
    if login.account_id is not None:
        found = Account.objects.select_for_update().filter(pk=login.account_id).first()
        if found is not None:
            return found
    iflow = Account.objects.select_for_update().filter(provider=Provider.IFLOW)
    if email:  # the identity; the phone only when iFlow gives no email
        return iflow.filter(email__iexact=email).order_by("id").first()
    if phone:
        return iflow.filter(phone=phone).order_by("id").first()
    return None


def _mark_fresh(account: Account) -> None:
    now = timezone.now()
    account.state = Account.State.ACTIVE
    account.last_error = ""
    account.refresh_failures = 0
    account.next_refresh_attempt_at = None
    account.cooldown_until = None
    account.last_refreshed_at = now


# --- cookie --------------------------------------------------------------------------------


def add_cookie_account(
    bxauth: str, client: OAuthClient | None = None, *, account: Account | None = None
) -> Account:
    """An iFlow account from a platform.iflow.cn BXAuth cookie. When the platform shows only
    a mask of the key, or the key has expired, a new key is issued under the same name."""
    try:
        value = normalize_bxauth(bxauth)
    except ValueError as exc:
        raise LoginError(_("That does not look like a BXAuth cookie: %(reason)s.")
                         % {"reason": exc}) from exc
    try:
        with _client(client) as oauth:
            key = oauth.cookie_api_key(value)
            if not key.api_key or key.has_expired:
                if not key.name:
                    raise LoginError(_("The platform shows no full key and no key name to "
                                       "re-issue it under; create a key on platform.iflow.cn "
                                       "first."))
                key = oauth.reissue_cookie_api_key(value, key.name)
    except OAuthError as exc:
        log.warning("cookie login failed: %s (%s)", exc.message, exc.kind)
        if exc.kind == "unauthorized":
            raise LoginError(_("The BXAuth cookie was refused (expired or logged out). Log in "
                               "on platform.iflow.cn again and copy a fresh one.")) from exc
        raise LoginError(_oauth_message(exc, cookie=True)) from exc

    with transaction.atomic():
        target = account
        if target is None:
            for candidate in Account.objects.select_for_update().filter(
                    provider=Provider.IFLOW).exclude(cookie=""):
                if candidate.cookie == value or candidate.api_key == key.api_key:
                    target = candidate
                    break
        if target is None:
            target = Account(provider=Provider.IFLOW, base_url=DEFAULT_BASE_URLS[Provider.IFLOW],
                             label=f"iFlow {key.name or 'cookie'} (cookie)"[:100])
        target.provider = Provider.IFLOW
        target.base_url = target.base_url or DEFAULT_BASE_URLS[Provider.IFLOW]
        target.cookie = value
        target.api_key = key.api_key
        target.api_key_expires_at = key.expires_at
        target.api_key_name = key.name[:100]
        _mark_fresh(target)
        target.save()
    log.info("cookie login: account %s (%s)", target.pk, target.label)
    return target


# --- plain key -----------------------------------------------------------------------------


def add_api_key_account(
    provider: str, label: str, base_url: str, api_key: str, models: list[str] | None = None,
    **options: str,
) -> Account:
    """An account for any provider from its base URL and key; `models` are linked to it
    (created in the catalogue when missing). `options`: the Anthropic-compatible account's
    auth_header, anthropic_version, beta_policy, beta_allowlist."""
    if provider not in Provider.values:
        raise LoginError(_("Unknown provider %(provider)r: use one of %(known)s.")
                         % {"provider": provider, "known": ", ".join(Provider.values)})
    account = Account(
        provider=provider,
        label=(label or "").strip(),
        base_url=(base_url or "").strip().rstrip("/") or DEFAULT_BASE_URLS[Provider(provider)],
        api_key=(api_key or "").strip(),
        max_concurrency=1 if provider == Provider.IFLOW else 0,
        **{name: value for name, value in options.items() if value is not None},
    )
    validate_account(account)
    names = [m.strip() for m in models or [] if m and m.strip()]
    with transaction.atomic():
        account.save()
        for name in names:
            info, _created = ModelInfo.objects.get_or_create(
                model_id=name, defaults={"provider": provider, "display_name": name})
            info.accounts.add(account)
    return account


def validate_account(account: Account) -> None:
    """The model's own checks (choices, lengths, URL) on an account about to be saved; a
    LoginError naming every problem. Its secrets are not checked (an empty key is allowed)."""
    try:
        account.full_clean(exclude=["api_key", "oauth_access_token", "oauth_refresh_token",
                                    "cookie"])
    except ValidationError as exc:
        problems = "; ".join(f"{name}: {' '.join(msgs)}"
                             for name, msgs in exc.message_dict.items())
        raise LoginError(_("Invalid account: %(problems)s") % {"problems": problems}) from exc


# An Anthropic-compatible account's own settings (Account fields), in the order they are named.
ANTHROPIC_SETTINGS = ("auth_header", "beta_policy", "beta_allowlist", "anthropic_version")


def anthropic_settings(
    provider: str, base_url: str, preset_name: str | None, given: dict[str, str | None],
    names: dict[str, str], anthropic: str,
) -> tuple[str, str, dict[str, str]]:
    """The provider, base URL and Anthropic-compatible settings an account is added with, from
    a preset (which makes the provider anthropic and fills in the base URL, the key header and
    the beta policy) and the settings `given` (Account field -> value; None or "" = not given),
    which win over the preset. `names` says how the user wrote each setting and `anthropic`
    how they choose the provider, for the error when settings are given for another provider
    (`addaccount`: --auth-header …, "--provider anthropic"; the environment:
    UPSTREAM_AUTH_HEADER …, "UPSTREAM_PROVIDER=anthropic")."""
    extra: dict[str, str] = {}
    chosen = preset(preset_name) if preset_name else None
    if preset_name and chosen is None:
        raise LoginError(_("Unknown preset %(preset)r.") % {"preset": preset_name})
    if chosen is not None:
        provider = Provider.ANTHROPIC
        base_url = base_url or chosen.base_url
        extra = {"auth_header": chosen.auth_header, "beta_policy": chosen.beta_policy}
    explicit = {field: value.strip() for field, value in given.items()
                if field in ANTHROPIC_SETTINGS and value is not None and value.strip()}
    if explicit and provider != Provider.ANTHROPIC:
        options = ", ".join(names.get(field, field) for field in ANTHROPIC_SETTINGS
                            if field in explicit)
        raise LoginError(_("%(options)s: only for %(anthropic)s")
                         % {"options": options, "anthropic": anthropic})
    return provider, base_url, {**extra, **explicit}
