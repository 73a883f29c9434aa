"""iFlow upstream: the official CLI's headers and signature, and the requests it sends (body
rules in iflow_body.py, the error table in iflow_errors.py).

Facts from /work/shared/spec/iflow-upstream.md (§1 chat call, §3 body, §4 errors, §5 models).
Pure functions: no I/O, no Django. The caller keeps `session-id` / `conversation-id` per account.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
import uuid
from typing import Any

from upstream.providers.base import FunctionProvider, join_url

# The body rules and the error table live beside this module; these names are part of the
# provider's interface (tests and callers use them from here).
from upstream.providers.iflow_body import (  # noqa: F401
    TOOL_NOT_EXECUTED,
    clean_schema,
    clean_tools,
    default_max_tokens,
    has_remote_images,
    normalize_messages,
    shape_body,
    thinking_requested,
)
from upstream.providers.iflow_errors import (  # noqa: F401
    envelope_error,
    error_from_payload,
    error_from_response,
)
from upstream.types import PreparedRequest, UpstreamTarget

DEFAULT_BASE_URL = "https://apis.iflow.cn/v1"
# Exactly this, no version: it is what unlocks the CLI-only models (glm-4.7, glm-5).
USER_AGENT = "iFlow-Cli"

# ---------------------------------------------------------------------------- headers / signature


def sign(api_key: str, session_id: str, timestamp_ms: int) -> str:
    """Lower-case hex HMAC-SHA256(key=api_key, msg="iFlow-Cli:{session_id}:{timestamp_ms}")."""
    message = f"iFlow-Cli:{session_id}:{timestamp_ms}"
    return hmac.new(api_key.encode("utf-8"), message.encode("utf-8"), hashlib.sha256).hexdigest()


def new_session_id() -> str:
    """A fresh `session-<uuid4>`; the caller should store it on the account and reuse it."""
    return f"session-{uuid.uuid4()}"


def new_conversation_id() -> str:
    """A fresh uuid4 conversation id; the caller should store it on the account and reuse it."""
    return str(uuid.uuid4())


def new_traceparent() -> str:
    """W3C traceparent `00-<32 hex>-<16 hex>-01`, fresh per request like the CLI's."""
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def build_headers(
    target: UpstreamTarget, *, timestamp_ms: int, traceparent: str
) -> list[tuple[str, str]]:
    """The official CLI's chat headers, in its order (the order is part of its fingerprint).

    Empty session/conversation ids on the target are replaced by fresh ones for this request
    only; a fixed pair per process was singled out as a fingerprint, and a new pair per request
    is not what the CLI does either, so callers should persist one pair per account.
    """
    session_id = target.session_id or new_session_id()
    conversation_id = target.conversation_id or new_conversation_id()
    headers: list[tuple[str, str]] = [("Content-Type", "application/json")]
    if target.api_key:
        headers.append(("Authorization", f"Bearer {target.api_key}"))
    headers += [
        ("user-agent", USER_AGENT),
        ("session-id", session_id),
        ("conversation-id", conversation_id),
    ]
    if target.api_key:
        # Without a key there is nothing to sign; the timestamp only exists for the signature.
        headers += [
            ("x-iflow-signature", sign(target.api_key, session_id, timestamp_ms)),
            ("x-iflow-timestamp", str(timestamp_ms)),
        ]
    headers += [
        ("traceparent", traceparent),
        ("accept", "*/*"),
        ("accept-language", "*"),
        ("sec-fetch-mode", "cors"),
        # Faithful to the CLI; the HTTP client must be able to decode br or strip this header.
        ("accept-encoding", "br, gzip, deflate"),
    ]
    return headers


def encode_body(body: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON, like the CLI's JSON.stringify."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def prepare_chat(
    target: UpstreamTarget,
    body: dict[str, Any],
    *,
    stream: bool,
    timestamp_ms: int | None = None,
    traceparent: str | None = None,
) -> PreparedRequest:
    """POST {base}/chat/completions with the CLI's headers and shaped body."""
    headers = build_headers(
        target,
        timestamp_ms=int(time.time() * 1000) if timestamp_ms is None else timestamp_ms,
        traceparent=traceparent or new_traceparent(),
    )
    return PreparedRequest(
        url=join_url(target.base_url or DEFAULT_BASE_URL, "chat/completions"),
        headers=headers,
        body=encode_body(shape_body(body, stream=stream)),
    )


def prepare_models(target: UpstreamTarget) -> PreparedRequest:
    """GET {base}/models with the same identity headers (iFlow had no dependable list)."""
    headers = build_headers(
        target, timestamp_ms=int(time.time() * 1000), traceparent=new_traceparent()
    )
    headers = [(k, v) for k, v in headers if k != "Content-Type"]  # a GET has no body
    return PreparedRequest(
        url=join_url(target.base_url or DEFAULT_BASE_URL, "models"), headers=headers, body=b""
    )


PROVIDER = FunctionProvider("iflow", prepare_chat, prepare_models, error_from_response,
                            error_from_payload)
