"""One upstream call on a pooled account, streamed or not, shared by both APIs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from accounts.pool import Lease, pool
from accounts.services import ModelRef
from proxy.errors import ApiError
from proxy.http import JsonResult, StreamResult
from proxy.pipeline import GatewayOptions, Route, upstream_client, with_account
from proxy.requestlog import RelayTrace
from proxy.streaming import StreamSession, open_stream, stream_body
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
) -> JsonResult | StreamResult:
    """Sends `body` (an OpenAI chat body for `model`) upstream. Streams: `session(route)`
    translates the chunks; the account's slot is held until the stream ends. Non-streaming:
    `answer(route, completion)` renders the result."""
    # Request log (proxy/requestlog.py): the trace records the outcome, off the hot path.
    trace = RelayTrace(model.id, api, requested_model, stream)

    async def attempt(route: Route, lease: Lease) -> JsonResult | StreamResult:
        trace.attempt(route)
        await inline_remote_images(route, body)
        prepared = route.prepare(body, stream=stream)
        client = upstream_client()
        if stream:
            batches = client.stream_batches(route.provider, prepared)
            pending = await open_stream(batches, prelude_seconds=opts.prelude_seconds)

            async def finish(error: ApiError | None) -> None:
                await pool().release(lease)
                trace.stream_finished(error)

            return stream_body(batches, pending, trace.observe(session(route)),
                               keepalive_seconds=opts.keepalive_seconds, on_finish=finish)
        completion = await client.request_json(route.provider, prepared)
        await pool().release(lease)
        result = answer(route, completion)
        trace.answered(completion)
        return result

    with trace.failures():
        return await with_account(model, attempt)
