"""Building blocks of a Responses `response` object, shared by the non-streaming translator and
the stream (whose `response.completed` must hold exactly what the non-streaming answer would).

Reasoning round trip: a chat upstream's reasoning text has no signature, so the `reasoning`
item's `encrypted_content` carries the text itself back to us: base64 of the compact JSON
`{"v": "iflow2api.reasoning.1", "text": ...}`. It is not secret (the client saw the summary);
the version tag lets the request side tell it from OpenAI's real ciphertext, which is ignored.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any

from proxy.translate.responses_tools import ToolMap, custom_input
from proxy.translate.usage import _count, read_usage

REASONING_TAG = "iflow2api.reasoning.1"


def encode_carried(tag: str, text: str) -> str:
    """Text the client carries back to us in an `encrypted_content` (reasoning, compaction)."""
    raw = json.dumps({"v": tag, "text": text}, ensure_ascii=False, separators=(",", ":"))
    return base64.b64encode(raw.encode("utf-8")).decode("ascii")


def decode_carried(tag: str, value: Any) -> str | None:
    """The text of our own `encrypted_content` with this tag, None for anything else."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = json.loads(base64.b64decode(value, validate=True).decode("utf-8"))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    if isinstance(parsed, dict) and parsed.get("v") == tag:
        text = parsed.get("text")
        return text if isinstance(text, str) else None
    return None


def encode_reasoning(text: str) -> str:
    return encode_carried(REASONING_TAG, text)


def decode_reasoning(value: Any) -> str | None:
    """The reasoning text of our own encrypted_content, None for anything else."""
    return decode_carried(REASONING_TAG, value)


def item_id(prefix: str, response_id: str, position: int) -> str:
    """Deterministic per response and output position: stream and non-stream ids agree."""
    digest = hashlib.sha256(f"{response_id}\x00{position}".encode()).hexdigest()[:32]
    return f"{prefix}_{digest}"


def call_id(response_id: str, position: int) -> str:
    """For upstream tool calls that came without an id."""
    return item_id("call", response_id, position)


def reasoning_item(item: str, text: str) -> dict[str, Any]:
    return {
        "id": item,
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": text}],
        "encrypted_content": encode_reasoning(text),
        "status": "completed",
    }


def output_text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(item: str, text: str, status: str = "completed") -> dict[str, Any]:
    return {
        "id": item,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [output_text_part(text)],
    }


def call_item(item: str, call: str, upstream_name: str, arguments: str, tools: ToolMap,
              status: str = "completed") -> dict[str, Any]:
    """A function_call item, or a custom_tool_call for a custom tool (input unwrapped)."""
    target = tools.target(upstream_name)
    out: dict[str, Any] = {"id": item}
    if target.custom:
        out.update(type="custom_tool_call", status=status, call_id=call, name=target.name,
                   input=custom_input(arguments))
    else:
        # "" is not JSON: a call without arguments takes none, i.e. {}.
        out.update(type="function_call", status=status, call_id=call, name=target.name,
                   arguments=arguments or "{}")
    if target.namespace:
        out["namespace"] = target.namespace
    return out


def responses_usage(usage: dict[str, Any] | None, *, input_estimate: int = 0,
                    output_estimate: int = 0) -> dict[str, Any]:
    """Chat usage -> Responses usage. input_tokens includes cached ones (unlike Anthropic's).
    Missing figures are replaced by the caller's estimates rather than reported as 0."""
    usage = usage if isinstance(usage, dict) else {}
    tokens = read_usage(usage)
    prompt = tokens.prompt or input_estimate
    completion = tokens.completion or output_estimate
    details = usage.get("completion_tokens_details")
    reasoning = _count(details.get("reasoning_tokens")) if isinstance(details, dict) else 0
    cached = min(tokens.cached, prompt)
    return {
        "input_tokens": prompt,
        # cache_write_tokens: required by the openai SDK (3.5x); 0 when the upstream is silent.
        "input_tokens_details": {"cached_tokens": cached,
                                 "cache_write_tokens": min(tokens.cache_write, prompt - cached)},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": min(reasoning, completion)},
        "total_tokens": prompt + completion,
    }


def final_status(finish_reason: Any) -> tuple[str, dict[str, str] | None]:
    """finish_reason -> (status, incomplete_details)."""
    if finish_reason == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    if finish_reason == "content_filter":
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


def build_response(
    echo: dict[str, Any],
    *,
    response_id: str,
    created_at: int,
    model: str,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None = None,
    incomplete_details: dict[str, str] | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The response object; `echo` holds the request fields the API repeats back
    (see responses_request.response_echo)."""
    response: dict[str, Any] = {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "error": error,
        "incomplete_details": incomplete_details,
        "model": model,
        "output": output,
        "usage": usage,
    }
    response.update(echo)
    return response
