"""responses_to_openai: golden requests (one captured from Codex), errors, previous_response_id."""

from __future__ import annotations

import contextlib
import copy
import random
from dataclasses import asdict
from typing import Any

import pytest

from proxy.translate.responses_input import NO_OUTPUT
from proxy.translate.responses_items import decode_reasoning, encode_reasoning
from proxy.translate.responses_request import (
    combine_input,
    estimate_input_tokens,
    responses_to_openai,
)
from proxy.translate.types import TranslateOptions, TranslationError
from tests.translate.golden import FIXTURES, assert_golden, load

REQUESTS = FIXTURES.parent / "responses" / "request"
CASES = sorted(p.stem for p in REQUESTS.glob("*.json") if not p.stem.endswith(".expected"))
OPTS = TranslateOptions(upstream_model="up")


def translate(body: dict[str, Any], **opts: Any) -> Any:
    return responses_to_openai(body, TranslateOptions(**{"upstream_model": "up", **opts}))


@pytest.mark.parametrize("case", CASES)
def test_golden_request(case: str) -> None:
    fixture = load(REQUESTS / f"{case}.json")
    result = responses_to_openai(fixture["request"], TranslateOptions(**fixture["options"]))
    targets = {k: asdict(v) for k, v in result.tools.targets.items()}
    assert_golden(REQUESTS / f"{case}.expected.json", {
        "body": result.body, "model": result.model, "tools": targets,
        "dropped_tools": result.dropped_tools, "echo": result.echo, "stream": result.stream,
    })


def test_goldens_exist() -> None:
    assert {"codex_first_turn", "codex_tool_round_trip"} <= set(CASES)


def test_codex_defaults_are_accepted_and_hosted_tools_reported() -> None:
    result = responses_to_openai(load(REQUESTS / "codex_first_turn.json")["request"], OPTS)
    assert result.dropped_tools == ["web_search"]
    names = [t["function"]["name"] for t in result.body["tools"]]
    assert names == ["exec_command", "update_plan", "mcp__docs__search", "mcp__docs__fetch",
                     "apply_patch"]
    assert result.body["reasoning_effort"] == "medium"
    assert result.body["stream_options"] == {"include_usage": True}
    system = result.body["messages"][0]
    assert system["role"] == "system" and system["content"].startswith("You are Codex")
    assert "<permissions instructions>" in system["content"]


def test_string_input_and_defaults() -> None:
    result = translate({"model": "m", "input": "hi"})
    assert result.body == {"model": "up", "messages": [{"role": "user", "content": "hi"}]}
    assert result.echo["store"] is True and result.echo["tool_choice"] == "auto"
    assert result.echo["text"] == {"format": {"type": "text"}}


def test_reasoning_round_trip_and_foreign_ciphertext() -> None:
    assert decode_reasoning(encode_reasoning("déjà vu")) == "déjà vu"
    assert decode_reasoning("gAAAAAB-not-ours") is None
    assert decode_reasoning(encode_reasoning("x")[:-4]) is None
    items = [
        {"type": "message", "role": "user", "content": "q"},
        {"type": "reasoning", "summary": [], "encrypted_content": encode_reasoning("hidden")},
        {"type": "function_call", "call_id": "c", "name": "f", "arguments": ""},
        {"type": "function_call_output", "call_id": "c", "output": "ok"},
    ]
    messages = translate({"model": "m", "input": items}).body["messages"]
    assert messages[1] == {"role": "assistant", "reasoning_content": "hidden", "content": None,
                           "tool_calls": [{"id": "c", "type": "function",
                                           "function": {"name": "f", "arguments": "{}"}}]}
    assert messages[2] == {"role": "tool", "tool_call_id": "c", "content": "ok"}


