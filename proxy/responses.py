"""POST /v1/responses (OpenAI's Responses API: the Codex CLI, the openai SDK's `responses`),
framework-free, over the same relay as the other APIs (docs/responses-api.md).

The request is translated to a chat body by the pure translators (proxy/translate/responses_*),
after `previous_response_id` has been replaced by the stored conversation (proxy/
responses_state.py). The answer is translated back; with `store` (the default) it is kept
before the client hears `response.completed`, so a follow-up sent at once finds it. A stream
that ends without a finish_reason is a failure (`response.failed` + `error`,
code upstream_disconnected), never a made-up completion.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

from asgiref.sync import sync_to_async
from django.utils.translation import gettext

from iflow2api_lib.wire import sse_event
from proxy import responses_state
from proxy.affinity import conversation_of
from proxy.chat import openai_error
from proxy.errors import ApiError, echo
from proxy.http import ApiRequest, JsonResult, StreamResult
from proxy.pipeline import (
    GatewayOptions,
    Route,
    admit,
    now,
    output_limit,
    read_json_object,
    resolve_model,
)
from proxy.relay import relay
from proxy.responses_state import Owner
from proxy.trace import log_refused
from proxy.translate.responses_compaction import (
    CompactionStream,
    compaction_response,
    prepare_compaction,
)
from proxy.translate.responses_input import input_items
from proxy.translate.responses_request import (
    ResponsesTranslation,
    estimate_input_tokens,
    responses_to_openai,
)
from proxy.translate.responses_response import openai_to_responses
from proxy.translate.responses_stream import KEEPALIVE, ResponsesStream
from proxy.translate.text_runs import TextRuns
from proxy.translate.types import TranslateOptions, TranslationError, UpstreamResponseError
from proxy.vision import model_for_images
from upstream.text_lane import TextRun
from upstream.types import UpstreamError

log = logging.getLogger(__name__)

API = "responses"
DROPPED_TOOLS_HEADER = "x-iflow2api-dropped-tools"
FINAL_STATUSES = ("completed", "incomplete")
# Bodies up to this size are translated on the event loop: for them the hop to a worker thread
# costs more than the translation (~20 µs for a small body; Codex's turns are ~50 KB).
INLINE_TRANSLATE_MAX = 256 * 1024


def new_response_id() -> str:
    return "resp_" + secrets.token_hex(24)


def _sse(event: dict[str, Any]) -> bytes:
    """Like the translator's encode_event, with orjson as the other APIs: same bytes, less CPU."""
    return sse_event(event["type"], event)


def owner_of(opts: GatewayOptions) -> Owner:
    return Owner(opts.instance.name, opts.key.id if opts.key else None)


class ResponsesStreamSession:
    """ResponsesStream events as SSE bytes; `to_store` holds the final response (completed or
    incomplete) from close() until the handler has stored it."""

    keepalive = KEEPALIVE

    def __init__(self, stream: ResponsesStream | CompactionStream) -> None:
        self.stream = stream
        self.to_store: dict[str, Any] | None = None
        self._runs = TextRuns(stream)

    def start(self) -> list[bytes]:
        return [_sse(event) for event in self.stream.start()]

    def feed(self, chunk: dict) -> list[bytes]:
        return [_sse(event) for event in self.stream.feed(chunk)]

    def feed_text(self, run: TextRun) -> list[bytes]:
        """A run of text chunks (upstream/text_lane.py), as feed() gives them."""
        return [_sse(event) for event in self._runs.events(run)]

    def close(self) -> list[bytes]:
        if not self.stream.finished:
            raise ApiError(502, gettext("upstream stream ended without a finish_reason"),
                           "upstream_disconnected")
        events = self.stream.close()
        if self.stream.status in FINAL_STATUSES:
            self.to_store = self.stream.response
        return [_sse(event) for event in events]

    def fail(self, error: ApiError) -> list[bytes]:
        return [_sse(event) for event in
                self.stream.fail(error.message, error.code or "server_error")]


def _check_types(body: dict[str, Any]) -> None:
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise ApiError(400, gettext("you must provide a model parameter (a non-empty string)"),
                       "missing_required_parameter" if model is None else "invalid_type", "model")
    for name in ("stream", "store"):
        if body.get(name) is not None and not isinstance(body[name], bool):
            raise ApiError(400, gettext("invalid value for `%(name)s`") % {"name": name},
                           "invalid_type", name)
    previous = body.get("previous_response_id")
    if previous is not None and (not isinstance(previous, str) or not previous):
        raise ApiError(400, gettext("invalid value for `%(name)s`")
                       % {"name": "previous_response_id"}, "invalid_type",
                       "previous_response_id")


def not_found(response_id: str, param: str | None = None) -> ApiError:
    return ApiError(404, gettext("Response with id '%(id)s' not found.")
                    % {"id": echo(response_id)}, "response_not_found", param)


async def _with_history(body: dict[str, Any], owner: Owner, *,
                        store: bool) -> list[dict[str, Any]]:
    """The request's own input items; `body["input"]` becomes the whole conversation when it
    continues a stored response. An item id given twice (or an earlier item of the chain sent
    again) is a 400, as in the API, when the items may be listed (input_items pages by id)."""
    own = input_items(body.get("input"))
    previous = body.get("previous_response_id")
    history: list[dict[str, Any]] = []
    if previous:
        found = await responses_state.run(responses_state.conversation, previous, owner)
        if found is None:
            raise not_found(previous, "previous_response_id")
        history = found
        body["input"] = [*history, *own]
    if store or previous:
        _check_unique_ids(history, own)
    return own


