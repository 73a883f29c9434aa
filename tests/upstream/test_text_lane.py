"""upstream/text_lane.py: payloads read as runs of a template's text stand for exactly the
chunks a parse gives, and every session that takes runs (chat, Responses, compaction, Anthropic
Messages: their feed_text) writes exactly the bytes it writes for those chunks, whatever the
upstream's spelling, whatever comes between the runs and however the stream is cut into
reads."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

import orjson

from proxy.chat import OpenAIStreamSession
from proxy.errors import ApiError
from proxy.messages import AnthropicStreamSession
from proxy.responses import ResponsesStreamSession
from proxy.translate.anthropic_stream import AnthropicStreamTranslator
from proxy.translate.openai_chat import OpenAIStreamNormalizer
from proxy.translate.responses_compaction import CompactionStream
from proxy.translate.responses_request import responses_to_openai
from proxy.translate.responses_stream import ResponsesStream
from proxy.translate.types import TranslateOptions
from upstream.client import StreamEnd, _parse_batch
from upstream.providers import openai
from upstream.text_lane import TextLane, TextRun

TEXTS = ["tok", " the", "日本語 é", "🙂", 'a "quote"', "back\\slash", "line\nbreak", "tab\t",
         "\x01 control", "\u2028", "</script>", "a/b", '"content":"x"', "\u00a7probe\u00a7",
         "the END of the wörld"]  # (the stop sequences of messages_session)


def chunk(delta: dict[str, Any], *, index: int = 0, **top: Any) -> dict[str, Any]:
    return {"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1700000000,
            "model": "up-model", **top,
            "choices": [{"index": index, "delta": delta, "finish_reason": None}]}


def spell(value: dict[str, Any], style: str) -> str:
    """A payload as different servers write it."""
    if style == "orjson":
        return orjson.dumps(value).decode()
    if style == "python":  # json.dumps defaults: ", " and ": ", ASCII escapes
        return json.dumps(value)
    if style == "compact-ascii":
        return json.dumps(value, separators=(",", ":"))
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def read(batches: list[list[str]], lane: TextLane | None) -> tuple[list[Any], bool, StreamEnd]:
    """What stream_batches makes of these reads: the items, [DONE], the end bookkeeping."""
    items: list[Any] = []
    end = StreamEnd()
    for payloads in batches:
        batch, end.done = _parse_batch(openai.PROVIDER, payloads, lane)
        end.see(batch)
        items += batch
        if end.done:
            break
    return items, end.done, end


def expanded(items: list[Any]) -> list[dict[str, Any]]:
    return [c for item in items
            for c in (item.chunks() if type(item) is TextRun else [item])]


def chat_session(**options: Any) -> OpenAIStreamSession:
    return OpenAIStreamSession(OpenAIStreamNormalizer(
        model="alias", completion_id="chatcmpl-ours", created=7, include_usage=True,
        **options))


def responses_session(compaction: bool = False) -> ResponsesStreamSession:
    translation = responses_to_openai({"model": "m", "input": "hi"},
                                      TranslateOptions(upstream_model="u"))
    stream = ResponsesStream(translation, response_id="resp_1", created_at=7)
    return ResponsesStreamSession(CompactionStream(stream) if compaction else stream)


def messages_session() -> AnthropicStreamSession:
    return AnthropicStreamSession(AnthropicStreamTranslator(
        message_id="msg_1", model="m", input_tokens=3, stop_sequences=["wörld", "END"]))


SESSIONS: list[Callable[[], Any]] = [
    chat_session, lambda: chat_session(preserve_reasoning=True), responses_session,
    lambda: responses_session(compaction=True), messages_session]


def session_bytes(items: list[Any], session: Any) -> bytes:
    """What a session writes for the items; a run through feed_text, as the relay does."""
    out = [data for item in items for data in (
        session.feed_text(item) if type(item) is TextRun else session.feed(item))]
    try:
        out += session.close()
    except ApiError as error:  # the Responses session's stream ended without its finish
        out += session.fail(error)
    return b"".join(out)


def assert_same(batches: list[list[str]]) -> list[Any]:
    """The lane changes nothing anyone downstream can see; returns the lane's items."""
    plain, plain_done, plain_end = read(batches, None)
    laned, laned_done, laned_end = read(batches, TextLane())
    assert expanded(laned) == plain
    assert (laned_done, laned_end.open, laned_end.closed, laned_end.complete) == (
        plain_done, plain_end.open, plain_end.closed, plain_end.complete)
    for make in SESSIONS:
        assert session_bytes(laned, make()) == session_bytes(plain, make())
    return laned


def runs(items: list[Any]) -> list[int]:
    return [len(item.literals) for item in items if type(item) is TextRun]


