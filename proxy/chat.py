"""POST /v1/chat/completions (OpenAI), framework-free: ApiRequest in, result out."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from django.utils.translation import gettext

from iflow2api_lib.wire import SSE_COMMENT_PING, SSE_DONE, dumps, sse_data
from proxy.affinity import conversation_of
from proxy.errors import ApiError
from proxy.http import ApiRequest, JsonResult, StreamResult
from proxy.pipeline import (
    GatewayOptions,
    Route,
    admit,
    clamp_output_tokens,
    estimate_off_loop,
    now,
    read_json_object,
    resolve_model,
)
from proxy.relay import relay
from proxy.trace import log_refused
from proxy.translate.openai_chat import (
    OpenAIStreamNormalizer,
    new_completion_id,
    normalize_completion,
)
from proxy.translate.tokens import estimate_chat_parts
from proxy.vision import model_for_images
from upstream.text_lane import TextRun, TextTemplate
from upstream.types import UpstreamError

ROLES = {"system", "developer", "user", "assistant", "tool", "function"}


def openai_error(error: ApiError) -> JsonResult:
    return JsonResult.of(error.openai_body(), error.status, error.headers())


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_FIELD_CHECKS: dict[str, Callable[[Any], bool]] = {
    "stream": lambda v: isinstance(v, bool),
    "max_tokens": lambda v: _is_int(v) and v > 0,
    "max_completion_tokens": lambda v: _is_int(v) and v > 0,
    "n": lambda v: _is_int(v) and v > 0,
    "temperature": _is_number,
    "top_p": _is_number,
    "tools": lambda v: isinstance(v, list),
    "stream_options": lambda v: isinstance(v, dict),
}


def validate_chat_body(body: dict[str, Any]) -> None:
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise ApiError(400, gettext("you must provide a model parameter (a non-empty string)"),
                       "missing_required_parameter" if model is None else "invalid_type", "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, gettext("`messages` must be a non-empty array of message objects"),
                       "missing_required_parameter" if messages is None else "invalid_type",
                       "messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ApiError(400, gettext("messages[%(i)d] must be an object") % {"i": i},
                           "invalid_type", f"messages[{i}]")
        role = message.get("role")
        if not isinstance(role, str) or role not in ROLES:  # a dict or list is unhashable
            raise ApiError(400, gettext("messages[%(i)d].role must be one of %(roles)s")
                           % {"i": i, "roles": ", ".join(sorted(ROLES))},
                           "invalid_value", f"messages[{i}].role")
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise ApiError(400, gettext("messages[%(i)d].content must be a string or an array of "
                                        "parts") % {"i": i},
                           "invalid_type", f"messages[{i}].content")
    for name, ok in _FIELD_CHECKS.items():
        if body.get(name) is not None and not ok(body[name]):
            raise ApiError(400, gettext("invalid value for `%(name)s`") % {"name": name},
                           "invalid_type", name)


class OpenAIStreamSession:
    keepalive = SSE_COMMENT_PING  # a comment: a named event would become an empty chunk

    def __init__(self, normalizer: OpenAIStreamNormalizer) -> None:
        self.normalizer = normalizer
        self._text_frame: tuple[bytes, bytes, str, str] | None = None
        self._frame_fingerprint: str | None = None
        # The upstream's text template whose chunks are plain text here, and the fingerprint
        # such a chunk notes (None: it has none, the normaliser keeps its own).
        self._plain_template: TextTemplate | None = None
        self._plain_fingerprint: str | None = None

    def start(self) -> list[bytes]:
        return []  # the first chunk carries the role: nothing to send before it

    def feed(self, chunk: dict) -> list[bytes]:
        text = self.normalizer.plain_text(chunk)
        if text is not None:  # most chunks: the text goes into the bytes around it
            return [self._text_event(text)]
        return [sse_data(c) for c in self.normalizer.feed(chunk)]

    def feed_text(self, run: TextRun) -> list[bytes]:
        """A TextRun (upstream/text_lane.py): what feed() gives for each of its chunks. Once
        its template is known to be plain text here, and while the answer is in plain text
        (no reasoning open, not closed), its literals go into the text frame all at once."""
        literals = run.literals
        if run.template is not self._plain_template or not self.normalizer.in_plain_text():
            chunk = run.template.chunk_with(run.text(0))
            text = self.normalizer.plain_text(chunk)
            if text is None:  # not plain text (here, or not now): the long way, every one
                return [sse_data(c) for chunk in run.chunks() for c in self.normalizer.feed(chunk)]
            fingerprint = chunk.get("system_fingerprint")
            self._plain_template = run.template
            self._plain_fingerprint = fingerprint if isinstance(fingerprint, str) else None
            literals = literals[1:]
            out = [self._text_event(text)]
            if not literals:
                return out
        else:
            out = []
            if self._plain_fingerprint is not None:
                self.normalizer.system_fingerprint = self._plain_fingerprint
        _, _, before, after = self._text_frame_for_now()
        # Each event is before + literal + after; a literal is what dumps(text) writes.
        out.append((before + (after + before).join(literals) + after).encode())
        return out

    def _text_event(self, text: str) -> bytes:
        """The bytes sse_data gives for a text-only chunk of choice 0, without building and
        serialising the chunk each time."""
        before, after, _, _ = self._text_frame_for_now()
        return before + dumps(text) + after

    def _text_frame_for_now(self) -> tuple[bytes, bytes, str, str]:
        """A text chunk's event around its text literal, as bytes and as text: cut from the
        bytes sse_data gives for one, once (again when the system_fingerprint changes)."""
        fingerprint = self.normalizer.system_fingerprint
        if self._text_frame is None or fingerprint != self._frame_fingerprint:
            whole = sse_data(self.normalizer.text_chunk(""))
            before, _, after = whole.partition(b'"content":""')
            before += b'"content":'
            self._text_frame = (before, after, before.decode(), after.decode())
            self._frame_fingerprint = fingerprint
        return self._text_frame

    def close(self) -> list[bytes]:
        return [*(sse_data(c) for c in self.normalizer.close()), SSE_DONE]

    def fail(self, error: ApiError) -> list[bytes]:
        # Policy: an in-band error, then the one and only [DONE].
        return [sse_data(error.openai_body()), SSE_DONE]


async def chat_completions(request: ApiRequest) -> JsonResult | StreamResult:
    started = time.monotonic()
    opts: GatewayOptions | None = None
    body: dict[str, Any] = {}
    try:
        opts = await admit(request)
        body = await read_json_object(request.body)
        validate_chat_body(body)
        model = await resolve_model(body["model"].strip(), opts)
        upstream_body = {**body, "model": model.upstream_id}
        if body.get("stream"):
            # Usage for the request log and the cost; the client sees it only if it asked.
            upstream_body["stream_options"] = {**(body.get("stream_options") or {}),
                                               "include_usage": True}
        clamp_output_tokens(upstream_body, model)
        model = await model_for_images(model, upstream_body, opts)
        created = now()

        def session(route: Route) -> OpenAIStreamSession:
            return OpenAIStreamSession(OpenAIStreamNormalizer(
                model=route.model.id,
                created=created,
                include_usage=bool((body.get("stream_options") or {}).get("include_usage")),
                preserve_reasoning=opts.preserve_reasoning,
            ))

        def answer(route: Route, completion: dict) -> JsonResult:
            return JsonResult.of(normalize_completion(
                completion, model=route.model.id, completion_id=new_completion_id(),
                created=created, preserve_reasoning=opts.preserve_reasoning))

        return await relay(model, upstream_body, opts, stream=bool(body.get("stream")),
                           session=session, answer=answer, api="openai",
                           requested_model=body["model"], client_body=request.body,
                           conversation=conversation_of(body, request.headers),
                           estimate=await estimate_off_loop(request.body, estimate_chat_parts,
                                                            body)
                           if opts.runtime.calibration.enabled else None)
    except (ApiError, UpstreamError) as error:
        log_refused(error, request, api="openai", started=started,
                    requested_model=body.get("model"),
                    instance=opts.instance.name if opts else request.instance,
                    key_label=opts.key_label if opts else "")
        if isinstance(error, UpstreamError):
            return openai_error(ApiError.from_upstream(error))
        return openai_error(error)
