"""What a client is told when no account can serve its model: which accounts are out of
rotation, why, and how to fix it. Not retryable: retrying cannot help until an admin acts."""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.utils.translation import gettext

from accounts.models import Account
from accounts.services import ModelRef, out_of_rotation
from proxy.errors import ApiError, hide_secrets

# A status the SDKs and Claude Code do not retry (they retry 408, 409, 429 and 5xx).
STATUS = 403
REASON_MAX = 200
NAMED_MAX = 3


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
