"""anthropic_to_openai on malformed input: TranslationError with a param, never anything else."""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest

from proxy.translate.anthropic_request import anthropic_to_openai
from proxy.translate.types import TranslateOptions, TranslationError
from tests.translate.golden import FIXTURES, load
from tests.translate.test_anthropic_request import assistant, result, use, user

OPTS = TranslateOptions(upstream_model="up-model")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ([], None),
        ({}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": "hi"}, "messages"),
        ({"messages": [None]}, "messages.0"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
        ({"messages": [{"role": "user"}]}, "messages.0.content"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
        ({"messages": [user([None])]}, "messages.0.content.0"),
        ({"messages": [user([{"text": "no type"}])]}, "messages.0.content.0"),
        ({"messages": [user([{"type": 3}])]}, "messages.0.content.0"),
        ({"messages": [user([{"type": "text", "text": 5}])]}, "messages.0.content.0.text"),
        ({"messages": [user([{"type": "image"}])]}, "messages.0.content.0.source"),
        (
            {"messages": [user([{"type": "image", "source": {"type": "base64"}}])]},
            "messages.0.content.0.source",
        ),
        (
            {"messages": [user([{"type": "image", "source": {"type": "file", "file_id": "f"}}])]},
            "messages.0.content.0.source.type",
        ),
        (
            {"messages": [user([{"type": "image", "source": {"type": "url", "url": 1}}])]},
            "messages.0.content.0.source.url",
        ),
        (
            {"messages": [user([{"type": "document", "source": {"type": "url", "url": "u"}}])]},
            "messages.0.content.0.source.type",
        ),
        (
            {"messages": [user([{"type": "document", "source": {"type": "text", "data": 1}}])]},
            "messages.0.content.0.source.data",
        ),
        ({"messages": [user([use("t")])]}, "messages.0.content.0"),
        (
            {"messages": [assistant([{"type": "tool_use", "id": "t", "input": {}}])]},
            "messages.0.content.0.name",
        ),
        (
            {"messages": [assistant([{"type": "tool_use", "id": "t", "name": "f", "input": "x"}])]},
            "messages.0.content.0.input",
        ),
        (
            {"messages": [assistant([{"type": "tool_use", "id": 5, "name": "f"}])]},
            "messages.0.content.0.id",
        ),
        ({"messages": [assistant([result("t")])]}, "messages.0.content.0"),
        ({"messages": [user([result("t", 5)])]}, "messages.0.content.0.content"),
        ({"messages": [user([result("t", [None])])]}, "messages.0.content.0.content.0"),
        (
            {"messages": [user([result(None, "x", tool_use_id=5)])]},
            "messages.0.content.0.tool_use_id",
        ),
        (
            {"messages": [assistant([{"type": "thinking", "thinking": ["x"]}])]},
            "messages.0.content.0.thinking",
        ),
        ({"messages": [user("x")], "system": 5}, "system"),
        ({"messages": [user("x")], "system": ["x"]}, "system.0"),
        ({"messages": [user("x")], "max_tokens": "100"}, "max_tokens"),
        ({"messages": [user("x")], "max_tokens": 0}, "max_tokens"),
        ({"messages": [user("x")], "max_tokens": True}, "max_tokens"),
        ({"messages": [user("x")], "temperature": "hot"}, "temperature"),
        ({"messages": [user("x")], "stop_sequences": "END"}, "stop_sequences"),
        ({"messages": [user("x")], "stop_sequences": [1]}, "stop_sequences"),
        ({"messages": [user("x")], "tools": {"name": "f"}}, "tools"),
        ({"messages": [user("x")], "tools": ["f"]}, "tools.0"),
        ({"messages": [user("x")], "tools": [{"input_schema": {}}]}, "tools.0.name"),
        (
            {"messages": [user("x")], "tools": [{"name": "f", "input_schema": "s"}]},
            "tools.0.input_schema",
        ),
        (
            {"messages": [user("x")], "tools": [{"name": "f", "description": 1}]},
            "tools.0.description",
        ),
        ({"messages": [user("x")], "tool_choice": 5}, "tool_choice"),
        ({"messages": [user("x")], "tool_choice": {"type": "tool"}}, "tool_choice.name"),
        ({"messages": [user("x")], "tool_choice": {"type": "sometimes"}}, "tool_choice.type"),
        ({"messages": [user("")]}, "messages"),
    ],
)
def test_malformed_input_raises_translation_error(body: Any, param: str | None) -> None:
    with pytest.raises(TranslationError) as info:
        anthropic_to_openai(body, OPTS)
    assert info.value.param == param
    assert isinstance(info.value, ValueError) and str(info.value)


_GARBAGE: list[Any] = [
    None,
    0,
    -1,
    True,
    1.5,
    "",
    "x",
    [],
    [None],
    {},
    {"type": None},
    {"type": "?"},
]


def _mutations(value: Any, rng: random.Random, depth: int = 0) -> Any:
    """Replace a random node of a valid request with garbage, many times over."""
    if depth > 8 or rng.random() < 0.15:
        return rng.choice(_GARBAGE)
    if isinstance(value, dict):
        out = {
            k: _mutations(v, rng, depth + 1) if rng.random() < 0.3 else v for k, v in value.items()
        }
        if out and rng.random() < 0.1:
            out.pop(rng.choice(list(out)))
        return out
    if isinstance(value, list):
        return [_mutations(v, rng, depth + 1) if rng.random() < 0.3 else v for v in value]
    return value


@pytest.mark.parametrize("seed", range(300))
def test_random_corruption_only_raises_translation_error(seed: int) -> None:
    rng = random.Random(seed)
    fixtures = sorted((FIXTURES / "request").glob("*.json"))
    base = load(rng.choice([p for p in fixtures if not p.stem.endswith(".expected")]))
    body = _mutations(copy.deepcopy(base["request"]), rng)
    try:
        anthropic_to_openai(body, OPTS)
    except TranslationError as exc:
        assert str(exc)


@pytest.mark.parametrize(
    "body",
    [
        {"messages": [user("x")], "tool_choice": {"type": "t" * 1_000_000}},
        {"messages": [user([{"type": "image", "source": {"type": "s" * 1_000_000}}])]},
        {"messages": [user([{"type": "document", "source": {"type": ["d"] * 100_000}}])]},
    ],
)
def test_client_values_quoted_in_errors_are_cut_short(body: dict[str, Any]) -> None:
    with pytest.raises(TranslationError) as raised:
        anthropic_to_openai(body, OPTS)
    message = raised.value.localized(lambda text: text)
    assert "…" in message and len(message) < 200, message[:300]
    assert str(raised.value) == message


def test_short_values_are_quoted_whole() -> None:
    with pytest.raises(TranslationError) as raised:
        anthropic_to_openai({"messages": [user("x")], "tool_choice": {"type": "sure"}}, OPTS)
    assert str(raised.value) == "tool_choice.type: unsupported value 'sure'"
    with pytest.raises(TranslationError) as raised:
        anthropic_to_openai({"messages": [user("x")], "tool_choice": {"type": None}}, OPTS)
    assert str(raised.value) == "tool_choice.type: unsupported value None"
