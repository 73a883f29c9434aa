"""AnthropicToChatStream: golden chunk lists, the openai SDK's accumulator as the judge, random
splits of the same answer, truncation and errors."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from anthropic.types import RawMessageStreamEvent
from pydantic import TypeAdapter

from proxy.translate.anthropic_to_chat_response import anthropic_to_chat
from proxy.translate.anthropic_to_chat_stream import AnthropicToChatStream
from proxy.translate.openai_chat import OpenAIStreamNormalizer
from tests.translate.golden import FIXTURES, assert_golden, load
from tests.translate.sdk_shapes import check_chat_stream
from tests.translate.test_anthropic_request_errors import _mutations

STREAM = FIXTURES.parent / "reverse" / "stream"
CASES = sorted(p.stem for p in STREAM.glob("*.json") if not p.stem.endswith(".expected"))
EVENTS = TypeAdapter(RawMessageStreamEvent)
SDK_EVENT_TYPES = {"message_start", "message_delta", "message_stop", "content_block_start",
                   "content_block_delta", "content_block_stop"}


def run(init: dict[str, Any], events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    translator = AnthropicToChatStream(**init)
    chunks: list[dict[str, Any]] = []
    for event in events:
        if "$fail" in event:
            chunks += translator.fail(**event["$fail"])
        else:
            chunks += translator.feed(event)
    return chunks + translator.close()


@pytest.mark.parametrize("case", CASES)
def test_golden_stream(case: str) -> None:
    fixture = load(STREAM / f"{case}.json")
    for event in fixture["events"]:  # the fixture is what a real server sends
        if event.get("type") in SDK_EVENT_TYPES:
            EVENTS.validate_python(event)
    chunks = run(fixture["init"], fixture["events"])
    check_chat_stream(chunks)
    assert_golden(STREAM / f"{case}.expected.json", chunks)


def test_goldens_exist() -> None:
    assert len(CASES) >= 6


@pytest.mark.parametrize("seed", range(5))
def test_streams_interleaved_keep_their_own_state(seed: int) -> None:
    """The gateway runs one translator per request, many at once: every golden stream fed
    event by event in a random interleaving gives exactly what it gives alone."""
    rng = random.Random(seed)
    fixtures = {case: load(STREAM / f"{case}.json") for case in CASES}
    alone = {case: run(f["init"], f["events"]) for case, f in fixtures.items()}
    translators = {case: AnthropicToChatStream(**f["init"]) for case, f in fixtures.items()}
    pending = {case: list(f["events"]) for case, f in fixtures.items()}
    together: dict[str, list[dict[str, Any]]] = {case: [] for case in fixtures}
    while pending:
        case = rng.choice(sorted(pending))
        event = pending[case].pop(0)
        translator = translators[case]
        together[case] += (translator.fail(**event["$fail"]) if "$fail" in event
                           else translator.feed(event))
        if not pending[case]:
            del pending[case]
            together[case] += translator.close()
    assert together == alone


# ---- a whole answer, cut into random pieces ------------------------------------------------

ANSWER: list[dict[str, Any]] = [
    {"type": "thinking", "thinking": "Let me think about 中文 and \"quotes\".", "signature": "s1"},
    {"type": "text", "text": "Here you go: two calls.\n"},
    {"type": "tool_use", "id": "toolu_1", "name": "search", "input": {"q": "a b", "n": [1, 2]}},
    {"type": "tool_use", "id": "toolu_2", "name": "read", "input": {"path": "/tmp/ü.txt"}},
]
USAGE = {"input_tokens": 11, "output_tokens": 1, "cache_read_input_tokens": 7,
         "cache_creation_input_tokens": 3}


def _pieces(text: str, rng: random.Random) -> list[str]:
    cuts = sorted(rng.sample(range(1, len(text)), min(len(text) - 1, rng.randint(0, 6))))
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]


def _events(rng: random.Random) -> list[dict[str, Any]]:
    """The events a real server would send for ANSWER, with deltas split at random and pings."""
    message = {"id": "msg_r", "type": "message", "role": "assistant", "content": [],
               "model": "up", "stop_reason": None, "stop_sequence": None, "usage": USAGE}
    events: list[dict[str, Any]] = [{"type": "message_start", "message": message}]
    for index, block in enumerate(ANSWER):
        kind = block["type"]
        start = {"thinking": {"type": "thinking", "thinking": "", "signature": ""},
                 "text": {"type": "text", "text": ""},
                 "tool_use": {**block, "input": {}}}[kind]
        events.append({"type": "content_block_start", "index": index, "content_block": start})
        if kind == "tool_use":
            deltas = [{"type": "input_json_delta", "partial_json": p}
                      for p in _pieces(json.dumps(block["input"]), rng)]
        else:
            field = "thinking" if kind == "thinking" else "text"
            deltas = [{"type": f"{field}_delta", field: p} for p in _pieces(block[field], rng)]
            if kind == "thinking":
                deltas.append({"type": "signature_delta", "signature": block["signature"]})
        for delta in deltas:
            events.append({"type": "content_block_delta", "index": index, "delta": delta})
            if rng.random() < 0.2:
                events.append({"type": "ping"})
        events.append({"type": "content_block_stop", "index": index})
    events.append({"type": "message_delta", "delta": {"stop_reason": "tool_use",
                                                      "stop_sequence": None},
                   "usage": {"output_tokens": 42}})
    events.append({"type": "message_stop"})
    return events


@pytest.mark.parametrize("seed", range(30))
def test_random_splits_rebuild_the_same_answer(seed: int) -> None:
    rng = random.Random(seed)
    chunks = run({"model": "m", "include_usage": True}, _events(rng))
    completion = check_chat_stream(chunks)
    assert completion is not None
    expected = anthropic_to_chat({"type": "message", "content": ANSWER, "stop_reason": "tool_use",
                                  "usage": {**USAGE, "output_tokens": 42}}, model="m")
    message = completion.choices[0].message
    want = expected["choices"][0]["message"]
    assert message.content == want["content"]
    assert completion.choices[0].finish_reason == "tool_calls"
    assert [(c.id, c.function.name, json.loads(c.function.arguments))
            for c in message.tool_calls or []] == [
        (c["id"], c["function"]["name"], json.loads(c["function"]["arguments"]))
        for c in want["tool_calls"]]
    reasoning = "".join(c["choices"][0]["delta"].get("reasoning_content", "")
                        for c in chunks if c["choices"])
    assert reasoning == want["reasoning_content"]
    assert chunks[-1]["usage"] == expected["usage"]
    assert sum("role" in c["choices"][0]["delta"] for c in chunks if c["choices"]) == 1


@pytest.mark.parametrize("seed", range(10))
def test_cut_anywhere_before_the_stop_reason_is_a_truncation(seed: int) -> None:
    events = _events(random.Random(seed))
    cut = random.Random(seed).randrange(0, len(events) - 2)  # before message_delta
    translator = AnthropicToChatStream(model="m", include_usage=True)
    chunks = [c for e in events[:cut] for c in translator.feed(e)] + translator.close()
    check_chat_stream(chunks)
    assert chunks[-1]["error"]["code"] == "upstream_disconnected"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    assert translator.failure is not None and translator.failure.status == 502
    assert translator.close() == [] and translator.feed({"type": "message_stop"}) == []


# ---- edge cases ----------------------------------------------------------------------------


def test_empty_stream_is_a_truncation() -> None:
    chunks = AnthropicToChatStream(model="m").close()
    assert chunks[-1]["error"]["code"] == "upstream_disconnected"
    check_chat_stream(chunks)


def test_error_event_maps_type_and_stops() -> None:
    translator = AnthropicToChatStream(model="m")
    chunks = translator.feed({"type": "error", "error": {
        "type": "invalid_request_error", "message": "prompt is too long: 9 tokens > 5 maximum"}})
    assert chunks == [{"error": {"message": "prompt is too long: 9 tokens > 5 maximum",
                                 "type": "invalid_request_error", "param": None,
                                 "code": "context_length_exceeded"}}]
    assert translator.close() == [] and translator.fail("x") == []


def test_message_stop_without_stop_reason_finishes_as_stop() -> None:
    translator = AnthropicToChatStream(model="m", include_usage=True)
    chunks = translator.feed({"type": "message_start", "message": {"usage": {}}})
    chunks += translator.feed({"type": "message_stop"}) + translator.close()
    completion = check_chat_stream(chunks)
    assert completion is not None and completion.choices[0].finish_reason == "stop"
    assert chunks[-1]["usage"]["total_tokens"] == 0


def test_tool_block_left_open_still_gets_its_arguments() -> None:
    translator = AnthropicToChatStream(model="m")
    chunks = translator.feed({"type": "content_block_start", "index": 0, "content_block": {
        "type": "tool_use", "id": "t", "name": "f", "input": {"a": 1}}})
    chunks += translator.feed({"type": "message_delta", "delta": {"stop_reason": "tool_use"}})
    chunks += translator.close()
    completion = check_chat_stream(chunks)
    assert completion is not None
    assert completion.choices[0].message.tool_calls[0].function.arguments == '{"a":1}'


@pytest.mark.parametrize("garbage", [None, 1, "x", [], {}, {"type": "content_block_delta"},
                                     {"type": "content_block_start", "content_block": 5},
                                     {"type": "content_block_delta", "index": 9,
                                      "delta": {"type": "input_json_delta", "partial_json": "{"}},
                                     {"type": "message_delta", "delta": None, "usage": 3},
                                     {"type": "content_block_stop", "index": {}},
                                     {"type": "content_block_delta", "index": [],
                                      "delta": {"type": "input_json_delta"}},
                                     {"type": "content_block_start", "index": {},
                                      "content_block": {"type": "tool_use", "name": "f",
                                                        "id": 5, "input": "x"}}])
def test_messy_events_never_raise(garbage: Any) -> None:
    translator = AnthropicToChatStream(model="m")
    chunks = translator.feed(garbage) + translator.feed({"type": "message_stop"})
    check_chat_stream(chunks + translator.close())


def test_chunks_go_through_the_gateway_reasoning_policy() -> None:
    """The OpenAI side's normaliser (reasoning merged into content by default) accepts them."""
    events = _events(random.Random(0))
    chunks = run({"model": "m"}, events)
    normalizer = OpenAIStreamNormalizer(model="m", include_usage=True)
    merged = [c for chunk in chunks for c in normalizer.feed(chunk)] + normalizer.close()
    completion = check_chat_stream(merged)
    assert completion is not None
    assert completion.choices[0].message.content.startswith(ANSWER[0]["thinking"])
    assert len(completion.choices[0].message.tool_calls or []) == 2


@pytest.mark.parametrize("seed", range(100))
def test_random_corruption_never_raises(seed: int) -> None:
    """Garbage in any event: chunks the SDK still accepts, or an in-band error; no exception."""
    rng = random.Random(seed)
    events = _mutations(_events(rng), rng)
    events = events if isinstance(events, list) else [events]
    translator = AnthropicToChatStream(model="m", include_usage=rng.random() < 0.5)
    chunks = [c for e in events for c in translator.feed(e)] + translator.close()
    check_chat_stream(chunks)
