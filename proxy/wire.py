"""A request in the wire protocol of the account that serves it.

Each upstream kind speaks one protocol (`Provider.wire`): "chat" (OpenAI Chat Completions:
iFlow, OpenAI-compatible) or "messages" (Anthropic Messages). A handler describes its request
as an `Exchange` for each protocol it can send natively: the body, the stream session, the
answer. relay() picks the exchange of the route's protocol; when the handler has none for it,
its chat exchange is bridged through the reverse translators (chat → Messages and back), so
every client whose handler speaks chat (chat completions, and Responses, which the handler
translates to chat) also works on an Anthropic upstream. Anthropic clients on an Anthropic
upstream pass through: their body with only the model rewritten, the upstream's events and
errors as they came.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.utils.translation import gettext

from accounts.services import ModelRef
from iflow2api_lib.wire import SSE_COMMENT_PING, sse_event
from proxy.errors import ApiError
from proxy.http import JsonResult
from proxy.translate.anthropic_to_chat_response import anthropic_to_chat, chat_usage
from proxy.translate.anthropic_to_chat_stream import AnthropicToChatStream
from proxy.translate.chat_to_anthropic import chat_to_anthropic
from proxy.translate.raw_json import replace_top_level
from proxy.translate.types import TranslateOptions, TranslationError
from upstream.client import UpstreamClient
from upstream.providers import get_provider
from upstream.sse import SSEEvent
from upstream.types import PreparedRequest

if TYPE_CHECKING:
    from proxy.pipeline import GatewayOptions, Route
    from proxy.streaming import StreamSession

CHAT, MESSAGES = "chat", "messages"
Answer = Callable[["Route", dict[str, Any], bytes], JsonResult]


@dataclass
class Exchange:
    """One request in one wire protocol. `body` is a dict (encoded when sent) or bytes (sent
    as they are); `endpoint` "count_tokens" sends a Messages body to its count_tokens."""

    wire: str
    body: Callable[[Route], dict[str, Any] | bytes]
    session: Callable[[Route], StreamSession]
    answer: Answer
    betas: str | None = None  # the client's anthropic-beta (the account's policy applies)
    version: str | None = None  # the client's anthropic-version
    endpoint: str = ""

    def prepare(self, route: Route, *, stream: bool) -> PreparedRequest:
        body = self.body(route)
        provider = route.provider
        if self.wire == CHAT:
            assert isinstance(body, dict)
            return provider.prepare_chat(route.target, body, stream=stream)
        if self.endpoint == "count_tokens":
            return provider.prepare_count_tokens(route.target, body, client_betas=self.betas,
                                                 client_version=self.version)
        return provider.prepare_messages(route.target, body, stream=stream,
                                         client_betas=self.betas, client_version=self.version)

    def open(self, client: UpstreamClient, route: Route, prepared: PreparedRequest,
             proxy: str | None, *, text_runs: bool = False) -> AsyncIterator[list[Any]]:
        """The upstream's stream; `text_runs` when the session takes TextRuns."""
        if self.wire == CHAT:
            return client.stream_batches(route.provider, prepared, proxy=proxy,
                                         text_runs=text_runs)
        return client.stream_events(route.provider, prepared, proxy=proxy)


def chat_exchange(body: dict[str, Any], session: Callable[[Route], StreamSession],
                  answer: Callable[[Route, dict[str, Any]], JsonResult]) -> Exchange:
    """A handler's canonical chat request (relay()'s body, session, answer)."""
    return Exchange(CHAT, lambda route: body, session,
                    lambda route, completion, raw: answer(route, completion))


def pick(route: Route, chat: Exchange | None, native: dict[str, Exchange]) -> Exchange:
    """The exchange for the route's protocol: the handler's own, else its chat one bridged."""
    wire = route.provider.wire
    found = native.get(wire) or (chat if wire == CHAT else None)
    if found is not None:
        return found
    if wire == MESSAGES and chat is not None:
        return chat_over_messages(chat)
    raise ApiError(502, gettext("this model's upstream speaks a protocol this API cannot "
                                "reach"), "unsupported_upstream")


