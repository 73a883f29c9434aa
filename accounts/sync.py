"""The model sync behind `iflow2api syncmodels` and the admin's "Sync models": the model lists
the accounts' upstreams give (read by accounts/upstream_calls.py) brought into the catalogue,
new models created and linked, blanks filled in, what an admin set left alone.

Async, like every upstream call; the database work runs in sync_to_async. From sync code (a
command, an admin action) call `sync_models` through asgiref's `async_to_sync`, which keeps the
database work on the calling thread. Nothing here returns or logs a secret: upstream messages
are cut short and any of the account's secrets in them is masked (upstream_calls.describe).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import sync_to_async
from django.db import transaction
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext

from accounts.models import Account, ModelInfo
from accounts.services import accounts_with_models
from accounts.upstream_calls import (
    LISTING_PROVIDERS,
    account_head,
    account_secrets,
    describe,
    list_models,
    upstream_client,
)
from upstream.client import UpstreamClient
from upstream.providers import UnknownProviderError
from upstream.types import UpstreamError

log = logging.getLogger(__name__)

MODEL_ID_MAX = ModelInfo._meta.get_field("model_id").max_length
DISPLAY_MAX = ModelInfo._meta.get_field("display_name").max_length
OWNED_BY_MAX = ModelInfo._meta.get_field("owned_by").max_length

SYNC_WORDS = {
    "created": gettext_lazy("created"),
    "linked": gettext_lazy("linked"),
    "updated": gettext_lazy("updated"),
    "kept": gettext_lazy("left alone"),
    "missing": gettext_lazy("no longer listed upstream (left as they are)"),
}


@dataclass
class AccountSync:
    account_id: int
    label: str
    listed: list[str] = field(default_factory=list)  # ids the upstream lists
    created: list[str] = field(default_factory=list)  # new catalogue models, linked
    linked: list[str] = field(default_factory=list)  # existing models now linked to it
    updated: list[str] = field(default_factory=list)  # blank owned_by / display_name filled in
    kept: list[str] = field(default_factory=list)  # left alone, with the reason
    missing: list[str] = field(default_factory=list)  # linked here, no longer listed upstream
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def summary(self) -> str:
        head = account_head(self.account_id, self.label)
        if self.error:
            return _("%(account)s: failed: %(error)s") % {"account": head, "error": self.error}
        parts = [_("%(count)d models listed") % {"count": len(self.listed)}]
        for name, ids in ((SYNC_WORDS["created"], self.created),
                          (SYNC_WORDS["linked"], self.linked),
                          (SYNC_WORDS["updated"], self.updated),
                          (SYNC_WORDS["kept"], self.kept),
                          (SYNC_WORDS["missing"], self.missing)):
            if ids:
                parts.append(f"{name}: {', '.join(ids)}")
        return f"{head}: " + "; ".join(parts)


@dataclass
class SyncReport:
    accounts: list[AccountSync] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # selected accounts that cannot be synced

    def count(self, name: str) -> int:
        return sum(len(getattr(a, name)) for a in self.accounts)

    @property
    def failed(self) -> list[AccountSync]:
        return [a for a in self.accounts if a.error]

    @property
    def changed(self) -> bool:
        """Models were created, linked or updated: the routing snapshot is out of date."""
        return any(a.created or a.linked or a.updated for a in self.accounts)

    def summary(self) -> str:
        n = len(self.accounts)
        return ngettext(
            "Synced %(synced)d of %(count)d OpenAI-compatible account: %(created)d models "
            "created, %(linked)d linked, %(updated)d updated, %(missing)d no longer listed "
            "upstream (left as they are), %(failed)d failed.",
            "Synced %(synced)d of %(count)d OpenAI-compatible accounts: %(created)d models "
            "created, %(linked)d linked, %(updated)d updated, %(missing)d no longer listed "
            "upstream (left as they are), %(failed)d failed.", n,
        ) % {"synced": n - len(self.failed), "count": n, "created": self.count("created"),
             "linked": self.count("linked"), "updated": self.count("updated"),
             "missing": self.count("missing"), "failed": len(self.failed)}


def _accounts_to_sync(account_ids: list[int] | None) -> tuple[list[Account], list[str]]:
    qs = Account.objects.order_by("pk")
    if account_ids is None:
        return list(qs.filter(provider__in=LISTING_PROVIDERS, enabled=True)), []
    found = {a.pk: a for a in qs.filter(pk__in=account_ids)}
    accounts, skipped = [], []
    for pk in dict.fromkeys(account_ids):
        account = found.get(pk)
        if account is None:
            skipped.append(_("account %(id)s: no such account") % {"id": pk})
        elif account.provider not in LISTING_PROVIDERS:
            skipped.append(_("%(account)s: %(provider)s accounts have no dependable model list; "
                             "edit the catalogue instead")
                           % {"account": account_head(pk, account.label),
                              "provider": account.get_provider_display()})
        else:
            accounts.append(account)
    return accounts, skipped


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _context_length(entry: dict[str, Any]) -> int | None:
    """The context a /models entry states: `context_length` (OpenRouter and others), vLLM's
    `max_model_len`, llama.cpp's `meta.n_ctx` (what the server runs with, not `n_ctx_train`)."""
    meta = entry.get("meta")
    return (_int_or_none(entry.get("context_length")) or _int_or_none(entry.get("max_model_len"))
            or (_int_or_none(meta.get("n_ctx")) if isinstance(meta, dict) else None))


