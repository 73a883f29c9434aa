"""A fast fake OpenAI-compatible upstream for benchmarks (raw asyncio Protocol, uvloop if any).

  python bench/fake_upstream.py --port 18000 [--chunks 20] [--chunk-delay-ms 0]

Endpoints, under any path prefix (`/v1/...`, `/...`):
  POST */chat/completions  a small chat.completion JSON; with "stream": true, N SSE content
                           chunks, a finish chunk, a usage chunk when
                           stream_options.include_usage is set, then `data: [DONE]`.
  POST */messages          Anthropic Messages: a small message JSON; with "stream": true the
                           Anthropic event grammar (message_start, ping, one text block of N
                           text_delta events, message_delta, message_stop), for the
                           Anthropic passthrough (an Anthropic-compatible account).
  GET  */models            the model list.
  POST /__config?chunks=N&chunk_delay_ms=X&first_delay_ms=Y   change pacing at run time.
  GET  /__stats            request counts per kind, and the current pacing.
Any credentials are accepted. Listens on 127.0.0.1 only. HTTP/1.1 keep-alive and pipelining;
request bodies by Content-Length (chunked request bodies are answered 411).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections import Counter
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

CONFIG: dict[str, float] = {"chunks": 20, "chunk_delay_ms": 0.0, "first_delay_ms": 0.0}
STATS: Counter[str] = Counter()
CREATED = 1_700_000_000
MAX_HEAD = 64 * 1024
MAX_BODY = 8 * 1024 * 1024


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def http_response(status: str, body: bytes, ctype: bytes = b"application/json") -> bytes:
    return (b"HTTP/1.1 " + status.encode() + b"\r\nContent-Type: " + ctype
            + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def completion(model: str) -> bytes:
    return http_response("200 OK", _dumps({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": CREATED, "model": model,
        "choices": [{"index": 0, "finish_reason": "stop", "message": {
            "role": "assistant", "content": "Hello from the bench upstream."}}],
        "usage": {"prompt_tokens": 8, "completion_tokens": 6, "total_tokens": 14},
    }))


STREAM_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n")


def stream_events(model: str, n: int, usage: bool) -> list[bytes]:
    """Each SSE event framed as one HTTP chunk; the last item is the chunked terminator."""
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": CREATED,
            "model": model}
    events = []
    for i in range(n):
        delta = {"role": "assistant", "content": "tok0 "} if i == 0 else {"content": f"tok{i} "}
        events.append(dict(base, choices=[{"index": 0, "delta": delta, "finish_reason": None}]))
    events.append(dict(base, choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}]))
    if usage:
        events.append(dict(base, choices=[], usage={
            "prompt_tokens": 8, "completion_tokens": n, "total_tokens": 8 + n}))
    raw = [b"data: " + _dumps(e) + b"\n\n" for e in events] + [b"data: [DONE]\n\n"]
    return [b"%x\r\n%s\r\n" % (len(r), r) for r in raw] + [b"0\r\n\r\n"]


def anthropic_events(model: str, n: int) -> list[bytes]:
    """The Anthropic stream of N text deltas, each event one HTTP chunk, then the terminator."""
    usage = {"input_tokens": 8, "output_tokens": n, "cache_creation_input_tokens": 0,
             "cache_read_input_tokens": 0}
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": {
            "id": "msg_bench", "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {**usage, "output_tokens": 1}}}),
        ("ping", {"type": "ping"}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}})]
    events += [("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {
        "type": "text_delta", "text": f"tok{i} "}}) for i in range(n)]
    events += [("content_block_stop", {"type": "content_block_stop", "index": 0}),
               ("message_delta", {"type": "message_delta", "delta": {
                   "stop_reason": "end_turn", "stop_sequence": None},
                   "usage": {"output_tokens": n}}),
               ("message_stop", {"type": "message_stop"})]
    raw = [b"event: " + name.encode() + b"\ndata: " + _dumps(data) + b"\n\n"
           for name, data in events]
    return [b"%x\r\n%s\r\n" % (len(r), r) for r in raw] + [b"0\r\n\r\n"]


def anthropic_message(model: str) -> bytes:
    return http_response("200 OK", _dumps({
        "id": "msg_bench", "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "text", "text": "Hello from the bench upstream."}],
        "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": 8, "output_tokens": 6}}))


_cache: dict[tuple[str, int, bool], list[bytes]] = {}
_anthropic_cache: dict[tuple[str, int], list[bytes]] = {}


def cached_events(model: str, n: int, usage: bool) -> list[bytes]:
    key = (model, n, usage)
    if key not in _cache:
        if len(_cache) > 256:
            _cache.clear()
        _cache[key] = stream_events(model, n, usage)
    return _cache[key]


def models_body() -> bytes:
    return http_response("200 OK", _dumps({"object": "list", "data": [
        {"id": "bench-model", "object": "model", "created": CREATED, "owned_by": "bench"}]}))


class Upstream(asyncio.Protocol):
    def __init__(self) -> None:
        self.buf = b""
        self.busy = False  # a paced stream is being written; later requests wait in buf
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self.process()

    def process(self) -> None:
        while self.transport is not None and not self.busy:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > MAX_HEAD:
                    self.fail("431 Request Header Fields Too Large")
                return
            head = self.buf[:end].decode("latin-1")
            lines = head.split("\r\n")
            parts = lines[0].split(" ")
            if len(parts) != 3:
                self.fail("400 Bad Request")
                return
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if "chunked" in headers.get("transfer-encoding", "").lower():
                self.fail("411 Length Required")
                return
            length = int(headers.get("content-length") or 0)
            if length > MAX_BODY:
                self.fail("413 Payload Too Large")
                return
            if len(self.buf) < end + 4 + length:
                return
            body = self.buf[end + 4:end + 4 + length]
            self.buf = self.buf[end + 4 + length:]
            self.handle(parts[0], parts[1], body)
            if headers.get("connection", "").lower() == "close" and self.transport:
                self.transport.close()

    def fail(self, status: str) -> None:
        assert self.transport is not None
        self.transport.write(http_response(status, _dumps({"error": {"message": status}})))
        self.transport.close()

    def handle(self, method: str, target: str, body: bytes) -> None:
        assert self.transport is not None
        url = urlsplit(target)
        path = url.path.rstrip("/")
        if method == "POST" and path.endswith("/chat/completions"):
            self.chat(body)
        elif method == "POST" and path.endswith("/messages"):
            self.messages(body)
        elif method == "GET" and path.endswith("/models"):
            STATS["models"] += 1
            self.transport.write(models_body())
        elif path == "/__config":
            for key, values in parse_qs(url.query).items():
                if key in CONFIG:
                    CONFIG[key] = float(values[-1])
            if "reset_stats" in parse_qs(url.query):
                STATS.clear()
            self.transport.write(http_response("200 OK", _dumps(CONFIG)))
        elif path == "/__stats":
            self.transport.write(http_response("200 OK", _dumps({"stats": STATS,
                                                                 "config": CONFIG})))
        else:
            STATS["not_found"] += 1
            self.transport.write(http_response("404 Not Found", _dumps(
                {"error": {"message": f"no route {method} {path}", "type": "not_found"}})))

    def chat(self, body: bytes) -> None:
        assert self.transport is not None
        try:
            req = json.loads(body)
            assert isinstance(req, dict)
        except (ValueError, AssertionError):
            STATS["bad_json"] += 1
            self.transport.write(http_response("400 Bad Request", _dumps(
                {"error": {"message": "body is not a JSON object", "type": "invalid_request"}})))
            return
        model = str(req.get("model") or "bench-model")
        if not req.get("stream"):
            STATS["chat"] += 1
            self.transport.write(completion(model))
            return
        STATS["chat_stream"] += 1
        usage = bool((req.get("stream_options") or {}).get("include_usage"))
        events = cached_events(model, int(CONFIG["chunks"]), usage)
        if CONFIG["chunk_delay_ms"] <= 0 and CONFIG["first_delay_ms"] <= 0:
            self.transport.write(STREAM_HEAD + b"".join(events))
            return
        self.busy = True
        asyncio.get_running_loop().create_task(self.paced(events))

    def messages(self, body: bytes) -> None:
        """Anthropic Messages (any x-api-key / Bearer / anthropic-version accepted)."""
        assert self.transport is not None
        try:
            req = json.loads(body)
            assert isinstance(req, dict)
        except (ValueError, AssertionError):
            STATS["bad_json"] += 1
            self.transport.write(http_response("400 Bad Request", _dumps({
                "type": "error", "error": {"type": "invalid_request_error",
                                           "message": "body is not a JSON object"}})))
            return
        model = str(req.get("model") or "bench-model")
        if not req.get("stream"):
            STATS["messages"] += 1
            self.transport.write(anthropic_message(model))
            return
        STATS["messages_stream"] += 1
        key = (model, int(CONFIG["chunks"]))
        if key not in _anthropic_cache:
            if len(_anthropic_cache) > 256:
                _anthropic_cache.clear()
            _anthropic_cache[key] = anthropic_events(*key)
        events = _anthropic_cache[key]
        if CONFIG["chunk_delay_ms"] <= 0 and CONFIG["first_delay_ms"] <= 0:
            self.transport.write(STREAM_HEAD + b"".join(events))
            return
        self.busy = True
        asyncio.get_running_loop().create_task(self.paced(events))

    async def paced(self, events: list[bytes]) -> None:
        first, gap = CONFIG["first_delay_ms"] / 1000, CONFIG["chunk_delay_ms"] / 1000
        try:
            if self.transport is None:
                return
            self.transport.write(STREAM_HEAD)
            if first > 0:
                await asyncio.sleep(first)
            for i, event in enumerate(events):
                if self.transport is None:
                    return
                if i and gap > 0 and i < len(events) - 1:
                    await asyncio.sleep(gap)
                self.transport.write(event)
        finally:
            self.busy = False
            if self.transport is not None and self.buf:
                self.process()


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Upstream, "127.0.0.1", port, backlog=4096)
    print(f"fake upstream on http://127.0.0.1:{port}/v1", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=18000)
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0)
    parser.add_argument("--first-delay-ms", type=float, default=0.0)
    args = parser.parse_args()
    CONFIG.update(chunks=args.chunks, chunk_delay_ms=args.chunk_delay_ms,
                  first_delay_ms=args.first_delay_ms)
    try:
        import uvloop  # type: ignore[import-not-found]
    except ImportError:
        asyncio.run(serve(args.port))
    else:
        uvloop.run(serve(args.port))


if __name__ == "__main__":
    main()