# ---------------------------------------------------------------- chat clients, Messages upstream


def chat_over_messages(chat: Exchange) -> Exchange:
    """A chat exchange sent to an Anthropic upstream: the body through chat_to_anthropic,
    the answer and the events back through the anthropic_to_chat translators into the
    handler's own answer and session."""
    translated: dict[str, dict[str, Any]] = {}

    def body(route: Route) -> dict[str, Any]:
        if route.model.id not in translated:
            source = chat.body(route)
            assert isinstance(source, dict)
            options = TranslateOptions(upstream_model=route.model.upstream_id,
                                       max_output_tokens=route.model.max_output_tokens)
            try:
                translated[route.model.id] = chat_to_anthropic(source, options).body
            except TranslationError as exc:
                raise ApiError(400, exc.localized(gettext), param=exc.param) from exc
        return translated[route.model.id]

    def session(route: Route) -> StreamSession:
        return ChatFromMessagesSession(AnthropicToChatStream(model=route.model.id,
                                                             include_usage=True),
                                       chat.session(route))

    def answer(route: Route, message: dict[str, Any], raw: bytes) -> JsonResult:
        return chat.answer(route, anthropic_to_chat(message, model=route.model.id), b"")

    return Exchange(MESSAGES, body, session, answer)


class ChatFromMessagesSession:
    """Messages events → chat chunks → the handler's chat session. An upstream error event
    becomes the inner session's own in-band error."""

    def __init__(self, translator: AnthropicToChatStream, inner: StreamSession) -> None:
        self.translator = translator
        self.inner = inner
        self.keepalive = inner.keepalive
        self.failed = False

    def start(self) -> list[bytes]:
        start = getattr(self.inner, "start", None)
        return start() if start is not None else []

    def _relay(self, chunks: list[dict[str, Any]]) -> list[bytes]:
        failure = self.translator.failure
        if failure is not None and not self.failed:
            chunks = [c for c in chunks if "error" not in c]
            out = [data for chunk in chunks for data in self.inner.feed(chunk)]
            self.failed = True
            return out + self.inner.fail(ApiError(failure.status, failure.message,
                                                  failure.code))
        return [data for chunk in chunks for data in self.inner.feed(chunk)]

    def feed(self, event: SSEEvent) -> list[bytes]:
        if self.failed:
            return []
        return self._relay(self.translator.feed(event.data))

    def close(self) -> list[bytes]:
        if self.failed:
            return []
        out = self._relay(self.translator.close())
        return out if self.failed else out + self.inner.close()

    def fail(self, error: ApiError) -> list[bytes]:
        if self.failed:
            return []
        self.failed = True
        return self.inner.fail(error)


# ---------------------------------------------------------------- Anthropic clients, passthrough


class PassthroughSession:
    """The upstream's events as it sent them, byte for byte; only the gateway's own failures
    (a cut-short stream, a timeout, shutdown) are written by us, as Anthropic `error` events."""

    keepalive = SSE_COMMENT_PING  # a comment: valid before message_start and after it

    def __init__(self) -> None:
        self.ended = False

    def start(self) -> list[bytes]:
        return []  # the upstream's own message_start comes first

    def feed(self, event: SSEEvent) -> list[bytes]:
        if event.data.get("type") in ("message_stop", "error"):
            self.ended = True
        return [event.raw]

    def close(self) -> list[bytes]:
        return []

    def fail(self, error: ApiError) -> list[bytes]:
        if self.ended:
            return []
        self.ended = True
        return [sse_event("error", {"type": "error", "error": {
            "type": error.anthropic_type(), "message": error.message}})]


