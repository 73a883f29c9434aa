"""chat_to_anthropic: golden requests, the mapping rules, refusals, SDK validity and round trips
through the forward translator (anthropic_request.py)."""

from __future__ import annotations

import copy
import json
import random
from typing import Any

import pytest

from proxy.translate.anthropic_request import anthropic_to_openai
from proxy.translate.chat_to_anthropic import THINKING_BUDGETS, chat_to_anthropic
from proxy.translate.chat_to_anthropic_messages import LEADING_USER_TEXT, anthropic_tool_id
from proxy.translate.types import TranslateOptions, TranslationError
from tests.translate.golden import FIXTURES, assert_golden, load
from tests.translate.sdk_shapes import check_anthropic_request
from tests.translate.test_anthropic_request_errors import _mutations

REVERSE = FIXTURES.parent / "reverse"
REQUEST = REVERSE / "request"
CASES = sorted(p.stem for p in REQUEST.glob("*.json") if not p.stem.endswith(".expected"))


@pytest.mark.parametrize("case", CASES)
def test_golden_request(case: str) -> None:
    fixture = load(REQUEST / f"{case}.json")
    request = fixture["request"]
    before = copy.deepcopy(request)
    body = chat_to_anthropic(request, TranslateOptions(**fixture["options"])).body
    assert request == before, "the client body must not be mutated"
    check_anthropic_request(body)
    assert_golden(REQUEST / f"{case}.expected.json", body)


def test_goldens_exist() -> None:
    assert len(CASES) >= 3


def convert(body: dict[str, Any], **opts: Any) -> dict[str, Any]:
    out = chat_to_anthropic(body, TranslateOptions(upstream_model="up", **opts)).body
    check_anthropic_request(out)
    return out


def chat(*messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return convert({"model": "m", "messages": list(messages), **extra})


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def call(call_id: str, name: str = "f", arguments: str = "{}") -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


# ---- conversation --------------------------------------------------------------------------


def test_system_string_or_blocks() -> None:
    one = chat({"role": "system", "content": "S"}, user("hi"))
    assert one["system"] == "S"
    two = chat({"role": "system", "content": "A"}, {"role": "developer", "content": "B"}, user("x"))
    assert two["system"] == [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}]
    assert "system" not in chat({"role": "system", "content": "  "}, user("x"))


def test_mid_conversation_system_stays_in_place_as_user_text() -> None:
    out = chat(user("a"), {"role": "assistant", "content": "b"}, {"role": "system", "content": "c"})
    assert "system" not in out
    assert out["messages"][-1] == {"role": "user", "content": [{"type": "text", "text": "c"}]}


def test_first_turn_user_and_alternation() -> None:
    out = chat({"role": "assistant", "content": "hello"}, user("a"), user("b"))
    assert out["messages"][0]["content"] == [{"type": "text", "text": LEADING_USER_TEXT}]
    assert [m["role"] for m in out["messages"]] == ["user", "assistant", "user"]
    assert len(out["messages"][2]["content"]) == 2


def test_prefill_trailing_whitespace_trimmed() -> None:
    out = chat(user("a"), {"role": "assistant", "content": "Sure:  \n"})
    assert out["messages"][-1]["content"] == [{"type": "text", "text": "Sure:"}]


def test_empty_text_dropped_and_all_empty_refused() -> None:
    out = chat(user([{"type": "text", "text": ""}, {"type": "text", "text": "x"}]))
    assert out["messages"][0]["content"] == [{"type": "text", "text": "x"}]
    with pytest.raises(TranslationError, match="every message is empty"):
        chat(user(""))


