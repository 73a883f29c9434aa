"""AnthropicStreamTranslator: golden event lists + the grammar checker + targeted edge cases."""

from __future__ import annotations

import json
from typing import Any

import pytest

from iflow2api_lib.wire import sse_event as encode_event
from proxy.translate.anthropic_stream import AnthropicStreamTranslator
from tests.translate.golden import FIXTURES, assert_golden, load
from tests.translate.grammar import check_anthropic_stream

STREAM = FIXTURES / "stream"
CASES = sorted(p.stem for p in STREAM.glob("*.json") if not p.stem.endswith(".expected"))


def run_steps(init: dict[str, Any], steps: list[Any]) -> list[tuple[str, dict[str, Any]]]:
    translator = AnthropicStreamTranslator(**init)
    events: list[tuple[str, dict[str, Any]]] = []
    errored = False
    for step in steps:
        if isinstance(step, dict) and "$error" in step:
            events += translator.error(step["$error"]["message"], step["$error"]["type"])
            errored = True
        else:
            events += translator.feed(step)
    after = translator.close()
    if errored:
        assert after == [], "close() after error() must emit nothing"
    return after if not events else events + after


@pytest.mark.parametrize("case", CASES)
def test_golden_stream(case: str) -> None:
    fixture = load(STREAM / f"{case}.json")
    events = run_steps(fixture["init"], fixture["steps"])
    check_anthropic_stream(
        events, allow_truncated_tool_json=fixture.get("allow_truncated_tool_json", False)
    )
    assert_golden(STREAM / f"{case}.expected.json", [list(e) for e in events])
    for name, data in events:  # and every event encodes as one complete SSE event
        raw = encode_event(name, data)
        assert raw.startswith(f"event: {name}\n".encode()) and raw.endswith(b"\n\n")


def test_goldens_exist() -> None:
    assert len(CASES) >= 9


# ---- helpers ------------------------------------------------------------------------------


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> dict:
    choice: dict[str, Any] = {"index": 0, "delta": delta or {}, "finish_reason": finish}
    choice.update(extra)
    return {"id": "c", "object": "chat.completion.chunk", "choices": [choice]}


def tool(index: int, args: str = "", call_id: str | None = None, name: str | None = None) -> dict:
    fragment: dict[str, Any] = {"index": index, "function": {"arguments": args}}
    if call_id:
        fragment["id"] = call_id
    if name:
        fragment["function"]["name"] = name
    return chunk({"tool_calls": [fragment]})


def translate(chunks: list[dict], **init: Any) -> list[tuple[str, dict[str, Any]]]:
    t = AnthropicStreamTranslator(message_id="msg_test", model="m", **init)
    events = [e for c in chunks for e in t.feed(c)] + t.close()
    check_anthropic_stream(events)
    return events


