"""An upstream stream cut short is an error, never a complete answer (issue 12, item 3).

The upstream is done when it sent a `finish_reason` (for every choice it started) or
`data: [DONE]`. A stream that ends before that, whatever the HTTP framing (close-delimited,
a chunked body broken mid-way, or one ended cleanly by a proxy), must end with the in-band
`upstream_disconnected` error: never a synthesized `finish_reason: "stop"` / `end_turn`.
"""

from __future__ import annotations

import json

import anthropic
import httpx
import openai
import pytest

from tests.fakes import scenarios as sc
from tests.sse import data_payloads, named_events
from tests.translate.grammar import check_anthropic_stream

MESSAGES = [{"role": "user", "content": "hi"}]
ANSWER = "one two three four five six seven eight"


def content_chunk(text: str, finish: str | None = None) -> dict:
    return {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]}


# Each cuts the answer after its role chunk and two content chunks, before any finish_reason.
TRUNCATIONS = {
    "close_delimited": sc.close_delimited(sc.drop_after(3, sc.text(ANSWER, chunks=8))),
    "close_delimited_mid_event": sc.close_delimited(
        sc.drop_after(3, sc.text(ANSWER, chunks=8), cut_inside=True)),
    "chunked_broken_between_chunks": sc.drop_after(3, sc.text(ANSWER, chunks=8)),
    "chunked_broken_inside_a_chunk": sc.drop_after(3, sc.text(ANSWER, chunks=8),
                                                   cut_inside=True),
    "chunked_ended_cleanly": sc.events([content_chunk("one "), content_chunk("two ")],
                                       done=False),
}


def openai_stream(gateway) -> httpx.Response:
    return httpx.post(gateway.url + "/v1/chat/completions", timeout=30, json={
        "model": "glm-5", "messages": MESSAGES, "stream": True,
        "stream_options": {"include_usage": True}})


def anthropic_stream(gateway) -> httpx.Response:
    return httpx.post(gateway.url + "/v1/messages", timeout=30,
                      headers={"anthropic-version": "2023-06-01"},
                      json={"model": "glm-5", "max_tokens": 100, "messages": MESSAGES,
                            "stream": True})


def finish_reasons(payloads: list[str]) -> list[str]:
    return [choice["finish_reason"] for p in payloads if p != "[DONE]"
            for choice in json.loads(p).get("choices") or [] if choice.get("finish_reason")]


