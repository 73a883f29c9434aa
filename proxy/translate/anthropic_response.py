"""OpenAI chat completion (non-streaming) -> Anthropic message, plus the shared stop mapping."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from proxy.translate.anthropic_tools import synth_tool_id
from proxy.translate.upstream_chat import first_message, message_calls, message_text
from proxy.translate.usage import anthropic_usage

# Passed through unchanged when an upstream already speaks Anthropic's vocabulary.
_ANTHROPIC_STOPS = {"end_turn", "max_tokens", "stop_sequence", "tool_use", "pause_turn", "refusal"}
_FINISH_MAP = {
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
    "model_context_window_exceeded": "model_context_window_exceeded",
}
# Key for tool arguments that are not a JSON object: the client sees the raw text, the tool
# rejects it with a validation error and the model can retry (better than dropping the call).
RAW_ARGUMENTS_KEY = "_raw_arguments"


def matched_stop(choice: dict[str, Any], answer: dict[str, Any] | None = None) -> str | None:
    """The stop string an upstream says it matched: vLLM's `stop_reason`, SGLang's
    `matched_stop` (on the choice); llama.cpp's `stopping_word` with `stop_type: "word"`, which
    its chat API only sends inside `__verbose` (a server started with --verbose) on the answer
    or one chunk of the last batch."""
    for key in ("matched_stop", "stop_reason", "stopping_word"):
        value = choice.get(key)
        if isinstance(value, str) and value:
            return value
    for where in (answer or {}, (answer or {}).get("__verbose")):
        if not isinstance(where, dict):
            continue
        word = where.get("stopping_word")
        if isinstance(word, str) and word and where.get("stop_type") in (None, "word"):
            return word
    return None


def stop_at_end(text: str, stop_sequences: list[str] | None) -> str | None:
    """The stop sequence the generated text ends with, for servers that keep it in the output
    (the longest when several match); None otherwise. OpenAI-compatible servers usually strip
    it: then only a matched_stop field tells, and "stop" stays end_turn."""
    found = [s for s in stop_sequences or () if s and text.endswith(s)]
    return max(found, key=len) if found else None


def stop_tail_length(stop_sequences: list[str] | None) -> int:
    """How much of the generated text's end stop_at_end needs to see."""
    return max((len(s) for s in stop_sequences or () if s), default=0)


def stop_reason(
    finish_reason: Any,
    *,
    matched: str | None = None,
    stop_sequences: list[str] | None = None,
    tool_emitted: bool = False,
) -> tuple[str, str | None]:
    """OpenAI finish_reason -> (Anthropic stop_reason, stop_sequence).

    `length` wins over emitted tools: a truncated call's JSON is incomplete and the client must
    know it hit the limit. Any emitted tool otherwise means tool_use (upstreams often say "stop").
    """
    if finish_reason == "length":
        return "max_tokens", None
    if tool_emitted:
        return "tool_use", None
    if finish_reason in _FINISH_MAP:
        return _FINISH_MAP[finish_reason], None
    if finish_reason in _ANTHROPIC_STOPS and finish_reason != "stop_sequence":
        return finish_reason, None
    if matched is not None and stop_sequences and matched in stop_sequences:
        return "stop_sequence", matched
    return "end_turn", None


def thinking_signature(message_id: str, thinking: str) -> str:
    """Opaque, non-empty, deterministic. Clients replay it; our request side drops it."""
    digest = hashlib.sha256(f"{message_id}\x00{thinking}".encode()).hexdigest()
    return f"iflow2api.{digest[:40]}"


def reasoning_text(message: dict[str, Any]) -> str:
    """`reasoning_content` (DeepSeek, Qwen, GLM) or `reasoning` (vLLM, OpenRouter)."""
    for key in ("reasoning_content", "reasoning"):
        value = message.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def parse_arguments(arguments: Any) -> dict[str, Any]:
    """Tool arguments -> input object. "" -> {}; not a JSON object -> {RAW_ARGUMENTS_KEY: text}."""
    if isinstance(arguments, dict):
        return arguments
    if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
        return {}
    text = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    try:
        parsed = json.loads(text)
    except ValueError:
        return {RAW_ARGUMENTS_KEY: text}
    return parsed if isinstance(parsed, dict) else {RAW_ARGUMENTS_KEY: text}


def _tool_blocks(
    message: dict[str, Any], message_id: str, tool_names: dict[str, str]
) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for position, call, function, name in message_calls(message):
        call_id = call.get("id")
        if not isinstance(call_id, str) or not call_id:
            call_id = synth_tool_id(message_id, position)
        blocks.append(
            {
                "type": "tool_use",
                "id": call_id,
                "name": tool_names.get(name, name),
                "input": parse_arguments(function.get("arguments")),
            }
        )
    return blocks


def openai_to_anthropic(
    resp: dict[str, Any],
    *,
    message_id: str,
    model: str,
    tool_names: dict[str, str] | None = None,
    stop_sequences: list[str] | None = None,
) -> dict[str, Any]:
    choice, message = first_message(resp)

    content: list[dict[str, Any]] = []
    thinking = reasoning_text(message)
    if thinking:
        signature = thinking_signature(message_id, thinking)
        content.append({"type": "thinking", "thinking": thinking, "signature": signature})
    text = message_text(message.get("content"))
    if text:  # never an empty text block: Claude Code replays it and the history is rejected
        content.append({"type": "text", "text": text})
    tools = _tool_blocks(message, message_id, tool_names or {})
    content.extend(tools)

    reason, sequence = stop_reason(
        choice.get("finish_reason"),
        matched=matched_stop(choice, resp) or stop_at_end(text, stop_sequences),
        stop_sequences=stop_sequences,
        tool_emitted=bool(tools),
    )
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": anthropic_usage(resp.get("usage")),
    }
