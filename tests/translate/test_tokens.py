"""estimate_tokens / estimate_text_tokens: plausible, CJK-aware, counts tools, cheap, never 0."""

from __future__ import annotations

import time
from typing import Any

import pytest

from proxy.translate.tokens import IMAGE_TOKENS, estimate_text_tokens, estimate_tokens


def test_text_estimates() -> None:
    assert estimate_text_tokens("") == 0
    assert estimate_text_tokens("a") == 1
    assert estimate_text_tokens("hello world, this is a test!") == 7  # 28 chars / 4
    assert estimate_text_tokens("你好世界你好世界") == 8  # ~1 token per CJK char
    assert 3 <= estimate_text_tokens("Привет мир") <= 8
    mixed = estimate_text_tokens("def f(): return '登录页面'")
    assert 8 <= mixed <= 10


def test_lone_surrogate_does_not_raise() -> None:
    assert estimate_text_tokens("a\ud800b") >= 1


def body(**extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": "hi"}], **extra}


def test_counts_system_messages_and_tools() -> None:
    base = estimate_tokens(body())
    assert base > 0
    assert estimate_tokens(body(system="x" * 400)) >= base + 100
    assert estimate_tokens(body(system=[{"type": "text", "text": "x" * 400}])) >= base + 100
    schema = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(50)}}
    tools = [{"name": "t", "description": "d" * 200, "input_schema": schema}]
    assert estimate_tokens(body(tools=tools)) >= base + 300


def test_counts_blocks() -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "A"}}
    history = [
        {"role": "user", "content": [image, {"type": "text", "text": "what?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "t" * 400},
                {"type": "tool_use", "id": "x", "name": "Write", "input": {"content": "c" * 400}},
            ],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "x", "content": [image]}],
        },
    ]
    assert estimate_tokens({"messages": history}) >= 2 * IMAGE_TOKENS + 200
    pdf = {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": "A" * 400_000},
    }
    assert estimate_tokens(body(messages=[{"role": "user", "content": [pdf]}])) > IMAGE_TOKENS


@pytest.mark.parametrize(
    "garbage",
    [
        {},
        [],
        None,
        {"messages": "x"},
        {"messages": [None, {"content": 5}]},
        {"system": 3, "tools": "x"},
        {"messages": [{"role": "user", "content": [None, {"type": "image"}, {"type": 7}]}]},
    ],
)
def test_never_zero_never_raises(garbage: Any) -> None:
    assert estimate_tokens(garbage) >= 1


def test_fast_for_small_bodies() -> None:
    b = body(system="You are helpful.", tools=[{"name": "f", "input_schema": {"type": "object"}}])
    runs = 2000
    start = time.perf_counter()
    for _ in range(runs):
        estimate_tokens(b)
    per_call = (time.perf_counter() - start) / runs
    assert per_call < 200e-6  # measured ~10 µs; generous for slow CI


def test_large_text_linear() -> None:
    text = "The quick brown fox 登录 " * 50_000
    start = time.perf_counter()
    n = estimate_text_tokens(text)
    assert time.perf_counter() - start < 0.05 and n > 200_000
