"""The steps of the request path that both APIs share, each a plain function the handlers and
relay() call in order: admit (instance, client key) → parse the body → resolve_model →
accounts_for → take_account → route_for (provider, target) → account_failed on an upstream
error. relay() (proxy/relay.py) owns the loop over accounts."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.utils.translation import gettext

from accounts.pool import AccountPool, Lease, NoAccount, PoolExhausted, PoolUnavailable
from accounts.refresh import request_refresh
from accounts.services import AccountRef, ModelRef, target_for
from iflow2api_lib.conf import gateway, setting
from iflow2api_lib.wire import loads
from instances.ratelimit import RuleSet
from instances.services import InstanceConfig, KeyRef
from proxy.affinity import Affinity
from proxy.bodies import BodyLimits, check_before_parsing, check_parsed, too_deep_error
from proxy.errors import ApiError, echo
from proxy.http import ApiRequest
from proxy.runtime import Runtime
from proxy.translate.tokens import TokenParts
from proxy.unusable import RETRY_AFTER_HONOURED, cooling_down_error, no_account_error
from upstream.providers import get_provider
from upstream.providers.base import Provider
from upstream.types import PreparedRequest, UpstreamError, UpstreamTarget


@dataclass(frozen=True)
class GatewayOptions:
    """Everything a request's handling depends on: the instance it came in on (its settings),
    the client key it brought, and the server's stream timings."""

    instance: InstanceConfig
    key: KeyRef | None
    client_ip: str
    rules: RuleSet
    keepalive_seconds: float
    prelude_seconds: float
    runtime: Runtime  # the process's: upstream client, pool, limiter, request log, status
    request_id: str  # the request's one id (ApiRequest.request_id)

    @property
    def preserve_reasoning(self) -> bool:
        return self.instance.preserve_reasoning

    @property
    def key_label(self) -> str:
        return self.key.label if self.key else ""


def client_keys(request: ApiRequest) -> list[str]:
    """The keys a request brings: x-api-key, then the Bearer token. Clients may send both
    (Claude Code with ANTHROPIC_API_KEY=any-value and ANTHROPIC_AUTH_TOKEN=<key>): either
    may be the valid one."""
    keys = []
    key = request.headers.get("x-api-key", "").strip()
    if key:
        keys.append(key)
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer " and auth[7:].strip() not in ("", key):
        keys.append(auth[7:].strip())
    return keys


def client_ip(request: ApiRequest) -> str:
    """The client's address for per-IP rate rules: behind a reverse proxy that overwrites
    X-Forwarded-For (BEHIND_PROXY=true), its last hop."""
    if setting("BEHIND_PROXY"):
        hops = [h.strip() for h in request.headers.get("x-forwarded-for", "").split(",")]
        hops = [h for h in hops if h]
        if hops:
            return hops[-1]
    return request.client_ip


async def admit(request: ApiRequest) -> GatewayOptions:
    """The request's instance and client key; 401 when the instance has keys and the request
    brings none that is valid for it."""
    found = await request.runtime.directory.get()
    instance = found.instance(request.instance_id)
    if instance is None:  # fail closed: never another instance's policy
        raise ApiError(503, gettext("this port's instance is unavailable (removed or being "
                                    "changed); retry shortly"), "instance_unavailable",
                       retry_after=1)
    request.instance = instance.name
    key = None
    if instance.requires_key:
        given = client_keys(request)
        if not given:
            raise ApiError(401, gettext("missing API key: send it as `Authorization: Bearer "
                                        "<key>` or `x-api-key: <key>`"), "missing_api_key")
        mine = [k for k in map(found.key, given) if k is not None and k.instance_id == instance.id]
        if not mine:
            raise ApiError(401, gettext("invalid API key"), "invalid_api_key")
        # A usable one if there is one; else the first, to say why it is refused.
        key = next((k for k in mine if k.enabled and not k.expired()), mine[0])
        if not key.enabled:
            raise ApiError(401, gettext("this API key is disabled"), "invalid_api_key")
        if key.expired():
            raise ApiError(401, gettext("this API key has expired"), "expired_api_key")
    conf = gateway()
    return GatewayOptions(
        instance=instance, key=key, client_ip=client_ip(request), rules=found.rules,
        keepalive_seconds=conf["KEEPALIVE_SECONDS"],
        prelude_seconds=conf["STREAM_PRELUDE_SECONDS"],
        runtime=request.runtime, request_id=request.request_id,
    )