def assert_openai_truncation_error(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text
    payloads = data_payloads(response.content)
    assert payloads[-1] == "[DONE]" and payloads.count("[DONE]") == 1
    assert json.loads(payloads[-2])["error"]["code"] == "upstream_disconnected"
    assert finish_reasons(payloads) == []
    assert any(json.loads(p).get("choices") for p in payloads[:-2])  # the part that came


def assert_anthropic_truncation_error(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text
    events = named_events(response.content)
    names = [name for name, _ in events]
    assert names[-1] == "error", names
    assert "message_delta" not in names and "message_stop" not in names
    assert events[-1][1]["error"]["type"] == "api_error"
    assert events[-1][1]["error"]["message"]
    assert "content_block_delta" in names  # the part that came was relayed
    check_anthropic_stream(events)


@pytest.mark.parametrize("scenario", TRUNCATIONS.values(), ids=TRUNCATIONS.keys())
def test_openai_stream_cut_short_ends_with_an_in_band_error(gateway, upstream, scenario):
    upstream.script(scenario)
    assert_openai_truncation_error(openai_stream(gateway))


@pytest.mark.parametrize("scenario", TRUNCATIONS.values(), ids=TRUNCATIONS.keys())
def test_anthropic_stream_cut_short_ends_with_an_error_event(gateway, upstream, scenario):
    upstream.script(scenario)
    assert_anthropic_truncation_error(anthropic_stream(gateway))


def test_openai_sdk_raises_on_a_close_delimited_truncation(gateway, upstream):
    upstream.script(TRUNCATIONS["close_delimited"])
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0)
    seen: list[str | None] = []
    stream = client.chat.completions.create(model="glm-5", messages=MESSAGES, stream=True)
    with pytest.raises(openai.APIError):
        for chunk in stream:
            seen += [choice.finish_reason for choice in chunk.choices]
    assert seen and not any(seen)


def test_anthropic_sdk_raises_on_a_close_delimited_truncation(gateway, upstream):
    upstream.script(TRUNCATIONS["close_delimited"])
    client = anthropic.Anthropic(base_url=gateway.url, api_key="x", max_retries=0)
    seen: list[str] = []
    with (pytest.raises(anthropic.APIError),
          client.messages.stream(model="glm-5", max_tokens=100, messages=MESSAGES) as stream):
        for event in stream:  # the error event comes while iterating
            seen.append(event.type)
    assert "content_block_delta" in seen and "message_stop" not in seen


# ---- complete answers stay complete, whatever the framing -------------------------------------

def test_finish_reason_then_close_without_done_is_complete(gateway, upstream):
    finished = [content_chunk("whole "), content_chunk("answer", "stop")]
    for _ in range(2):
        upstream.script(sc.close_delimited(sc.events(finished, done=False)))
    payloads = data_payloads(openai_stream(gateway).content)
    assert finish_reasons(payloads) == ["stop"] and payloads[-1] == "[DONE]"
    assert not any("error" in json.loads(p) for p in payloads[:-1])
    events = named_events(anthropic_stream(gateway).content)
    assert events[-1][0] == "message_stop"
    assert events[-2][1]["delta"]["stop_reason"] == "end_turn"


def test_finish_reason_then_broken_body_is_still_complete(gateway, upstream):
    # The answer is whole; only the usage chunk and [DONE] were lost.
    upstream.script(sc.drop_after(4, sc.text("whole answer", chunks=2)))  # role, 2 texts, finish
    payloads = data_payloads(openai_stream(gateway).content)
    assert finish_reasons(payloads) == ["stop"] and payloads[-1] == "[DONE]"
    assert not any("error" in json.loads(p) for p in payloads[:-1])


def test_done_without_finish_reason_is_taken_as_complete(gateway, upstream):
    # The upstream said it was done; the finish_reason is then "stop" (documented).
    upstream.script(sc.close_delimited(sc.events([content_chunk("said "),
                                                  content_chunk("done")], done=True)))
    payloads = data_payloads(openai_stream(gateway).content)
    assert finish_reasons(payloads) == ["stop"] and payloads[-1] == "[DONE]"


def test_a_choice_left_open_is_a_truncation(gateway, upstream):
    # n=2: choice 0 finished, choice 1 was cut off.
    upstream.script(sc.close_delimited(sc.events([
        {"choices": [{"index": 0, "delta": {"content": "a"}, "finish_reason": None},
                     {"index": 1, "delta": {"content": "b"}, "finish_reason": None}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    ], done=False)))
    assert_openai_truncation_error(openai_stream(gateway))


# ---- non-streaming: a cut body is never a success -----------------------------------------------

@pytest.mark.parametrize("scenario", [
    sc.close_delimited(sc.drop_after(0, sc.text(ANSWER), cut_inside=True)),
    sc.drop_after(0, sc.text(ANSWER), cut_inside=True),  # Content-Length not reached
], ids=["close_delimited", "content_length_short"])
def test_non_stream_body_cut_short_is_a_502(gateway, upstream, scenario):
    upstream.script(scenario, scenario)
    response = httpx.post(gateway.url + "/v1/chat/completions", timeout=30,
                          json={"model": "glm-5", "messages": MESSAGES})
    assert response.status_code == 502, response.text
    assert response.json()["error"]["code"] in {"upstream_error", "upstream_invalid_json"}
    response = httpx.post(gateway.url + "/v1/messages", timeout=30,
                          headers={"anthropic-version": "2023-06-01"},
                          json={"model": "glm-5", "max_tokens": 100, "messages": MESSAGES})
    assert response.status_code == 502, response.text
    assert response.json()["type"] == "error"
