"""Codex's remote compaction (v2) on a chat upstream: the captured requests, the stream wrapper
(grammar, the openai SDK's models), the non-streamed answer, and the replayed summary."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from openai.types.responses import Response

from proxy.translate.responses_compaction import (
    NO_SUMMARY,
    SUMMARY_HEADING,
    SUMMARY_REQUEST,
    CompactionStream,
    compaction_response,
    decode_summary,
    encode_summary,
    prepare_compaction,
)
from proxy.translate.responses_items import encode_reasoning
from proxy.translate.responses_request import responses_to_openai
from proxy.translate.responses_response import openai_to_responses
from proxy.translate.responses_stream import ResponsesStream
from proxy.translate.types import TranslateOptions, UpstreamResponseError
from tests.translate.golden import FIXTURES
from tests.translate.responses_grammar import check_responses_stream
from tests.translate.test_responses_stream import check_with_sdk

CODEX = FIXTURES.parent / "responses" / "codex"
OPTS = TranslateOptions(upstream_model="glm-4.6")
SUMMARY = "The user wants hello.txt shown; `cat hello.txt` printed 'file content 42'."


def captured(name: str) -> dict[str, Any]:
    return json.loads((CODEX / f"{name}.json").read_text(encoding="utf-8"))["body"]


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None,
          usage: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"id": "c", "object": "chat.completion.chunk", "created": 1,
                           "model": "glm-4.6",
                           "choices": [] if delta is None else
                           [{"index": 0, "delta": delta, "finish_reason": finish}]}
    if usage is not None:
        out["usage"] = usage
    return out


def stream_for(body: dict[str, Any]) -> CompactionStream:
    assert prepare_compaction(body)
    translation = responses_to_openai(body, OPTS)
    return CompactionStream(ResponsesStream(translation, response_id="resp_c", created_at=1,
                                            input_tokens=5))


def test_the_captured_trigger_becomes_a_summary_request_without_tools() -> None:
    body = captured("remote_compaction")
    assert body["input"][-1] == {"type": "compaction_trigger"}
    assert prepare_compaction(body) is True
    assert all(item.get("type") != "compaction_trigger" for item in body["input"])
    assert body["input"][-1]["content"][0]["text"] == SUMMARY_REQUEST
    assert "tools" not in body and "tool_choice" not in body
    chat = responses_to_openai(body, OPTS).body
    assert "tools" not in chat and "tool_choice" not in chat
    assert chat["messages"][-1] == {"role": "user", "content": SUMMARY_REQUEST}
    # The history that is being summarised is all there: the call and its output.
    roles = [m["role"] for m in chat["messages"]]
    assert roles[0] == "system" and "tool" in roles and chat["stream"] is True


def test_ordinary_captured_turns_are_left_alone() -> None:
    for name in ("turn_first", "turn_tool_output", "local_compaction", "turn_first_known_model"):
        body = captured(name)
        before = copy.deepcopy(body)
        assert prepare_compaction(body) is False
        assert body == before, name


def test_our_replayed_item_becomes_the_summary_and_a_foreign_one_is_dropped() -> None:
    body = captured("after_remote_compaction")
    foreign = body["input"][-1]
    assert foreign["type"] == "compaction"
    ours = {"type": "compaction", "id": "cmp_1", "encrypted_content": encode_summary(SUMMARY)}
    body["input"] = [*body["input"][:-1], ours, foreign]
    assert prepare_compaction(body) is False
    assert body["input"][-1] is foreign
    assert body["input"][-2]["content"][0]["text"] == f"{SUMMARY_HEADING}\n\n{SUMMARY}"
    chat = responses_to_openai(body, OPTS).body
    assert chat["messages"][-1]["content"].endswith(SUMMARY)
    assert "tools" in chat  # an ordinary turn keeps its tools
    # Reasoning's carried text is not a summary, and a summary is not reasoning.
    assert decode_summary(encode_reasoning(SUMMARY)) is None
    assert decode_summary("gAAAA-openai-ciphertext") is None


def test_only_a_last_trigger_counts() -> None:
    body = {"model": "m", "input": [{"type": "compaction_trigger"},
                                    {"type": "message", "role": "user", "content": "next"}],
            "tools": [{"type": "function", "name": "f"}]}
    assert prepare_compaction(body) is False
    assert body["input"] == [{"type": "message", "role": "user", "content": "next"}]
    assert body["tools"]
    assert prepare_compaction({"model": "m", "input": "text"}) is False


def test_stream_answers_one_compaction_item() -> None:
    stream = stream_for(captured("remote_compaction"))
    events = stream.start()  # a stream that commits before the upstream's first chunk
    assert [e["type"] for e in events] == ["response.created", "response.in_progress"]
    assert stream.start() == []
    events += stream.feed(chunk({"role": "assistant", "reasoning_content": "Let me sum up."}))
    for word in SUMMARY.split(" "):
        events += stream.feed(chunk({"content": word + " "}))
    events += stream.feed(chunk({}, "stop"))
    events += stream.feed(chunk(usage={"prompt_tokens": 900, "completion_tokens": 40,
                                       "total_tokens": 940}))
    assert stream.finished
    events += stream.close()
    check_responses_stream(events)
    check_with_sdk(events)
    assert [e["type"] for e in events] == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.output_item.done", "response.completed"]
    final = events[-1]["response"]
    Response.model_validate(final)
    assert [item["type"] for item in final["output"]] == ["compaction"]
    assert decode_summary(final["output"][0]["encrypted_content"]) == SUMMARY
    assert final["usage"]["input_tokens"] == 900
    assert stream.status == "completed" and stream.response == final


def test_a_summary_cut_by_the_output_limit_still_completes() -> None:
    stream = stream_for(captured("remote_compaction"))
    events = stream.feed(chunk({"content": "Half a sum"}, "length")) + stream.close()
    check_responses_stream(events)
    assert events[-1]["type"] == "response.completed"
    assert decode_summary(events[-1]["response"]["output"][0]["encrypted_content"]) == (
        "Half a sum")


@pytest.mark.parametrize("steps", [
    [chunk({"reasoning_content": "only thinking"}, "stop")],
    [chunk({"tool_calls": [{"index": 0, "id": "c1", "type": "function",
                            "function": {"name": "exec_command", "arguments": "{}"}}]},
           "tool_calls")],
])
def test_no_summary_text_is_a_failure(steps: list[dict[str, Any]]) -> None:
    stream = stream_for(captured("remote_compaction"))
    events = [e for step in steps for e in stream.feed(step)] + stream.close()
    check_responses_stream(events)
    assert [e["type"] for e in events][-2:] == ["response.failed", "error"]
    assert events[-1]["message"] == NO_SUMMARY and stream.status == "failed"


def test_upstream_failures_pass_through() -> None:
    stream = stream_for(captured("remote_compaction"))
    events = stream.feed(chunk({"content": "partial"}))
    events += stream.fail("upstream timed out", "server_error")
    check_responses_stream(events)
    assert [e["type"] for e in events][-2:] == ["response.failed", "error"]
    stream = stream_for(captured("remote_compaction"))
    assert not stream.finished
    events = stream.feed(chunk({"content": "cut off"})) + stream.close()  # no finish_reason
    check_responses_stream(events)
    assert events[-2]["type"] == "response.failed"


def test_non_streamed_answer_matches_the_stream() -> None:
    body = captured("remote_compaction")
    assert prepare_compaction(body)
    translation = responses_to_openai(body, OPTS)
    completion = {"choices": [{"index": 0, "finish_reason": "stop",
                               "message": {"role": "assistant", "content": SUMMARY}}],
                  "usage": {"prompt_tokens": 900, "completion_tokens": 40}}
    response = compaction_response(openai_to_responses(
        completion, translation, response_id="resp_c", created_at=1, input_tokens=5))
    Response.model_validate(response)
    assert response["status"] == "completed"
    assert [i["type"] for i in response["output"]] == ["compaction"]
    assert decode_summary(response["output"][0]["encrypted_content"]) == SUMMARY
    streamed = stream_for(captured("remote_compaction"))
    events = streamed.feed(chunk({"content": SUMMARY}, "stop"))
    events += streamed.feed(chunk(usage={"prompt_tokens": 900, "completion_tokens": 40}))
    events += streamed.close()
    assert events[-1]["response"]["output"] == response["output"]
    with pytest.raises(UpstreamResponseError, match="no summary"):
        compaction_response({**response, "output": []})