def test_unanswered_calls_get_a_placeholder_output() -> None:
    items = [{"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
             {"type": "function_call", "call_id": "c2", "name": "f", "arguments": "{}"},
             {"type": "function_call_output", "call_id": "c2", "output": "two"}]
    messages = translate({"model": "m", "input": items}).body["messages"]
    assert [m["role"] for m in messages] == ["assistant", "tool", "tool"]
    assert messages[1] == {"role": "tool", "tool_call_id": "c2", "content": "two"}
    assert messages[2] == {"role": "tool", "tool_call_id": "c1", "content": NO_OUTPUT}


def test_namespace_collision_gets_its_own_name() -> None:
    tools = [{"type": "function", "name": "a__b"},
             {"type": "namespace", "name": "a", "description": "", "tools": [
                 {"type": "function", "name": "b"}]}]
    result = translate({"model": "m", "input": "x", "tools": tools,
                        "tool_choice": {"type": "function", "name": "b", "namespace": "a"}})
    names = [t["function"]["name"] for t in result.body["tools"]]
    assert names == ["a__b", "a__b_2"]
    assert result.tools.target("a__b_2").namespace == "a"
    assert result.body["tool_choice"] == {"type": "function", "function": {"name": "a__b_2"}}


def test_only_hosted_tools_send_no_tool_fields() -> None:
    result = translate({"model": "m", "input": "x", "tools": [{"type": "web_search"}],
                        "tool_choice": "required", "parallel_tool_calls": False})
    assert not {"tools", "tool_choice", "parallel_tool_calls"} & set(result.body)
    assert result.dropped_tools == ["web_search"]


@pytest.mark.parametrize(("body", "param"), [
    ({"background": True}, "background"),
    ({"truncation": "auto"}, "truncation"),
    ({"prompt": {"id": "pmpt_1"}}, "prompt"),
    ({"conversation": "conv_1"}, "conversation"),
    ({"model": 5}, "model"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input.0"),
    ({"input": [{"type": "mystery"}]}, "input.0.type"),
    ({"input": [{"role": "tool", "content": "x"}]}, "input.0.role"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
     "input.0.content.0.file_id"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
     "input.0.content.0.file_data"),
    ({"max_output_tokens": 0}, "max_output_tokens"),
    ({"temperature": "hot"}, "temperature"),
    ({"reasoning": {"effort": "extreme"}}, "reasoning.effort"),
    ({"text": {"format": {"type": "json_schema", "name": "n"}}}, "text.format.schema"),
    ({"tools": [{"type": "function"}]}, "tools.0.name"),
    ({"tool_choice": "sometimes"}, "tool_choice"),
    ({"instructions": ["x"]}, "instructions"),
])
def test_bad_requests_raise_translation_error(body: dict[str, Any], param: str) -> None:
    with pytest.raises(TranslationError) as info:
        translate({"model": "m", "input": "x", **body})
    assert info.value.param == param
    assert info.value.problem  # a catalogue message the caller localises


def _mutations(value: Any, rng: random.Random, depth: int = 0) -> Any:
    if depth > 8 or rng.random() < 0.15:
        return rng.choice([None, 0, -1, 1.5, True, "", "x", [], {}, [None], {"type": None}])
    if isinstance(value, dict):
        return {k: _mutations(v, rng, depth + 1) if rng.random() < 0.3 else v
                for k, v in value.items()}
    if isinstance(value, list):
        return [_mutations(v, rng, depth + 1) if rng.random() < 0.3 else v for v in value]
    return value


@pytest.mark.parametrize("seed", range(300))
def test_random_corruption_only_raises_translation_error(seed: int) -> None:
    rng = random.Random(seed)
    body = load(REQUESTS / f"{rng.choice(CASES)}.json")["request"]
    mutated = _mutations(copy.deepcopy(body), rng)
    with contextlib.suppress(TranslationError):  # anything else (TypeError...) fails
        responses_to_openai(mutated, OPTS)


def test_combine_input_for_previous_response_id() -> None:
    previous_input = [{"type": "message", "role": "user", "content": "Hi"}]
    previous_output = [{"id": "msg_1", "type": "message", "role": "assistant",
                        "status": "completed",
                        "content": [{"type": "output_text", "text": "Hello", "annotations": []}]}]
    combined = combine_input(previous_input, previous_output, "How are you?")
    assert combined[:2] == previous_input + previous_output
    assert combined[2] == {"type": "message", "role": "user",
                           "content": [{"type": "input_text", "text": "How are you?"}]}
    messages = translate({"model": "m", "input": combined}).body["messages"]
    assert [(m["role"], m["content"]) for m in messages] == [
        ("user", "Hi"), ("assistant", "Hello"), ("user", "How are you?")]


def test_kimi_tool_ids_are_rewritten_consistently() -> None:
    items = [{"type": "function_call", "call_id": "call_a", "name": "f", "arguments": "{}"},
             {"type": "function_call", "call_id": "call_b", "name": "search",
              "namespace": "docs", "arguments": "{}"},
             {"type": "function_call_output", "call_id": "call_b", "output": "b"},
             {"type": "function_call_output", "call_id": "call_a", "output": "a"}]
    messages = translate({"model": "m", "input": items}, kimi_tool_ids=True).body["messages"]
    ids = [c["id"] for c in messages[0]["tool_calls"]]
    assert ids == ["functions.f:0", "functions.docs__search:1"]
    assert [(m["tool_call_id"], m["content"]) for m in messages[1:]] == [
        ("functions.docs__search:1", "b"), ("functions.f:0", "a")]


def test_input_token_estimate_counts_every_part() -> None:
    body = responses_to_openai(load(REQUESTS / "codex_tool_round_trip.json")["request"],
                               OPTS).body
    total = estimate_input_tokens(body)
    without_tools = estimate_input_tokens({**body, "tools": []})
    without_calls = estimate_input_tokens({**body, "messages": [
        {k: v for k, v in m.items() if k not in ("tool_calls", "reasoning_content")}
        for m in body["messages"]]})
    assert total > without_tools > 0 and total > without_calls
    assert estimate_input_tokens({"messages": []}) >= 1
