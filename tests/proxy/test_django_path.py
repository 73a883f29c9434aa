"""FAST_PATH=false: the same API served through Django and the Ninja operations."""

from __future__ import annotations

import json
import signal
import threading
import time

import httpx
import openai
import pytest

from tests.conftest import FAKE_KEY
from tests.fakes import scenarios as sc
from tests.servers import GatewayServer
from tests.sse import data_payloads, named_events, openai_chunks


@pytest.fixture(scope="module")
def django_gateway(fake_iflow):
    env = {"IFLOW_API_KEY": FAKE_KEY, "IFLOW_BASE_URL": fake_iflow.base_url, "FAST_PATH": "0"}
    with GatewayServer(env) as server:
        yield server


def test_chat_stream_and_non_stream(django_gateway, upstream):
    client = openai.OpenAI(base_url=django_gateway.url + "/v1", api_key="x", max_retries=0)
    upstream.script(sc.text("through django"), sc.text("streamed through django"))
    assert client.chat.completions.create(
        model="glm-5", messages=[{"role": "user", "content": "hi"}]
    ).choices[0].message.content == "through django"
    raw = httpx.post(django_gateway.url + "/v1/chat/completions", timeout=30, json={
        "model": "glm-5", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    text = "".join(c["choices"][0]["delta"].get("content", "")
                   for c in openai_chunks(raw.content) if c["choices"])
    assert text == "streamed through django"


def test_messages_errors_and_count_tokens(django_gateway, upstream):
    upstream.script(sc.text("hello"))
    raw = httpx.post(django_gateway.url + "/v1/messages?beta=true", timeout=30, json={
        "model": "claude-sonnet-4-6", "max_tokens": 10, "stream": True,
        "messages": [{"role": "user", "content": "hi"}]})
    assert [n for n, _ in named_events(raw.content)][-1] == "message_stop"
    bad = httpx.post(django_gateway.url + "/v1/messages", content=b"{", timeout=30)
    assert bad.status_code == 400 and bad.json()["type"] == "error"
    tokens = httpx.post(django_gateway.url + "/v1/messages/count_tokens", timeout=30, json={
        "model": "x", "messages": [{"role": "user", "content": "hello world"}]})
    assert tokens.json()["input_tokens"] > 0
    too_big = httpx.post(django_gateway.url + "/v1/chat/completions", timeout=60,
                         content=b"x" * (33 * 1024 * 1024),
                         headers={"content-type": "application/json"})
    assert too_big.status_code == 413


def test_sigterm_waits_for_a_stream_django_carries(fake_iflow, upstream):
    """The adapter counts requests Django carries as in flight too: a graceful shutdown lets
    the stream finish instead of cutting it."""
    upstream.script(sc.slow(sc.text("one two three four five", chunks=5), chunk_delay=0.3))
    env = {"IFLOW_API_KEY": FAKE_KEY, "IFLOW_BASE_URL": fake_iflow.base_url, "FAST_PATH": "0"}
    results: list[bytes] = []

    def stream() -> None:
        with httpx.stream("POST", server.url + "/v1/chat/completions", timeout=30, json={
                "model": "glm-5", "stream": True,
                "messages": [{"role": "user", "content": "hi"}]}) as response:
            results.append(response.read())

    with GatewayServer(env) as server:
        thread = threading.Thread(target=stream)
        thread.start()
        assert upstream.wait_for(lambda: len(upstream.chat_requests) == 1, timeout=10)
        time.sleep(0.4)
        server.process.send_signal(signal.SIGTERM)
        thread.join(15)
        assert server.process.wait(15) == 0
    payloads = data_payloads(results[0])
    assert payloads[-1] == "[DONE]"
    text = "".join(json.loads(p)["choices"][0]["delta"].get("content", "")
                   for p in payloads[:-1] if json.loads(p).get("choices"))
    assert text == "one two three four five"