def names(events: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [n for n, _ in events]


def tool_inputs(events: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """tool_use id -> parsed concatenated partial_json."""
    ids: dict[int, str] = {}
    parts: dict[int, list[str]] = {}
    for name, data in events:
        if name == "content_block_start" and data["content_block"]["type"] == "tool_use":
            ids[data["index"]] = data["content_block"]["id"]
            parts[data["index"]] = []
        elif name == "content_block_delta" and data["delta"]["type"] == "input_json_delta":
            parts[data["index"]].append(data["delta"]["partial_json"])
    return {ids[i]: json.loads("".join(p)) for i, p in parts.items()}


def message_delta(events: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    return next(d for n, d in events if n == "message_delta")


# ---- edge cases ---------------------------------------------------------------------------


def test_empty_stream_still_well_formed() -> None:
    events = translate([])
    assert names(events) == ["message_start", "message_delta", "message_stop"]
    assert message_delta(events)["delta"]["stop_reason"] == "end_turn"
    assert message_delta(events)["usage"]["output_tokens"] == 0


def test_message_start_first_and_usage_ints() -> None:
    t = AnthropicStreamTranslator(message_id="msg_1", model="claude-x", input_tokens=77)
    events = t.feed({"choices": None})
    assert events[0][0] == "message_start"
    usage = events[0][1]["message"]["usage"]
    assert usage == {
        "input_tokens": 77,
        "output_tokens": 0,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    assert t.feed({"choices": []}) == []


def test_no_empty_text_block_for_empty_or_null_content() -> None:
    events = translate([chunk({"role": "assistant", "content": ""}), chunk({"content": None})])
    assert "content_block_start" not in names(events)


def test_text_after_tool_call_opens_new_block() -> None:
    events = translate(
        [tool(0, '{"a":1}', "call_1", "f"), chunk({"content": "after"}), chunk({}, "tool_calls")]
    )
    starts = [d["content_block"]["type"] for n, d in events if n == "content_block_start"]
    assert starts == ["tool_use", "text"]
    assert message_delta(events)["delta"]["stop_reason"] == "tool_use"


def test_text_while_tool_json_incomplete_is_queued_not_interleaved() -> None:
    events = translate(
        [
            tool(0, '{"a":', "call_1", "f"),
            chunk({"content": "x"}),
            tool(0, "1}"),
            chunk({}, "tool_calls"),
        ]
    )
    assert tool_inputs(events) == {"call_1": {"a": 1}}
    starts = [d["content_block"]["type"] for n, d in events if n == "content_block_start"]
    assert starts == ["tool_use", "text"]


def test_interleaved_calls_never_complete_are_flushed_at_close() -> None:
    events = translate(
        [
            tool(0, '{"x":', "c0", "a"),
            tool(1, '{"y":', "c1", "b"),
            tool(0, "1}"),
            tool(1, "2}"),
            tool(2, "{}", "c2", "c"),
        ]
    )
    assert tool_inputs(events) == {"c0": {"x": 1}, "c1": {"y": 2}, "c2": {}}


def test_late_id_waits_for_name_and_id() -> None:
    # id first without name, name later: started only once the name is known.
    events = translate([tool(0, "", "call_9"), tool(0, '{"q":', name="search"), tool(0, '"z"}')])
    start = next(d for n, d in events if n == "content_block_start")
    assert start["content_block"] == {
        "type": "tool_use",
        "id": "call_9",
        "name": "search",
        "input": {},
    }
    assert tool_inputs(events) == {"call_9": {"q": "z"}}


def test_synthesized_id_is_deterministic() -> None:
    a = translate([tool(0, "{}", name="f")])
    b = translate([tool(0, "{}", name="f")])
    assert tool_inputs(a) == tool_inputs(b)
    assert next(iter(tool_inputs(a))).startswith("toolu_")


def test_call_without_name_is_dropped() -> None:
    events = translate([tool(0, '{"a":1}', "call_x"), chunk({"content": "hi"}, "stop")])
    assert [d["content_block"]["type"] for n, d in events if n == "content_block_start"] == ["text"]


def test_fragment_without_index() -> None:
    frag = {"id": "c1", "function": {"name": "f", "arguments": '{"a":'}}
    events = translate(
        [
            chunk({"tool_calls": [frag]}),
            chunk({"tool_calls": [{"function": {"arguments": "1}"}}]}),
            chunk({"tool_calls": [{"id": "c2", "function": {"name": "g", "arguments": "{}"}}]}),
        ]
    )
    assert tool_inputs(events) == {"c1": {"a": 1}, "c2": {}}


def test_arguments_sent_as_object() -> None:
    c = chunk({"tool_calls": [{"index": 0, "id": "c", "function": {"name": "f", "arguments": {}}}]})
    assert tool_inputs(translate([c])) == {"c": {}}


def test_reasoning_after_text_opens_second_thinking_block() -> None:
    events = translate(
        [
            chunk({"reasoning_content": "a"}),
            chunk({"content": "b"}),
            chunk({"reasoning_content": "c"}),
            chunk({"content": "d"}),
        ]
    )
    starts = [d["content_block"]["type"] for n, d in events if n == "content_block_start"]
    assert starts == ["thinking", "text", "thinking", "text"]


def test_stop_reason_mapping() -> None:
    def reason(finish: str | None, **extra: Any) -> tuple[str, str | None]:
        t = AnthropicStreamTranslator(message_id="m", model="m", stop_sequences=["END"])
        t.feed(chunk({"content": "x"}, finish, **extra))
        delta = message_delta(t.close())["delta"]
        assert t.stop_reason == delta["stop_reason"]
        return delta["stop_reason"], delta["stop_sequence"]

    assert reason("stop") == ("end_turn", None)
    assert reason(None) == ("end_turn", None)
    assert reason("length") == ("max_tokens", None)
    assert reason("content_filter") == ("refusal", None)
    assert reason("tool_calls") == ("tool_use", None)
    assert reason("stop", matched_stop="END") == ("stop_sequence", "END")
    assert reason("stop", stop_reason="END") == ("stop_sequence", "END")
    assert reason("stop", stop_reason="OTHER") == ("end_turn", None)
    assert reason("stop", stop_reason=151643) == ("end_turn", None)  # vLLM token id


def test_emitted_tool_means_tool_use_even_if_upstream_says_stop() -> None:
    events = translate([tool(0, "{}", "c", "f"), chunk({}, "stop")])
    assert message_delta(events)["delta"]["stop_reason"] == "tool_use"


def test_usage_after_finish_is_held_and_cache_subtracted() -> None:
    t = AnthropicStreamTranslator(message_id="m", model="m", input_tokens=5)
    events = t.feed(chunk({"content": "hi"}, "stop"))
    assert "message_delta" not in names(events)
    usage = {
        "prompt_tokens": 100,
        "completion_tokens": 7,
        "prompt_tokens_details": {"cached_tokens": 60},
    }
    events += t.feed({"choices": [], "usage": usage})
    events += t.close()
    check_anthropic_stream(events)
    assert message_delta(events)["usage"] == {
        "input_tokens": 40,
        "output_tokens": 7,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 60,
    }


def test_output_tokens_estimated_without_usage() -> None:
    events = translate([chunk({"content": "hello world " * 20})], input_tokens=12)
    usage = message_delta(events)["usage"]
    assert usage["input_tokens"] == 12
    assert usage["output_tokens"] > 0


def test_in_band_upstream_error_chunk() -> None:
    t = AnthropicStreamTranslator(message_id="m", model="m")
    events = t.feed(chunk({"content": "x"}))
    events += t.feed({"error": {"message": "quota exceeded", "type": "rate_limit"}})
    assert events[-1] == (
        "error",
        {"type": "error", "error": {"type": "api_error", "message": "quota exceeded"}},
    )
    check_anthropic_stream(events)
    assert t.feed(chunk({"content": "y"})) == [] and t.close() == []


def test_error_before_any_chunk_and_after_close() -> None:
    t = AnthropicStreamTranslator(message_id="m", model="m")
    assert t.error("boom", "overloaded_error") == [
        ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "boom"}})
    ]
    assert t.error("again") == []
    t2 = AnthropicStreamTranslator(message_id="m", model="m")
    t2.close()
    assert t2.feed(chunk({"content": "x"})) == [] and t2.close() == [] and t2.error("x") == []


@pytest.mark.parametrize(
    "garbage",
    [
        None,
        "text",
        [],
        {"choices": "nope"},
        {"choices": [None, 3]},
        {"choices": [{"delta": "str"}]},
        {"choices": [{"delta": {"tool_calls": "x"}}]},
        {"choices": [{"delta": {"tool_calls": [None, {"function": "x"}, {"index": "1"}]}}]},
        {"choices": [{"delta": {"content": 5, "reasoning_content": ["a"]}}]},
        {"choices": [{"index": 1, "delta": {"content": "second choice ignored"}}]},
        {"usage": "bad", "choices": []},
        {"choices": [{"delta": {}, "finish_reason": 3}]},
    ],
)
def test_messy_chunks_never_raise(garbage: Any) -> None:
    t = AnthropicStreamTranslator(message_id="m", model="m")
    events = t.feed(garbage) + t.feed(chunk({"content": "ok"})) + t.close()
    check_anthropic_stream(events)


def test_shortened_name_mapped_back() -> None:
    events = translate([tool(0, "{}", "c", "short")], tool_names={"short": "a_very_long_name"})
    start = next(d for n, d in events if n == "content_block_start")
    assert start["content_block"]["name"] == "a_very_long_name"


def test_thinking_signature_right_before_stop() -> None:
    events = translate([chunk({"reasoning": "hmm"}), chunk({}, "stop")])
    kinds = [(n, d.get("delta", {}).get("type")) for n, d in events]
    assert kinds[1:5] == [
        ("content_block_start", None),
        ("content_block_delta", "thinking_delta"),
        ("content_block_delta", "signature_delta"),
        ("content_block_stop", None),
    ]


def test_all_zero_upstream_usage_falls_back_to_estimates() -> None:
    zero = {"choices": [], "usage": {"prompt_tokens": 0, "completion_tokens": 0}}
    events = translate([chunk({"content": "some words here"}, "stop"), zero], input_tokens=50)
    usage = message_delta(events)["usage"]
    assert usage["input_tokens"] == 50 and usage["output_tokens"] > 0
