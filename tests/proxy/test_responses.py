"""POST /v1/responses with the real openai SDK and raw SSE bytes, against the fake iFlow:
text, reasoning, function calls (fragmented, parallel), a tool round trip, hosted tools
dropped, unsupported options, reasoning.effort as iFlow's thinking switch, the output limit
(incomplete), errors before and during the stream, a truncated upstream. Other upstream
set-ups: test_responses_upstreams.py."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from django.utils import timezone

from tests.fakes import scenarios as sc
from tests.proxy.test_cors import LOCAL_PAGE, PREFLIGHT
from tests.proxy.test_requestlog import rows_since
from tests.sse import named_events
from tests.translate.responses_grammar import check_responses_stream

TOOLS = [{"type": "function", "name": "get_weather", "description": "Weather for a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                         "required": ["city"]}}]
USAGE = {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}


@pytest.fixture
def client(gateway):
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0)


def post(gateway, body, path="/v1/responses", headers=None):
    return httpx.post(gateway.url + path, json=body, timeout=30, headers=headers or {})


def stream_events(response: httpx.Response) -> list[dict]:
    """The events of a raw stream, checked: each `event:` name equals its data's type, the
    grammar holds (created/in_progress first, sequence numbers increasing, a terminal last)."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    events = named_events(response.content)
    for name, data in events:
        assert name == data["type"], (name, data)
    payloads = [data for _, data in events]
    check_responses_stream(payloads)
    return payloads


# --- non-streaming -----------------------------------------------------------------------------

def test_non_stream_text(client, upstream):
    upstream.script(sc.text("Hi there!", usage=USAGE))
    response = client.responses.create(model="glm-5", input="Hello", instructions="Be brief.")
    assert response.status == "completed"
    assert response.output_text == "Hi there!"
    assert response.id.startswith("resp_") and response.model == "glm-5"
    assert response.usage.input_tokens == 12 and response.usage.output_tokens == 3
    assert response.usage.total_tokens == 15
    sent = upstream.chat_requests[-1].json
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["messages"][-1]["content"] == "Hello"


def test_unprefixed_path(gateway, upstream):
    upstream.script(sc.text("ok"))
    response = post(gateway, {"model": "glm-5", "input": "hi"}, path="/responses")
    assert response.status_code == 200, response.text
    assert response.json()["output"][0]["content"][0]["text"] == "ok"


def test_non_stream_reasoning_and_tool_call(client, upstream):
    upstream.script(sc.Scenario(kind="chat", name="think_then_call", reasoning="Need weather.",
                                calls=(("get_weather", {"city": "Paris"}),),
                                finish_reason="tool_calls"))
    response = client.responses.create(model="glm-5", input="Weather in Paris?", tools=TOOLS)
    kinds = [item.type for item in response.output]
    assert kinds == ["reasoning", "function_call"], kinds
    assert response.output[0].summary[0].text == "Need weather."
    assert response.output[0].encrypted_content
    call = response.output[1]
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
    assert call.call_id


def test_output_limit_is_incomplete(client, upstream):
    upstream.script(sc.text("cut sh", finish_reason="length"))
    response = client.responses.create(model="glm-5", input="long story", max_output_tokens=5)
    assert response.status == "incomplete"
    assert response.incomplete_details.reason == "max_output_tokens"
    assert upstream.chat_requests[-1].json["max_new_tokens"] == 5


@pytest.mark.parametrize(("effort", "on"), [("high", True), ("minimal", True), ("none", False)])
def test_reasoning_effort_is_the_providers_thinking_switch(client, upstream, effort, on):
    # reasoning.effort -> reasoning_effort -> iFlow's own switches for GLM-5 (all three).
    upstream.script(sc.text("ok"))
    client.responses.create(model="glm-5", input="hi", reasoning={"effort": effort})
    sent = upstream.chat_requests[-1].json
    assert sent["enable_thinking"] is on
    assert sent["thinking"] == {"type": "enabled" if on else "disabled"}
    assert sent["chat_template_kwargs"] == {"enable_thinking": on}
    assert "reasoning_effort" not in sent and "reasoning" not in sent


# --- streaming ---------------------------------------------------------------------------------

def test_raw_stream_text(gateway, upstream):
    upstream.script(sc.text("one two three", usage=USAGE))
    events = stream_events(post(gateway, {"model": "glm-5", "input": "count", "stream": True}))
    names = [e["type"] for e in events]
    assert names[:2] == ["response.created", "response.in_progress"]
    assert names[-1] == "response.completed"
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert deltas == "one two three"
    final = events[-1]["response"]
    assert final["status"] == "completed" and final["usage"]["input_tokens"] == 12
    assert final["output"][0]["content"][0]["text"] == "one two three"


