"""The text lane (upstream/text_lane.py) in a real server: a stream whose text chunks come as
runs is relayed byte for byte as the normaliser relays the parsed chunks, and the openai SDK
reads the whole text, whatever the spelling, the reads, and the chunks between the runs."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai

from iflow2api_lib.wire import sse_data
from proxy.translate.openai_chat import OpenAIStreamNormalizer
from tests.fakes import scenarios as sc
from tests.sse import data_payloads

MESSAGES = [{"role": "user", "content": "Say hello"}]
TEXTS = ["Hello", " wörld", " 日本語", " 🙂", ' "quoted"', " back\\slash", "\nnew line",
         "\ttab", " </script>", " a/b", ' "content":"x"']


def chunk(delta: dict[str, Any], finish: str | None = None, **top: Any) -> dict[str, Any]:
    return {"id": "chatcmpl-upstream", "object": "chat.completion.chunk", "created": 1700000000,
            "model": "glm-5-upstream", "usage": None, **top,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def blob(chunks: list[dict[str, Any]], ensure_ascii: bool) -> bytes:
    """Several events in one write: the gateway reads them as one batch (a run)."""
    return b"".join(b"data: " + json.dumps(c, ensure_ascii=ensure_ascii).encode() + b"\n\n"
                    for c in chunks)


def upstream_chunks() -> list[dict[str, Any]]:
    texts = [chunk({"content": t}) for t in TEXTS]
    fingerprinted = [chunk({"content": t}, system_fingerprint="fp_9") for t in TEXTS[:4]]
    return [chunk({"role": "assistant", "content": ""}), *texts[:2], *texts,
            chunk({"reasoning_content": "thinking"}), *texts, *fingerprinted,
            chunk({}, finish="stop"),
            {**chunk({}), "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 40,
                                                   "total_tokens": 45}}]


def script(upstream: Any) -> list[dict[str, Any]]:
    chunks = upstream_chunks()
    # One event per write, then runs of events in one write, ASCII-escaped and raw.
    reasoning = 3 + len(TEXTS)
    payloads: list[Any] = [*chunks[:3], blob(chunks[3:reasoning], True), chunks[reasoning],
                           blob(chunks[reasoning + 1:-2], False), *chunks[-2:]]
    upstream.script(sc.events(payloads))
    return chunks


def test_the_relayed_bytes_are_the_normalisers(gateway, upstream):
    chunks = script(upstream)
    raw = httpx.post(gateway.url + "/v1/chat/completions", timeout=30, json={
        "model": "glm-5", "messages": MESSAGES, "stream": True,
        "stream_options": {"include_usage": True}})
    assert raw.status_code == 200
    first = json.loads(data_payloads(raw.content)[0])
    reference = OpenAIStreamNormalizer(model="glm-5", completion_id=first["id"],
                                       created=first["created"], include_usage=True)
    expected = [sse_data(c) for upstream_chunk in chunks for c in reference.feed(upstream_chunk)]
    expected += [sse_data(c) for c in reference.close()] + [b"data: [DONE]\n\n"]
    assert raw.content == b"".join(expected)


def test_the_sdk_reads_the_whole_text(gateway, upstream):
    script(upstream)
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0)
    stream = client.chat.completions.create(model="glm-5", messages=MESSAGES, stream=True)
    parts = [c for c in stream if c.choices]
    text = "".join(c.choices[0].delta.content or "" for c in parts)
    whole = "".join(TEXTS)
    assert text == "".join(TEXTS[:2]) + whole + "thinking\n\n" + whole + "".join(TEXTS[:4])
    assert parts[-1].choices[0].finish_reason == "stop"
    assert parts[-1].system_fingerprint == "fp_9"
