"""JSON and SSE bytes on the wire, with orjson when it is installed (several times faster than
the standard library on the per-chunk path), the standard library otherwise."""

from __future__ import annotations

import json
from typing import Any

try:
    import orjson
except ImportError:  # pragma: no cover - orjson is a dependency; keep working without it
    orjson = None


def loads(data: bytes | str) -> Any:
    if orjson is not None:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass  # e.g. integers beyond 64 bits: the standard library decides
    return json.loads(data)


def dumps(data: Any) -> bytes:
    if orjson is not None:
        try:
            return orjson.dumps(data)
        except TypeError:
            pass
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def sse_data(data: Any) -> bytes:
    """One data-only event (OpenAI chunks)."""
    return b"data: " + dumps(data) + b"\n\n"


def sse_event(name: str, data: Any) -> bytes:
    """One named event (Anthropic): `event:` line, `data:` line, blank line."""
    return b"event: " + name.encode() + b"\ndata: " + dumps(data) + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"
SSE_COMMENT_PING = b": ping\n\n"
