"""Anthropic Messages-compatible upstream (Zhipu, Moonshot/Kimi, DeepSeek, MiniMax, llama.cpp,
Anthropic itself).

Its wire protocol is Messages, not chat: the proxy hands it Messages bodies (the client's own,
or translated from chat) and reads Messages answers and events. The base URL is written the way
vendors document it for ANTHROPIC_BASE_URL (`https://open.bigmodel.cn/api/anthropic`); the
`/v1/...` paths are appended, also to a base that already ends in `/v1`.
Pure functions: no I/O, no Django.
"""

from __future__ import annotations

from typing import Any

from upstream.errors import (
    context_error,
    error_message_from_body,
    is_context_overflow,
    looks_like_banned,
    looks_like_model_missing,
    looks_like_model_not_found,
    parse_json_object,
    retry_after_from_headers,
)
from upstream.providers.base import FunctionProvider, join_url
from upstream.providers.openai import encode_json
from upstream.types import PreparedRequest, UpstreamError, UpstreamTarget

WIRE = "messages"
DEFAULT_VERSION = "2023-06-01"
AUTH_HEADERS = ("x-api-key", "bearer")
BETA_POLICIES = ("forward", "drop", "allow")

# Anthropic's error types: an error document of one of these is passed to Anthropic clients
# as it is; anything else (llama.cpp's exceed_context_size_error…) is mapped like other errors.
ANTHROPIC_ERROR_TYPES = frozenset({
    "invalid_request_error", "authentication_error", "billing_error", "permission_error",
    "not_found_error", "request_too_large", "rate_limit_error", "api_error", "timeout_error",
    "overloaded_error",
})
# Error type -> Anthropic's HTTP status for it, for an error that came in-band (an `error`
# event) where no HTTP status says it.
_STATUS_BY_TYPE = {
    "invalid_request_error": 400, "authentication_error": 401, "billing_error": 402,
    "permission_error": 403, "not_found_error": 404, "request_too_large": 413,
    "rate_limit_error": 429, "api_error": 500, "timeout_error": 504, "overloaded_error": 529,
}


def api_url(base_url: str, path: str) -> str:
    """`{base}/v1/{path}`; a base that already ends in `/v1` gets only `/{path}`."""
    base = base_url.rstrip("/")
    if base.endswith("/v1"):
        base = base[: -len("/v1")]
    return join_url(base, f"v1/{path}")


def beta_header(target: UpstreamTarget, client_betas: str | None) -> str | None:
    """The anthropic-beta value to send for the client's, under the account's policy. Vendors
    reject betas they do not know (a recurring break for Claude Code): drop is the default."""
    if not client_betas or not client_betas.strip():
        return None
    if target.beta_policy == "forward":
        return client_betas.strip()
    if target.beta_policy == "allow":
        allowed = set(target.beta_allowlist)
        kept = [b.strip() for b in client_betas.split(",") if b.strip() in allowed]
        return ",".join(kept) or None
    return None


def build_headers(target: UpstreamTarget, *, accept: str, client_betas: str | None = None,
                  client_version: str | None = None,
                  with_body: bool = True) -> list[tuple[str, str]]:
    """Content-Type, the key (x-api-key or Authorization: Bearer; none without a key: local
    servers often need none), anthropic-version (the client's, else the account's),
    anthropic-beta under the account's policy, Accept."""
    headers: list[tuple[str, str]] = [("Content-Type", "application/json")] if with_body else []
    if target.api_key:
        if target.auth_header == "bearer":
            headers.append(("Authorization", f"Bearer {target.api_key}"))
        else:
            headers.append(("x-api-key", target.api_key))
    version = (client_version or "").strip() or target.anthropic_version or DEFAULT_VERSION
    headers.append(("anthropic-version", version))
    betas = beta_header(target, client_betas)
    if betas:
        headers.append(("anthropic-beta", betas))
    headers.append(("Accept", accept))
    return headers


def _body_bytes(body: bytes | dict[str, Any]) -> bytes:
    return body if isinstance(body, bytes) else encode_json(body)


def prepare_messages(target: UpstreamTarget, body: bytes | dict[str, Any], *, stream: bool,
                     client_betas: str | None = None,
                     client_version: str | None = None) -> PreparedRequest:
    """POST {base}/v1/messages with `body` as given (bytes go out byte for byte: the caller has
    already put the upstream model id in; `stream` only picks the Accept header)."""
    return PreparedRequest(
        url=api_url(target.base_url, "messages"),
        headers=build_headers(target, accept="text/event-stream" if stream else
                              "application/json", client_betas=client_betas,
                              client_version=client_version),
        body=_body_bytes(body),
    )


