"""Keeping iFlow credentials alive: OAuth tokens and cookie-issued API keys.

Plain functions (sync ORM, sync HTTP): Celery tasks (accounts/tasks.py) and the in-process
scheduler (accounts/scheduler.py) only call them.

- Due: an OAuth account (it has a refresh token) whose access token expires within
  REFRESH_OAUTH_BEFORE_HOURS (24 h), a cookie account whose key expires within
  REFRESH_COOKIE_BEFORE_HOURS (48 h), or an account whose last attempt failed — each once its
  `next_refresh_attempt_at` has passed, never when it needs a login or is blocked.
- Single flight: refresh tokens are single-use, so two refreshers of one account would kill it.
  `refresh_account` takes a lease (`refreshing_until`) with one conditional UPDATE, which works
  across threads, processes and hosts sharing the database; the loser returns "skipped".
- OAuth: refresh → store the tokens at once (the old refresh token is dead now) → getUserInfo →
  store the API key. The chat key is never the access token.
- Cookie: read the platform key; re-issue it when it expired, is only shown masked or expires
  within the threshold (or on a forced refresh).
- Failures: `invalid_grant` (or a refused cookie) → NEEDS_LOGIN, never retried; overloaded,
  transient and unusable answers (e.g. HTTP 200 without access_token) → retried after 30, 60,
  120, 240, then every 300 s, the state ERROR from the 5th failure on; refused OAuth client
  credentials → ERROR at once, retried every 300 s.
- Secrets never reach logs or `last_error`.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from celery import current_app
from django.conf import settings
from django.db.models import Q, QuerySet
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.models import Account, Provider
from accounts.oauth import OAuthClient, OAuthConfig, OAuthError
from accounts.services import invalidate_routing
from iflow2api_lib.redact import redact

if TYPE_CHECKING:
    from accounts.services import Routing
    from accounts.workers import AccountWorkers
    from iflow2api_lib.snapshot import Snapshot

log = logging.getLogger(__name__)


# Longer than a refresh can take (two HTTP calls of at most 15 s each, plus retries inside
# httpx): a lease that runs out while its holder still works would let a second refresher in.
LEASE_SECONDS = 300
BACKOFF_BASE_SECONDS = 30
BACKOFF_CAP_SECONDS = 300
MAX_FAILURES = 5  # transient failures in a row before the account shows ERROR
# A forced refresh right after another one (several requests got a 401 with the old key) is
# not repeated: the account was refreshed within this window.
RECENT_REFRESH_SECONDS = 30
# A cookie key whose expiry the platform did not say is looked at again after this long.
UNKNOWN_EXPIRY_RECHECK = timedelta(hours=6)
REFRESH_ACCOUNT_TASK = "accounts.tasks.refresh_account_task"

# RefreshResult.status values
REFRESHED = "refreshed"
SKIPPED = "skipped"  # another worker holds the lease
NOT_DUE = "not_due"
NEEDS_LOGIN = "needs_login"
FAILED = "failed"  # will be retried at next_attempt_at
NOT_REFRESHABLE = "not_refreshable"  # no such account, not iFlow, or no refresh credentials

OAUTH = "oauth"
COOKIE = "cookie"


@dataclass(frozen=True)
class RefreshResult:
    account_id: int
    status: str
    message: str = ""
    next_attempt_at: datetime | None = None

    @property
    def ok(self) -> bool:
        return self.status == REFRESHED

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["next_attempt_at"] = self.next_attempt_at.isoformat() if self.next_attempt_at else None
        return data


class RefreshFailure(Exception):
    """A failure found by the refresher itself (same shape as OAuthError)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retryable = kind in {"overloaded", "transient"}


def backoff_seconds(failures: int) -> int:
    """Delay before the next attempt after `failures` failures in a row: 30, 60, 120, 240, 300…"""
    return min(BACKOFF_BASE_SECONDS * 2 ** max(failures - 1, 0), BACKOFF_CAP_SECONDS)


def default_client() -> OAuthClient:
    return OAuthClient(OAuthConfig.from_settings())


def credential_kind(account: Account) -> str | None:
    if account.provider != Provider.IFLOW:
        return None
    if account.oauth_refresh_token:
        return OAUTH
    if account.cookie:
        return COOKIE
    return None


# --- what is due -------------------------------------------------------------------------------