def test_stream_cut_by_the_output_limit_ends_incomplete(client, gateway, upstream):
    upstream.script(sc.text("cut sh", finish_reason="length", usage=USAGE))
    events = stream_events(post(gateway, {"model": "glm-5", "input": "long story",
                                          "stream": True, "max_output_tokens": 5}))
    assert events[-1]["type"] == "response.incomplete"
    final = events[-1]["response"]
    assert final["status"] == "incomplete"
    assert final["incomplete_details"] == {"reason": "max_output_tokens"}
    assert final["output"][-1]["status"] == "incomplete"
    # Stored like a completed one (a follow-up may go on from it).
    assert client.responses.retrieve(final["id"]).incomplete_details.reason == "max_output_tokens"


def test_sdk_stream_helper_and_final_response(client, upstream):
    upstream.script(sc.reasoning("Let me think.", "The answer is 4."))
    with client.responses.stream(model="glm-5", input="2+2?") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert "response.reasoning_summary_text.delta" in kinds
    assert final.output_text == "The answer is 4."
    assert final.output[0].type == "reasoning"
    assert final.output[0].summary[0].text == "Let me think."


def test_sdk_create_stream(client, upstream):
    upstream.script(sc.text("streamed text"))
    events = list(client.responses.create(model="glm-5", input="hi", stream=True))
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == "streamed text"


def test_stream_fragmented_parallel_calls(gateway, upstream):
    upstream.script(sc.tool_calls([("get_weather", {"city": "Paris"}),
                                   ("get_weather", {"city": "Tokyo"})],
                                  fragment_size=3, parallel=True))
    events = stream_events(post(gateway, {"model": "glm-5", "input": "two cities",
                                          "tools": TOOLS, "stream": True}))
    calls = [item for item in events[-1]["response"]["output"] if item["type"] == "function_call"]
    assert [json.loads(c["arguments"]) for c in calls] == [{"city": "Paris"}, {"city": "Tokyo"}]
    assert len({c["call_id"] for c in calls}) == 2
    by_item: dict[str, str] = {}
    for event in events:
        if event["type"] == "response.function_call_arguments.delta":
            by_item[event["item_id"]] = by_item.get(event["item_id"], "") + event["delta"]
    assert sorted(json.loads(v)["city"] for v in by_item.values()) == ["Paris", "Tokyo"]


def test_tool_round_trip(client, upstream):
    upstream.script(sc.tool_calls([("get_weather", {"city": "Paris"})]),
                    sc.text("It is sunny in Paris."))
    first = client.responses.create(model="glm-5", input="Weather in Paris?", tools=TOOLS,
                                    store=False)
    call = next(item for item in first.output if item.type == "function_call")
    second = client.responses.create(model="glm-5", tools=TOOLS, store=False, input=[
        {"role": "user", "content": "Weather in Paris?"},
        {"type": "function_call", "call_id": call.call_id, "name": call.name,
         "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21 C"},
    ])
    assert second.output_text == "It is sunny in Paris."
    messages = upstream.chat_requests[-1].json["messages"]
    assert messages[-2]["tool_calls"][0]["id"] == call.call_id
    assert messages[-1] == {"role": "tool", "tool_call_id": call.call_id,
                            "content": "sunny, 21 C"}


def test_hosted_tools_are_dropped_and_named(gateway, upstream):
    upstream.script(sc.text("ok"))
    response = post(gateway, {"model": "glm-5", "input": "hi", "tools": [
        *TOOLS, {"type": "web_search"}]})
    assert response.status_code == 200, response.text
    assert response.headers["x-iflow2api-dropped-tools"] == "web_search"
    assert [t["function"]["name"] for t in upstream.chat_requests[-1].json["tools"]] == [
        "get_weather"]


