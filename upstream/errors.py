"""Helpers shared by the providers' error mapping. Pure functions on bytes/dicts, stdlib only."""

from __future__ import annotations

import json
import re
import time
from email.utils import parsedate_to_datetime
from typing import Any

from upstream.types import UpstreamError

# How much of a non-JSON body we keep as the message (HTML error pages can be huge).
MAX_TEXT_MESSAGE = 500

_CONTEXT_RE = re.compile(
    r"context[_ ]length|context window|maximum context|too many tokens|prompt is too long"
    r"|input is too long|上下文|context size|model token limit|prompt exceeds max length",
    re.IGNORECASE,
)
# Error types/codes that mean an oversized prompt whatever the message says (llama.cpp's type).
CONTEXT_ERROR_TYPES = frozenset({"context_length_exceeded", "exceed_context_size_error"})
# The figures in the wordings: (pattern, group of the prompt's tokens, group of the limit).
_CONTEXT_FIGURES: tuple[tuple[re.Pattern[str], int, int], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), prompt, limit) for pattern, prompt, limit in (
        # Anthropic, and what we answer Anthropic clients with
        (r"prompt is too long:\s*(\d+)\s*tokens?\s*>\s*(\d+)", 1, 2),
        # llama.cpp
        (r"\((\d+) tokens?\) exceeds the available context size \((\d+) tokens?\)", 1, 2),
        (r"\((\d+) tokens?\) is larger than the max context size \((\d+) tokens?\)", 1, 2),
        # OpenAI, vLLM, DeepSeek: "maximum context length is M tokens. However, you requested
        # N tokens (… in the messages, … in the completion)" / "your messages resulted in N"
        (r"maximum context length is (\d+)[^.]*\.\s*however,? (?:you requested|your "
         r"(?:messages|request|prompt) (?:resulted in|has|contains?)) (\d+)", 2, 1),
        (r"maximum context length is (\d+)", 0, 1),
        (r"(?:model )?token limit:?\s*(\d+)", 0, 1),  # Kimi: "exceeded model token limit: M"
    ))
_MODEL_MISSING_RE = re.compile(  # stricter than _MODEL_NOT_FOUND_RE: read on a plain 400
    r"model\b[^\n]{0,120}?\b(not found|does not exist|not exist)|no such model"
    r"|(unknown|invalid) model(\s+(name|id))?\s*[:'\"`]",
    re.IGNORECASE,
)
_MODEL_NOT_FOUND_RE = re.compile(
    r"model.*(not (be )?found|does not exist|not exist|unknown|not supported)"
    r"|(unknown|invalid) model|no such model",
    re.IGNORECASE,
)

# Wording for an account (not a key) that the provider has shut out for good.
_BANNED_RE = re.compile(
    r"\b(banned|suspended|deactivated|terminated)\b"
    r"|account[^.]{0,40}\b(disabled|blocked|frozen)\b|封禁|封号|冻结|停用",
    re.IGNORECASE,
)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After value (delta-seconds or HTTP-date); None if absent/bad."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        # NaN/inf or negative deltas are garbage, not a reason to wait forever.
        if seconds != seconds or seconds in (float("inf"), float("-inf")) or seconds < 0:
            return None
        return seconds
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    # A date already in the past means "retry now".
    return max(0.0, when.timestamp() - time.time())


def retry_after_from_headers(headers: dict[str, str]) -> float | None:
    """Retry hint from response headers (lower-case names); `retry-after-ms` is more precise."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        parsed = parse_retry_after(ms)
        if parsed is not None:
            return parsed / 1000.0
    return parse_retry_after(headers.get("retry-after"))


def retry_after_from_object(obj: dict[str, Any]) -> float | None:
    """Retry hint carried inside a JSON error object (some gateways put it there)."""
    for key in ("retry_after", "retryAfter", "retry_after_seconds"):
        value = obj.get(key)
        if value is not None and not isinstance(value, bool):
            parsed = parse_retry_after(str(value))
            if parsed is not None:
                return parsed
    value = obj.get("retry_after_ms")
    if value is not None and not isinstance(value, bool):
        parsed = parse_retry_after(str(value))
        if parsed is not None:
            return parsed / 1000.0
    return None


def parse_json_object(body: bytes) -> dict[str, Any] | None:
    """The body as a JSON object, or None when it is not one."""
    if not body:
        return None
    try:
        obj = json.loads(body.decode("utf-8", errors="replace"))
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def openai_error_fields(obj: dict[str, Any]) -> dict[str, Any] | None:
    """`{"error": {...}}`, `{"error": "text"}` or vLLM's `{"object": "error", ...}` → its fields.

    Returns {"message", "type", "code", "param", "raw"} or None when `obj` is not such an error.
    `error: null` (sent in some normal chunks) is not an error.
    """
    err = obj.get("error")
    if isinstance(err, dict) and err:
        src = err
    elif isinstance(err, str) and err:
        return {"message": err, "type": None, "code": None, "param": None, "raw": obj}
    elif obj.get("object") == "error" and "message" in obj:
        src = obj
    else:
        return None
    message = src.get("message")
    if not isinstance(message, str):
        message = "" if message is None else json.dumps(message, ensure_ascii=False)
    code = src.get("code")
    return {
        "message": message,
        "type": src.get("type") if isinstance(src.get("type"), str) else None,
        "code": None if code is None else str(code),
        "param": src.get("param"),
        "raw": src,
    }


def envelope_fields(obj: dict[str, Any]) -> tuple[str, str] | None:
    """iFlow's `{"status": "434", "msg": "...", "body": null}` → (status, msg), else None."""
    if "status" not in obj or "msg" not in obj or "choices" in obj:
        return None
    status = obj.get("status")
    if status is None or isinstance(status, bool):
        return None
    msg = obj.get("msg")
    return str(status).strip(), msg if isinstance(msg, str) else ("" if msg is None else str(msg))


