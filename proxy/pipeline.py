"""The request path shared by both APIs: client key → model → account → provider → upstream."""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.conf import settings

from accounts.models import Account
from accounts.pool import Lease, NoAccount, PoolExhausted, pool
from accounts.services import AccountRef, ModelRef, request_refresh, routing
from proxy.errors import ApiError
from proxy.http import ApiRequest
from proxy.upstream.client import UpstreamClient
from proxy.upstream.providers import get_provider
from proxy.upstream.providers.base import Provider
from proxy.upstream.types import PreparedRequest, UpstreamError, UpstreamTarget
from proxy.wire import loads

T = TypeVar("T")


@dataclass(frozen=True)
class GatewayOptions:
    preserve_reasoning: bool
    keepalive_seconds: float
    prelude_seconds: float
    api_keys: tuple[str, ...]


def options() -> GatewayOptions:
    conf = settings.IFLOW2API
    return GatewayOptions(
        preserve_reasoning=conf["PRESERVE_REASONING_CONTENT"],
        keepalive_seconds=conf["KEEPALIVE_SECONDS"],
        prelude_seconds=conf["STREAM_PRELUDE_SECONDS"],
        api_keys=tuple(conf["API_KEYS"]),
    )


@cache
def upstream_client() -> UpstreamClient:
    conf = settings.IFLOW2API
    return UpstreamClient(
        connect_timeout=conf["UPSTREAM_CONNECT_TIMEOUT"],
        read_timeout=conf["UPSTREAM_READ_TIMEOUT"],
        proxy=conf["UPSTREAM_PROXY"],
    )


def client_key(request: ApiRequest) -> str:
    key = request.headers.get("x-api-key", "")
    auth = request.headers.get("authorization", "")
    if not key and auth[:7].lower() == "bearer ":
        key = auth[7:].strip()
    return key


def check_client_key(request: ApiRequest, opts: GatewayOptions) -> None:
    if not opts.api_keys:
        return
    given = client_key(request).encode()
    if not given:
        raise ApiError(401, "missing API key: send it as `Authorization: Bearer` or `x-api-key`",
                       "missing_api_key")
    if not any(hmac.compare_digest(given, key.encode()) for key in opts.api_keys):
        raise ApiError(401, "invalid API key", "invalid_api_key")


def parse_json_object(body: bytes) -> dict[str, Any]:
    if not body.strip():
        raise ApiError(400, "the request body is empty; send a JSON object", "invalid_json")
    try:
        data = loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the request body is not valid JSON: {exc}", "invalid_json") from exc
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object", "invalid_json")
    return data


DATA_URL_ONLY_PROVIDERS = frozenset({"iflow"})


@dataclass(frozen=True)
class Route:
    model: ModelRef
    account: AccountRef
    provider: Provider
    target: UpstreamTarget

    @property
    def inlines_images(self) -> bool:
        """iFlow takes images only as data URLs: URL images are fetched and inlined."""
        return self.provider.name in DATA_URL_ONLY_PROVIDERS

    def prepare(self, body: dict[str, Any], *, stream: bool) -> PreparedRequest:
        return self.provider.prepare_chat(self.target, body, stream=stream)


def tier_model(name: str) -> str:
    """The real model a `claude-*` (or otherwise unknown) name stands for."""
    conf = settings.IFLOW2API
    lowered = name.lower()
    for tier, target in conf["CLAUDE_TIERS"].items():
        if tier in lowered:
            return target
    return conf["DEFAULT_MODEL"]


def is_claude_name(name: str) -> bool:
    lowered = name.lower()
    return lowered.startswith("claude") or "anthropic" in lowered


