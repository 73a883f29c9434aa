"""FAST_PATH=false: the same API served through Django and the Ninja operations."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.conftest import FAKE_KEY
from tests.fakes import scenarios as sc
from tests.servers import GatewayServer
from tests.sse import named_events, openai_chunks


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
