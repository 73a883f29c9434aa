"""ResponsesStream: golden event lists, the grammar, the openai SDK's own models and stream
accumulator, random chunk splits, and equality with the non-streaming translation."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from openai._types import omit
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from proxy.translate.responses_request import combine_input, responses_to_openai
from proxy.translate.responses_response import openai_to_responses
from proxy.translate.responses_stream import KEEPALIVE, NO_FINISH, ResponsesStream, encode_event
from proxy.translate.types import TranslateOptions
from tests.translate.golden import FIXTURES, assert_golden, load
from tests.translate.responses_grammar import check_responses_stream

STREAM = FIXTURES.parent / "responses" / "stream"
CASES = sorted(p.stem for p in STREAM.glob("*.json") if not p.stem.endswith(".expected"))
EVENTS = TypeAdapter(ResponseStreamEvent)
RESPONSE_ID = "resp_test"
CREATED = 1700000000


def new_stream(request: dict[str, Any]) -> ResponsesStream:
    translation = responses_to_openai(request, TranslateOptions(upstream_model="glm-4.6"))
    return ResponsesStream(translation, response_id=RESPONSE_ID, created_at=CREATED,
                           input_tokens=7)


def run(request: dict[str, Any], steps: list[Any]) -> list[dict[str, Any]]:
    stream = new_stream(request)
    events: list[dict[str, Any]] = []
    failed = False
    for step in steps:
        if isinstance(step, dict) and "$fail" in step:
            events += stream.fail(step["$fail"]["message"], step["$fail"]["code"])
            failed = True
        else:
            events += stream.feed(step)
    after = stream.close()
    if failed:
        assert after == [], "close() after fail() must emit nothing"
    return events + after


def check_with_sdk(events: list[dict[str, Any]]) -> Any:
    """Every event parses with the SDK's models, and its stream accumulator accepts them."""
    state: ResponseStreamState[Any] = ResponseStreamState(input_tools=omit, text_format=omit)
    for event in events:
        parsed = EVENTS.validate_python(event)
        state.handle_event(parsed)
        raw = encode_event(event)
        assert raw == f"event: {event['type']}\ndata: ".encode() + json.dumps(
            event, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"
    return state._completed_response


def completion_of(steps: list[Any]) -> dict[str, Any]:
    """The non-streaming completion carrying the same content as the chunks."""
    reasoning, content, calls = [], [], {}
    finish, usage = None, None
    for step in steps:
        usage = step.get("usage") or usage
        for choice in step.get("choices") or []:
            delta = choice.get("delta") or {}
            reasoning.append(delta.get("reasoning_content") or "")
            content.append(delta.get("content") or "")
            for fragment in delta.get("tool_calls") or []:
                call = calls.setdefault(fragment["index"], {"type": "function", "function": {
                    "name": "", "arguments": ""}})
                if fragment.get("id"):
                    call["id"] = fragment["id"]
                function = fragment.get("function") or {}
                call["function"]["name"] += function.get("name") or ""
                call["function"]["arguments"] += function.get("arguments") or ""
            finish = choice.get("finish_reason") or finish
    message: dict[str, Any] = {"role": "assistant", "content": "".join(content) or None}
    if "".join(reasoning):
        message["reasoning_content"] = "".join(reasoning)
    if calls:
        message["tool_calls"] = list(calls.values())  # the stream opens them in arrival order
    return {"choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": usage}


@pytest.mark.parametrize("case", CASES)
def test_golden_stream(case: str) -> None:
    fixture = load(STREAM / f"{case}.json")
    events = run(fixture["request"], fixture["steps"])
    check_responses_stream(events)
    assert_golden(STREAM / f"{case}.expected.json", events)
    final = check_with_sdk(events)
    last = events[-1]
    if last["type"] in ("response.completed", "response.incomplete"):
        expected = openai_to_responses(
            completion_of(fixture["steps"]), new_stream(fixture["request"]).request,
            response_id=RESPONSE_ID, created_at=CREATED, input_tokens=7)
        assert last["response"] == expected  # streamed == non-streamed
        Response.model_validate(last["response"])
        if last["type"] == "response.completed":
            assert final is not None and final.id == RESPONSE_ID
    else:
        assert last["type"] == "error" and events[-2]["type"] == "response.failed"
        Response.model_validate(events[-2]["response"])


def test_goldens_exist() -> None:
    assert len(CASES) >= 7


def test_no_finish_reason_is_a_failure_not_a_completion() -> None:
    events = run(load(STREAM / "no_finish_reason.json")["request"],
                 load(STREAM / "no_finish_reason.json")["steps"])
    types = [e["type"] for e in events]
    assert "response.completed" not in types and types[-2:] == ["response.failed", "error"]
    assert events[-2]["response"]["error"] == {"code": "server_error", "message": NO_FINISH}
    assert events[-2]["response"]["output"][0]["status"] == "incomplete"


def test_custom_tool_call_is_unwrapped_and_namespace_mapped_back() -> None:
    events = run(load(STREAM / "custom_tool_and_missing_id.json")["request"],
                 load(STREAM / "custom_tool_and_missing_id.json")["steps"])
    call = events[-1]["response"]["output"][1]
    assert call["type"] == "custom_tool_call" and call["name"] == "apply_patch"
    assert call["input"] == "*** Begin Patch\n*** End Patch\n"
    assert call["call_id"].startswith("call_")
    events = run(load(STREAM / "parallel_calls_interleaved.json")["request"],
                 load(STREAM / "parallel_calls_interleaved.json")["steps"])
    search = events[-1]["response"]["output"][2]
    assert (search["name"], search["namespace"], search["arguments"]) == (
        "search", "mcp__docs", '{"q":"typy"}'.replace("typy", "typo"))


def test_keepalive_is_an_sse_comment() -> None:
    assert KEEPALIVE.startswith(b":") and KEEPALIVE.endswith(b"\n\n")
    assert new_stream({"model": "m", "input": "x"}).keepalive == KEEPALIVE


def _split(text: str, rng: random.Random) -> list[str]:
    cuts = sorted(rng.sample(range(1, len(text)), min(len(text) - 1, rng.randint(0, 6))))
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]