def test_a_usual_stream_is_one_run_after_its_first_two_chunks() -> None:
    events = [chunk({"role": "assistant", "content": "tok0 "})]
    events += [chunk({"content": f"tok{i} "}) for i in range(1, 20)]
    events += [{**chunk({}), "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
               {**chunk({}), "choices": [], "usage": {"prompt_tokens": 8,
                                                      "completion_tokens": 20,
                                                      "total_tokens": 28}}]
    payloads = [spell(e, "orjson") for e in events] + ["[DONE]"]
    items = assert_same([payloads])
    # The first chunk (with the role) and the second teach a template each; the rest is text.
    assert runs(items) == [18]
    # Event by event, as a paced upstream sends them, every text after the template's own.
    items = assert_same([[p] for p in payloads])
    assert runs(items) == [1] * 18


def test_every_spelling_of_every_text() -> None:
    for style in ("orjson", "python", "compact-ascii", "compact-raw"):
        events = [chunk({"role": "assistant", "content": "Hi"}), chunk({"content": "there"})]
        events += [chunk({"content": text}) for text in TEXTS]
        items = assert_same([[spell(e, style) for e in events] + ["[DONE]"]])
        assert sum(runs(items)) == len(TEXTS), style


def test_openai_usage_null_on_every_chunk_and_a_fingerprint() -> None:
    """OpenAI's own streams with include_usage: `"usage": null` on every chunk."""
    events = [chunk({"role": "assistant", "content": ""}, usage=None, system_fingerprint="fp1")]
    events += [chunk({"content": t}, usage=None, system_fingerprint="fp1") for t in TEXTS]
    events += [chunk({"content": "x"}, usage=None, system_fingerprint="fp2"),
               chunk({"content": "y"}, usage=None, system_fingerprint="fp2")]
    items = assert_same([[spell(e, "orjson") for e in events]])
    assert runs(items) == [len(TEXTS) - 1, 1]
    assert b'"system_fingerprint":"fp2"' in session_bytes(items, chat_session())


def test_a_payload_that_differs_outside_the_text_ends_the_run() -> None:
    events = [chunk({"content": "a"}), chunk({"content": "b"}), chunk({"content": "c"},
                                                                        created=1700000001),
              chunk({"content": "d"}, created=1700000001), chunk({"content": ""}),
              chunk({"content": "e"}, created=1700000001),
              chunk({"content": "f", "role": "assistant"}, created=1700000001)]
    items = assert_same([[spell(e, "orjson") for e in events]])
    assert runs(items) == [1, 1, 1]


def test_strings_that_are_not_one_json_string_are_parsed_the_long_way() -> None:
    template = spell(chunk({"content": "a"}), "orjson")
    prefix, _, suffix = template.partition('"a"')
    # What follows the template's own chunk: in the run (both texts), or parsed (then only
    # "z" is a run of one), or a chunk of another shape that is the next template.
    cases = {'"c\\u0041"': [2], '"d\\/e"': [2], '"b" ': [2], '"\\ud83d\\ude00"': [2],
             '"\\x"': [1], '"\\ud800"': [1], "12": [1], "null": [1], '""': [1], '"a"b"': [1],
             '"\x01"': [1], '"b","extra":"c"': []}
    for literal, expected in cases.items():
        payloads = [template, prefix + literal + suffix, prefix + '"z"' + suffix]
        items = assert_same([payloads])
        assert runs(items) == expected, literal


def test_a_cut_that_is_not_the_texts_place_is_not_learnt() -> None:
    """The same text elsewhere in the payload, found first: the probe proves it wrong."""
    odd = '{"x":{"content":"hi"},"choices":[{"index":0,"delta":{"content": "hi"}}]}'
    # Had the cut been taken at x, this would read as text "yo" in the wrong place.
    other_x = '{"x":{"content":"yo"},"choices":[{"index":0,"delta":{"content": "hi"}}]}'
    items = assert_same([[odd, other_x]])
    assert runs(items) == []


def test_learning_stops_when_every_chunk_differs() -> None:
    events = [chunk({"content": f"t{i}"}, created=i) for i in range(30)]
    lane = TextLane()
    items, _, _ = read([[spell(e, "orjson") for e in events]], lane)
    assert runs(items) == []
    assert lane._idle == 3  # learning given up after three templates that nothing matched
    assert_same([[spell(e, "orjson") for e in events]])


def test_what_the_session_does_with_runs_between_other_chunks() -> None:
    tool = {"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                            "function": {"name": "f", "arguments": "{}"}}]}
    events = [chunk({"reasoning_content": "think"}), chunk({"content": "a"}),
              chunk({"content": "b"}), chunk({"content": "c"}),
              chunk({"reasoning_content": "more"}), chunk({"content": "d"}),
              chunk({"content": "e"}), chunk(tool), chunk({"content": "f"}),
              chunk({"content": "g"}, index=1), chunk({"content": "h"}, index=1),
              chunk({"content": "i"}), chunk({"content": "j"}),
              {**chunk({}), "choices": [{"index": 0, "delta": {"content": "k"},
                                         "finish_reason": "stop"}]},
              chunk({"content": "late"})]
    items = assert_same([[spell(e, "orjson") for e in events] + ["[DONE]"]])
    assert sum(runs(items)) >= 5


def test_random_streams_cut_anywhere() -> None:
    rng = random.Random(20261207)
    kinds = ["text"] * 12 + ["role", "reasoning", "tool", "other_choice", "empty", "created",
                             "fingerprint", "usage_null", "finish", "garbage", "error_free_odd"]
    covered = 0
    for _ in range(300):
        style = rng.choice(["orjson", "python", "compact-ascii", "compact-raw"])
        top: dict[str, Any] = {}
        payloads = []
        for _ in range(rng.randint(1, 40)):
            kind = rng.choice(kinds)
            text = "".join(rng.choice(TEXTS) for _ in range(rng.randint(1, 3)))
            if kind == "created":
                top["created"] = rng.randint(1, 3)
            elif kind == "fingerprint":
                top["system_fingerprint"] = rng.choice(["fp_a", "fp_b"])
            elif kind == "usage_null":
                top["usage"] = None
            delta = {"text": {"content": text}, "role": {"role": "assistant", "content": text},
                     "reasoning": {"reasoning_content": text}, "empty": {"content": ""},
                     "tool": {"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                              "function": {"name": "f", "arguments": text}}]}
                     }.get(kind, {"content": text})
            if kind == "garbage":
                payloads.append(rng.choice(["not json", "{", "[1]", '"s"', ""]))
                continue
            event = chunk(delta, index=1 if kind == "other_choice" else 0, **top)
            if kind == "finish":
                event["choices"][0]["finish_reason"] = "stop"
            if kind == "error_free_odd":
                event["choices"][0]["logprobs"] = {"content": []}
            payloads.append(spell(event, style))
        if rng.random() < 0.5:
            payloads.append("[DONE]")
        cuts = sorted({*rng.sample(range(1, len(payloads) + 1), k=min(3, len(payloads))),
                       len(payloads)})
        batches = [payloads[a:b] for a, b in zip([0, *cuts[:-1]], cuts, strict=True)]
        covered += sum(runs(assert_same(batches)))
    assert covered > 1000  # the lane was taken, not only its way around


def test_the_request_logs_trace_sees_what_it_sees_without_the_lane() -> None:
    """RelayTrace.observe (proxy/trace.py): a session that takes runs says so, and the trace
    notes the same first token, usage and bytes sent as with every chunk parsed."""
    from proxy.trace import RelayTrace

    usage = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
    events = [chunk({"role": "assistant", "content": ""}, usage=None)]
    events += [chunk({"content": t}, usage=None) for t in TEXTS]
    events += [{**chunk({}), "choices": [], "usage": usage}]
    payloads = [spell(e, "orjson") for e in events] + ["[DONE]"]
    seen = []
    for lane in (TextLane(), None):
        trace = RelayTrace("m", "openai", "m", True, runtime=None,  # type: ignore[arg-type]
                           keep_bodies=True)
        observed = trace.observe(OpenAIStreamSession(OpenAIStreamNormalizer(
            model="m", completion_id="chatcmpl-1", created=7, include_usage=True)))
        assert observed.takes_text_runs
        items, _, _ = read([payloads[:1], payloads[1:3], payloads[3:]], lane)
        sent = [data for item in items for data in observed.feed(item)] + observed.close()
        seen.append((runs(items), trace.first_token is not None, trace.usage,
                     b"".join(trace.response_parts), b"".join(sent)))
    (lane_runs, *with_lane), (_, *without) = seen
    assert lane_runs == [1, len(TEXTS) - 2]
    assert with_lane == without
    assert with_lane[2] == with_lane[3]  # every byte sent is kept


def test_sessions_without_feed_text_get_chunks() -> None:
    """Only a session with feed_text gets runs (the relay asks the trace's wrapper)."""
    from proxy.trace import RelayTrace

    class ChunksOnly:
        keepalive = b":\n\n"

        def feed(self, chunk: dict[str, Any]) -> list[bytes]:
            return []

    trace = RelayTrace("m", "openai", "m", True, runtime=None)  # type: ignore[arg-type]
    assert not trace.observe(ChunksOnly()).takes_text_runs  # type: ignore[arg-type]