def test_images() -> None:
    parts = [{"type": "image_url", "image_url": {"url": "data:image/JPEG;base64,/9j/4AA="}},
             {"type": "image_url", "image_url": "http://example.com/x.gif"}]
    blocks = chat(user(parts))["messages"][0]["content"]
    assert blocks[0]["source"] == {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AA="}
    assert blocks[1]["source"] == {"type": "url", "url": "http://example.com/x.gif"}


@pytest.mark.parametrize("url", ["data:image/png,abc", "data:text/plain;base64,eA==",
                                 "ftp://x/y.png", "", "data:image/png;base64,"])
def test_bad_image_urls_refused(url: str) -> None:
    with pytest.raises(TranslationError):
        chat(user([{"type": "image_url", "image_url": {"url": url}}]))


def test_tool_calls_and_parallel_results() -> None:
    out = chat(user("q"),
               {"role": "assistant", "content": "", "tool_calls": [
                   call("c1", arguments='{"a": 1}'), call("c2", arguments="")]},
               {"role": "tool", "tool_call_id": "c2", "content": "two"},
               {"role": "tool", "tool_call_id": "c1", "content": "one"},
               user("next"))
    assistant, results = out["messages"][1], out["messages"][2]
    assert assistant["content"] == [
        {"type": "tool_use", "id": "c1", "name": "f", "input": {"a": 1}},
        {"type": "tool_use", "id": "c2", "name": "f", "input": {}}]
    assert results["content"] == [
        {"type": "tool_result", "tool_use_id": "c2", "content": "two"},
        {"type": "tool_result", "tool_use_id": "c1", "content": "one"},
        {"type": "text", "text": "next"}]


def test_unanswered_calls_answered_and_stray_results_become_text() -> None:
    out = chat(user("q"), {"role": "assistant", "tool_calls": [call("c1"), call("c2")]},
               {"role": "tool", "tool_call_id": "c2", "content": "ok"},
               {"role": "tool", "tool_call_id": "zz", "content": "late"})
    content = out["messages"][2]["content"]
    assert [b["type"] for b in content] == ["tool_result", "tool_result", "text"]
    assert content[1]["tool_use_id"] == "c1" and content[1]["is_error"] is True
    assert content[2]["text"] == "[tool result zz]\nlate"


def test_invalid_tool_ids_sanitised_consistently() -> None:
    kimi = "functions.read:0"
    out = chat(user("q"), {"role": "assistant", "tool_calls": [call(kimi)]},
               {"role": "tool", "tool_call_id": kimi, "content": "r"})
    new_id = anthropic_tool_id(kimi)
    assert new_id.startswith("functions_read_0_") and new_id == anthropic_tool_id(kimi)
    assert out["messages"][1]["content"][0]["id"] == new_id
    assert out["messages"][2]["content"][0]["tool_use_id"] == new_id


@pytest.mark.parametrize("arguments", ["{not json", "[1, 2]", "42", '"x"'])
def test_tool_arguments_must_be_a_json_object(arguments: str) -> None:
    with pytest.raises(TranslationError) as info:
        chat(user("q"), {"role": "assistant", "tool_calls": [call("c", arguments=arguments)]})
    assert info.value.param == "messages.1.tool_calls.0.function.arguments"


def test_reasoning_content_dropped() -> None:
    out = chat(user("q"), {"role": "assistant", "content": "a", "reasoning_content": "hmm"},
               user("r"))
    assert out["messages"][1]["content"] == [{"type": "text", "text": "a"}]


# ---- parameters ----------------------------------------------------------------------------


def test_tools_and_choice() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"properties": {}}}}]
    out = chat(user("q"), tools=tools, tool_choice="required", parallel_tool_calls=False)
    assert out["tools"] == [{"name": "f", "input_schema": {"type": "object", "properties": {}}}]
    assert out["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert chat(user("q"), tools=tools, tool_choice="none")["tool_choice"] == {"type": "none"}
    named = {"type": "function", "function": {"name": "f"}}
    assert chat(user("q"), tools=tools, tool_choice=named)["tool_choice"] == {
        "type": "tool", "name": "f"}
    assert chat(user("q"), tools=tools, parallel_tool_calls=False)["tool_choice"] == {
        "type": "auto", "disable_parallel_tool_use": True}
    assert "tool_choice" not in chat(user("q"), tool_choice="auto")  # no tools


def test_max_tokens_default_clamp_and_newer_name() -> None:
    assert convert({"messages": [user("q")]})["max_tokens"] == 4096
    assert convert({"messages": [user("q")]}, default_max_tokens=77)["max_tokens"] == 77
    body = {"messages": [user("q")], "max_tokens": 50, "max_completion_tokens": 60}
    assert convert(body)["max_tokens"] == 60
    assert convert({**body, "max_completion_tokens": 9000}, max_output_tokens=8000)[
        "max_tokens"] == 8000


def test_stop_temperature_user_stream() -> None:
    out = chat(user("q"), stop="END", temperature=2.0, top_p=0.3, user="u1", stream=True,
               stream_options={"include_usage": True}, seed=1, frequency_penalty=1)
    assert out["stop_sequences"] == ["END"]
    assert out["temperature"] == 1.0 and out["top_p"] == 0.3
    assert out["metadata"] == {"user_id": "u1"} and out["stream"] is True
    assert not {"seed", "frequency_penalty", "stream_options"} & set(out)


@pytest.mark.parametrize(("effort", "budget"), sorted(THINKING_BUDGETS.items()))
def test_reasoning_effort_to_thinking(effort: str, budget: int) -> None:
    out = chat(user("q"), reasoning_effort=effort, max_tokens=1000, temperature=0.5)
    assert out["thinking"] == {"type": "enabled", "budget_tokens": budget}
    assert out["max_tokens"] == 1000 + budget and "temperature" not in out


def test_reasoning_effort_within_model_limit_and_none() -> None:
    out = convert({"messages": [user("q")], "reasoning_effort": "high", "max_tokens": 100},
                  max_output_tokens=8000)
    assert out["max_tokens"] == 8000 and out["thinking"]["budget_tokens"] == 4000
    tiny = convert({"messages": [user("q")], "reasoning_effort": "low"}, max_output_tokens=1500)
    assert "thinking" not in tiny  # no room for Anthropic's 1024-token minimum budget
    short = convert({"messages": [user("q")], "reasoning_effort": "low", "max_tokens": 100},
                    max_output_tokens=1800)
    assert "thinking" not in short and short["max_tokens"] == 100  # the client's limit kept
    assert chat(user("q"), reasoning_effort="none")["thinking"] == {"type": "disabled"}
    big = chat(user("q"), reasoning_effort="low", max_tokens=5000)
    assert big["max_tokens"] == 5000


def test_forced_tool_wins_over_thinking() -> None:
    tools = [{"type": "function", "function": {"name": "f"}}]
    out = chat(user("q"), tools=tools, tool_choice="required", reasoning_effort="high")
    assert "thinking" not in out


def test_no_thinking_with_prefill_or_inside_a_tool_loop() -> None:
    prefill = chat(user("q"), {"role": "assistant", "content": "{"}, reasoning_effort="low")
    assert "thinking" not in prefill
    loop = chat(user("q"), {"role": "assistant", "tool_calls": [call("c1")]},
                {"role": "tool", "tool_call_id": "c1", "content": "r"}, reasoning_effort="low")
    assert "thinking" not in loop
    after = chat(user("q"), {"role": "assistant", "tool_calls": [call("c1")]},
                 {"role": "tool", "tool_call_id": "c1", "content": "r"},
                 {"role": "assistant", "content": "done"}, user("next"), reasoning_effort="low")
    assert after["thinking"]["type"] == "enabled"


def test_response_format_instruction() -> None:
    out = chat({"role": "system", "content": "S"}, user("q"),
               response_format={"type": "json_object"})
    assert out["system"][0] == {"type": "text", "text": "S"}
    assert "JSON object" in out["system"][1]["text"]
    assert "system" not in chat(user("q"), response_format={"type": "text"})


@pytest.mark.parametrize("extra", [
    {"n": 2}, {"logprobs": True}, {"top_logprobs": 3}, {"modalities": ["text", "audio"]},
    {"audio": {"voice": "x"}}, {"functions": []}, {"reasoning_effort": "extreme"},
    {"tool_choice": "sometimes"}, {"tools": [{"type": "custom", "custom": {}}]},
    {"stop": 5}, {"temperature": "hot"}, {"max_tokens": 0}, {"user": 5},
    {"response_format": {"type": "json_schema"}}, {"parallel_tool_calls": "no"},
])
def test_unsupported_or_bad_parameters_refused(extra: dict[str, Any]) -> None:
    with pytest.raises(TranslationError):
        chat(user("q"), **extra)


@pytest.mark.parametrize("messages", [
    None, [], [1], [{"role": "function", "content": "x"}], [user([{"type": "input_audio"}])],
    [user([{"type": "file", "file": {"file_id": "f"}}])], [user(5)],
    [{"role": "tool", "content": "x"}], [{"role": "system", "content": [{"type": "image_url"}]}],
    [{"role": "assistant", "tool_calls": [{"id": "", "function": {"name": "f"}}]}],
    [{"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": ""}}]}],
])
def test_bad_messages_refused(messages: Any) -> None:
    with pytest.raises(TranslationError):
        convert({"messages": messages})


