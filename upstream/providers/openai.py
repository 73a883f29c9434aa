"""Generic OpenAI-compatible upstream (DeepSeek, Moonshot, Zhipu, DashScope, OpenRouter, vLLM…).

The canonical body already is OpenAI Chat Completions, so it goes out untouched except `stream`.
Pure functions: no I/O, no Django.
"""

from __future__ import annotations

import json
from typing import Any

from iflow2api_lib.wire import dumps
from upstream.errors import (
    context_error,
    error_from_openai_object,
    error_message_from_body,
    is_context_overflow,
    looks_like_banned,
    looks_like_model_missing,
    looks_like_model_not_found,
    openai_error_fields,
    parse_json_object,
    retry_after_from_headers,
    retry_after_from_object,
)
from upstream.providers.base import FunctionProvider, join_url
from upstream.types import PreparedRequest, UpstreamError, UpstreamTarget


def build_headers(target: UpstreamTarget, *, accept: str) -> list[tuple[str, str]]:
    """Content-Type, Authorization (only with a key: local servers often need none), Accept."""
    headers: list[tuple[str, str]] = [("Content-Type", "application/json")]
    if target.api_key:
        headers.append(("Authorization", f"Bearer {target.api_key}"))
    headers.append(("Accept", accept))
    return headers


def prepare_chat(target: UpstreamTarget, body: dict[str, Any], *, stream: bool) -> PreparedRequest:
    """POST {base}/chat/completions; the body as given, with only `stream` set from the argument."""
    out = dict(body)  # shallow copy is enough: only a top-level key changes
    out["stream"] = stream
    return PreparedRequest(
        url=join_url(target.base_url, "chat/completions"),
        headers=build_headers(target, accept="text/event-stream" if stream else "application/json"),
        body=encode_json(out),
    )


def encode_json(body: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON (orjson: a tenth of the standard library's time per request). A lone
    surrogate (the gateway refuses them in client bodies, but a caller may build one) cannot be
    UTF-8: then \\u escapes, still valid JSON, not a crash."""
    try:
        return dumps(body)
    except UnicodeEncodeError:
        return json.dumps(body, separators=(",", ":")).encode("ascii")


def prepare_models(target: UpstreamTarget) -> PreparedRequest:
    """GET {base}/models."""
    headers = build_headers(target, accept="application/json")
    headers = [(k, v) for k, v in headers if k != "Content-Type"]  # a GET has no body
    return PreparedRequest(url=join_url(target.base_url, "models"), headers=headers, body=b"")


def error_from_response(status: int, headers: dict[str, str], body: bytes) -> UpstreamError:
    """A non-2xx answer: keep the upstream's message and code, map the status for our client."""
    obj = parse_json_object(body)
    fields = openai_error_fields(obj) if obj is not None else None
    message = error_message_from_body(body) or f"upstream returned HTTP {status}"
    # vLLM puts the HTTP status in `code`; only a word is a useful machine code.
    code = fields["code"] if fields and fields["code"] and not fields["code"].isdigit() else None
    retry_after = retry_after_from_headers(headers)
    if retry_after is None and obj is not None:
        retry_after = retry_after_from_object(obj)
        if retry_after is None and fields is not None:
            retry_after = retry_after_from_object(fields["raw"])

    if status in (400, 413, 500) and is_context_overflow(
            message, code, fields["type"] if fields else None):
        # 400 from most; 413 from some proxies; 500 from older llama.cpp builds.
        return context_error(message, upstream_status=str(status),
                             raw=fields["raw"] if fields else None)
    if status == 400 and code in (None, "model_not_found") and looks_like_model_missing(message):
        # llama.cpp's router mode answers an unknown model with a 400 "model 'x' not found".
        return UpstreamError(status=404, message=message, code="model_not_found",
                             upstream_status=str(status))
    ours = status if 400 <= status < 500 else 502
    action: str | None = None
    if status in (401, 403) and looks_like_banned(f"{code or ''} {message}"):
        action = "disable"  # banned: out of rotation until an admin enables it again
    elif status == 401:
        # A key that worked may be refused for a while (a provider hiccup, a key being
        # rotated): cool the account down and try it again later.
        action = "cooldown"
    elif status == 402:
        action = "cooldown"  # out of balance (DeepSeek); retrying at once is pointless
    elif status == 404 and code is None and looks_like_model_not_found(message):
        code = "model_not_found"
    elif status == 429:
        action = "cooldown"
        code = code or "rate_limit_exceeded"
    elif status == 413:
        code = code or "request_too_large"

    return UpstreamError(
        status=ours,
        message=message,
        code=code or f"upstream_{status}",
        retry_after=retry_after,
        upstream_status=str(status),
        account_action=action,
    )


def error_from_payload(obj: dict[str, Any]) -> UpstreamError | None:
    """`{"error": ...}` (or vLLM's `{"object": "error"}`) received with HTTP 200, else None."""
    if obj.get("error") is None and obj.get("object") != "error":
        return None  # every chunk of a stream comes here: the usual one in one step
    return error_from_openai_object(obj)


PROVIDER = FunctionProvider("openai", prepare_chat, prepare_models, error_from_response,
                            error_from_payload)
