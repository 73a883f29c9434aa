"""Reading what an OpenAI-shaped upstream sends: a chat.completion or a chat.completion.chunk.

The one reader for the translators that turn upstream chat output into another protocol
(Anthropic Messages, Responses API): the in-band error, the usage and the first choice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from proxy.translate.types import UpstreamResponseError
from proxy.translate.usage import chunk_usage


@dataclass(frozen=True)
class ChoiceStep:
    """What one index-0 choice of a chunk brings."""

    choice: dict[str, Any]
    delta: dict[str, Any] | None
    finish_reason: str | None  # a non-empty string, else None


@dataclass(frozen=True)
class ChunkReading:
    error: str | None = None  # in-band upstream error (200 status, no choices): its message
    usage: dict[str, Any] | None = None  # cumulative when repeated: the last one wins
    steps: list[ChoiceStep] = field(default_factory=list)


def read_chunk(chunk: dict[str, Any]) -> ChunkReading:
    """Choices other than index 0 are skipped: n > 1 has no Anthropic or Responses form."""
    choices = chunk.get("choices")
    error = chunk.get("error")
    if error is not None and not choices:
        detail = error.get("message") if isinstance(error, dict) else None
        return ChunkReading(error=str(detail or error))
    usage = chunk_usage(chunk)
    steps = []
    for choice in choices if isinstance(choices, list) else []:
        if not isinstance(choice, dict) or choice.get("index", 0) not in (0, None):
            continue
        delta = choice.get("delta")
        finish = choice.get("finish_reason")
        steps.append(ChoiceStep(choice, delta if isinstance(delta, dict) else None,
                                finish if isinstance(finish, str) and finish else None))
    return ChunkReading(usage=usage, steps=steps)


def first_message(resp: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """A whole chat.completion's first choice and its message (empty dicts where missing).

    Raises UpstreamResponseError for a non-object or an in-band error without choices; a
    usage-only answer reads as an empty message."""
    if not isinstance(resp, dict):
        raise UpstreamResponseError("upstream response is not a JSON object")
    choices = resp.get("choices")
    if not isinstance(choices, list) or not choices:
        error = resp.get("error")
        if error is not None:
            detail = error.get("message") if isinstance(error, dict) else error
            raise UpstreamResponseError(f"upstream error: {detail}")
        choices = [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message")
    return choice, message if isinstance(message, dict) else {}


def message_text(content: Any) -> str:
    """A message's `content` as text: a string, or the text of its parts (some servers)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


def message_calls(message: dict[str, Any]) -> list[tuple[int, dict[str, Any], dict[str, Any], str]]:
    """(position among all calls, call, its function, name) for each call a client could
    execute: it has a function with a non-empty name. Reads the legacy `function_call` too."""
    calls = message.get("tool_calls")
    if not isinstance(calls, list):
        legacy = message.get("function_call")
        calls = [{"function": legacy}] if isinstance(legacy, dict) else []
    out = []
    for position, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            continue
        name = function.get("name")
        if isinstance(name, str) and name:
            out.append((position, call, function, name))
    return out