def parse_json_object(body: bytes) -> dict[str, Any]:
    """A client's body as a JSON object within the request limits (proxy/bodies.py); strict
    JSON (no NaN/Infinity, no lone surrogates)."""
    if not body.strip():
        raise ApiError(400, gettext("the request body is empty; send a JSON object"),
                       "invalid_json")
    limits = BodyLimits.configured()
    brackets = check_before_parsing(body, limits)
    try:
        data = loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        if "depth limit" in str(exc):  # orjson's own ceiling (1024 levels)
            raise too_deep_error(limits.depth) from exc
        raise ApiError(400, gettext("the request body is not valid JSON: %(error)s")
                       % {"error": exc}, "invalid_json") from exc
    if not isinstance(data, dict):
        raise ApiError(400, gettext("the request body must be a JSON object"), "invalid_json")
    check_parsed(data, limits, brackets)
    return data


INLINE_PARSE_MAX = 64 * 1024  # parsed on the loop: ~0.3 ms at most, less than a thread hop


async def read_json_object(body: bytes) -> dict[str, Any]:
    """parse_json_object in a worker thread when the body is large: it must not hold up the
    event loop (and every other request on it) while it is parsed and checked. Usual bodies
    are parsed in place: the hop to a thread cost more than the parse (measured with py-spy,
    ~15 % of a request at c=50). sync_to_async, not asyncio.to_thread: it carries the
    request's language into the thread."""
    if len(body) <= INLINE_PARSE_MAX:
        return parse_json_object(body)
    return await sync_to_async(parse_json_object, thread_sensitive=False)(body)


async def estimate_off_loop(raw: bytes, estimator: Callable[[dict[str, Any]], TokenParts],
                            body: dict[str, Any]) -> TokenParts:
    """A body's token estimate (proxy/translate/tokens.py), in a worker thread when the body is
    large, like its parsing (read_json_object)."""
    if len(raw) <= INLINE_PARSE_MAX:
        return estimator(body)
    return await sync_to_async(estimator, thread_sensitive=False)(body)


@dataclass(frozen=True)
class Route:
    model: ModelRef
    account: AccountRef
    provider: Provider
    target: UpstreamTarget

    def prepare(self, body: dict[str, Any], *, stream: bool) -> PreparedRequest:
        return self.provider.prepare_chat(self.target, body, stream=stream)


def is_claude_name(name: str) -> bool:
    lowered = name.lower()
    return lowered.startswith("claude") or "anthropic" in lowered


async def resolve_model(model_name: str, opts: GatewayOptions, *,
                        map_unknown: bool = False, check_key: bool = True) -> ModelRef:
    """The catalogue model for a name: the instance's aliases first; `claude-*` names always
    map through the instance's tiers; other unknown names do too when `map_unknown`
    (Anthropic clients), else 404. A key with a model list may only use those models."""
    table = await opts.runtime.routing.get()
    instance = opts.instance
    name = instance.model_aliases.get(model_name) or model_name
    model = table.find_model(name)
    if model is None and (map_unknown or is_claude_name(name)):
        mapped = instance.tier_model(name)
        model = table.find_model(mapped)
        if model is None:
            raise ApiError(404, gettext(
                "`%(model)s` maps to `%(mapped)s`, which is not in the model catalogue; set the "
                "default model / claude-* tiers (instance or DEFAULT_MODEL / CLAUDE_*_MODEL) to "
                "a served model") % {"model": echo(model_name), "mapped": echo(mapped)},
                "model_not_found", "model")
    if model is None:
        raise ApiError(404, gettext("The model `%(model)s` does not exist or is not served "
                                    "here; GET /v1/models lists the models.")
                       % {"model": echo(model_name)}, "model_not_found", "model")
    if check_key and opts.key is not None and not opts.key.allows(
            model_name, name, model.id, *model.aliases):
        raise ApiError(403, gettext("this API key may not use the model `%(model)s`")
                       % {"model": echo(model_name)}, "model_not_allowed", "model")
    return model


