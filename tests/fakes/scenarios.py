"""Scenarios for the fake upstream: what one chat request is answered with.

A :class:`Scenario` is a plain description; :func:`render` turns it into a :class:`Plan`
(status, headers, body parts, pacing, failure mode) for one concrete request, so the same
scenario answers stream and non-stream requests and both wire flavours ("iflow" writes
``data:{json}``, "openai" writes ``data: {json}``).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["chat", "envelope", "http_error", "empty", "hang", "raw", "events"]
Framing = Literal["chunked", "length", "close"]

__all__ = [
    "Plan",
    "RenderContext",
    "Scenario",
    "close_delimited",
    "drop_after",
    "empty_stream",
    "envelope_error",
    "events",
    "hang",
    "http_error",
    "raw",
    "reasoning",
    "render",
    "slow",
    "text",
    "tool_calls",
]


@dataclass(frozen=True)
class Scenario:
    """What to answer one chat request with. Build it with the constructors below."""

    kind: Kind = "chat"
    name: str = ""
    # kind "chat"
    content: str = ""
    reasoning: str = ""
    calls: tuple[tuple[str, Any], ...] = ()
    chunks: int | None = None
    fragment_size: int = 7
    parallel: bool = False
    call_ids: tuple[str, ...] | None = None
    finish_reason: str | None = None
    usage: Mapping[str, Any] | None = None
    # kinds "envelope", "http_error", "raw", "events"
    status: int = 200
    body: Any = None
    headers: tuple[tuple[str, str], ...] = ()
    body_chunks: tuple[bytes, ...] = ()
    delays: tuple[float, ...] = ()
    framing: Framing = "chunked"
    payloads: tuple[Any, ...] = ()
    done: bool = True
    # pacing and failure, applicable to every kind
    header_delay: float = 0.0
    first_delay: float = 0.0
    chunk_delay: float = 0.0
    drop_after: int | None = None
    reset: bool = False
    cut_inside: bool = False
    body_framing: Framing | None = None  # overrides the framing the kind would use

    @property
    def label(self) -> str:
        return self.name or self.kind


@dataclass(frozen=True)
class RenderContext:
    flavor: str
    model: str
    stream: bool
    include_usage: bool
    prompt_tokens: int
    response_id: str
    created: int


@dataclass
class Plan:
    """A response ready to be written: parts are unframed body pieces."""

    status: int
    headers: list[tuple[str, str]]
    parts: list[bytes] = field(default_factory=list)
    delays: list[float] = field(default_factory=list)
    framing: Framing = "chunked"
    hang: bool = False
    header_delay: float = 0.0
    drop_after: int | None = None
    reset: bool = False
    cut_inside: bool = False


# --------------------------------------------------------------------------- constructors


def text(
    content: str,
    *,
    chunks: int | None = None,
    usage: Mapping[str, Any] | None = None,
    finish_reason: str = "stop",
    name: str = "",
) -> Scenario:
    """A plain answer. Streamed word by word, or in exactly ``chunks`` content deltas."""
    return Scenario(
        kind="chat",
        name=name or "text",
        content=content,
        chunks=chunks,
        usage=usage,
        finish_reason=finish_reason,
    )


def reasoning(
    thinking: str,
    answer: str,
    *,
    chunks: int | None = None,
    usage: Mapping[str, Any] | None = None,
    name: str = "",
) -> Scenario:
    """``reasoning_content`` deltas first, then ``content`` deltas."""
    return Scenario(
        kind="chat",
        name=name or "reasoning",
        reasoning=thinking,
        content=answer,
        chunks=chunks,
        usage=usage,
        finish_reason="stop",
    )


def tool_calls(
    calls: Sequence[tuple[str, Mapping[str, Any] | str]],
    *,
    fragment_size: int = 7,
    parallel: bool = False,
    content: str | None = None,
    ids: Sequence[str] | None = None,
    usage: Mapping[str, Any] | None = None,
    name: str = "",
) -> Scenario:
    """Tool calls ``[(name, arguments), ...]``; arguments given as a str are sent verbatim.

    Ids default to ``call_0``, ``call_1``… (index-based); pass ``ids`` to override
    (e.g. Kimi's ``functions.{name}:{index}``).
    """
    if fragment_size < 1:
        raise ValueError("fragment_size must be >= 1")
    if ids is not None and len(ids) != len(calls):
        raise ValueError("ids must match calls")
    return Scenario(
        kind="chat",
        name=name or "tool_calls",
        content=content or "",
        calls=tuple((n, a) for n, a in calls),
        fragment_size=fragment_size,
        parallel=parallel,
        call_ids=tuple(ids) if ids is not None else None,
        usage=usage,
        finish_reason="tool_calls",
    )


def envelope_error(code: str, msg: str, *, name: str = "") -> Scenario:
    """iFlow's error style: HTTP 200 ``{"status": code, "msg": msg, "body": null}``."""
    return Scenario(
        kind="envelope",
        name=name or f"envelope_{code}",
        body={"status": str(code), "msg": msg, "body": None},
    )


def http_error(
    status: int,
    body: Mapping[str, Any] | str,
    headers: Mapping[str, str] | None = None,
    *,
    name: str = "",
) -> Scenario:
    """A plain HTTP error; a dict body is sent as JSON, a str as text/plain."""
    return Scenario(
        kind="http_error",
        name=name or f"http_{status}",
        status=status,
        body=dict(body) if isinstance(body, Mapping) else body,
        headers=tuple((headers or {}).items()),
    )


def empty_stream(*, name: str = "") -> Scenario:
    """HTTP 200 text/event-stream that ends without a single data line (no [DONE])."""
    return Scenario(kind="empty", name=name or "empty_stream")


def hang(*, name: str = "") -> Scenario:
    """Accept the request, never send a byte, wait for the client to go away."""
    return Scenario(kind="hang", name=name or "hang")


def raw(
    status: int = 200,
    headers: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
    body_chunks: Sequence[bytes] = (),
    delays: float | Sequence[float] | None = None,
    *,
    framing: Framing = "chunked",
    name: str = "",
) -> Scenario:
    """Exact bytes. ``delays``: one value for every chunk, or one per chunk (before it).

    framing "chunked" (default): each item becomes one HTTP chunk (Transfer-Encoding added
    unless given); "length": Content-Length added unless given; "close": nothing is added,
    items are written verbatim and the connection is closed at the end.
    """
    pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers or [])
    n = len(body_chunks)
    if delays is None:
        per: tuple[float, ...] = (0.0,) * n
    elif isinstance(delays, int | float):
        per = (float(delays),) * n
    else:
        per = tuple(float(d) for d in delays) + (0.0,) * max(0, n - len(delays))
    return Scenario(
        kind="raw",
        name=name or "raw",
        status=status,
        headers=tuple(pairs),
        body_chunks=tuple(bytes(c) for c in body_chunks),
        delays=per[:n],
        framing=framing,
    )


