"""Anthropic Messages response (non-streaming) -> OpenAI chat completion, plus the stop-reason
and usage mappings the stream side shares (the reverse of anthropic_response.py).

Thinking becomes `reasoning_content`, the field the gateway's OpenAI side already carries (its
reasoning policy in openai_chat.py applies on top). Signatures, redacted thinking, citations and
server-tool blocks have no OpenAI form and are dropped.
"""

from __future__ import annotations

import json
from typing import Any

from proxy.translate.anthropic_tools import synth_tool_id
from proxy.translate.openai_chat import new_completion_id
from proxy.translate.types import UpstreamResponseError
from proxy.translate.usage import _count

_FINISH_BY_STOP = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def finish_reason(stop_reason: Any, *, tool_calls: bool) -> str:
    """Anthropic stop_reason -> OpenAI finish_reason. `length` wins over emitted calls (their
    JSON may be cut short); otherwise emitted calls mean tool_calls and none means no tool_calls."""
    finish = _FINISH_BY_STOP.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"
    if finish in ("length", "content_filter"):
        return finish
    return "tool_calls" if tool_calls else ("stop" if finish == "tool_calls" else finish)


def chat_usage(usage: Any) -> dict[str, Any]:
    """Anthropic usage -> OpenAI usage: prompt_tokens includes cache reads and cache writes."""
    usage = usage if isinstance(usage, dict) else {}
    cache_read = _count(usage.get("cache_read_input_tokens"))
    prompt = (_count(usage.get("input_tokens")) + cache_read
              + _count(usage.get("cache_creation_input_tokens")))
    completion = _count(usage.get("output_tokens"))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        # cache_write_tokens (OpenRouter's name): what the gateway prices as cache writes.
        "prompt_tokens_details": {"cached_tokens": cache_read,
                                  "cache_write_tokens": _count(
                                      usage.get("cache_creation_input_tokens"))},
    }


def tool_arguments(tool_input: Any) -> str:
    """A tool_use `input` as OpenAI `arguments` (compact JSON; {} when absent)."""
    return json.dumps(tool_input if tool_input is not None else {}, ensure_ascii=False,
                      separators=(",", ":"))


def _message(content: list[Any], completion_id: str) -> dict[str, Any]:
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in content:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])  # citation segments of one answer: joined as they are
        elif kind == "thinking" and isinstance(block.get("thinking"), str):
            reasoning.append(block["thinking"])
        elif kind == "tool_use" and isinstance(block.get("name"), str) and block["name"]:
            call_id = block.get("id") if isinstance(block.get("id"), str) else ""
            calls.append({
                "id": call_id or synth_tool_id(completion_id, len(calls)),
                "type": "function",
                "function": {"name": block["name"],
                             "arguments": tool_arguments(block.get("input"))},
            })
    text = "".join(texts)
    message: dict[str, Any] = {"role": "assistant", "content": text or (None if calls else "")}
    if reasoning:
        message["reasoning_content"] = "\n\n".join(reasoning)
    if calls:
        message["tool_calls"] = calls
    return message


def anthropic_to_chat(
    resp: Any,
    *,
    model: str,
    completion_id: str | None = None,
    created: int = 0,
) -> dict[str, Any]:
    """A 200 Messages body -> a chat.completion (UpstreamResponseError when it is not one)."""
    if not isinstance(resp, dict):
        raise UpstreamResponseError("upstream response is not a JSON object")
    if resp.get("type") == "error":
        error = resp.get("error")
        detail = error.get("message") if isinstance(error, dict) else error
        raise UpstreamResponseError(f"upstream error: {detail}")
    content = resp.get("content")
    if content is None and resp.get("type") == "message":
        content = []  # an empty answer some servers send as null
    if not isinstance(content, list):
        raise UpstreamResponseError("upstream response has no content list")
    completion_id = completion_id or new_completion_id()
    message = _message(content, completion_id)
    finish = finish_reason(resp.get("stop_reason"), tool_calls="tool_calls" in message)
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": finish}],
        "usage": chat_usage(resp.get("usage")),
    }