def prepare_count_tokens(target: UpstreamTarget, body: bytes | dict[str, Any], *,
                         client_betas: str | None = None,
                         client_version: str | None = None) -> PreparedRequest:
    """POST {base}/v1/messages/count_tokens."""
    return PreparedRequest(
        url=api_url(target.base_url, "messages/count_tokens"),
        headers=build_headers(target, accept="application/json", client_betas=client_betas,
                              client_version=client_version),
        body=_body_bytes(body),
    )


def prepare_chat(target: UpstreamTarget, body: dict[str, Any], *, stream: bool) -> PreparedRequest:
    """This upstream does not speak chat: the proxy translates chat bodies to Messages first
    (proxy/wire.py), so reaching this is a bug, not a client error."""
    raise TypeError("the anthropic provider takes Messages bodies: use prepare_messages")


def prepare_models(target: UpstreamTarget, after_id: str = "") -> PreparedRequest:
    """GET {base}/v1/models (Anthropic's list: `data`, `has_more`, `last_id`; servers that
    answer OpenAI's list shape are read the same way)."""
    query = f"?after_id={after_id}" if after_id else ""
    return PreparedRequest(
        url=api_url(target.base_url, "models") + query,
        headers=build_headers(target, accept="application/json", with_body=False),
        body=b"",
    )


def _error_fields(obj: dict[str, Any] | None) -> tuple[str, str, dict[str, Any] | None]:
    """(type, message, the document when it is a genuine Anthropic error)."""
    if obj is None:
        return "", "", None
    error = obj.get("error")
    if isinstance(error, dict):
        kind = error.get("type") if isinstance(error.get("type"), str) else ""
        message = error.get("message") if isinstance(error.get("message"), str) else ""
        native = obj if kind in ANTHROPIC_ERROR_TYPES and obj.get("type") == "error" else None
        return kind, message, native
    if isinstance(error, str):
        return "", error, None
    return "", "", None


def _inner(obj: dict[str, Any] | None) -> dict[str, Any] | None:
    error = (obj or {}).get("error")
    return error if isinstance(error, dict) else None


def _our_status(status: int, kind: str) -> int:
    if status == 529 or kind == "overloaded_error":
        return 503  # overloaded: another account may well answer
    if 400 <= status < 500:
        return status
    if status == 504 or kind == "timeout_error":
        return 504
    return 502


def error_from_response(status: int, headers: dict[str, str], body: bytes) -> UpstreamError:
    """A non-2xx answer: the upstream's message and, for a genuine Anthropic error, its
    document (passed through to Anthropic clients with the upstream's status)."""
    obj = parse_json_object(body)
    kind, message, native = _error_fields(obj)
    message = message or error_message_from_body(body) or f"upstream returned HTTP {status}"
    ours = _our_status(status, kind)
    code: str | None = None
    action: str | None = None
    if status in (401, 403) and looks_like_banned(message):
        action = "disable"
    elif status == 401:
        action, code = "cooldown", "invalid_api_key"
    elif status == 402 or kind == "billing_error":
        action, code = "cooldown", "insufficient_quota"
    elif status == 429:
        action, code = "cooldown", "rate_limit_exceeded"
    elif ours == 503:
        code = "overloaded"
    elif status == 404 and looks_like_model_not_found(message):
        code = "model_not_found"
    elif status == 400 and looks_like_model_missing(message):  # llama.cpp's router mode
        ours, code = 404, "model_not_found"
    elif status in (400, 413) and is_context_overflow(message, None, kind):
        # The one mapping (upstream/errors.py), with the figures: llama.cpp's /v1/messages
        # answers with its own exceed_context_size_error (n_prompt_tokens, n_ctx), which an
        # Anthropic client gets as "prompt is too long: N tokens > M maximum".
        error = context_error(message, upstream_status=str(status), raw=_inner(obj))
        error.native = native
        return error
    elif status == 413:
        code = "request_too_large"
    return UpstreamError(
        status=ours, message=message, code=code or f"upstream_{status}",
        retry_after=retry_after_from_headers(headers), upstream_status=str(status),
        account_action=action, native=native,
    )


def error_from_payload(obj: dict[str, Any]) -> UpstreamError | None:
    """An `error` event (or a 200 body that is an error document), else None."""
    if obj.get("type") != "error":
        return None
    kind, message, native = _error_fields(obj)
    status = _STATUS_BY_TYPE.get(kind, 500)
    ours = _our_status(status, kind)
    if is_context_overflow(message, None, kind):
        error = context_error(message, upstream_status=str(status), raw=_inner(obj))
        error.native = native
        return error
    code = "overloaded" if ours == 503 else None
    return UpstreamError(status=ours, message=message or "upstream error", code=code or
                         f"upstream_{kind or 'error'}", upstream_status=str(status),
                         native=native)


PROVIDER = FunctionProvider("anthropic", prepare_chat, prepare_models, error_from_response,
                            error_from_payload, wire=WIRE, prepare_messages=prepare_messages,
                            prepare_count_tokens=prepare_count_tokens)