def test_body_not_an_object() -> None:
    with pytest.raises(TranslationError):
        chat_to_anthropic([], TranslateOptions(upstream_model="up"))  # type: ignore[arg-type]


# ---- round trip: chat -> anthropic -> (existing forward translator) -> chat ----------------


def _random_chat(rng: random.Random) -> dict[str, Any]:
    words = ["alpha", "beta", "gamma", "δέλτα", "中文", "code()"]
    messages: list[dict[str, Any]] = [{"role": "system", "content": "sys " + rng.choice(words)}]
    images = [{"type": "image_url", "image_url": {"url": "data:image/webp;base64,UklGRg=="}},
              {"type": "image_url", "image_url": {"url": "https://example.com/p.png"}}]
    for turn in range(rng.randint(1, 4)):
        text = " ".join(rng.choices(words, k=3))
        if rng.random() < 0.3:
            messages.append(user([{"type": "text", "text": text},
                                  *rng.sample(images, rng.randint(1, 2))]))
        else:
            messages.append(user(text))
        calls = [call(f"call_{turn}_{k}", rng.choice(["f", "g"]),
                      json.dumps({"x": rng.randint(0, 9), "s": rng.choice(words)}))
                 for k in range(rng.randint(0, 3))]
        assistant: dict[str, Any] = {"role": "assistant",
                                     "content": rng.choice([None, "ok " + rng.choice(words)])}
        if calls:
            assistant["tool_calls"] = calls
        elif assistant["content"] is None:
            assistant["content"] = "done"
        messages.append(assistant)
        messages.extend({"role": "tool", "tool_call_id": c["id"], "content": f"r{k}"}
                        for k, c in enumerate(calls))
    messages.append(user("last " + rng.choice(words)))
    tools = [{"type": "function", "function": {"name": n, "description": f"tool {n}",
                                               "parameters": {"type": "object",
                                                              "properties": {}}}}
             for n in ("f", "g")]
    return {"model": "m", "messages": messages, "tools": tools, "max_tokens": rng.randint(1, 900),
            "stop": rng.sample(["\n\n", "END", "###"], rng.randint(1, 3)),
            "temperature": round(rng.random(), 2),
            "tool_choice": rng.choice(["auto", "required", "none",
                                       {"type": "function", "function": {"name": "g"}}]),
            "reasoning_effort": rng.choice([None, "low", "medium", "high"])}