def _due_queryset(now: datetime) -> QuerySet[Account]:
    conf = settings.IFLOW2API
    oauth_cut = now + timedelta(hours=float(conf["REFRESH_OAUTH_BEFORE_HOURS"]))
    cookie_cut = now + timedelta(hours=float(conf["REFRESH_COOKIE_BEFORE_HOURS"]))
    # Empty secrets are stored as "" (not encrypted), so these comparisons work in SQL.
    has_refresh_token = ~Q(oauth_refresh_token="")
    has_cookie = ~Q(cookie="")
    oauth_due = has_refresh_token & (
        Q(access_token_expires_at__isnull=True) | Q(access_token_expires_at__lt=oauth_cut)
    )
    cookie_due = Q(oauth_refresh_token="") & has_cookie & (
        Q(api_key_expires_at__isnull=True) | Q(api_key_expires_at__lt=cookie_cut)
    )
    retry_due = Q(refresh_failures__gt=0) & (has_refresh_token | has_cookie)
    return (
        Account.objects.filter(provider=Provider.IFLOW, enabled=True)
        .exclude(state__in=[Account.State.NEEDS_LOGIN, Account.State.BLOCKED])
        .filter(Q(next_refresh_attempt_at__isnull=True) | Q(next_refresh_attempt_at__lte=now))
        .filter(oauth_due | cookie_due | retry_due)
    )


def due_accounts(now: datetime | None = None) -> list[int]:
    """Ids of the accounts to refresh now."""
    return list(_due_queryset(now or timezone.now()).order_by("id").values_list("id", flat=True))


# --- one account -------------------------------------------------------------------------------


def refresh_account(
    account_id: int,
    *,
    now: datetime | None = None,
    client: OAuthClient | None = None,
    force: bool = False,
    routing: Snapshot[Routing] | None = None,
) -> RefreshResult:
    """Refresh one account if it is due (or `force`), unless another worker is at it.
    `routing`: the snapshot to mark stale when the account's state changes (the Runtime's,
    in a server; None in a command or a Celery worker, which serve no requests)."""
    now = now or timezone.now()
    lease_until = now + timedelta(seconds=LEASE_SECONDS)
    taken = (
        Account.objects.filter(pk=account_id)
        .filter(Q(refreshing_until__isnull=True) | Q(refreshing_until__lt=now))
        .update(refreshing_until=lease_until)
    )
    if not taken:
        if Account.objects.filter(pk=account_id).exists():
            return RefreshResult(account_id, SKIPPED, _("another worker is refreshing it"))
        return RefreshResult(account_id, NOT_REFRESHABLE, _("no such account"))
    own_client = client is None
    try:
        # Read after taking the lease: whoever held it before may have just refreshed.
        account = Account.objects.get(pk=account_id)
        kind = credential_kind(account)
        if kind is None:
            return RefreshResult(account_id, NOT_REFRESHABLE,
                                 _("not an iFlow account with a refresh token or cookie"))
        if not force and not _due_queryset(now).filter(pk=account_id).exists():
            return RefreshResult(account_id, NOT_DUE)
        if force and account.last_refreshed_at and (
            now - account.last_refreshed_at < timedelta(seconds=RECENT_REFRESH_SECONDS)
        ):
            return RefreshResult(account_id, NOT_DUE, _("refreshed moments ago"))
        if client is None:
            client = default_client()
        try:
            if kind == OAUTH:
                _refresh_oauth(account, client, now, force)
            else:
                _refresh_cookie(account, client, now, force)
        except Exception as exc:  # every failure is recorded, none escapes
            return _record_failure(account, kind, exc, now, routing)
        return _record_success(account, kind, now, force, routing)
    finally:
        if own_client and client is not None:
            client.close()
        Account.objects.filter(pk=account_id, refreshing_until=lease_until).update(
            refreshing_until=None)


def _oauth_token_due(account: Account, now: datetime) -> bool:
    before = timedelta(hours=float(settings.IFLOW2API["REFRESH_OAUTH_BEFORE_HOURS"]))
    expires = account.access_token_expires_at
    return not account.oauth_access_token or expires is None or expires - now < before


def _refresh_oauth(account: Account, client: OAuthClient, now: datetime, force: bool) -> None:
    # A retry after getUserInfo failed finds a fresh access token: only the key is missing.
    if force or _oauth_token_due(account, now):
        tokens = client.refresh(account.oauth_refresh_token)
        # Store at once: the old refresh token is spent, whatever happens next.
        account.oauth_access_token = tokens.access_token
        account.oauth_refresh_token = tokens.refresh_token or account.oauth_refresh_token
        account.access_token_expires_at = tokens.expires_at
        account.save(update_fields=["oauth_access_token", "oauth_refresh_token",
                                    "access_token_expires_at", "updated_at"])
    # The chat key comes from getUserInfo after EVERY refresh; it is not the access token.
    info = client.user_info(account.oauth_access_token)
    if not info.api_key or info.api_key == account.oauth_access_token:
        raise RefreshFailure("invalid_response", "getUserInfo returned no usable apiKey")
    account.api_key = info.api_key
    fields = ["api_key", "updated_at"]
    if info.email:
        account.email = info.email[:200]
        fields.append("email")
    if info.phone:
        account.phone = info.phone[:40]
        fields.append("phone")
    account.save(update_fields=fields)


