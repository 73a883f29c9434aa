"""The grammar checker rejects what it must, and random messy streams always satisfy it."""

from __future__ import annotations

import itertools
import json
import random
from typing import Any

import pytest

from proxy.translate.anthropic_stream import AnthropicStreamTranslator
from tests.translate.grammar import check_anthropic_stream

START = (
    "message_start",
    {
        "type": "message_start",
        "message": {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": "m",
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 1, "output_tokens": 0},
        },
    },
)
DELTA = (
    "message_delta",
    {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": 1},
    },
)
STOP = ("message_stop", {"type": "message_stop"})


def start(i: int, block: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return (
        "content_block_start",
        {"type": "content_block_start", "index": i, "content_block": block},
    )


def delta(i: int, d: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return ("content_block_delta", {"type": "content_block_delta", "index": i, "delta": d})


def stop(i: int) -> tuple[str, dict[str, Any]]:
    return ("content_block_stop", {"type": "content_block_stop", "index": i})


TEXT = {"type": "text", "text": ""}
TOOL = {"type": "tool_use", "id": "t", "name": "f", "input": {}}
THINK = {"type": "thinking", "thinking": ""}


def text(i: int, s: str = "x") -> tuple[str, dict[str, Any]]:
    return delta(i, {"type": "text_delta", "text": s})


def sig(i: int) -> tuple[str, dict[str, Any]]:
    return delta(i, {"type": "signature_delta", "signature": "s"})


def test_valid_stream_passes() -> None:
    events = [
        START,
        ("ping", {"type": "ping"}),
        start(0, THINK),
        delta(0, {"type": "thinking_delta", "thinking": "t"}),
        sig(0),
        stop(0),
        start(1, TEXT),
        text(1),
        stop(1),
        start(2, TOOL),
        delta(2, {"type": "input_json_delta", "partial_json": '{"a":'}),
        delta(2, {"type": "input_json_delta", "partial_json": "1}"}),
        stop(2),
        DELTA,
        STOP,
    ]
    check_anthropic_stream(events)
    error = ("error", {"type": "error", "error": {"type": "api_error", "message": "x"}})
    check_anthropic_stream([START, error])
    check_anthropic_stream([error])  # an error may be the very first event


BAD_DATA_TYPE = ("message_stop", {"type": "ping"})


@pytest.mark.parametrize(
    ("events", "message"),
    [
        ([start(0, TEXT)], "begin with message_start"),
        ([START, start(1, TEXT), text(1), stop(1), DELTA, STOP], "index must be 0"),
        ([START, start(0, TEXT), start(1, TEXT)], "still open"),
        ([START, start(0, TEXT), stop(0), DELTA, STOP], "empty text block"),
        (
            [START, start(0, TEXT), delta(0, {"type": "input_json_delta", "partial_json": "{}"})],
            "inside a text",
        ),
        (
            [
                START,
                start(0, THINK),
                delta(0, {"type": "thinking_delta", "thinking": "t"}),
                stop(0),
            ],
            "signature_delta",
        ),
        (
            [START, start(0, THINK), sig(0), delta(0, {"type": "thinking_delta", "thinking": "t"})],
            "last delta",
        ),
        (
            [
                START,
                start(0, TOOL),
                delta(0, {"type": "input_json_delta", "partial_json": "{"}),
                stop(0),
            ],
            "does not parse",
        ),
        (
            [
                START,
                start(0, TOOL),
                delta(0, {"type": "input_json_delta", "partial_json": "[]"}),
                stop(0),
            ],
            "JSON object",
        ),
        ([START, start(0, TEXT), text(0), DELTA], "still open"),
        ([START, start(0, TEXT), text(0), stop(0), DELTA], "must end with message_stop"),
        ([START, STOP], "before message_delta"),
        ([START, DELTA, STOP, ("ping", {"type": "ping"})], "after the end"),
        ([START, BAD_DATA_TYPE], "must equal the event name"),
        (
            [
                START,
                (
                    "message_delta",
                    {
                        "type": "message_delta",
                        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                        "usage": {},
                    },
                ),
            ],
            "output_tokens",
        ),
        ([(START[0], {**START[1], "message": {**START[1]["message"], "usage": {}}})], "usage"),
        (
            [
                START,
                ("error", {"type": "error", "error": {"type": "api_error", "message": "x"}}),
                STOP,
            ],
            "after the end",
        ),
        ([START, start(0, TEXT), text(1)], "not the open block"),
    ],
)
def test_checker_rejects(events: list[tuple[str, dict[str, Any]]], message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        check_anthropic_stream(events)


# ---- property: random messy upstream streams always yield a valid, lossless stream ------------


def _random_args(rng: random.Random) -> dict[str, Any]:
    return {
        f"k{i}": rng.choice(
            [rng.randint(-5, 500), '値 "q" \\ {}', [1, {"n": None}], {"deep": {"x": True}}]
        )
        for i in range(rng.randint(0, 4))
    }


def _split(text: str, rng: random.Random) -> list[str]:
    cuts = (
        sorted(rng.sample(range(1, len(text)), min(len(text) - 1, rng.randint(0, 6))))
        if len(text) > 1
        else []
    )
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


def _chunk(delta_: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": delta_, "finish_reason": finish}]}


@pytest.mark.parametrize("seed", range(400))
def test_random_streams_are_grammatical_and_lossless(seed: int) -> None:
    rng = random.Random(seed)
    calls = [_random_args(rng) for _ in range(rng.randint(0, 4))]
    # Per call: a header fragment (id and/or name, maybe late) then argument fragments.
    queues: list[list[dict[str, Any]]] = []
    for n, args in enumerate(calls):
        pieces = _split(json.dumps(args, ensure_ascii=rng.random() < 0.5), rng)
        frags = [{"index": n, "function": {"arguments": p}} for p in pieces]
        frags.insert(0, {"index": n, "function": {"arguments": ""}})
        style = rng.choice(["normal", "repeat", "late_name", "no_id"])
        for k, frag in enumerate(frags):
            if style == "repeat" or k == 0:
                if style != "no_id":
                    frag["id"] = f"call_{n}"
                if style != "late_name" or k > 0:
                    frag["function"]["name"] = f"tool{n}"
            if style == "late_name" and k == len(frags) - 1:
                frag["function"]["name"] = f"tool{n}"
        queues.append(frags)
    texts = [rng.choice(["Hi", " 你好", "\n", "ok."]) for _ in range(rng.randint(0, 5))]
    thinks = [rng.choice(["hmm", " 想", "."]) for _ in range(rng.randint(0, 3))]
    chunks = [_chunk({"role": "assistant", "reasoning_content": t}) for t in thinks]
    remaining = [list(q) for q in queues] + [[("text", t) for t in texts]]
    while any(remaining):
        source = rng.choice([q for q in remaining if q])
        item = source.pop(0)
        if isinstance(item, tuple):
            chunks.append(_chunk({"content": item[1]}))
        else:
            chunks.append(_chunk({"tool_calls": [item]}))
    chunks.append(_chunk({}, rng.choice(["stop", "tool_calls", None])))
    if rng.random() < 0.5:
        chunks.append({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 3}})

    t = AnthropicStreamTranslator(message_id=f"msg_{seed}", model="m")
    events = [e for c in chunks for e in t.feed(c)] + t.close()
    check_anthropic_stream(events)

    got_text = "".join(d["delta"].get("text", "") for n, d in events if n == "content_block_delta")
    got_think = "".join(
        d["delta"].get("thinking", "") for n, d in events if n == "content_block_delta"
    )
    assert got_text == "".join(texts) and got_think == "".join(thinks)
    names: dict[int, str] = {}
    parts: dict[int, list[str]] = {}
    for name, data in events:
        if name == "content_block_start" and data["content_block"]["type"] == "tool_use":
            names[data["index"]] = data["content_block"]["name"]
            parts[data["index"]] = []
        elif name == "content_block_delta" and data["delta"]["type"] == "input_json_delta":
            parts[data["index"]].append(data["delta"]["partial_json"])
    got = {names[i]: json.loads("".join(p)) for i, p in parts.items()}
    assert got == {f"tool{n}": args for n, args in enumerate(calls)}
    if calls:
        assert t.stop_reason == "tool_use"
