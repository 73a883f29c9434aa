"""Upstream cache usage in every client shape (issue 18): each vendor's way of reporting
prompt-cache reads and writes -> the Anthropic, Responses and OpenAI chat usage objects, and an
Anthropic upstream's usage -> OpenAI chat and back. Golden: tests/fixtures/usage/."""

from __future__ import annotations

from pathlib import Path

from proxy.translate.anthropic_response import openai_to_anthropic
from proxy.translate.anthropic_stream import AnthropicStreamTranslator
from proxy.translate.anthropic_to_chat_response import chat_usage
from proxy.translate.openai_chat import OpenAIStreamNormalizer, normalize_completion
from proxy.translate.responses_items import responses_usage
from proxy.translate.upstream_chat import read_chunk
from proxy.translate.usage import anthropic_usage, openai_usage, read_usage
from tests.translate.golden import assert_golden, load

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "usage"
VENDORS = load(FIXTURES / "vendors.json")


def test_each_vendors_usage_in_each_client_shape() -> None:
    mapped = {}
    for vendor, usage in VENDORS.items():
        tokens = read_usage(usage)
        mapped[vendor] = {
            "read": {"prompt": tokens.prompt, "cached": tokens.cached,
                     "cache_write": tokens.cache_write, "completion": tokens.completion,
                     "uncached": tokens.uncached},
            "anthropic": anthropic_usage(usage),
            "responses": responses_usage(usage),
            "openai_chat": openai_usage(usage),
        }
    assert_golden(FIXTURES / "vendors.expected.json", mapped)


def test_cached_tokens_are_never_counted_twice() -> None:
    for vendor, usage in VENDORS.items():
        if not isinstance(usage, dict):
            continue
        anthropic = anthropic_usage(usage)
        total = (anthropic["input_tokens"] + anthropic["cache_read_input_tokens"]
                 + anthropic["cache_creation_input_tokens"])
        assert total == read_usage(usage).prompt, vendor


def test_openai_chat_usage_is_passed_on_untouched_when_nothing_is_missing() -> None:
    usage = VENDORS["openai"]
    assert openai_usage(usage) is usage
    assert openai_usage(VENDORS["iflow_no_cache"]) is VENDORS["iflow_no_cache"]
    deepseek = openai_usage(VENDORS["deepseek"])
    assert deepseek["prompt_tokens_details"] == {"cached_tokens": 1024}
    assert deepseek["prompt_cache_hit_tokens"] == 1024  # the vendor's own field stays


def test_the_three_client_apis_carry_the_cache_reads_of_a_whole_answer() -> None:
    completion = {"choices": [{"index": 0, "message": {"content": "ok"},
                               "finish_reason": "stop"}], "usage": VENDORS["deepseek"]}
    anthropic = openai_to_anthropic(completion, message_id="msg_1", model="m")
    assert anthropic["usage"]["cache_read_input_tokens"] == 1024
    assert anthropic["usage"]["input_tokens"] == 176
    chat = normalize_completion(completion, model="m")
    assert chat["usage"]["prompt_tokens_details"]["cached_tokens"] == 1024
    assert responses_usage(completion["usage"])["input_tokens_details"]["cached_tokens"] == 1024


def test_streams_carry_the_cache_reads_also_from_moonshots_choice_usage() -> None:
    # Moonshot puts the last chunk's usage inside choices[0]; others at the top.
    last = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop",
                         "usage": VENDORS["moonshot"]}]}
    assert read_chunk(last).usage == VENDORS["moonshot"]
    translator = AnthropicStreamTranslator(message_id="msg_1", model="m", input_tokens=5)
    events = translator.feed({"choices": [{"index": 0, "delta": {"content": "hi"}}]})
    events += translator.feed(last) + translator.close()
    delta = next(data for name, data in events if name == "message_delta")
    assert delta["usage"]["cache_read_input_tokens"] == 1024
    assert delta["usage"]["input_tokens"] == 176
    normalizer = OpenAIStreamNormalizer(model="m", include_usage=True)
    normalizer.feed({"choices": [{"index": 0, "delta": {"content": "hi"}}]})
    normalizer.feed(last)
    usage_chunk = normalizer.close()[-1]
    assert usage_chunk["usage"]["prompt_tokens_details"]["cached_tokens"] == 1024


def test_an_anthropic_upstreams_cache_reads_and_writes_survive_the_round_trip() -> None:
    upstream = {"input_tokens": 200, "output_tokens": 30, "cache_read_input_tokens": 700,
                "cache_creation_input_tokens": 100}
    chat = chat_usage(upstream)
    assert chat["prompt_tokens"] == 1000
    assert chat["prompt_tokens_details"] == {"cached_tokens": 700, "cache_write_tokens": 100}
    assert anthropic_usage(chat) == upstream
    assert responses_usage(chat)["input_tokens_details"] == {"cached_tokens": 700,
                                                            "cache_write_tokens": 100}


def test_counts_take_ints_floats_and_digit_strings_and_nothing_else() -> None:
    class Count(int):
        pass

    usage = read_usage({"prompt_tokens": Count(40), "completion_tokens": "7",
                        "prompt_tokens_details": {"cached_tokens": 12.9},
                        "prompt_cache_hit_tokens": True})
    assert (usage.prompt, usage.completion, usage.cached) == (40, 7, 12)
    for odd in (True, False, None, -3, -2.5, "x", "-4", [], {}):
        usage = read_usage({"prompt_tokens": odd, "completion_tokens": odd,
                            "prompt_tokens_details": {"cached_tokens": odd}})
        assert (usage.prompt, usage.completion, usage.cached) == (0, 0, 0), odd
    assert read_usage({"prompt_tokens": 0, "completion_tokens": 5}).completion == 5
