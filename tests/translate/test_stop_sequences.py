"""/v1/messages reports a matched stop sequence as Anthropic does (stop_reason "stop_sequence"
and the string), from whatever the upstream tells: vLLM's / SGLang's / llama.cpp's field for
the matched string, or a text that ends with one of the request's stop sequences."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.translate.anthropic_response import openai_to_anthropic
from proxy.translate.anthropic_stream import AnthropicStreamTranslator
from tests.translate.grammar import check_anthropic_stream

STOPS = ["\nUser:", "</answer>"]


def completion(text: str, choice_extra: dict[str, Any] | None = None,
               **top: Any) -> dict[str, Any]:
    return {"id": "c", "object": "chat.completion", **top, "choices": [{
        "index": 0, "message": {"role": "assistant", "content": text},
        "finish_reason": "stop", **(choice_extra or {})}]}


def chunks(text: str, choice_extra: dict[str, Any] | None = None,
           **top: Any) -> list[dict[str, Any]]:
    return [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        *({"choices": [{"index": 0, "delta": {"content": piece}}]} for piece in text.split(" ")
          if piece),
        {**top, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop",
                             **(choice_extra or {})}]},
    ]


CASES = [
    # (what the upstream sends, expected stop_reason, expected stop_sequence)
    pytest.param("the answer", {"stop_reason": "</answer>"}, {}, "stop_sequence", "</answer>",
                 id="vllm-stop_reason"),
    pytest.param("the answer", {"matched_stop": "\nUser:"}, {}, "stop_sequence", "\nUser:",
                 id="sglang-matched_stop"),
    pytest.param("the answer", {}, {"__verbose": {"stop_type": "word",
                                                  "stopping_word": "</answer>"}},
                 "stop_sequence", "</answer>", id="llama.cpp-verbose-stopping_word"),
    pytest.param("the answer", {}, {"stop_type": "word", "stopping_word": "</answer>"},
                 "stop_sequence", "</answer>", id="stopping_word-at-the-top"),
    pytest.param("the answer", {}, {"__verbose": {"stop_type": "eos", "stopping_word": ""}},
                 "end_turn", None, id="llama.cpp-verbose-eos"),
    pytest.param("the answer</answer>", {}, {}, "stop_sequence", "</answer>",
                 id="kept-in-the-text"),
    pytest.param("the answer", {}, {}, "end_turn", None, id="stripped-and-unsaid"),
    pytest.param("the answer", {"stop_reason": "<other>"}, {}, "end_turn", None,
                 id="not-one-of-the-requests"),
    pytest.param("the answer", {}, {"stop_type": "eos", "stopping_word": ""}, "end_turn", None,
                 id="llama.cpp-eos"),
]


@pytest.mark.parametrize(("text", "choice_extra", "top", "reason", "sequence"), CASES)
def test_non_stream(text, choice_extra, top, reason, sequence):
    message = openai_to_anthropic(completion(text, choice_extra, **top), message_id="msg_1",
                                  model="m", stop_sequences=STOPS)
    assert (message["stop_reason"], message["stop_sequence"]) == (reason, sequence)


@pytest.mark.parametrize(("text", "choice_extra", "top", "reason", "sequence"), CASES)
def test_stream_message_delta(text, choice_extra, top, reason, sequence):
    translator = AnthropicStreamTranslator(message_id="msg_1", model="m", stop_sequences=STOPS)
    events = [e for chunk in chunks(text, choice_extra, **top) for e in translator.feed(chunk)]
    events += translator.close()
    check_anthropic_stream(events)
    delta = next(data for name, data in events if name == "message_delta")["delta"]
    assert (delta["stop_reason"], delta["stop_sequence"]) == (reason, sequence)


def test_without_stop_sequences_in_the_request_a_stop_is_end_turn():
    message = openai_to_anthropic(completion("x", {"stop_reason": "</answer>"}),
                                  message_id="msg_1", model="m")
    assert (message["stop_reason"], message["stop_sequence"]) == ("end_turn", None)


def test_start_sends_message_start_once_and_first():
    translator = AnthropicStreamTranslator(message_id="msg_1", model="m", input_tokens=42)
    [(name, data)] = translator.start()
    assert name == "message_start" and data["message"]["usage"]["input_tokens"] == 42
    assert translator.start() == []
    events = [("message_start", data)]
    for chunk in chunks("hello there"):
        events += translator.feed(chunk)
    events += translator.close()
    assert [n for n, _ in events].count("message_start") == 1
    check_anthropic_stream(events)