def events(payloads: Sequence[Any], *, done: bool = True, name: str = "") -> Scenario:
    """A hand-made SSE stream in the server's flavour.

    dict → one ``data:`` line of JSON (a dict with "choices" gets missing id/object/created/model
    filled in); str → ``data:<str>``; bytes → written verbatim (comments, odd framing).
    ``done`` appends ``[DONE]``.
    """
    return Scenario(kind="events", name=name or "events", payloads=tuple(payloads), done=done)


def slow(
    scenario: Scenario,
    *,
    first_delay: float = 0.0,
    chunk_delay: float = 0.0,
    header_delay: float = 0.0,
) -> Scenario:
    """Pace a scenario: header_delay before the status line, first_delay before the first body
    part, chunk_delay before each later part."""
    return dataclasses.replace(
        scenario, first_delay=first_delay, chunk_delay=chunk_delay, header_delay=header_delay
    )


def drop_after(
    n_chunks: int, scenario: Scenario, *, reset: bool = False, cut_inside: bool = False
) -> Scenario:
    """Send the headers and ``n_chunks`` body parts, then kill the connection (no [DONE], no
    terminating HTTP chunk). reset=True sends a TCP RST instead of a FIN. cut_inside=True also
    sends the first half of the next part (for chunked framing: its whole chunk-size line but
    only half its bytes), so the body breaks inside an HTTP chunk and inside an SSE event."""
    return dataclasses.replace(scenario, drop_after=n_chunks, reset=reset, cut_inside=cut_inside)


