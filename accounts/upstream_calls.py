"""Talking to an account's upstream outside a client request: reading its model list (paged)
for the model sync (accounts/sync.py) and the guided "add an upstream" page, and the admin's
"Test account" probe.

Async, like every upstream call (UpstreamClient); the database reads run in sync_to_async.
From sync code (a command, an admin action) call them through asgiref's `async_to_sync`, which
keeps the database work on the calling thread. Nothing here returns or logs a secret: upstream
messages are cut short and any of the account's secrets in them is masked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils.translation import gettext as _

from accounts.models import Account, ModelInfo, Provider
from accounts.services import target_for
from iflow2api_lib.redact import redact
from upstream.client import UpstreamClient
from upstream.providers import UnknownProviderError, get_provider
from upstream.providers.base import join_url
from upstream.types import PreparedRequest, UpstreamError

log = logging.getLogger(__name__)

SECRET_FIELDS = ("api_key", "oauth_access_token", "oauth_refresh_token", "cookie")
PROBE_READ_TIMEOUT = 60.0  # an admin page waits for the probe: not UPSTREAM_READ_TIMEOUT's 600 s
MAX_MESSAGE = 300
# Providers whose accounts list their models at {base}/models (iFlow's list is not dependable).
LISTING_PROVIDERS = (Provider.OPENAI, Provider.ANTHROPIC)


# ----------------------------------------------------------------------------- plumbing


def account_secrets(account: Account) -> tuple[str, ...]:
    return tuple(s for s in (getattr(account, n) for n in SECRET_FIELDS) if s)


def describe(error: Exception, secrets: tuple[str, ...]) -> str:
    # Masked first: the cut keeps no secret's start. Our own "HTTP 401 invalid_api_key:" prefix
    # is masked apart from the upstream's words (a code followed by ":" reads like `key: value`).
    if isinstance(error, UpstreamError):
        code = redact(error.code or "upstream_error", secrets)
        text = f"HTTP {error.status} {code}: {redact(error.message, secrets)}"
    else:
        text = f"{type(error).__name__}: {redact(str(error), secrets)}"
    return text[:MAX_MESSAGE]


def account_head(account_id: int, label: str) -> str:
    return _("account %(id)s “%(label)s”") % {"id": account_id, "label": label}


@contextlib.asynccontextmanager
async def upstream_client(
    client: UpstreamClient | None, read_timeout: float | None = None
) -> AsyncIterator[UpstreamClient]:
    """The given client, or one of our own for this call (closed afterwards: its connections
    belong to this event loop)."""
    if client is not None:
        yield client
        return
    conf = settings.IFLOW2API
    own = UpstreamClient(
        connect_timeout=conf["UPSTREAM_CONNECT_TIMEOUT"],
        read_timeout=min(conf["UPSTREAM_READ_TIMEOUT"], read_timeout or float("inf")),
        proxy=conf["UPSTREAM_PROXY"],
    )
    try:
        yield own
    finally:
        await own.aclose()


# ----------------------------------------------------------------------------- model lists

MAX_MODEL_PAGES = 20


async def list_models(client: UpstreamClient, account: Account) -> list[dict[str, Any]]:
    """GET {base}/models: the entries with a string id, in the upstream's order. Anthropic's
    list comes in pages (`has_more`, `last_id`): they are followed."""
    provider = get_provider(account.provider)
    target = target_for(account)
    entries: list[dict[str, Any]] = []
    prepared = provider.prepare_models(target)
    for _page in range(MAX_MODEL_PAGES):
        payload = await client.request_json(provider, prepared, "GET")
        data = payload.get("data")
        if not isinstance(data, list):
            raise UpstreamError(502, _("the upstream's /models answer has no `data` list"),
                                "upstream_invalid_models")
        entries += [e for e in data
                    if isinstance(e, dict) and isinstance(e.get("id"), str) and e["id"]]
        last_id = payload.get("last_id")
        if payload.get("has_more") is not True or not isinstance(last_id, str) or not last_id \
                or provider.wire != "messages":
            break
        prepared = provider.prepare_models(target, after_id=last_id)
    return entries


async def read_listing(account: Account, *, check_path: str = "",
                       client: UpstreamClient | None = None) -> list[dict[str, Any]]:
    """The upstream's model list for an account, saved or not: how the admin's guided "add an
    upstream" page tests a key (accounts/guided.py). `check_path`: a path under the base URL
    that must answer 200 as well, for a provider whose model list is public (OpenRouter)."""
    async with upstream_client(client, PROBE_READ_TIMEOUT) as upstream:
        if check_path:
            provider = get_provider(account.provider)
            listing = provider.prepare_models(target_for(account))
            await upstream.request_json(provider, PreparedRequest(
                join_url(account.base_url, check_path), listing.headers, b""), "GET")
        return await list_models(upstream, account)


# ----------------------------------------------------------------------------- probe


@dataclass
class ProbeResult:
    account_id: int
    label: str
    ok: bool
    model: str = ""
    latency_ms: int | None = None
    message: str = ""

    def summary(self) -> str:
        head = account_head(self.account_id, self.label)
        if self.ok:
            return (_("%(account)s: OK, %(model)s answered in %(ms)s ms")
                    % {"account": head, "model": self.model, "ms": self.latency_ms})
        via = f" ({self.model})" if self.model else ""
        return f"{head}{via}: {self.message}"


def _probe_subject(account_id: int) -> tuple[Account | None, str]:
    """The account and the catalogue model to ask (the default model when it serves it)."""
    account = Account.objects.filter(pk=account_id).first()
    if account is None:
        return None, ""
    served = list(ModelInfo.objects.filter(enabled=True, accounts=account).order_by("model_id"))
    if not served:
        served = list(ModelInfo.objects.filter(
            enabled=True, provider=account.provider, accounts__isnull=True).order_by("model_id"))
    default = settings.IFLOW2API["DEFAULT_MODEL"]
    served.sort(key=lambda m: m.model_id != default)
    return account, (served[0].upstream_id or served[0].model_id) if served else ""


async def probe_account(account_id: int, *, client: UpstreamClient | None = None) -> ProbeResult:
    """A tiny non-streaming chat completion ("ping", max_tokens 1) on the account."""
    account, model = await sync_to_async(_probe_subject)(account_id)
    if account is None:
        return ProbeResult(account_id, "?", False, message=_("no such account"))
    result = ProbeResult(account.pk, account.label, False, model)
    secrets = account_secrets(account)
    async with upstream_client(client, PROBE_READ_TIMEOUT) as upstream:
        try:
            provider = get_provider(account.provider)
            if not model and account.provider in LISTING_PROVIDERS:
                listed = await list_models(upstream, account)
                model = result.model = listed[0]["id"] if listed else ""
            if not model:
                result.message = _("no model to ask: link a model to this account in the "
                                   "catalogue (or run Sync models)")
                return result
            body = {"model": model, "messages": [{"role": "user", "content": "ping"}],
                    "max_tokens": 1}
            target = target_for(account)
            prepared = (provider.prepare_messages(target, body, stream=False)
                        if provider.wire == "messages" and provider.prepare_messages
                        else provider.prepare_chat(target, body, stream=False))
            started = time.perf_counter()
            await upstream.request_json(provider, prepared)
            result.latency_ms = round((time.perf_counter() - started) * 1000)
            result.ok = True
        except (UpstreamError, UnknownProviderError) as exc:
            result.message = describe(exc, secrets)
    log.info("probe of account %s: %s", account.pk,
             "ok" if result.ok else result.message)
    return result


async def probe_accounts(
    account_ids: list[int], *, client: UpstreamClient | None = None
) -> list[ProbeResult]:
    async with upstream_client(client, PROBE_READ_TIMEOUT) as upstream:
        return list(await asyncio.gather(
            *(probe_account(pk, client=upstream) for pk in account_ids)))