def _refresh_cookie(account: Account, client: OAuthClient, now: datetime, force: bool) -> None:
    before = timedelta(hours=float(settings.IFLOW2API["REFRESH_COOKIE_BEFORE_HOURS"]))
    key = client.cookie_api_key(account.cookie)
    name = key.name or account.api_key_name or account.label or "iflow2api"
    if (force or key.has_expired or not key.api_key or key.expires_at is None
            or key.expires_at - now < before):
        key = client.reissue_cookie_api_key(account.cookie, name)
        if not key.api_key:
            raise RefreshFailure("invalid_response", "the re-issued key was not returned")
    account.api_key = key.api_key
    account.api_key_expires_at = key.expires_at
    account.api_key_name = (key.name or name)[:100]
    account.save(update_fields=["api_key", "api_key_expires_at", "api_key_name", "updated_at"])


def _next_check(account: Account, kind: str, now: datetime) -> datetime | None:
    """When a credential that is due again at once (it lives shorter than the threshold, or
    its expiry is unknown) may be looked at next: not every cycle."""
    conf = settings.IFLOW2API
    if kind == OAUTH:
        expires = account.access_token_expires_at
        before = timedelta(hours=float(conf["REFRESH_OAUTH_BEFORE_HOURS"]))
    else:
        expires = account.api_key_expires_at
        before = timedelta(hours=float(conf["REFRESH_COOKIE_BEFORE_HOURS"]))
    if expires is None:
        return now + UNKNOWN_EXPIRY_RECHECK
    left = expires - now
    if left < before:
        return now + max(left / 2, timedelta(seconds=BACKOFF_BASE_SECONDS))
    return None


def _record_success(account: Account, kind: str, now: datetime, force: bool,
                    routing: Snapshot[Routing] | None) -> RefreshResult:
    fields: dict[str, Any] = {
        "last_error": "", "refresh_failures": 0, "last_refreshed_at": now,
        "next_refresh_attempt_at": _next_check(account, kind, now),
    }
    # A forced refresh answers a 401/439 cooldown: the new key ends it. A scheduled one leaves
    # a rate-limit cooldown alone.
    if force or account.state != Account.State.COOLING:
        fields["state"] = Account.State.ACTIVE
    if force:
        fields["cooldown_until"] = None
    Account.objects.filter(pk=account.pk).update(**fields)
    invalidate_routing(routing)
    log.info("refreshed account %s (%s)", account.pk, account.label)
    return RefreshResult(account.pk, REFRESHED)


def _record_failure(account: Account, kind: str, exc: Exception, now: datetime,
                    routing: Snapshot[Routing] | None) -> RefreshResult:
    if isinstance(exc, OAuthError | RefreshFailure):
        error_kind, message = exc.kind, _scrub(exc.message, account)
    else:  # a bug or an unexpected library error: retried, its text not trusted
        error_kind, message = "transient", f"unexpected {type(exc).__name__}"
        log.error("refresh of account %s raised %s", account.pk, type(exc).__name__)
        log.debug("refresh of account %s: traceback", account.pk, exc_info=exc)
    failures = account.refresh_failures + 1
    if error_kind == "invalid_grant" or (kind == COOKIE and error_kind == "unauthorized"):
        what = ("the refresh token was rejected (invalid_grant)" if kind == OAUTH
                else "the BXAuth cookie was refused")
        error = f"{what}: log in again in the admin ({message})"[:1000]
        Account.objects.filter(pk=account.pk).update(
            state=Account.State.NEEDS_LOGIN, last_error=error, refresh_failures=failures,
            next_refresh_attempt_at=None)
        invalidate_routing(routing)
        log.warning("account %s (%s) needs a new login: %s", account.pk, account.label, message)
        return RefreshResult(account.pk, NEEDS_LOGIN, error)
    # overloaded / transient / invalid_response (e.g. HTTP 200 without access_token, which
    # iFlow answers when busy): back off and try again. Refused client credentials are a
    # configuration problem: ERROR at once, retried slowly.
    retried = error_kind in {"overloaded", "transient", "invalid_response"}
    delay = backoff_seconds(failures) if retried else BACKOFF_CAP_SECONDS
    next_at = now + timedelta(seconds=delay)
    fields: dict[str, Any] = {"refresh_failures": failures, "next_refresh_attempt_at": next_at}
    error = (f"refresh failed {failures} time(s) in a row ({error_kind}): {message}; "
             f"next attempt at {next_at:%Y-%m-%d %H:%M:%S} UTC")[:1000]
    fields["last_error"] = error
    if failures >= MAX_FAILURES or not retried:
        fields["state"] = Account.State.ERROR
    Account.objects.filter(pk=account.pk).update(**fields)
    if "state" in fields:
        invalidate_routing(routing)
    log.warning("refresh of account %s (%s) failed (%s, attempt %s): %s; next in %s s",
                account.pk, account.label, error_kind, failures, message, delay)
    return RefreshResult(account.pk, FAILED, error, next_at)