def _output_limit(entry: dict[str, Any]) -> int | None:
    """The output limit a /models entry states: `max_output_tokens` / `max_completion_tokens`,
    OpenRouter's `top_provider.max_completion_tokens`. Without one, requests are held to
    DEFAULT_MAX_OUTPUT_TOKENS (proxy/pipeline.output_limit)."""
    top = entry.get("top_provider")
    return (_int_or_none(entry.get("max_output_tokens"))
            or _int_or_none(entry.get("max_completion_tokens"))
            or (_int_or_none(top.get("max_completion_tokens")) if isinstance(top, dict) else None))


def _providers_served_by_default(account: Account) -> set[str]:
    """The providers with an account (other than `account`) that has no model list of its own:
    such an account serves every unlinked catalogue model of its provider."""
    return set(Account.objects.exclude(pk=account.pk).exclude(pk__in=accounts_with_models())
               .values_list("provider", flat=True))


def _store_listing(account: Account, entries: list[dict[str, Any]], item: AccountSync) -> None:
    by_default = _providers_served_by_default(account)
    shared: list[ModelInfo] = []  # unlinked, of its provider, served by accounts without a list
    listing: dict[str, dict[str, Any]] = {}
    for entry in entries:
        listing.setdefault(entry["id"], entry)
    item.listed = list(listing)
    existing = {m.model_id: m for m in
                ModelInfo.objects.filter(model_id__in=listing).prefetch_related("accounts")}
    for model_id, entry in listing.items():
        owned_by = str(entry.get("owned_by") or "")[:OWNED_BY_MAX]
        display = str(entry.get("display_name") or entry.get("name") or model_id)[:DISPLAY_MAX]
        info = existing.get(model_id)
        if info is None:
            if len(model_id) > MODEL_ID_MAX:
                item.kept.append(_("%(model)s… (id longer than %(max)d)")
                                 % {"model": model_id[:40], "max": MODEL_ID_MAX})
                continue
            info = ModelInfo.objects.create(
                model_id=model_id, display_name=display, provider=account.provider,
                owned_by=owned_by, context_length=_context_length(entry),
                max_output_tokens=_output_limit(entry),
            )
            info.accounts.add(account)
            item.created.append(model_id)
            continue
        # Blanks are filled in; what an admin set is never overwritten.
        found = {"owned_by": owned_by, "display_name": display,
                 "context_length": _context_length(entry),
                 "max_output_tokens": _output_limit(entry)}
        changed = [name for name, value in found.items() if value and not getattr(info, name)]
        for name in changed:
            setattr(info, name, found[name])
        if changed:
            info.save(update_fields=changed)
            item.updated.append(model_id)
        linked = {a.pk for a in info.accounts.all()}
        if account.pk in linked:
            continue
        if linked or info.provider not in by_default:
            # Linked models are served by their accounts whatever their provider: one more.
            # An unlinked model that no account without a list of its own serves (an account
            # with a list serves that list only) serves nobody but this one: take it.
            info.accounts.add(account)
            item.linked.append(model_id)
        elif info.provider != account.provider:
            # Linking would take it away from the other provider's accounts (a linked model is
            # served only by its accounts): that is the admin's call.
            item.kept.append(_("%(model)s (served by the %(provider)s accounts; link it in the "
                               "admin to share it)")
                             % {"model": model_id, "provider": info.get_provider_display()})
        else:
            shared.append(info)
    if shared and ModelInfo.objects.filter(accounts=account).exists():
        # This account serves its list only, and linking would take these models away from
        # its provider's accounts without a list: the admin's call too.
        item.kept.extend(
            _("%(model)s (served by the %(provider)s accounts without a model list; link it "
              "in the admin to share it)")
            % {"model": info.model_id, "provider": info.get_provider_display()}
            for info in shared)
    # else: an account without a list of its own serves the unlinked models of its provider.
    item.missing = list(
        ModelInfo.objects.filter(accounts=account).exclude(model_id__in=listing)
        .order_by("model_id").values_list("model_id", flat=True))


def _store(accounts: list[Account], listings: list[list[dict[str, Any]] | BaseException],
           report: SyncReport) -> None:
    with transaction.atomic():
        for account, listing in zip(accounts, listings, strict=True):
            item = AccountSync(account.pk, account.label)
            report.accounts.append(item)
            if isinstance(listing, BaseException):
                item.error = describe(listing, account_secrets(account))
                log.warning("model sync of account %s failed: %s", account.pk, item.error)
                continue
            _store_listing(account, listing, item)


async def sync_models(
    account_ids: list[int] | None = None, *, client: UpstreamClient | None = None
) -> SyncReport:
    """List the models of every enabled OpenAI-compatible account (or of the given accounts)
    and bring the catalogue up to date: new models are created and linked to the account that
    lists them; models that disappeared upstream are only reported. A caller serving requests
    marks its routing snapshot stale when `report.changed` (accounts.services)."""
    report = SyncReport()
    accounts, report.skipped = await sync_to_async(_accounts_to_sync)(account_ids)
    async with upstream_client(client) as upstream:
        listings = await asyncio.gather(
            *(list_models(upstream, a) for a in accounts), return_exceptions=True)
    for listing in listings:
        if isinstance(listing, BaseException) and not isinstance(
                listing, UpstreamError | UnknownProviderError):
            raise listing
    await sync_to_async(_store)(accounts, listings, report)
    return report


def store_chosen(account: Account, entries: list[dict[str, Any]]) -> AccountSync:
    """Bring the chosen entries of a listing into the catalogue for the account, as the model
    sync does (created and linked, or left alone with the reason)."""
    item = AccountSync(account.pk, account.label)
    with transaction.atomic():
        _store_listing(account, entries, item)
    return item