def close_delimited(scenario: Scenario) -> Scenario:
    """Answer without Content-Length or chunked encoding, with ``Connection: close``: the body
    ends when the connection does (HTTP/1.0 style, as some servers and proxies send)."""
    return dataclasses.replace(scenario, body_framing="close")


# --------------------------------------------------------------------------- rendering

_WORDS = re.compile(r"\S+\s*|\s+")


def split_text(value: str, chunks: int | None) -> list[str]:
    """Word pieces, or exactly ``chunks`` nearly equal pieces (fewer if the text is shorter)."""
    if not value:
        return []
    if chunks is None:
        return _WORDS.findall(value)
    n = max(1, min(chunks, len(value)))
    q, r = divmod(len(value), n)
    out: list[str] = []
    pos = 0
    for i in range(n):
        size = q + (1 if i < r else 0)
        out.append(value[pos : pos + size])
        pos += size
    return out


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _args_text(args: Any) -> str:
    return args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)


def _sse(flavor: str, data: str) -> bytes:
    prefix = "data:" if flavor == "iflow" else "data: "
    return f"{prefix}{data}\n\n".encode()


def _usage(sc: Scenario, ctx: RenderContext) -> dict[str, Any]:
    if sc.usage is not None:
        return dict(sc.usage)
    out_chars = len(sc.content) + len(sc.reasoning)
    out_chars += sum(len(_args_text(a)) + len(n) for n, a in sc.calls)
    completion = max(1, out_chars // 4)
    usage: dict[str, Any] = {
        "prompt_tokens": ctx.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": ctx.prompt_tokens + completion,
    }
    if sc.reasoning:
        usage["completion_tokens_details"] = {"reasoning_tokens": max(1, len(sc.reasoning) // 4)}
    return usage


def _call_id(sc: Scenario, index: int) -> str:
    return sc.call_ids[index] if sc.call_ids is not None else f"call_{index}"


def _tool_fragments(sc: Scenario) -> list[dict[str, Any]]:
    per_call: list[list[dict[str, Any]]] = []
    for index, (fname, args) in enumerate(sc.calls):
        head = {
            "index": index,
            "id": _call_id(sc, index),
            "type": "function",
            "function": {"name": fname, "arguments": ""},
        }
        arg = _args_text(args)
        size = sc.fragment_size
        frags = [
            {"index": index, "function": {"arguments": arg[i : i + size]}}
            for i in range(0, len(arg), size)
        ]
        per_call.append([head, *frags])
    if not sc.parallel:
        return [f for frags in per_call for f in frags]
    out: list[dict[str, Any]] = []
    longest = max((len(f) for f in per_call), default=0)
    for step in range(longest):
        out.extend(frags[step] for frags in per_call if step < len(frags))
    return out


def _chunk(ctx: RenderContext, delta: dict[str, Any], finish: str | None = None) -> str:
    return _dumps(
        {
            "id": ctx.response_id,
            "object": "chat.completion.chunk",
            "created": ctx.created,
            "model": ctx.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
    )


def _chat_stream(sc: Scenario, ctx: RenderContext) -> list[bytes]:
    fl = ctx.flavor
    parts = [_sse(fl, _chunk(ctx, {"role": "assistant", "content": ""}))]
    parts += [
        _sse(fl, _chunk(ctx, {"reasoning_content": p})) for p in split_text(sc.reasoning, sc.chunks)
    ]
    parts += [_sse(fl, _chunk(ctx, {"content": p})) for p in split_text(sc.content, sc.chunks)]
    parts += [_sse(fl, _chunk(ctx, {"tool_calls": [f]})) for f in _tool_fragments(sc)]
    parts.append(_sse(fl, _chunk(ctx, {}, sc.finish_reason or "stop")))
    if ctx.include_usage:
        usage_chunk = {
            "id": ctx.response_id,
            "object": "chat.completion.chunk",
            "created": ctx.created,
            "model": ctx.model,
            "choices": [],
            "usage": _usage(sc, ctx),
        }
        parts.append(_sse(fl, _dumps(usage_chunk)))
    parts.append(_sse(fl, "[DONE]"))
    return parts


def _chat_json(sc: Scenario, ctx: RenderContext) -> bytes:
    message: dict[str, Any] = {"role": "assistant", "content": sc.content}
    if sc.reasoning:
        message["reasoning_content"] = sc.reasoning
    if sc.calls:
        message["content"] = sc.content or None
        message["tool_calls"] = [
            {
                "id": _call_id(sc, i),
                "type": "function",
                "function": {"name": n, "arguments": _args_text(a)},
            }
            for i, (n, a) in enumerate(sc.calls)
        ]
    doc = {
        "id": ctx.response_id,
        "object": "chat.completion",
        "created": ctx.created,
        "model": ctx.model,
        "choices": [{"index": 0, "message": message, "finish_reason": sc.finish_reason or "stop"}],
        "usage": _usage(sc, ctx),
    }
    return _dumps(doc).encode()


def _event_parts(sc: Scenario, ctx: RenderContext) -> list[bytes]:
    parts: list[bytes] = []
    for p in sc.payloads:
        if isinstance(p, bytes | bytearray):
            parts.append(bytes(p))
        elif isinstance(p, str):
            parts.append(_sse(ctx.flavor, p))
        else:
            doc = dict(p)
            if "choices" in doc:
                doc.setdefault("id", ctx.response_id)
                doc.setdefault("object", "chat.completion.chunk")
                doc.setdefault("created", ctx.created)
                doc.setdefault("model", ctx.model)
            parts.append(_sse(ctx.flavor, _dumps(doc)))
    if sc.done:
        parts.append(_sse(ctx.flavor, "[DONE]"))
    return parts


_SSE_HEADERS = [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")]
_JSON = ("Content-Type", "application/json")


def render(sc: Scenario, ctx: RenderContext) -> Plan:
    """Turn a scenario into a concrete response for one request."""
    if sc.kind == "hang":
        plan = Plan(status=200, headers=[], hang=True)
    elif sc.kind == "chat":
        if ctx.stream:
            plan = Plan(200, list(_SSE_HEADERS), _chat_stream(sc, ctx))
        else:
            plan = Plan(200, [_JSON], [_chat_json(sc, ctx)], framing="length")
    elif sc.kind == "events":
        plan = Plan(200, list(_SSE_HEADERS), _event_parts(sc, ctx))
    elif sc.kind == "empty":
        plan = Plan(200, list(_SSE_HEADERS), [])
    elif sc.kind == "envelope":
        plan = Plan(200, [_JSON], [_dumps(sc.body).encode()], framing="length")
    elif sc.kind == "http_error":
        if isinstance(sc.body, str):
            body = sc.body.encode()
            headers = [("Content-Type", "text/plain; charset=utf-8")]
        else:
            body = _dumps(sc.body).encode()
            headers = [_JSON]
        given = {k.lower() for k, _ in sc.headers}
        headers = [h for h in headers if h[0].lower() not in given] + list(sc.headers)
        plan = Plan(sc.status, headers, [body], framing="length")
    elif sc.kind == "raw":
        plan = Plan(sc.status, list(sc.headers), list(sc.body_chunks), framing=sc.framing)
        plan.delays = list(sc.delays)
    else:  # pragma: no cover - guarded by the Literal type
        raise ValueError(f"unknown scenario kind {sc.kind!r}")
    base = plan.delays or [0.0] * len(plan.parts)
    plan.delays = [d + (sc.first_delay if i == 0 else sc.chunk_delay) for i, d in enumerate(base)]
    plan.header_delay = sc.header_delay
    plan.drop_after = sc.drop_after
    plan.reset = sc.reset
    plan.cut_inside = sc.cut_inside
    if sc.body_framing is not None and not plan.hang:
        plan.framing = sc.body_framing
        plan.headers = [(k, v) for k, v in plan.headers if k.lower() != "content-length"]
        if sc.body_framing == "close":
            plan.headers.append(("Connection", "close"))
    return plan
