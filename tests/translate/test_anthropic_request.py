"""anthropic_to_openai: golden requests, every §C rule, and malformed input -> TranslationError."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from proxy.translate.anthropic_request import TOOL_ERROR_PREFIX, anthropic_to_openai
from proxy.translate.anthropic_tools import shorten_tool_name
from proxy.translate.types import TranslatedRequest, TranslateOptions
from tests.translate.golden import FIXTURES, assert_golden, load

REQUEST = FIXTURES / "request"
CASES = sorted(p.stem for p in REQUEST.glob("*.json") if not p.stem.endswith(".expected"))
OPTS = TranslateOptions(upstream_model="up-model")


@pytest.mark.parametrize("case", CASES)
def test_golden_request(case: str) -> None:
    fixture = load(REQUEST / f"{case}.json")
    request = fixture["request"]
    before = copy.deepcopy(request)
    result = anthropic_to_openai(request, TranslateOptions(**fixture["options"]))
    assert request == before, "the client body must not be mutated"
    expected = {"body": result.body, "tool_names": result.tool_names}
    assert_golden(REQUEST / f"{case}.expected.json", expected)
    json.dumps(result.body)  # serialisable


def translate(body: dict[str, Any], **opts: Any) -> TranslatedRequest:
    return anthropic_to_openai(body, TranslateOptions(upstream_model="up-model", **opts))


def messages(*msgs: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return translate({"max_tokens": 100, "messages": list(msgs), **extra}).body


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def assistant(content: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": content}


def use(call_id: str | None, name: str = "f", **tool_input: Any) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_use", "name": name, "input": tool_input}
    if call_id is not None:
        block["id"] = call_id
    return block


def result(call_id: str | None, content: Any = "ok", **extra: Any) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result", "content": content, **extra}
    if call_id is not None:
        block["tool_use_id"] = call_id
    return block


# ---- basics -------------------------------------------------------------------------------


def test_minimal_request() -> None:
    body = messages(user("hi"))
    assert body == {
        "model": "up-model",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 100,
    }


def test_system_blocks_joined_and_cache_control_dropped() -> None:
    system = [
        {"type": "text", "text": "a", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": ""},
        {"type": "text", "text": "b"},
    ]
    body = messages(user("hi"), system=system)
    assert body["messages"][0] == {"role": "system", "content": "a\n\nb"}
    assert "cache_control" not in json.dumps(body)


def test_dropped_and_passed_fields() -> None:
    body = messages(
        user("hi"),
        top_k=5,
        metadata={"user_id": "u"},
        context_management={},
        service_tier="auto",
        output_config={"effort": "high", "format": {}},
        temperature=0.2,
        top_p=0.5,
        stop_sequences=["X", ""],
        some_future_field={"x": 1},
    )
    assert body["temperature"] == 0.2 and body["top_p"] == 0.5 and body["stop"] == ["X"]
    for key in ("top_k", "metadata", "context_management", "service_tier", "output_config"):
        assert key not in body
    assert "reasoning_effort" not in body  # effort only matters with adaptive thinking


def test_max_tokens_clamped_and_defaulted() -> None:
    body = {"max_tokens": 32000, "messages": [user("x")]}
    assert translate(body, max_output_tokens=8192).body["max_tokens"] == 8192
    assert translate(body).body["max_tokens"] == 32000
    no_max = {"messages": [user("x")]}
    assert translate(no_max, default_max_tokens=777).body["max_tokens"] == 777


def test_stream_asks_for_usage() -> None:
    body = messages(user("x"), stream=True)
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert "stream" not in messages(user("x"), stream=False)


@pytest.mark.parametrize(
    ("thinking", "config", "effort"),
    [
        ({"type": "enabled", "budget_tokens": 1024}, None, "low"),
        ({"type": "enabled", "budget_tokens": 4096}, None, "medium"),
        ({"type": "enabled", "budget_tokens": 16383}, None, "medium"),
        ({"type": "enabled", "budget_tokens": 16384}, None, "high"),
        ({"type": "enabled"}, None, "medium"),
        ({"type": "adaptive"}, None, "medium"),
        ({"type": "adaptive"}, {"effort": "low"}, "low"),
        ({"type": "adaptive"}, {"effort": "high"}, "high"),
        ({"type": "adaptive"}, {"effort": "max"}, "high"),
        ({"type": "adaptive"}, {"effort": "weird"}, "medium"),
        ({"type": "disabled"}, {"effort": "high"}, None),
        (None, None, None),
        ("garbage", None, None),
    ],
)
def test_thinking_to_reasoning_effort(thinking: Any, config: Any, effort: str | None) -> None:
    extra: dict[str, Any] = {"thinking": thinking}
    if config is not None:
        extra["output_config"] = config
    assert messages(user("x"), **extra).get("reasoning_effort") == effort


# ---- content blocks -----------------------------------------------------------------------


def test_images_and_documents() -> None:
    content = [
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "QUJD"}},
        {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "doc"}},
        {
            "type": "document",
            "title": "spec.pdf",
            "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="},
        },
        {"type": "text", "text": "summarise"},
    ]
    assert messages(user(content))["messages"][0]["content"] == [
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,QUJD"}},
        {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
        {"type": "text", "text": "doc"},
        {
            "type": "file",
            "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "spec.pdf"},
        },
        {"type": "text", "text": "summarise"},
    ]


def test_vision_off_replaces_images_with_text() -> None:
    image = {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}
    body = translate({"messages": [user([image, {"type": "text", "text": "?"}])]}, vision=False)
    content = body.body["messages"][0]["content"]
    assert isinstance(content, str) and "image omitted" in content


def test_empty_text_blocks_and_redacted_thinking_dropped() -> None:
    body = messages(
        user([{"type": "text", "text": ""}, {"type": "text", "text": "q"}]),
        assistant([{"type": "redacted_thinking", "data": "x"}, {"type": "text", "text": " "}]),
        user("next"),
    )
    # The assistant turn had nothing left: the two user turns merge.
    assert body["messages"] == [{"role": "user", "content": "q\n\nnext"}]


def test_consecutive_same_role_merged_and_prefill_kept() -> None:
    body = messages(user("a"), user([{"type": "text", "text": "b"}]), assistant("pre"))
    assert body["messages"] == [
        {"role": "user", "content": "a\n\nb"},
        {"role": "assistant", "content": "pre"},
    ]


def test_assistant_tool_calls_content_null_and_reasoning() -> None:
    body = messages(
        user("go"),
        assistant(
            [
                {"type": "thinking", "thinking": "plan", "signature": "s"},
                {"type": "text", "text": ""},
                use("t1", "f", q="é 中", n=1),
            ]
        ),
        user([result("t1")]),
    )
    call = body["messages"][1]
    assert call == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "t1",
                "type": "function",
                "function": {"name": "f", "arguments": '{"q":"é 中","n":1}'},
            }
        ],
        "reasoning_content": "plan",
    }
    assert body["messages"][2] == {"role": "tool", "tool_call_id": "t1", "content": "ok"}


def test_tool_results_come_before_user_text_and_images_move() -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA"}}
    body = messages(
        user("go"),
        assistant([use("a"), use("b")]),
        user(
            [
                {"type": "text", "text": "also this"},
                result("b", [{"type": "text", "text": "shot"}, image]),
                result("a", "bad", is_error=True),
            ]
        ),
    )
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["user", "assistant", "tool", "tool", "user"]
    assert body["messages"][2]["tool_call_id"] == "b"
    assert body["messages"][2]["content"].startswith("shot\n\n[1 attachment(s)")
    assert body["messages"][3]["content"] == TOOL_ERROR_PREFIX + "bad"
    last = body["messages"][4]["content"]
    assert last[0] == {"type": "text", "text": "Attachments from tool result b:"}
    assert last[1] == {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}
    assert last[2] == {"type": "text", "text": "also this"}


def test_empty_tool_result_and_missing_result() -> None:
    body = messages(user("go"), assistant([use("a"), use("b")]), user([result("a", [])]))
    tools = [m for m in body["messages"] if m["role"] == "tool"]
    assert tools[0]["content"] == "(no output)"
    assert tools[1]["tool_call_id"] == "b" and "no result" in tools[1]["content"]


def test_orphan_tool_result_becomes_text() -> None:
    body = messages(user([result("nowhere", "data")]))
    assert body["messages"] == [{"role": "user", "content": "[tool result]\ndata"}]


def test_missing_tool_ids_synthesised_stably_and_matched() -> None:
    msgs = [
        user("go"),
        assistant([use(None), use(None)]),
        user([result(None, "1"), result(None, "2")]),
    ]
    first = messages(*msgs)
    assert first == messages(*copy.deepcopy(msgs))  # deterministic
    ids = [c["id"] for c in first["messages"][1]["tool_calls"]]
    assert all(i.startswith("toolu_") for i in ids) and len(set(ids)) == 2
    assert [m["tool_call_id"] for m in first["messages"][2:4]] == ids


def test_kimi_tool_ids_rewritten_consistently() -> None:
    msgs = [
        user("go"),
        assistant([use("toolu_x", "Read")]),
        user([result("toolu_x")]),
        assistant([use("call_other_model", "Bash")]),
        user([result("call_other_model")]),
    ]
    body = translate({"messages": msgs}, kimi_tool_ids=True).body["messages"]
    assert body[1]["tool_calls"][0]["id"] == "functions.Read:0"
    assert body[2]["tool_call_id"] == "functions.Read:0"
    assert body[3]["tool_calls"][0]["id"] == "functions.Bash:1"
    assert body[4]["tool_call_id"] == "functions.Bash:1"


# ---- tools --------------------------------------------------------------------------------


def test_tools_converted_and_server_tools_dropped() -> None:
    tools = [
        {
            "name": "f",
            "description": "d",
            "input_schema": {"type": "object"},
            "cache_control": {"type": "ephemeral"},
            "strict": True,
            "defer_loading": True,
        },
        {"type": "custom", "name": "g", "input_schema": {"type": "object"}},
        {"type": "web_search_20250305", "name": "web_search"},
        {"name": "h"},
    ]
    body = messages(user("x"), tools=tools)
    assert body["tools"] == [
        {
            "type": "function",
            "function": {"name": "f", "description": "d", "parameters": {"type": "object"}},
        },
        {"type": "function", "function": {"name": "g", "parameters": {"type": "object"}}},
        {
            "type": "function",
            "function": {"name": "h", "parameters": {"type": "object", "properties": {}}},
        },
    ]


@pytest.mark.parametrize(
    ("choice", "expected", "parallel"),
    [
        ({"type": "auto"}, "auto", None),
        ({"type": "any"}, "required", None),
        ({"type": "none"}, "none", None),
        ({"type": "tool", "name": "f"}, {"type": "function", "function": {"name": "f"}}, None),
        ({"type": "auto", "disable_parallel_tool_use": True}, "auto", False),
        ({"type": "any", "disable_parallel_tool_use": False}, "required", None),
    ],
)
def test_tool_choice(choice: dict[str, Any], expected: Any, parallel: bool | None) -> None:
    body = messages(user("x"), tools=[{"name": "f", "input_schema": {}}], tool_choice=choice)
    assert body["tool_choice"] == expected
    assert body.get("parallel_tool_calls") == parallel


def test_tool_choice_without_remaining_tools_is_omitted() -> None:
    body = messages(
        user("x"), tools=[{"type": "web_search_20250305", "name": "w"}], tool_choice={"type": "any"}
    )
    assert "tools" not in body and "tool_choice" not in body


def test_long_tool_names_shortened_everywhere_and_recorded() -> None:
    long = "mcp__" + "x" * 80
    short = shorten_tool_name(long)
    assert len(short) == 64 and shorten_tool_name(long) == short
    assert shorten_tool_name(long + "y") != short
    result_ = translate(
        {
            "messages": [user("go"), assistant([use("t", long)]), user([result("t")])],
            "tools": [{"name": long, "input_schema": {}}],
            "tool_choice": {"type": "tool", "name": long},
        }
    )
    body = result_.body
    assert body["tools"][0]["function"]["name"] == short
    assert body["messages"][1]["tool_calls"][0]["function"]["name"] == short
    assert body["tool_choice"]["function"]["name"] == short
    assert result_.tool_names == {short: long}
    assert translate({"messages": [user("x")], "tools": [{"name": "f"}]}).tool_names == {}


def test_unknown_block_types_tolerated() -> None:
    content = [
        {
            "type": "search_result",
            "source": "https://s",
            "title": "T",
            "content": [{"type": "text", "text": "body"}],
        },
        {"type": "container_upload", "file_id": "f"},
        {"type": "future_block", "text": "kept"},
        {"type": "text", "text": "q"},
    ]
    body = messages(user(content))
    assert body["messages"][0]["content"] == "T https://s\nbody\n\nkept\n\nq"


def test_mid_conversation_system_messages_become_user_text():
    body = {"model": "m", "max_tokens": 10, "system": "top", "messages": [
        {"role": "user", "content": "hi"},
        {"role": "system", "content": [{"type": "text", "text": "Agent types: a, b"}]},
    ]}
    messages = anthropic_to_openai(body, TranslateOptions(upstream_model="m")).body["messages"]
    assert [m["role"] for m in messages] == ["system", "user"]
    assert "hi" in messages[1]["content"] and "Agent types: a, b" in messages[1]["content"]
