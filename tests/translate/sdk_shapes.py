"""The official SDKs' own types as the judges of what the reverse translators produce.

pydantic validates the anthropic SDK's TypedDicts, but lazily for `Iterable` fields and ignoring
unknown keys, so each level (body, message, block, tool) is checked on its own, keys included.
OpenAI output goes through the openai SDK's models and its own stream accumulator.
"""

from __future__ import annotations

import itertools
import typing
from functools import cache
from typing import Any

from anthropic.types import (
    DocumentBlockParam,
    ImageBlockParam,
    MetadataParam,
    TextBlockParam,
    ThinkingConfigParam,
    ToolChoiceParam,
    ToolParam,
    ToolResultBlockParam,
    ToolUseBlockParam,
)
from anthropic.types.assistant_message_param import AssistantMessageParam
from anthropic.types.message_create_params import MessageCreateParamsNonStreaming
from anthropic.types.user_message_param import UserMessageParam
from openai import LengthFinishReasonError
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import TypeAdapter

_BLOCKS: dict[str, Any] = {
    "text": TextBlockParam,
    "image": ImageBlockParam,
    "document": DocumentBlockParam,
    "tool_use": ToolUseBlockParam,
    "tool_result": ToolResultBlockParam,
}


# Anthropic-compatible vendors (and the spec, §A) take these; anthropic SDK 2.x no longer types
# them, so they are checked here by hand.
_SAMPLING = ("temperature", "top_p", "top_k")


@cache
def _adapter(cls: Any) -> TypeAdapter[Any]:
    return TypeAdapter(cls)


def _check(cls: Any, value: Any, where: str) -> None:
    assert isinstance(value, dict), f"{where}: not an object"
    unknown = set(value) - set(typing.get_type_hints(cls))
    assert not unknown, f"{where}: keys {unknown} unknown to {cls.__name__}"
    _adapter(cls).validate_python(value)


def _check_block(block: Any, where: str) -> None:
    kind = block.get("type") if isinstance(block, dict) else None
    assert kind in _BLOCKS, f"{where}: block type {kind!r}"
    _check(_BLOCKS[kind], block, where)
    assert kind != "text" or block["text"], f"{where}: empty text block"
    if kind == "tool_result" and isinstance(block.get("content"), list):
        for j, inner in enumerate(block["content"]):
            _check_block(inner, f"{where}.content.{j}")


def check_anthropic_request(body: dict[str, Any]) -> None:
    """Valid for the anthropic SDK, and following the Messages API's turn rules."""
    sampling = {k: body[k] for k in _SAMPLING if k in body}
    assert all(isinstance(v, int | float) and 0 <= v <= 1 for k, v in sampling.items()
               if k != "top_k"), sampling
    _check(MessageCreateParamsNonStreaming,
           {k: v for k, v in body.items() if k != "stream" and k not in _SAMPLING}, "body")
    system = body.get("system")
    if isinstance(system, list):
        for i, block in enumerate(system):
            _check(TextBlockParam, block, f"system.{i}")
    roles = [m["role"] for m in body["messages"]]
    assert roles[0] == "user", "the first turn must be the user's"
    assert all(a != b for a, b in itertools.pairwise(roles)), f"roles {roles}"
    pending: set[str] = set()
    for i, message in enumerate(body["messages"]):
        message_type = UserMessageParam if message["role"] == "user" else AssistantMessageParam
        _check(message_type, message, f"messages.{i}")
        blocks = message["content"]
        assert isinstance(blocks, list) and blocks, f"messages.{i}: empty"
        for j, block in enumerate(blocks):
            _check_block(block, f"messages.{i}.content.{j}")
        results = [b["tool_use_id"] for b in blocks if b["type"] == "tool_result"]
        assert set(results) == pending, f"messages.{i}: results {results} for calls {pending}"
        assert blocks[: len(results)] == [b for b in blocks if b["type"] == "tool_result"], \
            f"messages.{i}: tool results must come first"
        pending = {b["id"] for b in blocks if b["type"] == "tool_use"}
    for i, tool in enumerate(body.get("tools") or []):
        _check(ToolParam, tool, f"tools.{i}")
    for key, cls in (("tool_choice", ToolChoiceParam), ("thinking", ThinkingConfigParam),
                     ("metadata", MetadataParam)):
        if key in body:
            _adapter(cls).validate_python(body[key])
    thinking = body.get("thinking") or {}
    if thinking.get("type") == "enabled":
        assert body["max_tokens"] > thinking["budget_tokens"] >= 1024


def check_chat_completion(completion: dict[str, Any]) -> ChatCompletion:
    return ChatCompletion.model_validate(completion)


def check_chat_stream(chunks: list[dict[str, Any]]) -> ChatCompletion | None:
    """Every chunk parses; the SDK's accumulator rebuilds the completion (None: ended in error)."""
    state = ChatCompletionStreamState()
    finished = False
    roles = 0
    calls_seen: set[int] = set()
    for i, chunk in enumerate(chunks):
        if "error" in chunk:
            assert i == len(chunks) - 1, "nothing may follow an in-band error"
            assert set(chunk["error"]) == {"message", "type", "param", "code"}
            return None
        assert not finished or chunk["choices"] == [], "only the usage chunk follows the finish"
        assert isinstance(chunk["choices"], list)
        for choice in chunk["choices"]:
            delta = choice["delta"]
            roles += "role" in delta
            for fragment in delta.get("tool_calls", []):
                first = fragment["index"] not in calls_seen
                assert not first or fragment["index"] == len(calls_seen), "indexes 0, 1, 2..."
                assert first == ("id" in fragment) == ("type" in fragment) == \
                    ("name" in fragment.get("function", {})), \
                    f"id/type/name only in a call's first fragment: {fragment}"
                calls_seen.add(fragment["index"])
        assert roles == 1, "role in the first delta only"
        parsed = ChatCompletionChunk.model_validate(chunk)
        state.handle_chunk(parsed)
        finished = finished or any(c.finish_reason for c in parsed.choices)
    assert finished, "a stream without an error ends with a finish_reason"
    try:
        return state.get_final_completion()
    except LengthFinishReasonError as exc:  # the SDK's way to report a `length` finish
        return exc.completion