def _random_chunks(rng: random.Random) -> list[dict[str, Any]]:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": "c", "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    chunks = []
    if rng.random() < 0.6:
        chunks += [chunk({"reasoning_content": p}) for p in _split("Let me think é 中文.", rng)]
    if rng.random() < 0.7:
        chunks += [chunk({"content": p}) for p in _split("Here is the answer: 42.", rng)]
    names = ["exec_command", "mcp__docs__search", "apply_patch"]
    calls = []
    for index in range(rng.randint(0, 3)):
        name = rng.choice(names)
        args = json.dumps({"input": "*** Begin Patch\n"} if name == "apply_patch"
                          else {"cmd": f"ls -la {index}", "n": [1, 2]})
        pieces = [{"index": index, "function": {"arguments": p}} for p in _split(args, rng)]
        pieces[0]["id"] = f"call_{index}" if rng.random() < 0.8 else None
        pieces[0]["function"]["name"] = name
        calls.append(pieces)
    # Interleave the calls' fragments, keeping each call's own order.
    while any(calls):
        pieces = rng.choice([c for c in calls if c])
        fragment = pieces.pop(0)
        chunks.append(chunk({"tool_calls": [{k: v for k, v in fragment.items() if v is not None}]}))
    finish = rng.choice(["stop", "tool_calls", "length"])
    chunks.append(chunk({}, finish))
    if rng.random() < 0.5:
        chunks.append({"id": "c", "choices": [], "usage": {
            "prompt_tokens": 9, "completion_tokens": 5}})
    return chunks


@pytest.mark.parametrize("seed", range(150))
def test_random_streams_satisfy_the_grammar_and_match_non_streaming(seed: int) -> None:
    rng = random.Random(seed)
    request = load(STREAM / "reasoning_then_text.json")["request"]
    chunks = _random_chunks(rng)
    events = run(request, chunks)
    check_responses_stream(events)
    check_with_sdk(events)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    expected = openai_to_responses(completion_of(chunks), new_stream(request).request,
                                   response_id=RESPONSE_ID, created_at=CREATED, input_tokens=7)
    assert events[-1]["response"] == expected