def error_message_from_body(body: bytes) -> str:
    """Best-effort message: OpenAI error message, iFlow envelope msg, else the first 500 chars."""
    obj = parse_json_object(body)
    if obj is not None:
        fields = openai_error_fields(obj)
        if fields and fields["message"]:
            return fields["message"]
        env = envelope_fields(obj)
        if env and env[1]:
            return env[1]
        for key in ("message", "detail", "msg"):
            value = obj.get(key)
            if isinstance(value, str) and value:
                return value
    text = body.decode("utf-8", errors="replace").strip()
    return text[:MAX_TEXT_MESSAGE]


def looks_like_context_overflow(text: str) -> bool:
    """Wording used by OpenAI, vLLM, DeepSeek, Kimi… for an oversized prompt."""
    return bool(_CONTEXT_RE.search(text))


def _positive(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def context_figures(message: str, raw: dict[str, Any] | None = None) -> tuple[int | None,
                                                                              int | None]:
    """(prompt tokens, context limit) an overflow error states, each None when it does not:
    llama.cpp's `n_prompt_tokens` / `n_ctx` fields first, else the numbers in the wording."""
    prompt = _positive((raw or {}).get("n_prompt_tokens"))
    limit = _positive((raw or {}).get("n_ctx"))
    for pattern, prompt_group, limit_group in _CONTEXT_FIGURES:
        if prompt is not None and limit is not None:
            break
        found = pattern.search(message)
        if found is None:
            continue
        if prompt is None and prompt_group:
            prompt = int(found.group(prompt_group))
        if limit is None:
            limit = int(found.group(limit_group))
    return prompt, limit


def is_context_overflow(message: str, code: str | None = None, kind: str | None = None) -> bool:
    """An oversized prompt, by its code or type (OpenAI's, llama.cpp's) or its wording."""
    return code in CONTEXT_ERROR_TYPES or kind in CONTEXT_ERROR_TYPES or \
        looks_like_context_overflow(message)


def context_error(message: str, *, upstream_status: str | None,
                  raw: dict[str, Any] | None = None) -> UpstreamError:
    """The one mapping of a context overflow: 400 `context_length_exceeded`, the figures when
    the upstream gave them, and no account action (the prompt is the problem, not the
    account: no cooldown, no block, no failover)."""
    prompt, limit = context_figures(message, raw)
    return UpstreamError(
        status=400, message=message or "the prompt is too long for the model's context",
        code="context_length_exceeded", upstream_status=upstream_status,
        prompt_tokens=prompt, context_limit=limit)


def prompt_too_long_message(prompt_tokens: int, limit: int) -> str:
    """Anthropic's wording for an oversized prompt, which Claude Code reacts to by compacting
    the conversation (it reads both figures)."""
    return f"prompt is too long: {prompt_tokens} tokens > {limit} maximum"


def looks_like_model_missing(text: str) -> bool:
    """"model 'x' not found" and alike, strict enough to read on a 400 (llama.cpp's router
    mode answers an unknown model so), where other model complaints are not a 404."""
    return bool(_MODEL_MISSING_RE.search(text))


def looks_like_banned(text: str) -> bool:
    """A refusal that retrying later cannot cure: the account is banned, suspended or closed."""
    return bool(_BANNED_RE.search(text))


def looks_like_model_not_found(text: str) -> bool:
    return bool(_MODEL_NOT_FOUND_RE.search(text))


def is_success_code(code: str) -> bool:
    """Whether an in-body status code looks like success ("200", "0", "ok")."""
    code = code.strip().lower()
    if code in ("0", "ok", "success"):
        return True
    return code.isdigit() and len(code) == 3 and code.startswith("2")


def _status_from_openai_code(code: str | None, etype: str | None, message: str) -> int:
    """Status for an OpenAI-style error object that came without a meaningful HTTP status."""
    words = f"{code or ''} {etype or ''}".lower()
    if code and code.isdigit() and len(code) == 3 and code[0] in "45":
        return int(code)
    if "rate_limit" in words or "insufficient_quota" in words or "too_many" in words:
        return 429
    if "context_length" in words or "context_size" in words or \
            looks_like_context_overflow(message):
        return 400
    if "auth" in words or "invalid_api_key" in words:
        return 401
    if "permission" in words:
        return 403
    if "not_found" in words or "model_not_found" in words:
        return 404
    if "invalid_request" in words:
        return 400
    return 502


def error_from_openai_object(
    obj: dict[str, Any], *, http_status: int | None = None
) -> UpstreamError | None:
    """Map an OpenAI-style error object (received in a 200 body or SSE payload) to UpstreamError."""
    fields = openai_error_fields(obj)
    if fields is None:
        return None
    message = fields["message"] or "upstream error"
    code = fields["code"]
    status = http_status or _status_from_openai_code(code, fields["type"], message)
    if status >= 500:
        status = 502
    if status in (400, 413, 502) and is_context_overflow(message, code, fields["type"]):
        upstream = code if code else (str(http_status) if http_status else None)
        return context_error(message, upstream_status=upstream, raw=fields["raw"])
    if status in (400, 404) and code != "model_not_found" and looks_like_model_missing(message):
        code = "model_not_found"
        status = 404
    retry_after = retry_after_from_object(fields["raw"]) or retry_after_from_object(obj)
    return UpstreamError(
        status=status,
        message=message,
        code=(f"upstream_{code}" if code.isdigit() else code) if code else None,
        retry_after=retry_after,
        upstream_status=code if code else (str(http_status) if http_status else None),
        account_action="cooldown" if status == 429 else None,
    )
