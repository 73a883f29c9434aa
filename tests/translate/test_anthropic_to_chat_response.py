"""anthropic_to_chat (a Messages body -> chat.completion) and the Anthropic error mapping."""

from __future__ import annotations

import copy
import json
import random
from typing import Any

import pytest
from anthropic.types import Message

from proxy.translate.anthropic_to_chat_errors import chat_error, prompt_too_long
from proxy.translate.anthropic_to_chat_response import anthropic_to_chat, finish_reason
from proxy.translate.types import UpstreamResponseError
from tests.translate.golden import FIXTURES, assert_golden, load
from tests.translate.sdk_shapes import check_chat_completion
from tests.translate.test_anthropic_request_errors import _mutations

RESPONSE = FIXTURES.parent / "reverse" / "response"
CASES = sorted(p.stem for p in RESPONSE.glob("*.json") if not p.stem.endswith(".expected"))


@pytest.mark.parametrize("case", CASES)
def test_golden_response(case: str) -> None:
    fixture = load(RESPONSE / f"{case}.json")
    Message.model_validate(fixture["response"])  # the fixture is what the SDK would accept
    before = copy.deepcopy(fixture["response"])
    completion = anthropic_to_chat(fixture["response"], **fixture["init"])
    assert fixture["response"] == before
    check_chat_completion(completion)
    assert_golden(RESPONSE / f"{case}.expected.json", completion)


def test_goldens_exist() -> None:
    assert len(CASES) >= 3


def message(*content: dict[str, Any], stop: str | None = "end_turn",
            usage: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": "up",
            "content": list(content), "stop_reason": stop, "stop_sequence": None,
            "usage": usage or {"input_tokens": 1, "output_tokens": 2}}


def convert(resp: Any) -> dict[str, Any]:
    completion = anthropic_to_chat(resp, model="m", completion_id="chatcmpl-1")
    check_chat_completion(completion)
    return completion


def test_usage_includes_cache_reads_and_writes() -> None:
    usage = {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 100,
             "cache_creation_input_tokens": 40}
    out = convert(message({"type": "text", "text": "hi"}, usage=usage))["usage"]
    assert out == {"prompt_tokens": 150, "completion_tokens": 5, "total_tokens": 155,
                   "prompt_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 40}}


def test_empty_content_and_missing_usage() -> None:
    out = convert({"type": "message", "content": [], "stop_reason": None})
    assert out["choices"][0]["message"] == {"role": "assistant", "content": ""}
    assert out["choices"][0]["finish_reason"] == "stop"
    assert out["usage"]["total_tokens"] == 0


def test_tool_calls_arguments_are_json_strings() -> None:
    tool = {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"q": "中文"}}
    out = convert(message(tool, stop="tool_use"))["choices"][0]
    assert out["message"]["content"] is None and out["finish_reason"] == "tool_calls"
    assert json.loads(out["message"]["tool_calls"][0]["function"]["arguments"]) == {"q": "中文"}


@pytest.mark.parametrize(("stop", "tools", "expected"), [
    ("end_turn", False, "stop"), ("stop_sequence", False, "stop"), ("pause_turn", False, "stop"),
    ("max_tokens", False, "length"), ("max_tokens", True, "length"),
    ("model_context_window_exceeded", False, "length"), ("tool_use", True, "tool_calls"),
    ("tool_use", False, "stop"), ("end_turn", True, "tool_calls"),
    ("refusal", False, "content_filter"), (None, False, "stop"), ("weird", False, "stop"),
])
def test_finish_reason(stop: Any, tools: bool, expected: str) -> None:
    assert finish_reason(stop, tool_calls=tools) == expected


def test_null_content_is_an_empty_answer() -> None:
    out = convert({"type": "message", "content": None, "stop_reason": "end_turn"})
    assert out["choices"][0]["message"]["content"] == ""


@pytest.mark.parametrize("resp", [None, [], "x", {"content": None}, {"content": "text"},
                                  {"type": "error", "error": {"type": "api_error"}}])
def test_not_a_message(resp: Any) -> None:
    with pytest.raises(UpstreamResponseError):
        anthropic_to_chat(resp, model="m")


def test_messy_blocks_ignored() -> None:
    out = convert(message(1, {"type": "text"}, {"type": "tool_use", "name": ""},  # type: ignore
                          {"type": "server_tool_use", "id": "s", "name": "web_search"},
                          {"type": "text", "text": "ok"}))
    assert out["choices"][0]["message"] == {"role": "assistant", "content": "ok"}


# ---- errors ------------------------------------------------------------------------------


def anthropic_error(kind: str, text: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": text}, "request_id": "req_1"}


@pytest.mark.parametrize(("kind", "status", "openai_type", "code"), [
    ("invalid_request_error", 400, "invalid_request_error", None),
    ("authentication_error", 401, "authentication_error", "invalid_api_key"),
    ("billing_error", 402, "insufficient_quota", "insufficient_quota"),
    ("permission_error", 403, "permission_error", None),
    ("not_found_error", 404, "invalid_request_error", "not_found"),
    ("request_too_large", 413, "invalid_request_error", "request_too_large"),
    ("rate_limit_error", 429, "rate_limit_error", "rate_limit_exceeded"),
    ("api_error", 502, "api_error", "upstream_error"),
    ("timeout_error", 504, "timeout_error", "upstream_timeout"),
    ("overloaded_error", 503, "api_error", "overloaded"),
])
def test_error_types(kind: str, status: int, openai_type: str, code: str | None) -> None:
    error = chat_error(anthropic_error(kind, "words kept"), 500)
    assert (error.status, error.type, error.code) == (status, openai_type, code)
    assert error.body() == {"error": {"message": "words kept", "type": openai_type,
                                      "param": None, "code": code}}


def test_prompt_too_long_is_context_length_exceeded() -> None:
    text = "prompt is too long: 208310 tokens > 200000 maximum"
    error = chat_error(anthropic_error("invalid_request_error", text), 400)
    assert (error.status, error.code, error.message) == (400, "context_length_exceeded", text)
    assert prompt_too_long(text) == (208310, 200000)
    assert prompt_too_long("Prompt is too long") == (0, 0)
    assert prompt_too_long("max_tokens: too big") is None
    llama = {"error": {"code": 400, "type": "exceed_context_size_error",
                       "message": "the request exceeds the available context size"}}
    assert chat_error(llama, 400).code == "context_length_exceeded"


def test_model_not_found_and_unknown_shapes() -> None:
    assert chat_error(anthropic_error("not_found_error", "model: x"), 404).code == \
        "model_not_found"
    assert chat_error("<html>bad gateway</html>", 503).status == 502
    unknown = chat_error({"error": {"type": "teapot", "message": "no"}}, 418)
    assert (unknown.status, unknown.code, unknown.message) == (418, "upstream_418", "no")
    assert chat_error({}, 200).message == "upstream error (200)"


@pytest.mark.parametrize("seed", range(100))
def test_random_corruption_only_raises_upstream_response_error(seed: int) -> None:
    rng = random.Random(seed)
    base = load(RESPONSE / f"{rng.choice(CASES)}.json")
    resp = _mutations(copy.deepcopy(base["response"]), rng)
    try:
        completion = anthropic_to_chat(resp, model="m")
    except UpstreamResponseError:
        return
    check_chat_completion(completion)