async def resolve_model(model_name: str, *, map_unknown: bool = False) -> ModelRef:
    """The catalogue model for a name. `claude-*` names always map through the tiers; other
    unknown names do too when `map_unknown` (Anthropic clients), else 404."""
    table = await routing()
    model = table.find_model(model_name)
    if model is None and (map_unknown or is_claude_name(model_name)):
        mapped = tier_model(model_name)
        model = table.find_model(mapped)
        if model is None:
            raise ApiError(404, f"`{model_name}` maps to `{mapped}`, which is not in the model "
                           "catalogue; set DEFAULT_MODEL / CLAUDE_*_MODEL to a served model",
                           "model_not_found", "model")
    if model is None:
        raise ApiError(404, f"The model `{model_name}` does not exist or is not served here; "
                       "GET /v1/models lists the models.", "model_not_found", "model")
    return model


def target_for(account: AccountRef | Account) -> UpstreamTarget:
    """Where and as whom to call an account's upstream (a routing snapshot's or a model's)."""
    return UpstreamTarget(
        provider=account.provider,
        base_url=account.base_url,
        api_key=account.api_key,
        session_id=account.session_id,
        conversation_id=account.conversation_id,
        account_id=account.id,
        proxy_url=settings.IFLOW2API["UPSTREAM_PROXY"],
    )


def route_for(model: ModelRef, account: AccountRef) -> Route:
    return Route(model, account, get_provider(account.provider), target_for(account))


# Failures that another account may not share: try the next one before answering.
FAILOVER_STATUSES = frozenset({401, 429, 502, 503, 504})
MAX_ATTEMPTS = 3

Attempt = Callable[[Route, Lease], Awaitable[T]]


async def with_account(model: ModelRef, attempt: Attempt[T]) -> T:
    """Runs `attempt` on a pooled account, failing over to another account when it fails
    before anything reached the client. The attempt owns its lease once it returns (a stream
    releases it when it ends); on failure it is released here."""
    table = await routing()
    accounts = table.accounts_for(model)
    if not accounts:
        raise ApiError(503, f"no usable upstream account for `{model.id}`: add one in the "
                       "admin, or set IFLOW_API_KEY or UPSTREAM_BASE_URL (accounts that are "
                       "blocked or need a login do not count)", "no_upstream")
    conf = settings.IFLOW2API
    failed: UpstreamError | None = None
    tried: set[int] = set()
    for _ in range(min(len(accounts), MAX_ATTEMPTS)):
        candidates = [a for a in accounts if a.id not in tried]
        try:
            lease = await pool().acquire(candidates, timeout=conf["POOL_QUEUE_TIMEOUT"])
        except (PoolExhausted, NoAccount) as exc:
            if failed is not None:
                raise failed from None
            if isinstance(exc, NoAccount):
                raise ApiError(503, f"no usable upstream account for `{model.id}`",
                               "no_upstream") from None
            raise ApiError(429, exc.message, "rate_limit_exceeded",
                           retry_after=exc.retry_after) from None
        try:
            return await attempt(route_for(model, lease.account), lease)
        except UpstreamError as err:
            await pool().release(lease)
            await account_failed(lease.account, err)
            if err.status not in FAILOVER_STATUSES and err.account_action is None:
                raise
            failed = err
            tried.add(lease.account.id)
        except BaseException:
            await pool().release(lease)
            raise
    assert failed is not None
    raise failed


async def account_failed(account: AccountRef, err: UpstreamError) -> None:
    """What an upstream failure means for the account that got it."""
    conf = settings.IFLOW2API
    reason = f"{err.status} {err.message}"[:500]
    if err.account_action == "disable":
        await pool().block(account, f"upstream refused the key: {reason}")
    elif err.account_action == "refresh":
        await pool().cool_down(account, conf["AUTH_COOLDOWN_SECONDS"], reason)
        await sync_to_async(request_refresh)(account.id)
    elif err.account_action == "cooldown" or err.status == 429:
        await pool().cool_down(
            account, err.retry_after or conf["RATE_LIMIT_COOLDOWN_SECONDS"], reason)


def now() -> int:
    return int(time.time())
