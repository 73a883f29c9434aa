"""POST /v1/messages with the real anthropic SDK and raw bytes, against the fake iFlow."""

from __future__ import annotations

import json

import anthropic
import httpx
import pytest

from tests.fakes import scenarios as sc
from tests.sse import named_events
from tests.translate.grammar import check_anthropic_stream

USER = [{"role": "user", "content": "Hello"}]
TOOLS = [{"name": "get_weather", "description": "Weather for a city",
          "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                           "required": ["city"]}}]


@pytest.fixture
def client(gateway):
    return anthropic.Anthropic(base_url=gateway.url, api_key="unused", max_retries=0)


def post(gateway, body, path="/v1/messages", headers=None):
    return httpx.post(gateway.url + path, json=body, timeout=30, headers={
        "anthropic-version": "2023-06-01", **(headers or {})})


def test_non_stream_text(client, upstream):
    upstream.script(sc.text("Hi there!", usage={"prompt_tokens": 12, "completion_tokens": 3,
                                                "total_tokens": 15}))
    message = client.messages.create(model="claude-sonnet-4-6", max_tokens=4000,
                                     messages=USER)
    assert message.content[0].type == "text" and message.content[0].text == "Hi there!"
    assert message.stop_reason == "end_turn"
    assert message.model == "glm-5"  # the model actually used
    assert message.usage.input_tokens == 12 and message.usage.output_tokens == 3
    sent = upstream.chat_requests[-1].json
    assert sent["model"] == "glm-5" and sent["max_new_tokens"] == 4000


def test_max_tokens_is_clamped_to_the_models_output_limit(gateway, upstream):
    upstream.script(sc.text("ok"))
    post(gateway, {"model": "minimax-m2.5", "max_tokens": 32000, "messages": USER,
                   "stream": True})
    assert upstream.chat_requests[-1].json["max_new_tokens"] == 8192


def test_stream_text_with_the_sdk_helper(client, upstream):
    upstream.script(sc.text("one two three"))
    with client.messages.stream(model="claude-opus-4-8", max_tokens=1024, messages=USER) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == "one two three"
    assert final.stop_reason == "end_turn" and final.usage.output_tokens >= 1


def test_raw_stream_grammar_and_bytes(gateway, upstream):
    upstream.script(sc.reasoning("Thinking hard.", "The answer."))
    response = post(gateway, {"model": "claude-sonnet-4-6", "max_tokens": 100,
                              "messages": USER, "stream": True,
                              "thinking": {"type": "enabled", "budget_tokens": 2048}},
                    path="/v1/messages?beta=true")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.content.endswith(b"\n\n")
    events = named_events(response.content)
    check_anthropic_stream(events)
    names = [name for name, _ in events]
    assert names[0] == "message_start" and names[-1] == "message_stop"
    starts = [data["content_block"]["type"] for name, data in events
              if name == "content_block_start"]
    assert starts == ["thinking", "text"]
    assert any(data.get("delta", {}).get("type") == "signature_delta" for _, data in events)
    sent = upstream.chat_requests[-1].json
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert sent["enable_thinking"] is True  # glm-5's switch, from Anthropic `thinking`


def test_tool_round_trip(client, upstream):
    upstream.script(sc.tool_calls([("get_weather", {"city": "Paris"})], fragment_size=4),
                    sc.text("It is sunny in Paris."))
    with client.messages.stream(model="claude-sonnet-4-6", max_tokens=1024, messages=USER,
                                tools=TOOLS) as s:
        first = s.get_final_message()
    assert first.stop_reason == "tool_use"
    call = next(b for b in first.content if b.type == "tool_use")
    assert call.name == "get_weather" and call.input == {"city": "Paris"}

    history = [*USER, {"role": "assistant", "content": [b.model_dump() for b in first.content]},
               {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,
                                             "content": "sunny, 21°C"}]}]
    second = client.messages.create(model="claude-sonnet-4-6", max_tokens=1024,
                                    messages=history, tools=TOOLS)
    assert second.content[0].text == "It is sunny in Paris."
    sent = upstream.chat_requests[-1].json["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool"]
    assert sent[1]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert sent[2]["tool_call_id"] == sent[1]["tool_calls"][0]["id"]
    assert "sunny" in sent[2]["content"]


def test_parallel_tool_calls_stream(gateway, upstream):
    upstream.script(sc.tool_calls([("get_weather", {"city": "Paris"}),
                                   ("get_weather", {"city": "Tokyo"})],
                                  fragment_size=3, parallel=True))
    response = post(gateway, {"model": "claude-haiku-4-5", "max_tokens": 100, "messages": USER,
                              "tools": TOOLS, "stream": True})
    events = named_events(response.content)
    check_anthropic_stream(events)
    blocks = [d["content_block"] for n, d in events if n == "content_block_start"]
    assert [b["type"] for b in blocks] == ["tool_use", "tool_use"]
    delta = next(d for n, d in events if n == "message_delta")
    assert delta["delta"]["stop_reason"] == "tool_use"


def test_thinking_round_trip_keeps_reasoning_on_the_tool_turn(client, upstream):
    upstream.script(sc.text("done"))
    history = [*USER, {"role": "assistant", "content": [
        {"type": "thinking", "thinking": "I should call the tool.", "signature": "sig"},
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}},
    ]}, {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "snow"}]}]
    client.messages.create(model="claude-sonnet-4-6", max_tokens=100, messages=history,
                           tools=TOOLS, thinking={"type": "enabled", "budget_tokens": 1024})
    assistant = upstream.chat_requests[-1].json["messages"][1]
    assert assistant["reasoning_content"] == "I should call the tool."


