"""POST /v1/chat/completions against a real server and the fake iFlow upstream."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.fakes import scenarios as sc
from tests.sse import openai_chunks

MESSAGES = [{"role": "user", "content": "Say hello"}]


@pytest.fixture
def client(gateway):
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0)


def post(gateway, body, path="/v1/chat/completions", **kwargs):
    return httpx.post(gateway.url + path, json=body, timeout=30, **kwargs)


def test_non_stream_text_with_the_sdk(client, upstream):
    upstream.script(sc.text("Hello there!"))
    answer = client.chat.completions.create(model="glm-5", messages=MESSAGES)
    assert answer.choices[0].message.content == "Hello there!"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.model == "glm-5"
    assert answer.id.startswith("chatcmpl-")
    sent = upstream.chat_requests[-1]
    assert sent.auth_error is None
    assert sent.header("user-agent") == "iFlow-Cli"
    assert sent.json["model"] == "glm-5"
    assert "stream" not in sent.json and "max_new_tokens" in sent.json


def test_stream_with_the_sdk_and_raw_bytes(client, gateway, upstream):
    upstream.script(sc.text("one two three four"))
    stream = client.chat.completions.create(model="glm-5", messages=MESSAGES, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "one two three four"

    upstream.script(sc.text("one two three four"))
    raw = post(gateway, {"model": "glm-5", "messages": MESSAGES, "stream": True})
    assert raw.status_code == 200
    assert raw.headers["content-type"].startswith("text/event-stream")
    chunks = openai_chunks(raw.content)
    assert {c["id"] for c in chunks} == {chunks[0]["id"]}
    for chunk in chunks:
        assert chunk["object"] == "chat.completion.chunk"
        assert isinstance(chunk["created"], int) and chunk["model"] == "glm-5"
        assert isinstance(chunk["choices"], list)
    roles = [c["choices"][0]["delta"].get("role") for c in chunks if c["choices"]]
    assert roles[0] == "assistant" and not any(roles[1:])
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert upstream.chat_requests[-1].json["stream"] is True


def test_include_usage_sends_a_last_chunk_with_empty_choices(gateway, upstream):
    upstream.script(sc.text("hi", usage={"prompt_tokens": 7, "completion_tokens": 2,
                                         "total_tokens": 9}))
    raw = post(gateway, {"model": "glm-5", "messages": MESSAGES, "stream": True,
                         "stream_options": {"include_usage": True}})
    chunks = openai_chunks(raw.content)
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["total_tokens"] == 9
    assert all(c["choices"] for c in chunks[:-1])


def test_without_include_usage_no_usage_chunk(gateway, upstream):
    upstream.script(sc.text("hi"))
    chunks = openai_chunks(post(gateway, {"model": "glm-5", "messages": MESSAGES,
                                          "stream": True}).content)
    assert all(c["choices"] for c in chunks)


def test_tool_calls_with_the_stream_helper(client, upstream):
    upstream.script(sc.tool_calls(
        [("get_weather", {"city": "Paris", "unit": "celsius"}),
         ("get_time", {"timezone": "Europe/Paris"})],
        fragment_size=5, parallel=True,
    ))
    tools = [{"type": "function", "function": {
        "name": name, "parameters": {"type": "object", "properties": {}}}}
        for name in ("get_weather", "get_time")]
    with client.chat.completions.stream(model="glm-5", messages=MESSAGES, tools=tools) as s:
        for _ in s:
            pass
        final = s.get_final_completion()
    calls = final.choices[0].message.tool_calls
    assert [c.function.name for c in calls] == ["get_weather", "get_time"]
    assert json.loads(calls[0].function.arguments) == {"city": "Paris", "unit": "celsius"}
    assert json.loads(calls[1].function.arguments) == {"timezone": "Europe/Paris"}
    assert calls[0].id != calls[1].id
    assert final.choices[0].finish_reason == "tool_calls"


def test_tool_call_fragments_carry_id_and_name_only_once(gateway, upstream):
    upstream.script(sc.tool_calls([("lookup", {"query": "a long query string"})],
                                  fragment_size=3))
    chunks = openai_chunks(post(gateway, {"model": "glm-5", "messages": MESSAGES,
                                          "stream": True}).content)
    fragments = [tc for c in chunks if c["choices"]
                 for tc in c["choices"][0]["delta"].get("tool_calls", [])]
    assert len(fragments) > 3
    assert all("index" in f for f in fragments)
    assert "id" in fragments[0] and fragments[0]["function"]["name"] == "lookup"
    assert not any("id" in f or "name" in f["function"] or "type" in f for f in fragments[1:])
    args = "".join(f["function"]["arguments"] for f in fragments)
    assert json.loads(args) == {"query": "a long query string"}


def test_reasoning_is_merged_into_content_by_default(client, upstream):
    upstream.script(sc.reasoning("Let me think.", "The answer is 4."))
    answer = client.chat.completions.create(model="glm-5", messages=MESSAGES)
    message = answer.choices[0].message
    assert message.content == "Let me think.\n\nThe answer is 4."
    assert getattr(message, "reasoning_content", None) is None

    upstream.script(sc.reasoning("Let me think.", "The answer is 4."))
    stream = client.chat.completions.create(model="glm-5", messages=MESSAGES, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "Let me think.\n\nThe answer is 4."


def test_models_list_and_unprefixed_twins(gateway, upstream):
    body = httpx.get(gateway.url + "/v1/models").json()
    assert body["object"] == "list" and body["has_more"] is False
    ids = [m["id"] for m in body["data"]]
    assert "glm-5" in ids and "qwen-vl-max" in ids
    assert body["first_id"] == ids[0] and body["last_id"] == ids[-1]
    for model in body["data"]:
        assert model["object"] == "model" and model["type"] == "model"
        assert isinstance(model["created"], int) and model["created_at"].endswith("Z")
        assert model["display_name"] and model["owned_by"]
    assert httpx.get(gateway.url + "/models").json() == body

    upstream.script(sc.text("twin"))
    answer = post(gateway, {"model": "glm-5", "messages": MESSAGES}, path="/chat/completions")
    assert answer.json()["choices"][0]["message"]["content"] == "twin"


def test_health(gateway):
    body = httpx.get(gateway.url + "/health").json()
    assert body["status"] == "ok" and body["upstream_configured"] is True
    assert body["version"]
