"""UPSTREAM_READ_TIMEOUT on a stream is the longest silent gap between the upstream's reads
(upstream/deadline.py keeps it for the gateway): a stream that pauses longer ends with the
in-band `upstream_timeout` error when the gap runs out; a stream that lasts longer in all, with
shorter gaps, is relayed whole. The shared test gateway runs with UPSTREAM_READ_TIMEOUT=3."""

from __future__ import annotations

import json
import time

import httpx

from tests.fakes import scenarios as sc
from tests.sse import data_payloads, openai_chunks

MESSAGES = [{"role": "user", "content": "hi"}]
READ_TIMEOUT = 3.0  # tests/servers.py


def chunk(delta: dict, finish: str | None = None) -> bytes:
    payload = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "glm-5",
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return f"data: {json.dumps(payload)}\n\n".encode()


def timed_stream(gateway) -> list[tuple[float, str]]:
    """(arrival, payload) of every data event of a chat stream."""
    out: list[tuple[float, str]] = []
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", timeout=30, json={
            "model": "glm-5", "messages": MESSAGES, "stream": True}) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: "):
                out.append((time.monotonic(), line[6:]))
    return out


def test_a_pause_longer_than_the_read_timeout_ends_the_stream_when_it_runs_out(gateway,
                                                                             upstream):
    upstream.script(sc.raw(200, {"content-type": "text/event-stream"}, [
        chunk({"role": "assistant", "content": ""}), chunk({"content": "one "}),
        chunk({"content": "two"}), chunk({}, "stop"), b"data: [DONE]\n\n"],
        delays=[0, 0, READ_TIMEOUT + 2.5]))
    events = timed_stream(gateway)
    payloads = [payload for _, payload in events]
    assert payloads[-1] == "[DONE]" and payloads.count("[DONE]") == 1
    error = json.loads(payloads[-2])["error"]
    assert error["code"] == "upstream_timeout"
    assert "two" not in "".join(payloads)
    first_text = next(at for at, payload in events if "one " in payload)
    # The gap ran out after READ_TIMEOUT, not at the next event (2.5 s later) nor twice over.
    assert READ_TIMEOUT - 0.5 <= events[-2][0] - first_text < READ_TIMEOUT + 1.5


def test_a_stream_longer_than_the_read_timeout_with_shorter_gaps_is_relayed_whole(gateway,
                                                                                 upstream):
    upstream.script(sc.slow(sc.text("a b c d e f", chunks=6), chunk_delay=1.0))
    started = time.monotonic()
    response = httpx.post(gateway.url + "/v1/chat/completions", timeout=30, json={
        "model": "glm-5", "messages": MESSAGES, "stream": True})
    assert time.monotonic() - started > READ_TIMEOUT + 2  # longer than the timeout in all
    payloads = data_payloads(response.content)
    assert payloads[-1] == "[DONE]" and not any('"error"' in p for p in payloads)
    text = "".join(c["choices"][0]["delta"].get("content") or ""
                   for c in openai_chunks(response.content) if c.get("choices"))
    assert text.split() == ["a", "b", "c", "d", "e", "f"]
