"""openai_to_responses: the non-streaming response object, checked against the openai SDK."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai.types.responses import Response

from proxy.translate.responses_items import decode_reasoning
from proxy.translate.responses_request import responses_to_openai
from proxy.translate.responses_response import openai_to_responses
from proxy.translate.types import TranslateOptions, UpstreamResponseError
from tests.translate.golden import FIXTURES, assert_golden, load

GOLDEN = FIXTURES.parent / "responses" / "response"
REQUEST = load(FIXTURES.parent / "responses" / "request" / "codex_first_turn.json")["request"]


def completion(message: dict[str, Any], finish: str | None = "stop") -> dict[str, Any]:
    return {
        "id": "chatcmpl-1", "object": "chat.completion", "model": "glm-4.6",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120,
                  "prompt_tokens_details": {"cached_tokens": 30},
                  "completion_tokens_details": {"reasoning_tokens": 8}},
    }


def convert(resp: Any, request: dict[str, Any] | None = None) -> dict[str, Any]:
    translation = responses_to_openai(request or REQUEST, TranslateOptions(upstream_model="u"))
    return openai_to_responses(resp, translation, response_id="resp_1", created_at=1700000000)


def test_full_response_golden_and_sdk() -> None:
    message = {
        "role": "assistant",
        "content": "Listing and searching.",
        "reasoning_content": "Two tools at once.",
        "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "exec_command", "arguments": '{"cmd":"ls"}'}},
            {"id": "c2", "type": "function",
             "function": {"name": "mcp__docs__search", "arguments": '{"q":"x"}'}},
            {"type": "function", "function": {"name": "apply_patch",
                                              "arguments": '{"input":"*** Begin Patch\\n"}'}},
        ],
    }
    out = convert(completion(message, "tool_calls"))
    GOLDEN.mkdir(exist_ok=True)
    assert_golden(GOLDEN / "codex_tool_calls.expected.json", out)
    parsed = Response.model_validate(out)
    assert parsed.output_text == "Listing and searching."
    reasoning, text, call1, call2, custom = out["output"]
    assert reasoning["summary"] == [{"type": "summary_text", "text": "Two tools at once."}]
    assert decode_reasoning(reasoning["encrypted_content"]) == "Two tools at once."
    assert text["content"][0] == {"type": "output_text", "text": "Listing and searching.",
                                  "annotations": [], "logprobs": []}
    assert (call1["type"], call1["call_id"], call1["name"]) == ("function_call", "c1",
                                                                "exec_command")
    assert (call2["name"], call2["namespace"]) == ("search", "mcp__docs")
    assert custom["type"] == "custom_tool_call" and custom["input"] == "*** Begin Patch\n"
    assert custom["call_id"].startswith("call_")
    assert out["usage"] == {"input_tokens": 100,
                            "input_tokens_details": {"cached_tokens": 30, "cache_write_tokens": 0},
                            "output_tokens": 20, "output_tokens_details": {"reasoning_tokens": 8},
                            "total_tokens": 120}
    assert out["status"] == "completed" and out["incomplete_details"] is None
    assert out["model"] == "gpt-5.1-codex" and out["store"] is False
    assert out["tools"] == REQUEST["tools"]  # echoed as sent, hosted ones included
    assert convert(completion(message, "tool_calls")) == out  # deterministic


@pytest.mark.parametrize(("finish", "reason"), [("length", "max_output_tokens"),
                                                ("content_filter", "content_filter")])
def test_cut_answers_are_incomplete(finish: str, reason: str) -> None:
    out = convert(completion({"role": "assistant", "content": "Half"}, finish))
    assert out["status"] == "incomplete"
    assert out["incomplete_details"] == {"reason": reason}
    assert out["output"][-1]["status"] == "incomplete"
    Response.model_validate(out)


def test_empty_answer_and_missing_usage_are_estimated() -> None:
    resp = completion({"role": "assistant", "content": None, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "exec_command", "arguments": ""}},
        {"id": "d", "type": "function", "function": {"name": "f", "arguments": '{"a":"b c"}'}}]})
    resp["usage"] = None
    translation = responses_to_openai({"model": "m", "input": "x"},
                                      TranslateOptions(upstream_model="u"))
    out = openai_to_responses(resp, translation, response_id="r", created_at=1, input_tokens=12,
                              model="shown")
    assert [i["type"] for i in out["output"]] == ["function_call", "function_call"]
    assert out["output"][0]["arguments"] == "{}"
    assert out["usage"]["input_tokens"] == 12 and out["usage"]["output_tokens"] >= 1
    assert out["model"] == "shown"
    Response.model_validate(out)


def test_plain_text_output_text_helper() -> None:
    out = convert(completion({"role": "assistant", "content": "Hi!"}),
                  {"model": "m", "input": "hi", "text": {"format": {"type": "json_object"}}})
    parsed = Response.model_validate(json.loads(json.dumps(out)))
    assert parsed.output_text == "Hi!" and parsed.text.format.type == "json_object"


def test_upstream_error_body_raises() -> None:
    with pytest.raises(UpstreamResponseError):
        convert({"error": {"message": "boom"}})
    with pytest.raises(UpstreamResponseError):
        convert(["not", "an", "object"])
