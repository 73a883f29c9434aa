"""preserve_reasoning_content=true: reasoning stays its own field, content is never empty."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.conftest import FAKE_KEY
from tests.fakes import scenarios as sc
from tests.servers import GatewayServer
from tests.sse import openai_chunks

MESSAGES = [{"role": "user", "content": "2+2?"}]


@pytest.fixture(scope="module")
def preserving_gateway(fake_iflow):
    env = {"IFLOW_API_KEY": FAKE_KEY, "IFLOW_BASE_URL": fake_iflow.base_url,
           "PRESERVE_REASONING_CONTENT": "true"}
    with GatewayServer(env) as server:
        yield server


def test_non_stream_keeps_reasoning_content(preserving_gateway, upstream):
    upstream.script(sc.reasoning("Let me think.", "4"))
    body = httpx.post(preserving_gateway.url + "/v1/chat/completions", timeout=30,
                      json={"model": "glm-5", "messages": MESSAGES}).json()
    message = body["choices"][0]["message"]
    assert message == {"role": "assistant", "content": "4", "reasoning_content": "Let me think."}


def test_non_stream_mirrors_reasoning_when_content_is_empty(preserving_gateway, upstream):
    upstream.script(sc.reasoning("Only thoughts.", ""))
    client = openai.OpenAI(base_url=preserving_gateway.url + "/v1", api_key="x", max_retries=0)
    message = client.chat.completions.create(model="glm-5", messages=MESSAGES).choices[0].message
    assert message.content == "Only thoughts."
    assert message.reasoning_content == "Only thoughts."


def test_stream_keeps_reasoning_deltas_apart(preserving_gateway, upstream):
    upstream.script(sc.reasoning("Let me think.", "The answer is 4."))
    raw = httpx.post(preserving_gateway.url + "/v1/chat/completions", timeout=30, json={
        "model": "glm-5", "messages": MESSAGES, "stream": True}).content
    deltas = [c["choices"][0]["delta"] for c in openai_chunks(raw) if c["choices"]]
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "Let me think."
    assert "".join(d.get("content", "") for d in deltas) == "The answer is 4."


def test_stream_mirrors_reasoning_when_no_content_came(preserving_gateway, upstream):
    upstream.script(sc.reasoning("Only thoughts.", ""))
    raw = httpx.post(preserving_gateway.url + "/v1/chat/completions", timeout=30, json={
        "model": "glm-5", "messages": MESSAGES, "stream": True}).content
    chunks = openai_chunks(raw)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert "".join(d.get("content", "") for d in deltas) == "Only thoughts."
    assert json.loads(json.dumps(chunks[-1]))["choices"][0]["finish_reason"] == "stop"
