"""A fake Anthropic Messages-compatible provider on 127.0.0.1 (the HTTP machinery of
FakeUpstream, its own routes): it checks the key in the account's header style, requires
anthropic-version, refuses betas it does not know (as vendors do) and records every request's
bytes, so a passthrough can be asserted byte for byte.

Usage::

    with FakeAnthropic(api_key="sk-ant-fake", auth="bearer") as fake:
        fake.script(message([thinking("hm", "sig-1"), text_block("hi")]))
        ...point an Anthropic-kind account at fake.url...
        assert fake.messages_requests[0].body == what_the_client_sent
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from .scenarios import Plan
from .upstream import FakeUpstream, RecordedRequest, _Connection

MESSAGES_PATHS = frozenset({"/v1/messages"})
COUNT_PATH = "/v1/messages/count_tokens"
MODELS_PATH = "/v1/models"


def text_block(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def thinking(text: str, signature: str) -> dict[str, Any]:
    return {"type": "thinking", "thinking": text, "signature": signature}


def tool_use(tool_id: str, name: str, tool_input: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": tool_id, "name": name, "input": tool_input}


@dataclass(frozen=True)
class Reply:
    """One answer: a message (content blocks), an HTTP error, or raw event bytes. Streams may
    end early (`cut_after` events, then the connection drops) or with an `error` event."""

    content: tuple[dict[str, Any], ...] = ()
    stop_reason: str = "end_turn"
    usage: dict[str, Any] = field(default_factory=dict)
    status: int = 200
    error: dict[str, Any] | None = None  # an HTTP error's body
    error_event_after: int | None = None  # stream: an `error` event after this many events
    cut_after: int | None = None  # stream: drop the connection after this many events
    raw_events: tuple[bytes, ...] = ()
    name: str = "message"
    delays: tuple[float, ...] = ()  # stream: seconds before each event (missing ones: none)


def message(content: Sequence[dict[str, Any]], *, stop_reason: str = "end_turn",
            usage: dict[str, Any] | None = None, name: str = "message") -> Reply:
    return Reply(tuple(content), stop_reason, dict(usage or {}), name=name)


def http_error(status: int, kind: str, text: str) -> Reply:
    return Reply(status=status, error={"type": "error", "error": {"type": kind, "message": text},
                                       "request_id": "req_fake_upstream"}, name=f"http_{status}")


def event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _usage(reply: Reply, body: bytes) -> dict[str, Any]:
    return {"input_tokens": max(1, len(body) // 4), "output_tokens": 7,
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, **reply.usage}


def _message_json(reply: Reply, model: str, body: bytes) -> dict[str, Any]:
    return {"id": "msg_fake_0001", "type": "message", "role": "assistant", "model": model,
            "content": list(reply.content), "stop_reason": reply.stop_reason,
            "stop_sequence": None, "usage": _usage(reply, body)}


def _block_events(index: int, block: dict[str, Any]) -> list[bytes]:
    kind = block["type"]
    if kind == "text":
        start, deltas = {"type": "text", "text": ""}, [
            {"type": "text_delta", "text": part} for part in _split(block["text"])]
    elif kind == "thinking":
        start = {"type": "thinking", "thinking": "", "signature": ""}
        deltas = [{"type": "thinking_delta", "thinking": p} for p in _split(block["thinking"])]
        deltas.append({"type": "signature_delta", "signature": block["signature"]})
    elif kind == "tool_use":
        start = {**block, "input": {}}
        text = json.dumps(block["input"], ensure_ascii=False)
        deltas = [{"type": "input_json_delta", "partial_json": text[i:i + 9]}
                  for i in range(0, len(text), 9)]
    else:
        start, deltas = block, []
    out = [event("content_block_start", {"type": "content_block_start", "index": index,
                                         "content_block": start})]
    out += [event("content_block_delta", {"type": "content_block_delta", "index": index,
                                          "delta": d}) for d in deltas]
    out.append(event("content_block_stop", {"type": "content_block_stop", "index": index}))
    return out


def _split(text: str) -> list[str]:
    words = text.split(" ")
    return [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)] or [""]


def stream_events(reply: Reply, model: str, body: bytes) -> list[bytes]:
    if reply.raw_events:
        return list(reply.raw_events)
    usage = _usage(reply, body)
    start = {**_message_json(reply, model, body), "content": [], "stop_reason": None,
             "usage": {**usage, "output_tokens": 1}}
    out = [event("message_start", {"type": "message_start", "message": start}),
           event("ping", {"type": "ping"})]
    for index, block in enumerate(reply.content):
        out += _block_events(index, block)
    out.append(event("message_delta", {
        "type": "message_delta", "delta": {"stop_reason": reply.stop_reason,
                                           "stop_sequence": None},
        "usage": {"output_tokens": usage["output_tokens"]}}))
    out.append(event("message_stop", {"type": "message_stop"}))
    if reply.error_event_after is not None:
        out = [*out[:reply.error_event_after], event("error", {
            "type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})]
    return out


ReplySource = Reply | Callable[[RecordedRequest], Reply]


class FakeAnthropic(FakeUpstream):
    """`auth`: "x-api-key" or "bearer" (the only header accepted); anthropic-version must be
    there (a date: clients send newer ones than 2023-06-01); `known_betas`: the
    anthropic-beta values accepted (others: 400, as vendors answer), None accepts any;
    `count_tokens`: False answers that endpoint with 404 (vendors without it); `page_size`:
    GET /v1/models lists that many models a page (`has_more`, `last_id`, `?after_id=`), as
    Anthropic does; None lists them all at once."""

    def __init__(self, api_key: str = "sk-ant-fake-key", *, auth: str = "x-api-key",
                 models: Iterable[str] = ("glm-4.6-anthropic",),
                 known_betas: Iterable[str] | None = None, count_tokens: bool = True,
                 page_size: int | None = None) -> None:
        super().__init__(api_key, flavor="openai", models=models)
        self.auth = auth
        self.known_betas = set(known_betas) if known_betas is not None else None
        self.count_tokens = count_tokens
        self.page_size = page_size
        self.default: ReplySource = message([text_block("Hello from the fake Anthropic.")],
                                            name="default")

    @property
    def messages_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path in MESSAGES_PATHS]

    def _reply(self, rec: RecordedRequest) -> Reply:
        with self._lock:
            source = self._queue.popleft() if self._queue else self.default
        return source if isinstance(source, Reply) else source(rec)  # type: ignore[return-value]

    def _anthropic_auth_error(self, rec: RecordedRequest) -> str | None:
        if self.auth == "bearer":
            if rec.header_all("x-api-key"):
                return "x-api-key sent to a Bearer-only upstream"
            if rec.bearer not in self.api_keys:
                return "missing or unknown Bearer key"
        else:
            if rec.header_all("authorization"):
                return "Authorization sent to an x-api-key upstream"
            keys = rec.header_all("x-api-key")
            if len(keys) != 1 or keys[0] not in self.api_keys:
                return "missing or unknown x-api-key"
        return None

    def _check(self, rec: RecordedRequest) -> Plan | None:
        rec.auth_error = self._anthropic_auth_error(rec)
        if rec.auth_error:
            return self._doc_plan(401, "authentication_error", "invalid x-api-key")
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", rec.header("anthropic-version") or ""):
            rec.auth_error = f"anthropic-version is {rec.header('anthropic-version')!r}"
            return self._doc_plan(400, "invalid_request_error",
                                  "anthropic-version: header is required")
        betas = [b.strip() for v in rec.header_all("anthropic-beta") for b in v.split(",")]
        unknown = [b for b in betas if self.known_betas is not None and b not in self.known_betas]
        if unknown:
            rec.auth_error = f"unknown betas {unknown}"
            return self._doc_plan(400, "invalid_request_error",
                                  f"Unexpected value(s) `{','.join(unknown)}` for the "
                                  "`anthropic-beta` header.")
        return None

    def _doc_plan(self, status: int, kind: str, text: str) -> Plan:
        return self._json_plan(status, {"type": "error", "error": {"type": kind,
                                                                   "message": text}})

    def _model_page(self, after_id: str) -> dict[str, Any]:
        models = list(self.models)
        start = models.index(after_id) + 1 if after_id in models else 0
        page = models[start:start + self.page_size] if self.page_size else models[start:]
        return {"data": [{"type": "model", "id": m, "display_name": m.upper(),
                          "created_at": "2026-01-01T00:00:00Z"} for m in page],
                "has_more": start + len(page) < len(models),
                "first_id": page[0] if page else None, "last_id": page[-1] if page else None}

    async def _route(self, conn: _Connection, rec: RecordedRequest) -> None:
        if rec.path == MODELS_PATH and rec.method == "GET":
            refused = self._check(rec)
            return await self._execute(conn, rec, refused or self._json_plan(
                200, self._model_page(parse_qs(rec.query).get("after_id", [""])[0])))
        if rec.method != "POST" or rec.path not in (*MESSAGES_PATHS, COUNT_PATH):
            return await self._execute(conn, rec, self._doc_plan(404, "not_found_error",
                                                                 f"no route {rec.path}"))
        refused = self._check(rec)
        if refused is not None:
            return await self._execute(conn, rec, refused)
        if rec.path == COUNT_PATH:
            if not self.count_tokens:
                return await self._execute(conn, rec, self._doc_plan(404, "not_found_error",
                                                                     "Not Found"))
            counted = {"input_tokens": 1000 + len(rec.body)}  # recognisably not an estimate
            return await self._execute(conn, rec, self._json_plan(200, counted))
        reply = self._reply(rec)
        rec.scenario = reply.name
        doc = rec.json or {}
        model = doc.get("model") if isinstance(doc.get("model"), str) else "unknown"
        if reply.error is not None:
            return await self._execute(conn, rec, self._json_plan(reply.status, reply.error))
        if doc.get("stream") is not True:
            return await self._execute(conn, rec, self._json_plan(
                200, _message_json(reply, model, rec.body)))
        parts = stream_events(reply, model, rec.body)
        plan = Plan(200, [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")],
                    parts, framing="chunked", drop_after=reply.cut_after,
                    delays=[*reply.delays, *(0.0,) * max(0, len(parts) - len(reply.delays))])
        self.in_flight += 1
        try:
            await self._execute(conn, rec, plan)
        finally:
            self.in_flight -= 1