def passthrough(raw: bytes, headers: dict[str, str], *, max_tokens: int | None = None,
                thinking: dict[str, Any] | None = None, endpoint: str = "") -> Exchange:
    """An Anthropic client's request for an Anthropic upstream: `raw` with only `model` (and
    a max_tokens above the model's limit) rewritten; its anthropic-beta and anthropic-version
    go along (the account's beta policy decides what reaches the upstream)."""
    bodies: dict[str, bytes] = {}

    def body(route: Route) -> bytes:
        if route.model.id not in bodies:
            values: dict[str, Any] = {"model": route.model.upstream_id}
            if max_tokens is not None:
                values["max_tokens"] = max_tokens
            if thinking is not None:
                values["thinking"] = thinking
            bodies[route.model.id] = replace_top_level(raw, values)
        return bodies[route.model.id]

    def answer(route: Route, message: dict[str, Any], data: bytes) -> JsonResult:
        return JsonResult(200, data, [("content-type", "application/json")])

    return Exchange(MESSAGES, body, lambda route: PassthroughSession(), answer,
                    betas=headers.get("anthropic-beta"),
                    version=headers.get("anthropic-version"), endpoint=endpoint)


def clamped(body: dict[str, Any], limit: int | None) -> int | None:
    """The limit when the client's max_tokens is above it (the model's output limit), else
    None: the body keeps its own."""
    value = body.get("max_tokens")
    if limit and isinstance(value, int) and not isinstance(value, bool) and value > limit:
        return limit
    return None


MIN_THINKING_BUDGET = 1024  # Anthropic's floor for thinking.budget_tokens


def thinking_within(body: dict[str, Any], max_tokens: int | None) -> dict[str, Any] | None:
    """The client's extended-thinking setting made valid for a max_tokens clamped down to
    `max_tokens` (Anthropic requires budget_tokens < max_tokens, and at least 1024): the
    budget lowered to max_tokens - 1, or thinking disabled when that is below 1024. None:
    nothing to change."""
    thinking = body.get("thinking")
    if max_tokens is None or not isinstance(thinking, dict) or thinking.get("type") != "enabled":
        return None
    budget = thinking.get("budget_tokens")
    if not isinstance(budget, int) or isinstance(budget, bool) or budget < max_tokens:
        return None
    if max_tokens - 1 < MIN_THINKING_BUDGET:
        return {"type": "disabled"}
    return {**thinking, "budget_tokens": max_tokens - 1}


def native_error(error: Any) -> JsonResult | None:
    """An upstream's own Anthropic error document, for an Anthropic client: its status and
    shape, with the message as the gateway redacted it (hide_secrets)."""
    doc = getattr(error, "native", None)
    status = getattr(error, "upstream_status", None)
    if not isinstance(doc, dict) or not (status or "").isdigit():
        return None
    code = int(status)
    if not 400 <= code <= 599:
        return None
    inner = doc.get("error") if isinstance(doc.get("error"), dict) else {}
    body = {**doc, "error": {**inner, "message": error.message}}
    return JsonResult.of(body, code, ApiError(code, error.message,
                                              retry_after=error.retry_after).headers())


# ---------------------------------------------------------------- what the request log reads


class MessagesUsage:
    """The usage of a Messages stream so far (message_start's, updated by message_delta's),
    as the chat-shaped usage the request log reads."""

    def __init__(self) -> None:
        self.usage: dict[str, Any] = {}

    def see(self, data: dict[str, Any]) -> dict[str, Any] | None:
        kind = data.get("type")
        if kind == "message_start" and isinstance(data.get("message"), dict):
            found = data["message"].get("usage")
        elif kind == "message_delta":
            found = data.get("usage")
        else:
            return None
        if not isinstance(found, dict):
            return None
        self.usage.update({k: v for k, v in found.items() if v is not None})
        return chat_usage(self.usage)


def answer_usage(message: dict[str, Any]) -> dict[str, Any]:
    """A whole Messages answer's usage in the chat shape (what trace.answered reads)."""
    return {"usage": chat_usage(message.get("usage"))}


async def wires_for(model: ModelRef, opts: GatewayOptions) -> set[str]:
    """The protocols of the accounts that may serve `model` on this instance; {"chat"} when
    there are none (relay() then answers why)."""
    accounts = (await opts.runtime.routing.get()).accounts_for(model)
    allowed = opts.instance.account_ids
    found = {get_provider(a.provider).wire for a in accounts if not allowed or a.id in allowed}
    return found or {CHAT}
