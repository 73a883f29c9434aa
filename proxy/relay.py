"""One upstream call on a pooled account, streamed or not, shared by both APIs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from accounts.pool import Lease, pool
from accounts.services import ModelRef
from instances.ratelimit import buckets_for, limiter
from proxy.errors import ApiError
from proxy.http import JsonResult, StreamResult
from proxy.pipeline import GatewayOptions, Route, upstream_client, with_account
from proxy.streaming import StreamSession, open_stream, stream_body
from proxy.trace import RelayTrace
from proxy.vision import inline_remote_images


async def relay(
    model: ModelRef,
    body: dict[str, Any],
    opts: GatewayOptions,
    *,
    stream: bool,
    session: Callable[[Route], StreamSession],
    answer: Callable[[Route, dict[str, Any]], JsonResult],
    api: str,
    requested_model: str,
    client_body: bytes = b"",
) -> JsonResult | StreamResult:
    """Sends `body` (an OpenAI chat body for `model`) upstream. Streams: `session(route)`
    translates the chunks; the account's slot is held until the stream ends. Non-streaming:
    `answer(route, completion)` renders the result. The instance's rate rules are checked
    first (429 when over a limit)."""
    # Request log (proxy/trace.py): the trace records the outcome, off the hot path.
    trace = RelayTrace(model.id, api, requested_model, stream, instance=opts.instance.name,
                       key_label=opts.key_label, keep_bodies=opts.instance.log_bodies)
    if opts.instance.log_bodies:
        trace.keep_request(client_body)
    buckets = buckets_for(opts.rules, instance_id=opts.instance.id or 0,
                          key_id=opts.key.id if opts.key else None, client_ip=opts.client_ip)
    with trace.failures():
        admission = await limiter().admit(buckets, stream=stream) if buckets else None
        if admission is not None and not admission.allowed:
            raise ApiError(429, admission.reason, "rate_limit_exceeded",
                           retry_after=admission.retry_after)

    async def settle() -> None:
        """The request is over: give back its stream slot, count its tokens."""
        if admission is None:
            return
        await limiter().release(admission)
        if trace.tokens:
            await limiter().add_tokens(buckets, trace.tokens)

    async def attempt(route: Route, lease: Lease) -> JsonResult | StreamResult:
        trace.attempt(route)
        prepared = route.prepare(body, stream=stream)
        client = upstream_client()
        proxy = route.target.proxy_url
        if stream:
            batches = client.stream_batches(route.provider, prepared, proxy=proxy)
            pending = await open_stream(batches, prelude_seconds=opts.prelude_seconds)

            async def finish(error: ApiError | None) -> None:
                await pool().release(lease)
                trace.stream_finished(error)
                await settle()

            trace.stream_started()
            return stream_body(batches, pending, trace.observe(session(route)),
                               keepalive_seconds=opts.keepalive_seconds, on_finish=finish)
        completion = await client.request_json(route.provider, prepared, proxy=proxy)
        await pool().release(lease)
        result = answer(route, completion)
        trace.answered(completion, result.body)
        await settle()
        return result

    try:
        with trace.failures():
            # Before any account slot is taken: a slow image host must not hold one.
            await inline_remote_images(model, body, opts)
            return await with_account(model, attempt, opts)
    except BaseException:
        await settle()
        raise
