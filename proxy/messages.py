"""POST /v1/messages and /v1/messages/count_tokens (Anthropic), framework-free."""

from __future__ import annotations

import time
from typing import Any

from asgiref.sync import sync_to_async
from django.utils.translation import gettext

from iflow2api_lib.ids import random_hex
from iflow2api_lib.wire import sse_event
from proxy.affinity import conversation_of
from proxy.errors import ApiError
from proxy.http import ApiRequest, JsonResult, StreamResult
from proxy.pipeline import (
    GatewayOptions,
    Route,
    admit,
    estimate_off_loop,
    output_limit,
    read_json_object,
    resolve_model,
)
from proxy.relay import relay
from proxy.trace import log_refused
from proxy.translate.anthropic_request import anthropic_to_openai
from proxy.translate.anthropic_response import openai_to_anthropic
from proxy.translate.anthropic_stream import AnthropicStreamTranslator
from proxy.translate.text_runs import TextRuns
from proxy.translate.tokens import estimate_parts
from proxy.translate.types import (
    TranslatedRequest,
    TranslateOptions,
    TranslationError,
    UpstreamResponseError,
)
from proxy.vision import model_for_images
from proxy.wire import (
    CHAT,
    MESSAGES,
    clamped,
    native_error,
    passthrough,
    thinking_within,
    wires_for,
)
from upstream.text_lane import TextRun
from upstream.types import UpstreamError

PING = sse_event("ping", {"type": "ping"})


def new_message_id() -> str:
    return "msg_" + random_hex(24)


def anthropic_error(error: ApiError, request_id: str | None = None) -> JsonResult:
    body = error.anthropic_body(request_id)
    return JsonResult.of(body, error.status, [*error.headers(), ("request-id", body["request_id"])])


async def _messages_body(request: ApiRequest) -> dict[str, Any]:
    body = await read_json_object(request.body)
    if not isinstance(body.get("messages"), list):
        raise ApiError(400, gettext("messages: Field required (an array of messages)"),
                       param="messages")
    return body


class AnthropicStreamSession:
    keepalive = PING

    def __init__(self, translator: AnthropicStreamTranslator,
                 context_length: int | None = None) -> None:
        self.translator = translator
        self.context_length = context_length
        self._runs = TextRuns(translator)

    def start(self) -> list[bytes]:
        return [sse_event(name, data) for name, data in self.translator.start()]

    def feed(self, chunk: dict) -> list[bytes]:
        return [sse_event(name, data) for name, data in self.translator.feed(chunk)]

    def feed_text(self, run: TextRun) -> list[bytes]:
        """A run of text chunks (upstream/text_lane.py), as feed() gives them."""
        return [sse_event(name, data) for name, data in self._runs.events(run)]

    def close(self) -> list[bytes]:
        return [sse_event(name, data) for name, data in self.translator.close()]

    def fail(self, error: ApiError) -> list[bytes]:
        error.with_context_fallbacks(self.translator.input_tokens, self.context_length)
        return [sse_event(name, data) for name, data in
                self.translator.error(error.anthropic_message(), error.anthropic_type())]


