"""Anthropic error bodies -> OpenAI error shapes, for OpenAI clients on an Anthropic upstream.

`{"type":"error","error":{"type":T,"message":M}}` (and the `error` stream event) becomes
`{"error":{"message","type","param","code"}}` with the status an OpenAI client expects. The
upstream's wording is kept. Anthropic's "prompt is too long: N tokens > M maximum" becomes
`context_length_exceeded` (the broader, every-vendor wording check is the upstream client's,
upstream/errors.py; this one only knows the Messages API's own words).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# Anthropic error type -> (status for the OpenAI client, OpenAI error type, code).
_BY_TYPE: dict[str, tuple[int, str, str | None]] = {
    "invalid_request_error": (400, "invalid_request_error", None),
    "authentication_error": (401, "authentication_error", "invalid_api_key"),
    "billing_error": (402, "insufficient_quota", "insufficient_quota"),
    "permission_error": (403, "permission_error", None),
    "not_found_error": (404, "invalid_request_error", "not_found"),
    "request_too_large": (413, "invalid_request_error", "request_too_large"),
    "rate_limit_error": (429, "rate_limit_error", "rate_limit_exceeded"),
    "api_error": (502, "api_error", "upstream_error"),
    "timeout_error": (504, "timeout_error", "upstream_timeout"),
    "overloaded_error": (503, "api_error", "overloaded"),
}
_PROMPT_TOO_LONG = re.compile(r"prompt is too long", re.IGNORECASE)
_PROMPT_COUNTS = re.compile(r"(\d+)\s*tokens?\s*>\s*(\d+)")
_MODEL_WORD = re.compile(r"\bmodel\b", re.IGNORECASE)
# llama.cpp's /v1/messages answers an overflow with this type instead of Anthropic's.
_CONTEXT_TYPES = frozenset({"exceed_context_size_error", "context_length_exceeded"})
DISCONNECTED_MESSAGE = "upstream connection lost mid-stream"  # proxy/errors.py translates it


@dataclass(frozen=True)
class ChatError:
    """An error as an OpenAI client sees it: the status and the `error` object."""

    status: int
    message: str
    type: str
    code: str | None = None

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": None,
                          "code": self.code}}


def prompt_too_long(message: str) -> tuple[int, int] | None:
    """(prompt tokens, maximum) from Anthropic's "prompt is too long: N tokens > M maximum";
    (0, 0) when the wording is there without the figures; None when it is another error."""
    if not _PROMPT_TOO_LONG.search(message):
        return None
    counts = _PROMPT_COUNTS.search(message)
    return (int(counts.group(1)), int(counts.group(2))) if counts else (0, 0)


def _status_fallback(http_status: int) -> tuple[int, str, str | None]:
    if http_status >= 500:
        return 502, "api_error", f"upstream_{http_status}"
    if 400 <= http_status < 500:
        return http_status, "invalid_request_error", f"upstream_{http_status}"
    return 502, "api_error", "upstream_error"


def chat_error(body: Any, http_status: int = 500) -> ChatError:
    """An Anthropic error body (or stream `error` event data) and its HTTP status -> ChatError.
    Bodies that are not Anthropic-shaped still give an answer, from the status alone."""
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    kind = error.get("type") if isinstance(error.get("type"), str) else ""
    message = error.get("message")
    if not isinstance(message, str) or not message:
        message = f"upstream error ({kind or http_status})"
    status, openai_type, code = _BY_TYPE.get(kind) or _status_fallback(http_status)
    if kind in _CONTEXT_TYPES or (status in (400, 413) and prompt_too_long(message)):
        return ChatError(400, message, "invalid_request_error", "context_length_exceeded")
    if kind == "not_found_error" and _MODEL_WORD.search(message):
        code = "model_not_found"
    return ChatError(status, message, openai_type, code)


def disconnected_error() -> ChatError:
    """A stream that ended before its stop_reason: the gateway's in-band truncation error."""
    return ChatError(502, DISCONNECTED_MESSAGE, "api_error", "upstream_disconnected")
