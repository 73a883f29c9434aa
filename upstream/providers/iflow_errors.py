"""iFlow's errors: HTTP statuses and the 200 envelopes with their own codes (spec §4), mapped
to the statuses we answer with and what the account pool should do. Pure functions."""

from __future__ import annotations

from typing import Any

from upstream.errors import (
    context_error,
    envelope_fields,
    error_from_openai_object,
    error_message_from_body,
    is_context_overflow,
    is_success_code,
    openai_error_fields,
    parse_json_object,
    retry_after_from_headers,
    retry_after_from_object,
)
from upstream.types import UpstreamError

# ---------------------------------------------------------------------------- errors

# envelope code → (our status, our code or None for "upstream_<code>", account action)
ENVELOPE_MAP: dict[str, tuple[int, str | None, str | None]] = {
    "434": (401, None, "disable"),
    "438": (401, None, "disable"),
    "439": (401, None, "refresh"),
    "435": (400, "model_not_supported", None),
    "429": (429, "rate_limit_exceeded", "cooldown"),
    "449": (429, "rate_limit_exceeded", "cooldown"),
    "8211": (429, "rate_limit_exceeded", "cooldown"),
    # Context overflow: 400 like every other upstream's (upstream/errors.context_error).
    "511": (400, "context_length_exceeded", None),
    "413": (400, "context_length_exceeded", None),
    "514": (502, None, None),
}


def envelope_error(code: str, message: str, *, retry_after: float | None = None) -> UpstreamError:
    """Map one iFlow status code (from an envelope or an error object) per spec §4."""
    status, our_code, action = ENVELOPE_MAP.get(code, (502, None, None))
    if our_code == "context_length_exceeded":
        return context_error(message, upstream_status=code)
    return UpstreamError(
        status=status,
        # Keep iFlow's wording: clients (Claude Code) match on it.
        message=message or f"iFlow upstream error {code}",
        code=our_code or f"upstream_{code}",
        retry_after=retry_after if status == 429 else None,
        upstream_status=code,
        account_action=action,
    )


def error_from_payload(obj: dict[str, Any]) -> UpstreamError | None:
    """An HTTP-200 JSON object (body or SSE payload) that is really an error, else None."""
    env = envelope_fields(obj)
    if env is not None:
        code, msg = env
        if is_success_code(code):
            return None
        return envelope_error(code, msg, retry_after=retry_after_from_object(obj))
    fields = openai_error_fields(obj)
    if fields is not None and fields["code"] in ENVELOPE_MAP:
        return envelope_error(
            fields["code"], fields["message"], retry_after=retry_after_from_object(obj)
        )
    return error_from_openai_object(obj)


def error_from_response(status: int, headers: dict[str, str], body: bytes) -> UpstreamError:
    """A non-2xx HTTP answer from iFlow. A known envelope code in the body wins over the status."""
    obj = parse_json_object(body)
    message = error_message_from_body(body)
    retry_after = retry_after_from_headers(headers)
    if retry_after is None and obj is not None:
        retry_after = retry_after_from_object(obj)
    if obj is not None:
        env = envelope_fields(obj)
        fields = openai_error_fields(obj)
        code = env[0] if env else (fields["code"] if fields else None)
        if code in ENVELOPE_MAP:
            return envelope_error(code, message, retry_after=retry_after)

    seen = str(status)
    if status == 401:
        return UpstreamError(
            status=401,
            message=message or "iFlow rejected the API key (HTTP 401, expired?)",
            code="upstream_401",
            upstream_status=seen,
            account_action="refresh",
        )
    if status == 406:
        # Seen for CLI-only models when the CLI headers were missing or refused: our fault or
        # iFlow's, never the client's, hence 502.
        detail = f": {message}" if message else ""
        return UpstreamError(
            status=502,
            message=(
                "iFlow refused the request headers (HTTP 406; CLI-only model without "
                f"accepted iFlow CLI headers){detail}"
            ),
            code="upstream_406",
            upstream_status=seen,
        )
    if status == 429:
        return UpstreamError(
            status=429,
            message=message or "iFlow rate limit (HTTP 429)",
            code="rate_limit_exceeded",
            retry_after=retry_after,
            upstream_status=seen,
            account_action="cooldown",
        )
    if status == 413 or (status == 400 and is_context_overflow(message)):
        return context_error(
            message or "Request too large for the model's context (HTTP 413)",
            upstream_status=seen, raw=obj)
    ours = status if 400 <= status < 500 else 502
    return UpstreamError(
        status=ours,
        message=message or f"iFlow returned HTTP {status}",
        code=f"upstream_{status}",
        retry_after=retry_after,
        upstream_status=seen,
    )