def output_limit(model: ModelRef) -> int | None:
    """The most a request may ask `model` to write: its catalogue limit, else
    DEFAULT_MAX_OUTPUT_TOKENS (0: none), never more than its context length when known."""
    limit = model.max_output_tokens or gateway()["DEFAULT_MAX_OUTPUT_TOKENS"] or None
    if limit and model.context_length:
        limit = min(limit, model.context_length)
    return limit


def clamp_output_tokens(body: dict[str, Any], model: ModelRef) -> None:
    """A chat body's max_tokens / max_completion_tokens cut down to output_limit(model);
    absent ones stay absent (the upstream's own default applies)."""
    limit = output_limit(model)
    for key in ("max_tokens", "max_completion_tokens"):
        value = body.get(key)
        if limit and isinstance(value, int) and not isinstance(value, bool) and value > limit:
            body[key] = limit


def route_for(model: ModelRef, account: AccountRef, proxy: str | None = None) -> Route:
    return Route(model, account, get_provider(account.provider), target_for(account, proxy))


# Failures that another account may not share: try the next one before answering.
FAILOVER_STATUSES = frozenset({401, 429, 502, 503, 504})
MAX_ATTEMPTS = 3


def worth_another_account(err: UpstreamError) -> bool:
    return err.status in FAILOVER_STATUSES or err.account_action is not None


async def accounts_for(model: ModelRef, opts: GatewayOptions) -> list[AccountRef]:
    """The accounts that may serve `model` on this instance (403 when there are none)."""
    allowed = opts.instance.account_ids
    accounts = (await opts.runtime.routing.get()).accounts_for(model, allowed)
    if not accounts:
        raise await no_account_error(model, allowed)
    return accounts


async def take_account(pool: AccountPool, candidates: list[AccountRef], model: ModelRef,
                       opts: GatewayOptions, failed: UpstreamError | None,
                       affinity: Affinity | None = None) -> Lease:
    """A slot on one of `candidates` (the conversation's pinned account first, when it has
    one); when none is free, the last upstream failure if there was one, else 403 (no usable
    account) or 429 (all busy or cooling down)."""
    try:
        prefer = await affinity.preferred() if affinity is not None else None
        lease = await pool.acquire(candidates, timeout=gateway()["POOL_QUEUE_TIMEOUT"],
                                   prefer=prefer)
        if affinity is not None:
            await affinity.served_by(lease.account.id)
        return lease
    except PoolUnavailable:
        raise ApiError(503, gettext("the account pool is unavailable (its Redis cannot be "
                                    "reached); retry shortly"), "pool_unavailable",
                       retry_after=5) from None
    except (PoolExhausted, NoAccount) as exc:
        if failed is not None:
            raise failed from None
        if isinstance(exc, NoAccount):
            raise await no_account_error(model, opts.instance.account_ids) from None
        if exc.after_error and exc.retry_after > RETRY_AFTER_HONOURED:
            raise await cooling_down_error(model, candidates, exc.retry_after) from None
        raise ApiError(429, exc.message, "rate_limit_exceeded",
                       retry_after=exc.retry_after) from None


async def account_failed(runtime: Runtime, account: AccountRef, err: UpstreamError) -> None:
    """What an upstream failure means for the account that got it (in `runtime`'s pool; a
    refresh runs in its worker threads)."""
    conf = gateway()
    pool = runtime.pool
    reason = f"{err.status} {err.message}"[:500]
    if err.account_action == "disable":
        await pool.block(account, f"upstream refused the key: {reason}")
    elif err.account_action == "refresh":
        await pool.cool_down(account, conf["AUTH_COOLDOWN_SECONDS"], reason)
        # Returns at once: the refresh runs in a worker thread.
        request_refresh(account.id, runtime.workers, runtime.routing)
    elif err.status == 429:
        hold = await pool.rate_limited(account, err.retry_after, reason)
        if err.retry_after is None:
            err.retry_after = hold  # passed on: the client hears when we try again (1, 2, 4 … s)
    elif err.account_action == "cooldown":
        # A refused key (401/403) may work again later; anything else (no balance) sooner.
        default = "AUTH_COOLDOWN_SECONDS" if err.status in (401, 403) else \
            "RATE_LIMIT_COOLDOWN_SECONDS"
        await pool.cool_down(account, err.retry_after or conf[default], reason)


def now() -> int:
    return int(time.time())