def _comparable(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the round trip keeps: everything but null fields; arguments as parsed JSON."""
    out = []
    for message in messages:
        kept = {k: v for k, v in message.items() if v is not None}
        if "tool_calls" in kept:
            kept["tool_calls"] = [{**c, "function": {**c["function"], "arguments": json.loads(
                c["function"]["arguments"])}} for c in kept["tool_calls"]]
        out.append(kept)
    return out


@pytest.mark.parametrize("seed", range(40))
def test_round_trip_through_the_forward_translator(seed: int) -> None:
    original = _random_chat(random.Random(seed))
    anthropic = convert(copy.deepcopy(original))
    back = anthropic_to_openai(anthropic, TranslateOptions(upstream_model="m")).body
    assert _comparable(back["messages"]) == _comparable(original["messages"])
    assert back["tools"] == original["tools"]
    assert back["stop"] == original["stop"]
    forced = original["tool_choice"] not in ("auto", "none")
    last_assistant = [m for m in original["messages"] if m["role"] == "assistant"][-1]
    in_loop = "tool_calls" in last_assistant
    assert ("thinking" in anthropic) == (
        original["reasoning_effort"] is not None and not forced and not in_loop)
    if "thinking" in anthropic:
        assert back["reasoning_effort"] == original["reasoning_effort"]
        assert "temperature" not in back
        assert back["max_tokens"] == original["max_tokens"] + THINKING_BUDGETS[
            original["reasoning_effort"]]
    else:
        assert "reasoning_effort" not in back
        assert back["temperature"] == original["temperature"]
        assert back["max_tokens"] == original["max_tokens"]
    assert back["tool_choice"] == original["tool_choice"]


@pytest.mark.parametrize("seed", range(200))
def test_random_corruption_only_raises_translation_error(seed: int) -> None:
    """Garbage anywhere in a valid request: a TranslationError (400) or a body Anthropic takes,
    never another exception (a 500)."""
    rng = random.Random(seed)
    base = load(REQUEST / f"{rng.choice(CASES)}.json")
    body = _mutations(copy.deepcopy(base["request"]), rng)
    try:
        out = chat_to_anthropic(body, TranslateOptions(**base["options"])).body
    except TranslationError as exc:
        assert str(exc)
        return
    check_anthropic_request(out)
