"""openai_to_anthropic: the non-streaming message."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.translate.anthropic_response import RAW_ARGUMENTS_KEY, openai_to_anthropic
from proxy.translate.types import UpstreamResponseError


def completion(message: dict[str, Any], finish: str | None = "stop", **choice: Any) -> dict:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "glm-4.6",
        "choices": [{"index": 0, "message": message, "finish_reason": finish, **choice}],
        "usage": {
            "prompt_tokens": 100,
            "completion_tokens": 20,
            "prompt_tokens_details": {"cached_tokens": 30},
        },
    }


def convert(resp: Any, **kwargs: Any) -> dict[str, Any]:
    return openai_to_anthropic(resp, message_id="msg_1", model="claude-x", **kwargs)


def test_full_message() -> None:
    message = {
        "role": "assistant",
        "content": "Here you go.",
        "reasoning_content": "think",
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "short", "arguments": '{"a":1}'}},
            {"type": "function", "function": {"name": "g", "arguments": ""}},
        ],
    }
    out = convert(completion(message, "tool_calls"), tool_names={"short": "the_long_name"})
    assert out["id"] == "msg_1" and out["type"] == "message" and out["role"] == "assistant"
    assert out["model"] == "claude-x"
    thinking, text, call1, call2 = out["content"]
    assert thinking["type"] == "thinking" and thinking["thinking"] == "think"
    assert isinstance(thinking["signature"], str) and thinking["signature"]
    assert text == {"type": "text", "text": "Here you go."}
    assert call1 == {"type": "tool_use", "id": "c1", "name": "the_long_name", "input": {"a": 1}}
    assert call2["input"] == {} and call2["id"].startswith("toolu_")
    assert call2["id"] == convert(completion(message))["content"][3]["id"]  # deterministic
    assert out["stop_reason"] == "tool_use" and out["stop_sequence"] is None
    assert out["usage"] == {
        "input_tokens": 70,
        "output_tokens": 20,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 30,
    }


def test_no_empty_text_block_and_reasoning_alias() -> None:
    out = convert(completion({"content": "", "reasoning": "r"}))
    assert [b["type"] for b in out["content"]] == ["thinking"]
    assert convert(completion({"content": None}))["content"] == []


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ('{"a": [1, 2]}', {"a": [1, 2]}),
        ("  ", {}),
        (None, {}),
        ({"already": "dict"}, {"already": "dict"}),
        ('{"a": 1', {RAW_ARGUMENTS_KEY: '{"a": 1'}),
        ("[1]", {RAW_ARGUMENTS_KEY: "[1]"}),
    ],
)
def test_tool_arguments(arguments: Any, expected: dict[str, Any]) -> None:
    call = {"id": "c", "function": {"name": "f", "arguments": arguments}}
    out = convert(completion({"content": None, "tool_calls": [call]}))
    assert out["content"][0]["input"] == expected


@pytest.mark.parametrize(
    ("finish", "extra", "expected"),
    [
        ("stop", {}, ("end_turn", None)),
        ("length", {}, ("max_tokens", None)),
        ("content_filter", {}, ("refusal", None)),
        ("tool_calls", {}, ("tool_use", None)),
        (None, {}, ("end_turn", None)),
        ("stop", {"stop_reason": "</x>"}, ("stop_sequence", "</x>")),
        ("stop", {"matched_stop": "</x>"}, ("stop_sequence", "</x>")),
        ("stop", {"matched_stop": "other"}, ("end_turn", None)),
    ],
)
def test_stop_reason(finish: str | None, extra: dict[str, Any], expected: tuple) -> None:
    out = convert(completion({"content": "x"}, finish, **extra), stop_sequences=["</x>"])
    assert (out["stop_reason"], out["stop_sequence"]) == expected


def test_legacy_function_call_and_parts_content() -> None:
    message = {
        "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
        "function_call": {"name": "f", "arguments": "{}"},
    }
    out = convert(completion(message, "function_call"))
    assert out["content"][0] == {"type": "text", "text": "ab"}
    assert out["content"][1]["name"] == "f" and out["stop_reason"] == "tool_use"


@pytest.mark.parametrize(
    "resp",
    [
        {"choices": [None]},
        {"choices": [{"message": "x"}]},
        {"choices": [{"message": {"tool_calls": [None, {"function": None}, {"function": {}}]}}]},
        {"choices": [], "usage": {"prompt_tokens": "7", "completion_tokens": None}},
        {},
    ],
)
def test_messy_responses_never_raise(resp: dict[str, Any]) -> None:
    out = convert(resp)
    assert out["content"] == [] and out["stop_reason"] == "end_turn"
    assert all(isinstance(v, int) for v in out["usage"].values())


@pytest.mark.parametrize("resp", ["text", {"error": {"message": "bad key"}}, {"error": "x"}])
def test_not_a_completion(resp: Any) -> None:
    with pytest.raises(UpstreamResponseError):
        convert(resp)
