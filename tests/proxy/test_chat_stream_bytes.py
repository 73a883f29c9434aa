"""proxy/chat.py's OpenAIStreamSession: a text chunk framed from cut bytes is, byte for byte,
what serialising the normaliser's chunk gives, whatever the text, the fingerprint or the
chunks around it."""

from __future__ import annotations

import json
from typing import Any

from iflow2api_lib.wire import sse_data
from proxy.chat import OpenAIStreamSession
from proxy.translate.openai_chat import OpenAIStreamNormalizer

TEXTS = ["plain", 'a "quote" and \\ backslash', "line\nbreak\ttab\r", "\u2028\u2029 separators",
         "日本語 é", "🙂 emoji", "\x00\x1f control", "</script>", '"content":""']


def upstream(delta: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"id": "up", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": None}], **top}


def both(chunks: list[dict[str, Any]], **options: Any) -> tuple[list[bytes], list[bytes]]:
    def normalizer() -> OpenAIStreamNormalizer:
        return OpenAIStreamNormalizer(model='odd "model" name', completion_id="chatcmpl-1",
                                      created=7, include_usage=True, **options)

    session, reference = OpenAIStreamSession(normalizer()), normalizer()
    ours = [data for chunk in chunks for data in session.feed(chunk)] + session.close()
    theirs = [sse_data(c) for chunk in chunks for c in reference.feed(chunk)]
    theirs += [sse_data(c) for c in reference.close()] + [b"data: [DONE]\n\n"]
    return ours, theirs


def test_text_chunks_are_the_serialised_chunks() -> None:
    chunks = [upstream({"role": "assistant", "content": "first"})]
    chunks += [upstream({"content": text}) for text in TEXTS]
    ours, theirs = both(chunks)
    assert ours == theirs
    texts = [json.loads(data[6:])["choices"][0]["delta"].get("content")
             for data in ours[1:len(TEXTS) + 1]]
    assert texts == TEXTS


def test_the_fingerprint_as_it_comes_and_changes() -> None:
    chunks = [upstream({"content": "a"}), upstream({"content": "b"}, system_fingerprint="fp_1"),
              upstream({"content": "c"}), upstream({"content": "d"}, system_fingerprint="fp_2"),
              upstream({"content": "e"})]
    ours, theirs = both(chunks)
    assert ours == theirs
    assert [json.loads(data[6:]).get("system_fingerprint") for data in ours[:5]] == [
        None, "fp_1", "fp_1", "fp_2", "fp_2"]


def test_text_between_other_chunks() -> None:
    tool = {"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                            "function": {"name": "f", "arguments": "{}"}}]}
    chunks = [upstream({"reasoning_content": "think"}), upstream({"content": "a"}),
              upstream({"content": "b"}), upstream(tool), upstream({"content": "c"}),
              {"choices": [{"index": 1, "delta": {"content": "other"}}]},
              upstream({"content": "d"}),
              upstream({"content": "e"}, usage={"prompt_tokens": 1, "completion_tokens": 2,
                                                "total_tokens": 3})]
    for options in ({}, {"preserve_reasoning": True}):
        ours, theirs = both(chunks, **options)
        assert ours == theirs


def test_the_request_logs_trace_sees_the_first_token_the_usage_and_the_bytes() -> None:
    """RelayTrace.observe (proxy/trace.py) around the session: the same bytes, the first
    token's time at the first text, the usage from the chunk that carries it (top level, or
    Moonshot's in the choice), every byte sent kept when the instance logs bodies."""
    from proxy.trace import RelayTrace

    usage = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
    chunks = [upstream({"role": "assistant", "content": ""}), upstream({"content": "Hel"}),
              upstream({"content": "lo"}), upstream({"reasoning_content": "hmm"}),
              upstream({"content": " there"}),
              {"id": "up", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop",
                                        "usage": usage}]},
              {"id": "up", "choices": [], "usage": {**usage, "completion_tokens": 4}}]

    def normalizer() -> OpenAIStreamNormalizer:
        return OpenAIStreamNormalizer(model="m", completion_id="chatcmpl-1", created=7,
                                      include_usage=True)

    trace = RelayTrace("m", "openai", "m", True, runtime=None,  # type: ignore[arg-type]
                       keep_bodies=True)
    observed, bare = trace.observe(OpenAIStreamSession(normalizer())), \
        OpenAIStreamSession(normalizer())
    ours, theirs = [], []
    for n, chunk in enumerate(chunks):
        ours += observed.feed(chunk)
        theirs += bare.feed(chunk)
        if n == 0:
            assert trace.first_token is None  # the role alone is no token
        if n == 1:
            assert trace.first_token is not None
            first = trace.first_token
    ending = observed.close()
    assert ours + ending == theirs + bare.close()
    assert trace.first_token == first
    assert trace.usage == {**usage, "completion_tokens": 4}  # the last one sent
    assert b"".join(trace.response_parts) == b"".join(ours + ending)  # every byte sent


def test_usage_null_on_every_chunk_takes_the_shortcut_to_the_same_bytes() -> None:
    """OpenAI's own streams with include_usage send `"usage": null` on every chunk: plain text
    all the same (plain_text), and what the long way (feed() without the shortcut) gives."""

    class LongWay(OpenAIStreamNormalizer):
        def plain_text(self, upstream: dict[str, Any]) -> str | None:
            return None

    chunks = [upstream({"role": "assistant", "content": ""}, usage=None)]
    chunks += [upstream({"content": text}, usage=None) for text in TEXTS]
    chunks += [{"id": "up", "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2,
                                                      "total_tokens": 3}}]
    class Counted(OpenAIStreamNormalizer):
        plain = 0

        def plain_text(self, upstream: dict[str, Any]) -> str | None:
            text = super().plain_text(upstream)
            self.plain += text is not None
            return text

    options = {"model": "m", "completion_id": "chatcmpl-1", "created": 7, "include_usage": True}
    session, long_way = OpenAIStreamSession(Counted(**options)), LongWay(**options)
    ours = [data for chunk in chunks for data in session.feed(chunk)] + session.close()
    theirs = [sse_data(c) for chunk in chunks for c in long_way.feed(chunk)]
    theirs += [sse_data(c) for c in long_way.close()] + [b"data: [DONE]\n\n"]
    assert ours == theirs
    # Every text chunk took the shortcut, but the first: it carries the role the empty first
    # chunk did not send.
    assert session.normalizer.plain == len(TEXTS) - 1