@pytest.mark.parametrize(("code", "exception", "status"), [
    ("439", anthropic.AuthenticationError, 401),
    ("429", anthropic.RateLimitError, 429),
    ("435", anthropic.BadRequestError, 400),
    ("514", anthropic.InternalServerError, 502),
])
def test_errors_in_the_anthropic_shape(gateway, client, upstream, code, exception, status):
    upstream.script(sc.envelope_error(code, f"upstream says {code}"))
    with pytest.raises(exception) as caught:
        client.messages.create(model="claude-sonnet-4-6", max_tokens=10, messages=USER)
    assert caught.value.status_code == status
    body = caught.value.body
    assert body["type"] == "error" and body["error"]["message"] == f"upstream says {code}"
    assert body["request_id"].startswith("req_")


def test_stream_errors_before_the_first_byte_are_http_errors(gateway, upstream):
    upstream.script(sc.envelope_error("429", "Please limit to single concurrent usage"))
    response = post(gateway, {"model": "glm-5", "max_tokens": 10, "messages": USER,
                              "stream": True})
    assert response.status_code == 429
    assert int(response.headers["retry-after"]) >= 1
    assert response.json()["error"] == {
        "type": "rate_limit_error", "message": "Please limit to single concurrent usage"}


def test_mid_stream_failure_is_an_error_event(gateway, upstream):
    upstream.script(sc.drop_after(3, sc.text("a b c d e f g h", chunks=8)))
    response = post(gateway, {"model": "glm-5", "max_tokens": 10, "messages": USER,
                              "stream": True})
    events = named_events(response.content)
    assert events[-1][0] == "error"
    assert events[-1][1]["error"]["type"] == "api_error"
    check_anthropic_stream(events)


def test_message_start_then_pings_while_the_upstream_is_silent(gateway, upstream):
    upstream.script(sc.slow(sc.text("late"), first_delay=1.6))
    response = post(gateway, {"model": "glm-5", "max_tokens": 10, "messages": USER,
                              "stream": True})
    events = named_events(response.content)
    # message_start goes out when the stream commits (after the prelude), pings after it.
    assert events[0][0] == "message_start"
    assert events[0][1]["message"]["usage"]["input_tokens"] >= 1
    assert events[1] == ("ping", {"type": "ping"})
    assert [name for name, _ in events].count("message_start") == 1
    check_anthropic_stream(events)


def test_a_failure_after_an_early_message_start_is_an_in_band_error(gateway, upstream):
    upstream.script(sc.slow(sc.http_error(500, {"error": {"message": "boom"}}), header_delay=1.0))
    response = post(gateway, {"model": "glm-5", "max_tokens": 10, "messages": USER,
                              "stream": True})
    assert response.status_code == 200  # committed: the prelude had passed
    events = named_events(response.content)
    assert events[0][0] == "message_start"
    assert events[-1][0] == "error"
    check_anthropic_stream(events)


@pytest.mark.parametrize("body", [
    b"{nope", b"[]", json.dumps({"model": "glm-5", "max_tokens": 5}).encode(),
    json.dumps({"model": "glm-5", "max_tokens": 5, "messages": [{"role": "user"}]}).encode(),
    json.dumps({"model": "glm-5", "max_tokens": 5, "messages": [
        {"role": "user", "content": [{"type": "image", "source": {
            "type": "base64", "media_type": "image/png", "data": "!!!not base64"}}]}]}).encode(),
])
def test_bad_requests_are_anthropic_400s(gateway, upstream, body):
    response = httpx.post(gateway.url + "/v1/messages", content=body, timeout=30,
                          headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["type"] == "error"
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert upstream.chat_requests == []


def test_unknown_fields_and_headers_are_tolerated(gateway, upstream):
    upstream.script(sc.text("fine"))
    response = post(gateway, {
        "model": "claude-opus-4-8", "max_tokens": 64, "messages": USER,
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "thinking": {"type": "adaptive"}, "output_config": {"effort": "high"},
        "context_management": {"edits": []}, "metadata": {"user_id": "u1"},
        "service_tier": "auto", "tools": [{**TOOLS[0], "strict": True, "defer_loading": False}],
    }, headers={"anthropic-version": "2026-10-21",
                "anthropic-beta": "context-management-2025-06-27,interleaved-thinking-2025-05-14",
                "x-api-key": "k", "authorization": "Bearer k"})
    assert response.status_code == 200, response.text
    sent = upstream.chat_requests[-1].json
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/messages/", "/messages", "/messages/"])
def test_path_variants(gateway, upstream, path):
    upstream.script(sc.text("ok"))
    response = post(gateway, {"model": "glm-5", "max_tokens": 8, "messages": USER},
                    path=path + "?beta=true")
    assert response.status_code == 200 and response.json()["content"][0]["text"] == "ok"


def test_count_tokens(client, gateway):
    small = client.messages.count_tokens(model="claude-sonnet-4-6", messages=USER)
    assert small.input_tokens > 0
    with_tools = client.messages.count_tokens(
        model="claude-sonnet-4-6", messages=USER, tools=TOOLS,
        system="You are a helpful assistant. " * 20)
    assert with_tools.input_tokens > small.input_tokens + 100
    chinese = post(gateway, {"model": "x", "messages": [
        {"role": "user", "content": "你好，世界！这是一个测试。" * 10}]},
        path="/v1/messages/count_tokens").json()["input_tokens"]
    assert chinese >= 100


def test_api_hello_and_models_list_claude_aliases(gateway):
    assert httpx.head(gateway.url + "/api/hello").status_code == 200
    ids = [m["id"] for m in httpx.get(gateway.url + "/v1/models?limit=1000").json()["data"]]
    assert "claude-sonnet-4-6" in ids and "claude-opus-4-8" in ids and "glm-5" in ids