# --- errors ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "param"), [
    ({"model": "glm-5", "input": "hi", "background": True}, "background"),
    ({"model": "glm-5", "input": "hi", "truncation": "auto"}, "truncation"),
    ({"input": "hi"}, "model"),
    ({"model": "glm-5", "input": 5}, "input"),
    ({"model": "glm-5", "input": "hi", "stream": "yes"}, "stream"),
    ({"model": "glm-5", "input": "hi", "store": 1}, "store"),
    ({"model": "glm-5", "input": "hi", "previous_response_id": 7}, "previous_response_id"),
    ({"model": "glm-5", "input": ["not an item"]}, "input.0"),
    ({"model": "glm-5", "input": [{"type": "item_reference", "id": "msg_1"}]}, "input.0"),
    ({"model": "glm-5", "input": "hi", "prompt": {"id": "pmpt_1"}}, "prompt"),
    ({"model": "glm-5", "input": "hi", "reasoning": {"effort": "enormous"}}, "reasoning.effort"),
])
def test_unsupported_or_bad_options_are_a_400(gateway, body, param):
    response = post(gateway, body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert error["message"]


def test_upstream_error_before_the_stream_is_an_http_error(gateway, upstream):
    upstream.script(sc.http_error(400, {"error": {"message": "bad thing"}}))
    response = post(gateway, {"model": "glm-5", "input": "hi", "stream": True})
    assert response.status_code == 400, response.text
    assert "bad thing" in response.json()["error"]["message"]


def test_sdk_raises_on_an_error_before_the_stream(client, upstream):
    upstream.script(sc.http_error(400, {"error": {"message": "bad thing"}}))
    with pytest.raises(openai.BadRequestError):
        list(client.responses.create(model="glm-5", input="hi", stream=True))


def test_unknown_model_is_a_404(gateway):
    response = post(gateway, {"model": "no-such-model", "input": "hi"})
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"


def test_truncated_upstream_stream_fails(gateway, upstream):
    upstream.script(sc.close_delimited(sc.drop_after(3, sc.text("one two three four five",
                                                                chunks=8))))
    events = stream_events(post(gateway, {"model": "glm-5", "input": "hi", "stream": True}))
    assert [e["type"] for e in events][-2:] == ["response.failed", "error"]
    assert events[-2]["response"]["status"] == "failed"
    assert events[-1]["code"] == "upstream_disconnected"
    assert any(e["type"] == "response.output_text.delta" for e in events)


def test_done_without_finish_reason_fails(gateway, upstream):
    chunk = {"choices": [{"index": 0, "delta": {"content": "said "}, "finish_reason": None}]}
    upstream.script(sc.events([chunk], done=True))
    events = stream_events(post(gateway, {"model": "glm-5", "input": "hi", "stream": True}))
    assert events[-2]["type"] == "response.failed"
    assert events[-1]["code"] == "upstream_disconnected"


def test_in_band_error_during_the_stream_fails(gateway, upstream):
    # The error comes after the stream began (past the prelude): in-band, not an HTTP error.
    upstream.script(sc.slow(sc.events([
        {"choices": [{"index": 0, "delta": {"content": "partial"}, "finish_reason": None}]},
        {"error": {"message": "upstream overloaded", "code": "overloaded"}},
    ], done=False), chunk_delay=1.5))
    events = stream_events(post(gateway, {"model": "glm-5", "input": "hi", "stream": True}))
    assert events[-2]["type"] == "response.failed"
    assert "overloaded" in events[-2]["response"]["error"]["message"]
    assert events[-1]["type"] == "error"


def test_an_upstream_error_after_the_stream_opened_is_response_failed(gateway, upstream):
    # The upstream answers 500 only after the prelude: the 200 stream has begun (created,
    # in_progress), so the failure is in-band — response.failed then error, never a silent end.
    upstream.script(sc.slow(sc.http_error(500, {"error": {"message": "boom"}}),
                            header_delay=1.5))
    events = stream_events(post(gateway, {"model": "glm-5", "input": "hi", "stream": True}))
    assert [e["type"] for e in events] == ["response.created", "response.in_progress",
                                           "response.failed", "error"]
    assert events[2]["response"]["status"] == "failed"
    assert events[2]["response"]["error"]["code"] == "server_error"


def test_keepalive_comment_while_the_upstream_is_silent(gateway, upstream):
    upstream.script(sc.slow(sc.text("late"), first_delay=1.5))
    response = post(gateway, {"model": "glm-5", "input": "hi", "stream": True})
    # Committed before the upstream's first chunk: the stream opens at once, then keeps alive.
    assert response.content.startswith(b"event: response.created\n")
    assert b"\n\n: keepalive\n\n" in response.content
    assert stream_events(response)[-1]["type"] == "response.completed"


def test_sdk_stream_raises_on_a_truncated_upstream(client, upstream):
    upstream.script(sc.close_delimited(sc.drop_after(3, sc.text("one two three four",
                                                                chunks=8))))
    seen: list[str] = []
    with (pytest.raises(openai.APIError),
          client.responses.stream(model="glm-5", input="hi") as stream):
        for event in stream:  # the error event comes while iterating
            seen.append(event.type)
    assert "response.output_text.delta" in seen and "response.completed" not in seen


def test_get_without_an_id_is_a_quick_4xx(gateway):
    # Codex's built-in openai provider first tries a WebSocket on GET /v1/responses, and falls
    # back to HTTPS on a 4xx.
    plain = httpx.get(gateway.url + "/v1/responses", timeout=10)
    assert plain.status_code == 405 and plain.json()["error"]["code"] == "method_not_allowed"
    upgrade = httpx.get(gateway.url + "/v1/responses", timeout=10, headers={
        "connection": "Upgrade", "upgrade": "websocket", "sec-websocket-version": "13",
        "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ=="})
    assert 400 <= upgrade.status_code < 500


# --- the request log ---------------------------------------------------------------------------

def test_request_log_rows_have_api_responses(gateway, upstream):
    start = timezone.now()
    upstream.script(sc.text("logged", usage=USAGE),
                    sc.close_delimited(sc.drop_after(3, sc.text("one two three", chunks=8))))
    assert post(gateway, {"model": "glm-5", "input": "hi"}).status_code == 200
    post(gateway, {"model": "glm-5", "input": "hi", "stream": True})
    assert post(gateway, {"model": "no-such-model", "input": "hi"}).status_code == 404
    rows = rows_since(gateway, start, count=3)
    assert [(r["api"], r["status"], r["stream"]) for r in rows] == [
        ("responses", 200, False), ("responses", 502, True), ("responses", 404, False)]
    assert rows[0]["tokens_in"] == 12 and rows[0]["tokens_out"] == 3
    assert rows[1]["error"]


# --- Codex's remote compaction (proxy/translate/responses_compaction.py) -----------------------

@pytest.mark.parametrize("stream", [False, True])
def test_compaction_trigger_answers_one_compaction_item(gateway, upstream, stream):
    upstream.script(sc.text("Ada is writing a parser."), sc.text("Go on with the parser."))
    body = {"model": "glm-5", "stream": stream, "tools": TOOLS, "input": [
        {"role": "user", "content": "I am Ada, help me write a parser."},
        {"type": "compaction_trigger"}]}
    response = post(gateway, body)
    final = stream_events(response)[-1]["response"] if stream else response.json()
    assert final["status"] == "completed"
    assert [item["type"] for item in final["output"]] == ["compaction"]
    assert "tools" not in upstream.chat_requests[-1].json  # a summary is written without tools
    # The item replayed later stands for the history it replaced.
    follow = post(gateway, {"model": "glm-5", "store": False, "input": [
        final["output"][0], {"role": "user", "content": "continue"}]})
    assert follow.status_code == 200, follow.text
    sent = upstream.chat_requests[-1].json["messages"]
    assert "Ada is writing a parser." in json.dumps(sent)


def test_browser_preflight_for_delete_and_the_dropped_tools_header(gateway, upstream):
    preflight = httpx.options(gateway.url + "/v1/responses/resp_x", timeout=10, headers={
        **PREFLIGHT, "access-control-request-method": "DELETE"})
    assert preflight.status_code == 204
    assert "DELETE" in preflight.headers["access-control-allow-methods"]
    upstream.script(sc.text("ok"))
    answer = post(gateway, {"model": "glm-5", "input": "hi", "tools": [{"type": "web_search"}]},
                  headers={"origin": LOCAL_PAGE})
    assert "x-iflow2api-dropped-tools" in answer.headers["access-control-expose-headers"]


def test_the_openapi_document_has_the_responses_routes(gateway):
    document = httpx.get(gateway.url + "/openapi.json", timeout=30).json()
    paths = document["paths"]
    assert set(paths["/v1/responses"]) == {"post"}
    assert set(paths["/v1/responses/{response_id}"]) == {"get", "delete"}
    assert set(paths["/v1/responses/{response_id}/input_items"]) == {"get"}
    assert "/responses" not in paths  # the unprefixed twin is served, not documented
    post_op = paths["/v1/responses"]["post"]
    assert post_op["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ResponsesRequest")
    assert "text/event-stream" in post_op["responses"]["200"]["content"]
    schemas = document["components"]["schemas"]
    assert {"ResponsesRequest", "Response", "ResponseStreamEvent", "DeletedResponse",
            "InputItemList"} <= set(schemas)
    get_op = paths["/v1/responses/{response_id}"]["get"]
    assert [p["name"] for p in get_op["parameters"]] == ["response_id"]


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b""])
def test_a_body_that_is_not_a_json_object_is_a_400(gateway, raw):
    response = httpx.post(gateway.url + "/v1/responses", content=raw, timeout=30,
                          headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_json"
