"""proxy/translate/openai_chat.py's stream normaliser, chunk by chunk: the usual text fragment
(taken by a short path) and each fragment next to it that must not be taken as one."""

from __future__ import annotations

from typing import Any

from proxy.translate.openai_chat import OpenAIStreamNormalizer


def upstream(delta: Any, *, finish: str | None = None, index: Any = 0,
             **top: Any) -> dict[str, Any]:
    return {"id": "up", "object": "chat.completion.chunk", "created": 5, "model": "up-model",
            "choices": [{"index": index, "delta": delta, "finish_reason": finish}], **top}


def deltas(chunks: list[dict[str, Any]], **options: Any) -> list[dict[str, Any]]:
    normalizer = OpenAIStreamNormalizer(model="ours", completion_id="chatcmpl-1", created=9,
                                        **options)
    out = [c for chunk in chunks for c in normalizer.feed(chunk)] + normalizer.close()
    for chunk in out:
        assert (chunk["id"], chunk["object"], chunk["created"], chunk["model"]) == (
            "chatcmpl-1", "chat.completion.chunk", 9, "ours")
    return [c["choices"][0]["delta"] if c["choices"] else {"usage": c["usage"]} for c in out]


def test_text_fragments_carry_the_role_once() -> None:
    chunks = [upstream({"role": "assistant", "content": "a"}),
              upstream({"role": "assistant", "content": "b"}), upstream({"content": "c"}),
              upstream({}, finish="stop")]
    assert deltas(chunks) == [{"role": "assistant", "content": "a"}, {"content": "b"},
                              {"content": "c"}, {}]


def test_a_text_fragment_after_reasoning_is_set_apart_from_it() -> None:
    chunks = [upstream({"reasoning_content": "think"}), upstream({"content": "a"}),
              upstream({"content": "b"})]
    assert deltas(chunks)[:3] == [{"role": "assistant", "content": "think"},
                                  {"content": "\n\na"}, {"content": "b"}]


def test_a_fragment_with_other_fields_beside_its_text_keeps_them() -> None:
    chunks = [upstream({"content": "a"}),
              upstream({"content": "b", "reasoning_content": "more"}),
              upstream({"content": "c", "refusal": "no"}),
              upstream({"content": "d", "reasoning": None, "tool_calls": None})]
    assert deltas(chunks, preserve_reasoning=True)[:4] == [
        {"role": "assistant", "content": "a"}, {"reasoning_content": "more", "content": "b"},
        {"content": "c", "refusal": "no"}, {"content": "d"}]


def test_empty_and_non_text_content_send_nothing() -> None:
    chunks = [upstream({"content": "a"}), upstream({"content": ""}),
              upstream({"content": None}), upstream({"content": 7}), upstream("not a delta"),
              upstream({"content": "b"})]
    assert deltas(chunks) == [{"role": "assistant", "content": "a"}, {"content": "b"}, {}]


def test_text_of_each_choice_keeps_its_own_role_and_index() -> None:
    normalizer = OpenAIStreamNormalizer(model="ours", completion_id="x")
    out = [c["choices"][0] for chunk in (upstream({"content": "a"}),
                                         upstream({"content": "b"}, index=1),
                                         upstream({"content": "c"}, index=1),
                                         upstream({"content": "d"}, index="zero"))
           for c in normalizer.feed(chunk)]
    assert [(c["index"], c["delta"]) for c in out] == [
        (0, {"role": "assistant", "content": "a"}), (1, {"role": "assistant", "content": "b"}),
        (1, {"content": "c"}), (0, {"content": "d"})]


def test_logprobs_and_the_finish_reason_of_a_text_fragment() -> None:
    normalizer = OpenAIStreamNormalizer(model="ours", completion_id="x")
    normalizer.feed(upstream({"content": "a"}))
    chunk = upstream({"content": "b"}, finish="length")
    chunk["choices"][0]["logprobs"] = {"content": []}
    [out] = normalizer.feed(chunk)
    assert out["choices"] == [{"index": 0, "delta": {"content": "b"}, "finish_reason": None,
                               "logprobs": {"content": []}}]
    assert normalizer.close()[-1]["choices"][0]["finish_reason"] == "length"


def test_usage_and_fingerprint_ride_along_a_text_fragment() -> None:
    chunks = [upstream({"content": "a"}),
              upstream({"content": "b"}, system_fingerprint="fp_1",
                       usage={"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5})]
    normalizer = OpenAIStreamNormalizer(model="ours", completion_id="x", include_usage=True)
    out = [c for chunk in chunks for c in normalizer.feed(chunk)] + normalizer.close()
    assert out[1]["system_fingerprint"] == "fp_1" and out[1]["choices"][0]["delta"] == {
        "content": "b"}
    assert out[-1]["usage"] == {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}


def test_usage_inside_the_choice_of_a_text_fragment_is_kept() -> None:
    # Moonshot puts the usage in the choice of the last text chunk.
    chunk = upstream({"content": "b"})
    chunk["choices"][0]["usage"] = {"prompt_tokens": 1, "completion_tokens": 1,
                                    "total_tokens": 2}
    normalizer = OpenAIStreamNormalizer(model="ours", completion_id="x", include_usage=True)
    normalizer.feed(upstream({"content": "a"}))
    assert normalizer.feed(chunk)[0]["choices"][0]["delta"] == {"content": "b"}
    assert normalizer.close()[-1]["usage"]["total_tokens"] == 2


def test_an_index_that_is_not_a_number_counts_as_the_first_choice() -> None:
    normalizer = OpenAIStreamNormalizer(model="ours", completion_id="x")
    normalizer.feed(upstream({"content": "a"}))
    [out] = normalizer.feed(upstream({"content": "b"}, index=None))
    assert out["choices"] == [{"index": 0, "delta": {"content": "b"}, "finish_reason": None}]
