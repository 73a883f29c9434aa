"""aiohttp load generator: C workers loop for a fixed time over one pooled session.

Per request: total latency (body fully read), and for streams the time to the first body byte
of a data event (TTFB). A request counts as OK only with status 200 and a valid body: a JSON
completion with "choices", a stream ending in `data: [DONE]`, or an Anthropic stream with
`event: message_stop`, or a Responses stream with `event: response.completed`. Errors are
counted by kind, with one sample message each.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

KINDS = ("chat", "chat_stream", "messages_stream", "responses_stream")
REQUEST_TIMEOUT = 60.0


def pct(sorted_vals: list[float], p: float) -> float | None:
    if not sorted_vals:
        return None
    k = min(len(sorted_vals) - 1, max(0, round(p / 100 * len(sorted_vals) + 0.5) - 1))
    return sorted_vals[k]


@dataclass
class Run:
    ok: int = 0
    latency: list[float] = field(default_factory=list)  # seconds
    ttfb: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    samples: dict[str, str] = field(default_factory=dict)
    elapsed: float = 0.0
    streaming_now: int = 0
    streaming_peak: int = 0

    def error(self, kind: str, detail: str) -> None:
        self.errors[kind] += 1
        self.samples.setdefault(kind, detail[:300])

    def summary(self) -> dict[str, Any]:
        lat, ttfb = sorted(self.latency), sorted(self.ttfb)

        def ms(v: float | None) -> float | None:
            return None if v is None else round(v * 1000, 3)

        return {
            "ok": self.ok, "errors": sum(self.errors.values()), "error_kinds": dict(self.errors),
            "error_samples": self.samples,
            "rps": round(self.ok / self.elapsed, 1) if self.elapsed else 0.0,
            "p50_ms": ms(pct(lat, 50)), "p99_ms": ms(pct(lat, 99)),
            "ttfb_p50_ms": ms(pct(ttfb, 50)), "ttfb_p99_ms": ms(pct(ttfb, 99)),
            "streaming_peak": self.streaming_peak,
        }


def body_for(kind: str) -> dict[str, Any]:
    msgs = [{"role": "user", "content": "hi"}]
    if kind == "responses_stream":  # as Codex sends it: streamed, not stored
        return {"model": "bench-model", "max_output_tokens": 64, "stream": True,
                "store": False, "input": "hi"}
    if kind == "messages_stream":
        return {"model": "bench-model", "max_tokens": 64, "stream": True, "messages": msgs}
    body: dict[str, Any] = {"model": "bench-model", "max_tokens": 64, "messages": msgs}
    if kind == "chat_stream":
        body.update(stream=True, stream_options={"include_usage": True})
    return body


PATHS = {"messages_stream": "/v1/messages", "responses_stream": "/v1/responses"}


def path_for(kind: str) -> str:
    return PATHS.get(kind, "/v1/chat/completions")


def valid(kind: str, body: bytes) -> bool:
    if kind == "chat":
        return b'"choices"' in body
    if kind == "chat_stream":
        return body.rstrip().endswith(b"data: [DONE]")
    if kind == "responses_stream":
        return b"event: response.completed" in body
    return b"event: message_stop" in body


async def one(session: aiohttp.ClientSession, url: str, payload: bytes, kind: str,
              run: Run, deadline: float | None) -> None:
    stream = kind != "chat"
    t0 = time.perf_counter()
    first: float | None = None
    try:
        async with session.post(url, data=payload) as resp:
            if not stream:
                data = await resp.read()
            else:
                parts: list[bytes] = []
                async for chunk in resp.content.iter_any():
                    parts.append(chunk)
                    if first is None and (b"data:" in chunk or b"data:" in b"".join(parts)):
                        first = time.perf_counter()
                        run.streaming_now += 1
                        run.streaming_peak = max(run.streaming_peak, run.streaming_now)
                data = b"".join(parts)
            status = resp.status
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        run.error(type(exc).__name__, repr(exc))
        return
    finally:
        if first is not None:
            run.streaming_now -= 1
    end = time.perf_counter()
    if deadline is not None and end > deadline:
        return  # finished after the measuring window: neither counted nor an error
    if status != 200:
        run.error(f"HTTP {status}", data.decode("utf-8", "replace"))
    elif not valid(kind, data):
        run.error("invalid body", data[-300:].decode("utf-8", "replace"))
    else:
        run.ok += 1
        run.latency.append(end - t0)
        if first is not None:
            run.ttfb.append(first - t0)


def _session(concurrency: int) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    return aiohttp.ClientSession(connector=connector, timeout=timeout, headers={
        "Content-Type": "application/json", "Authorization": "Bearer sk-bench",
        "x-api-key": "sk-bench", "anthropic-version": "2023-06-01"}, auto_decompress=False)


async def load(base: str, kind: str, concurrency: int, duration: float) -> Run:
    """Closed loop: `concurrency` workers send back-to-back requests for `duration` seconds."""
    url, payload, run = base + path_for(kind), json.dumps(body_for(kind)).encode(), Run()
    async with _session(concurrency) as session:
        start = time.perf_counter()
        deadline = start + duration

        async def worker() -> None:
            while time.perf_counter() < deadline:
                await one(session, url, payload, kind, run, deadline)
                if run.errors and sum(run.errors.values()) > 100_000:
                    return

        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))),
                               duration + REQUEST_TIMEOUT + 5)
        run.elapsed = duration
    return run


async def hold(base: str, kind: str, n: int, limit: float,
               sample: Callable[[], None] | None = None) -> Run:
    """Open `n` streams at once, one request each; call `sample` every 50 ms meanwhile."""
    url, payload, run = base + path_for(kind), json.dumps(body_for(kind)).encode(), Run()
    async with _session(n) as session:
        start = time.perf_counter()
        tasks = [asyncio.ensure_future(one(session, url, payload, kind, run, None))
                 for _ in range(n)]
        pending = set(tasks)
        while pending and time.perf_counter() - start < limit:
            if sample:
                sample()
            _, pending = await asyncio.wait(pending, timeout=0.05)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if pending:
            run.error("hold limit", f"{len(pending)} streams still open after {limit:.0f} s")
        run.elapsed = time.perf_counter() - start
    return run


def new_loop_run(coro_fn: Callable[[], Any]) -> Any:
    """Run a coroutine factory on a fresh event loop (uvloop when installed)."""
    try:
        import uvloop  # type: ignore[import-not-found]
    except ImportError:
        return asyncio.run(coro_fn())
    return uvloop.run(coro_fn())
