"""What a client is told when no account can serve its model: which accounts are out of
rotation, why, and how to fix it; or that every account cools down for minutes after upstream
errors. Not retryable: retrying cannot help until an admin acts (or the cooldown ends)."""

from __future__ import annotations

import math

from asgiref.sync import sync_to_async
from django.utils.translation import gettext

from accounts.models import Account
from accounts.services import AccountRef, ModelRef, out_of_rotation
from proxy.errors import ApiError, hide_secrets

# A status the SDKs and Claude Code do not retry (they retry 408, 409, 429 and 5xx).
STATUS = 403
REASON_MAX = 200
NAMED_MAX = 3
# The longest Retry-After the openai and anthropic SDKs wait for; beyond it they retry after
# their own short backoff (0.5 … 8 s), which cannot outlast a cooldown of minutes.
RETRY_AFTER_HONOURED = 60.0


async def no_account_error(model: ModelRef, allowed: frozenset[int]) -> ApiError:
    accounts = await sync_to_async(out_of_rotation)(model, allowed)
    if not accounts:
        message = gettext(
            "no upstream account serves `%(model)s`: add one with `iflow2api addaccount` or in "
            "the admin (Accounts → Add), or set IFLOW_API_KEY or UPSTREAM_BASE_URL"
        ) % {"model": model.id}
    else:
        details = "; ".join(describe(account) for account in accounts[:NAMED_MAX])
        message = gettext(
            "no usable upstream account for `%(model)s`: %(details)s; or add another account "
            "with `iflow2api addaccount`") % {"model": model.id, "details": details}
    error = ApiError(STATUS, message, "no_upstream", should_retry=False)
    hide_secrets(error, (a.api_key for a in accounts))
    return error


async def cooling_down_error(model: ModelRef, candidates: list[AccountRef],
                             wait: float) -> ApiError:
    """Every account for `model` cools down after an upstream error (a refused key, no
    balance …) for longer than clients wait: a 429 with the time, which the SDKs are told not
    to retry (x-should-retry: false), naming each account's last error and the fix."""
    accounts = await sync_to_async(_cooling)([a.id for a in candidates])
    details = "; ".join(
        gettext("“%(label)s” (%(why)s)") % {"label": a.label,
                                            "why": a.last_error[:REASON_MAX].strip() or "?"}
        for a in accounts[:NAMED_MAX])
    message = gettext(
        "every account for `%(model)s` is cooling down after an upstream error for %(minutes)s "
        "more minute(s): %(details)s. Fix the cause (a key, a balance) in the admin "
        "(Accounts), or add another account with `iflow2api addaccount`; the account is tried "
        "again when its cooldown ends") % {
            "model": model.id, "minutes": max(1, math.ceil(wait / 60)), "details": details}
    error = ApiError(429, message, "accounts_cooling_down", retry_after=wait,
                     should_retry=False)
    hide_secrets(error, (a.api_key for a in candidates))
    return error


def _cooling(ids: list[int]) -> list[Account]:
    return list(Account.objects.filter(pk__in=ids).order_by("id"))


def describe(account: Account) -> str:
    """One account's state and its fix, in a sentence."""
    reason = account.last_error[:REASON_MAX].strip()
    names = {"label": account.label, "why": f" ({reason})" if reason else ""}
    if not account.enabled:
        return gettext("the account “%(label)s” is disabled: enable it in the admin (Accounts → "
                       "Enable selected accounts)") % names
    if account.state == Account.State.NEEDS_LOGIN:
        return gettext("the account “%(label)s” needs a login%(why)s: log in again with "
                       "`iflow2api iflow_login` or from the account's page in the admin") % names
    return gettext("the account “%(label)s” is blocked, the upstream refused its key"
                   "%(why)s: once the key works, enable it again in the admin (Accounts → "
                   "Enable selected accounts)") % names