def _check_unique_ids(history: list[dict[str, Any]], own: list[dict[str, Any]]) -> None:
    seen = {item["id"] for item in history if isinstance(item.get("id"), str)}
    for item in own:
        item_id = item.get("id")
        if not isinstance(item_id, str) or not item_id:
            continue
        if item_id in seen:
            raise ApiError(400, gettext("Duplicate item found with id %(id)s. Remove duplicate "
                                        "items from your input and try again.")
                           % {"id": echo(item_id)}, "invalid_value", "input")
        seen.add(item_id)


def _translate(body: dict[str, Any], options: TranslateOptions) -> ResponsesTranslation:
    try:
        return responses_to_openai(body, options)
    except TranslationError as exc:
        raise ApiError(400, exc.localized(gettext), "invalid_value", exc.param) from exc


async def create_response(request: ApiRequest) -> JsonResult | StreamResult:
    started = time.monotonic()
    opts: GatewayOptions | None = None
    body: dict[str, Any] = {}
    try:
        opts = await admit(request)
        body = await read_json_object(request.body)
        _check_types(body)
        requested = body["model"]
        model = await resolve_model(requested.strip(), opts)
        owner = owner_of(opts)
        store = body.get("store") is not False and responses_state.storing_enabled()
        try:
            own_items = await _with_history(body, owner, store=store)
        except TranslationError as exc:
            raise ApiError(400, exc.localized(gettext), "invalid_value", exc.param) from exc
        # Codex's remote compaction: a trigger becomes a summary request (docs/clients.md).
        compacting = prepare_compaction(body)
        options = TranslateOptions(
            upstream_model=model.upstream_id, max_output_tokens=output_limit(model),
            kimi_tool_ids=model.upstream_id.lower().startswith("kimi"))
        if len(request.body) <= INLINE_TRANSLATE_MAX and "previous_response_id" not in body:
            translation = _translate(body, options)
        else:  # a worker thread (with the request's language): a long conversation takes a while
            translation = await sync_to_async(_translate, thread_sensitive=False)(body, options)
        upstream_body = translation.body
        model = await model_for_images(model, upstream_body, opts)
        response_id, created = new_response_id(), now()
        input_tokens = estimate_input_tokens(upstream_body)
        stream = translation.stream
        sessions: list[ResponsesStreamSession] = []
        answered: list[dict[str, Any]] = []

        def session(route: Route) -> ResponsesStreamSession:
            stream = ResponsesStream(translation, response_id=response_id, created_at=created,
                                     model=route.model.id, input_tokens=input_tokens)
            sessions.append(ResponsesStreamSession(
                CompactionStream(stream) if compacting else stream))
            return sessions[-1]

        def answer(route: Route, completion: dict) -> JsonResult:
            response = openai_to_responses(
                completion, translation, response_id=response_id, created_at=created,
                model=route.model.id, input_tokens=input_tokens)
            # UpstreamResponseError (a 502) when the model wrote no summary
            answered.append(compaction_response(response) if compacting else response)
            return JsonResult.of(answered[-1])

        result = await relay(model, upstream_body, opts, stream=stream, session=session,
                             answer=answer, api=API, requested_model=requested,
                             client_body=request.body,
                             conversation=conversation_of(body, request.headers))

        async def keep(response: dict[str, Any]) -> None:
            if store:
                await _store(response, owner, own_items, body.get("instructions"),
                             opts.runtime.responses_cleanup)

        if isinstance(result, StreamResult):
            if store:  # else no hop per chunk (Codex sends store: false)
                _store_before_the_end(result, sessions, keep)
        elif result.status == 200 and answered and answered[-1]["status"] in FINAL_STATUSES:
            await keep(answered[-1])
        if translation.dropped_tools:
            dropped = ",".join(dict.fromkeys(translation.dropped_tools))
            log.info("responses: hosted tools this gateway cannot run were left out: %s",
                     dropped)
            result.headers.append((DROPPED_TOOLS_HEADER, dropped))
        return result
    except UpstreamResponseError as exc:
        return openai_error(ApiError(502, str(exc), "upstream_invalid"))
    except (ApiError, UpstreamError) as error:
        log_refused(error, request, api=API, started=started,
                    requested_model=body.get("model"),
                    instance=opts.instance.name if opts else request.instance,
                    key_label=opts.key_label if opts else "")
        if isinstance(error, UpstreamError):
            return openai_error(ApiError.from_upstream(error))
        return openai_error(error)


async def _store(response: dict[str, Any], owner: Owner, own_items: list[dict[str, Any]],
                 instructions: Any, cleanup: responses_state.ExpiryCleanup) -> None:
    try:
        await responses_state.run(
            responses_state.save, response, owner=owner,
            input_items=responses_state.with_item_ids(own_items, response["id"]),
            instructions=instructions if isinstance(instructions, str) else None,
            cleanup=cleanup)
    except Exception:  # the answer stands; a follow-up naming it gets a 404
        log.exception("responses: could not store %s", response.get("id"))


def _store_before_the_end(result: StreamResult, sessions: list[ResponsesStreamSession],
                          keep: Any) -> None:
    """The stream's bytes, held at the final event until its response is stored (the event
    close() made: it comes through `chunks`, never by the direct writer)."""
    inner = result.chunks

    async def chunks() -> AsyncIterator[bytes]:
        async with contextlib.aclosing(inner) as events:
            async for chunk in events:
                session = sessions[-1] if sessions else None
                if session is not None and session.to_store is not None:
                    final, session.to_store = session.to_store, None
                    await keep(final)
                yield chunk

    result.chunks = chunks()