async def messages(request: ApiRequest) -> JsonResult | StreamResult:
    request_id = request.request_id  # the one of the x-request-id header and the log lines
    started = time.monotonic()
    opts: GatewayOptions | None = None
    body: dict[str, Any] = {}
    context_length: int | None = None
    model_id = ""

    def refused(error: Exception) -> None:
        log_refused(error, request, api="anthropic", started=started,
                    requested_model=body.get("model"),
                    instance=opts.instance.name if opts else request.instance,
                    key_label=opts.key_label if opts else "")

    try:
        opts = await admit(request)
        body = await _messages_body(request)
        model_name = body.get("model")
        if not isinstance(model_name, str) or not model_name.strip():
            raise ApiError(400, gettext("model: Field required (a string)"), param="model")
        model = await resolve_model(model_name.strip(), opts, map_unknown=True)
        context_length, model_id = model.context_length, model.id
        parts = await estimate_off_loop(request.body, estimate_parts, body)
        calibration = opts.runtime.calibration
        wires = await wires_for(model, opts)  # Anthropic upstreams: the body passes through
        limit = clamped(body, output_limit(model))
        native = {MESSAGES: passthrough(request.body, request.headers, max_tokens=limit,
                                        thinking=thinking_within(body, limit))
                  } if MESSAGES in wires else {}
        # In a worker thread (with the request's language), like the parsing: a long
        # conversation takes a while and must not hold up the event loop meanwhile.
        translate_options = TranslateOptions(
            upstream_model=model.upstream_id,
            max_output_tokens=output_limit(model),
            kimi_tool_ids=model.upstream_id.lower().startswith("kimi"),
        )
        translated = await sync_to_async(anthropic_to_openai, thread_sensitive=False)(
            body, translate_options) if CHAT in wires else TranslatedRequest({})
        upstream_body = translated.body
        model = await model_for_images(model, upstream_body, opts)
        stop_sequences = body.get("stop_sequences") if isinstance(
            body.get("stop_sequences"), list) else None
        message_id = new_message_id()

        def session(route: Route) -> AnthropicStreamSession:
            return AnthropicStreamSession(AnthropicStreamTranslator(
                message_id=message_id, model=route.model.id,
                input_tokens=calibration.estimate(route.model.id, parts),
                tool_names=translated.tool_names,
                stop_sequences=stop_sequences), route.model.context_length)

        def answer(route: Route, completion: dict) -> JsonResult:
            return JsonResult.of(openai_to_anthropic(
                completion, message_id=message_id, model=route.model.id,
                tool_names=translated.tool_names, stop_sequences=stop_sequences))

        result = await relay(model, upstream_body if CHAT in wires else None, opts,
                             stream=bool(body.get("stream")), session=session, answer=answer,
                             api="anthropic", requested_model=model_name,
                             client_body=request.body, native=native, estimate=parts,
                             conversation=conversation_of(body, request.headers))
        result.headers.append(("request-id", request_id))
        return result
    except TranslationError as exc:
        error = ApiError(400, exc.localized(gettext), param=exc.param)
        refused(error)
        return anthropic_error(error, request_id)
    except UpstreamResponseError as exc:
        return anthropic_error(ApiError(502, str(exc), "upstream_invalid"), request_id)
    except UpstreamError as exc:
        refused(exc)
        passed = native_error(exc)  # an Anthropic upstream's own error, as it came
        if passed is not None:
            passed.headers.append(("request-id", request_id))
            return passed
        error = ApiError.from_upstream(exc).with_context_fallbacks(
            _calibrated(request, body, model_id), context_length)
        return anthropic_error(error, request_id)
    except ApiError as error:
        refused(error)
        return anthropic_error(error, request_id)


def _calibrated(request: ApiRequest, body: dict[str, Any], model_id: str) -> int:
    return request.runtime.calibration.estimate(model_id, estimate_parts(body))


async def _model_id(body: dict[str, Any], opts: GatewayOptions) -> str:
    """The catalogue model a count_tokens body names ("" when none: no calibration)."""
    name = body.get("model")
    if not isinstance(name, str) or not name.strip():
        return ""
    try:
        return (await resolve_model(name.strip(), opts, map_unknown=True)).id
    except ApiError:
        return ""  # an unknown model still gets an estimate, as before


async def count_tokens(request: ApiRequest) -> JsonResult:
    """The upstream's own count where it has one, else the local estimate calibrated for the
    model (Claude Code's editor extension sends bursts of these at start-up)."""
    try:
        opts = await admit(request)
        body = await _messages_body(request)
        counted = await _upstream_count(request, body, opts)
        if counted is not None:
            return counted
        parts = await estimate_off_loop(request.body, estimate_parts, body)
        model_id = await _model_id(body, opts)
        return JsonResult.of({"input_tokens": opts.runtime.calibration.estimate(model_id, parts)})
    except ApiError as error:
        return anthropic_error(error, request.request_id)


async def _upstream_count(request: ApiRequest, body: dict[str, Any],
                          opts: GatewayOptions) -> JsonResult | None:
    """The upstream's own count when every account of the model is an Anthropic upstream
    (through the relay: its accounts, failover, request log); None for the local estimate,
    also when the upstream has no count_tokens (404, 405, 501)."""
    name = body.get("model")
    if not isinstance(name, str) or not name.strip():
        return None
    try:
        model = await resolve_model(name.strip(), opts, map_unknown=True)
    except ApiError:
        return None  # an unknown model still gets an estimate, as before
    if await wires_for(model, opts) != {MESSAGES}:
        return None
    exchange = passthrough(request.body, request.headers, endpoint="count_tokens")
    try:
        result = await relay(model, None, opts, stream=False, session=None, answer=None,
                             api="anthropic", requested_model=name, client_body=request.body,
                             native={MESSAGES: exchange})
    except UpstreamError as exc:
        if exc.upstream_status in ("404", "405", "501"):
            return None
        passed = native_error(exc)
        return passed or anthropic_error(ApiError.from_upstream(exc), request.request_id)
    assert isinstance(result, JsonResult)
    return result