def _scrub(text: str, account: Account) -> str:
    """Cut any secret of the account out of a message (the client already does; belt and
    braces)."""
    secrets = (account.oauth_access_token, account.oauth_refresh_token, account.api_key,
               account.cookie)
    return redact(str(text or ""), secrets)[:500]


# --- all due accounts, and the reactive path ---------------------------------------------------


def refresh_due_accounts(
    now: datetime | None = None, *, client: OAuthClient | None = None,
    routing: Snapshot[Routing] | None = None,
) -> list[RefreshResult]:
    """Refresh every due account, one after the other. Never raises for one account."""
    ids = due_accounts(now or timezone.now())
    if not ids:
        return []
    own_client = client is None
    client = client or default_client()
    results = []
    try:
        for account_id in ids:
            try:
                results.append(refresh_account(account_id, now=now, client=client,
                                               routing=routing))
            except Exception as exc:  # e.g. the database went away
                log.exception("refresh of account %s failed", account_id)
                results.append(
                    RefreshResult(account_id, FAILED, f"unexpected {type(exc).__name__}"))
    finally:
        if own_client:
            client.close()
    return results


def cool_down_for_auth(account_id: int, now: datetime | None = None,
                       routing: Snapshot[Routing] | None = None) -> None:
    """Take the account out of rotation for AUTH_COOLDOWN_SECONDS while it is refreshed."""
    now = now or timezone.now()
    until = now + timedelta(seconds=float(settings.IFLOW2API["AUTH_COOLDOWN_SECONDS"]))
    Account.objects.filter(pk=account_id).exclude(
        state__in=[Account.State.NEEDS_LOGIN, Account.State.BLOCKED]
    ).update(state=Account.State.COOLING, cooldown_until=until)
    invalidate_routing(routing)


def request_refresh(account_id: int, workers: AccountWorkers,
                    routing: Snapshot[Routing] | None = None) -> None:
    """The upstream refused this account's key as expired: refresh it now (in the background).
    The pool has cooled it down already."""
    request_refresh_now(account_id, workers, cool_down=False, routing=routing)


def request_refresh_now(account_id: int, workers: AccountWorkers, *, cool_down: bool = True,
                        routing: Snapshot[Routing] | None = None
                        ) -> Future[RefreshResult | None]:
    """The chat endpoint answered 401/439 for this account: cool it down and refresh it at once.

    Returns at once (safe to call from async code: it does no I/O in the caller's thread). In a
    background thread it sets state COOLING / cooldown_until, then enqueues
    `refresh_account_task(force=True)` for the Celery worker when REDIS_URL is set (falling back
    to refreshing in that thread if the broker is unreachable), or refreshes in that thread
    otherwise. The lease keeps it single-flight with the scheduled refreshes. `cool_down=False`:
    the caller has cooled the account down already. `workers`: the process's (its Runtime's);
    `routing`: the snapshot to mark stale as the account's state changes.
    """
    return workers.submit(_refresh_now, account_id, cool_down, routing)


def _refresh_now(account_id: int, cool_down: bool = True,
                 routing: Snapshot[Routing] | None = None) -> RefreshResult | None:
    if cool_down:
        cool_down_for_auth(account_id, routing=routing)
    if settings.REDIS_URL:
        try:
            # By name: the task module wraps this one (accounts/tasks.py).
            current_app.send_task(
                REFRESH_ACCOUNT_TASK, (account_id,), {"force": True}, retry=True,
                retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5})
            return None
        except Exception as exc:  # the broker is away: do it here
            log.warning("could not enqueue the refresh of account %s (%s); refreshing here",
                        account_id, type(exc).__name__)
    return refresh_account(account_id, force=True, routing=routing)
