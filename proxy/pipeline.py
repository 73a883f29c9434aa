"""The request path shared by both APIs: client key → model → account → provider → upstream."""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass
from functools import cache
from typing import Any

from django.conf import settings

from accounts.services import AccountRef, ModelRef, pick_account, routing
from proxy.errors import ApiError
from proxy.http import ApiRequest
from proxy.upstream.client import UpstreamClient
from proxy.upstream.providers import get_provider
from proxy.upstream.providers.base import Provider
from proxy.upstream.types import PreparedRequest, UpstreamTarget
from proxy.wire import loads


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


async def resolve(model_name: str, *, map_unknown: bool = False) -> Route:
    """The route for a model name. `claude-*` names always map through the tiers; other
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
    account = pick_account(table, model)
    if account is None:
        raise ApiError(503, f"no upstream account is configured for `{model.id}`: add one in the "
                       "admin, or set IFLOW_API_KEY or UPSTREAM_BASE_URL", "no_upstream")
    target = UpstreamTarget(
        provider=account.provider,
        base_url=account.base_url,
        api_key=account.api_key,
        session_id=account.session_id,
        conversation_id=account.conversation_id,
        account_id=account.id,
        proxy_url=settings.IFLOW2API["UPSTREAM_PROXY"],
    )
    return Route(model, account, get_provider(account.provider), target)


def now() -> int:
    return int(time.time())