def _valid() -> list[dict[str, Any]]:
    fixture = load(STREAM / "parallel_calls_interleaved.json")
    return run(fixture["request"], fixture["steps"])


def _renumber(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**e, "sequence_number": i} for i, e in enumerate(events)]


@pytest.mark.parametrize("mutation", [
    "drop_completed", "drop_created", "repeat_sequence", "drop_item_done", "wrong_item_id",
    "delta_after_done", "gap_in_output_index", "failed_without_error", "output_mismatch",
])
def test_grammar_checker_rejects_broken_streams(mutation: str) -> None:
    events = _valid()
    check_responses_stream(events)
    names = [e["type"] for e in events]
    if mutation == "drop_completed":
        events = events[:-1]
    elif mutation == "drop_created":
        events = _renumber(events[1:])
    elif mutation == "repeat_sequence":
        events[5] = {**events[5], "sequence_number": events[4]["sequence_number"]}
    elif mutation == "drop_item_done":
        del events[names.index("response.output_item.done")]
        events = _renumber(events)
    elif mutation == "wrong_item_id":
        position = names.index("response.function_call_arguments.delta")
        events[position] = {**events[position], "item_id": "fc_other"}
    elif mutation == "delta_after_done":
        delta = events[names.index("response.function_call_arguments.delta")]
        events = _renumber([*events[:-1], delta, events[-1]])
    elif mutation == "gap_in_output_index":
        position = names.index("response.output_item.added")
        events[position] = {**events[position], "output_index": 1}
    elif mutation == "failed_without_error":
        failed = {**events[-1], "type": "response.failed"}
        failed["response"] = {**failed["response"], "status": "failed",
                              "error": {"code": "server_error", "message": "x"}}
        events = [*events[:-1], failed]
    elif mutation == "output_mismatch":
        last = events[-1]
        events[-1] = {**last, "response": {**last["response"], "output": []}}
    with pytest.raises(AssertionError):
        check_responses_stream(events)


def test_output_items_replay_as_the_same_conversation() -> None:
    """What Codex does with store: false (and the caller with previous_response_id): the output
    items go back as input; reasoning returns as reasoning_content, calls keep their ids and
    client names map to the same upstream names."""
    fixture = load(STREAM / "custom_tool_and_missing_id.json")
    output = run(fixture["request"], fixture["steps"])[-1]["response"]["output"]
    call = output[1]
    replay = combine_input([], output, [
        {"type": "custom_tool_call_output", "call_id": call["call_id"], "output": "Done!"}])
    body = {**fixture["request"], "input": replay}
    messages = responses_to_openai(body, TranslateOptions(upstream_model="u")).body["messages"]
    assert messages == [
        {"role": "assistant", "reasoning_content": "Patch it.", "content": None,
         "tool_calls": [{"id": call["call_id"], "type": "function", "function": {
             "name": "apply_patch",
             "arguments": json.dumps({"input": "*** Begin Patch\n*** End Patch\n"})}}]},
        {"role": "tool", "tool_call_id": call["call_id"], "content": "Done!"},
    ]


@pytest.mark.parametrize("seed", range(100))
def test_garbage_chunks_never_raise(seed: int) -> None:
    rng = random.Random(seed)
    junk = [None, 1, "x", [], {}, {"index": "0"}, {"type": None}, [None], True, -1.5]

    def value() -> Any:
        return rng.choice(junk)

    stream = new_stream({"model": "m", "input": "x"})
    events = []
    for _ in range(rng.randint(1, 12)):
        delta = {k: value() for k in rng.sample(
            ["content", "reasoning_content", "tool_calls", "role"], rng.randint(0, 4))}
        if rng.random() < 0.3:
            delta["tool_calls"] = [{"index": value(), "id": value(), "function": {
                "name": rng.choice([None, "f", 3]), "arguments": value()}}]
        chunk = rng.choice([value(), {"choices": value()}, {"choices": [
            {"index": rng.choice([0, None, 1, "a"]), "delta": delta,
             "finish_reason": rng.choice([None, "stop", 5])}], "usage": value()}])
        events += stream.feed(chunk)
    events += stream.close()
    check_responses_stream(events)
    check_with_sdk(events)
