"""JSON and SSE bytes on the wire, with orjson when it is installed (several times faster than
the standard library on the per-chunk path), the standard library otherwise."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

try:
    import orjson
except ImportError:  # pragma: no cover - orjson is a dependency; keep working without it
    orjson = None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _loads_without_orjson(data: bytes | str) -> Any:  # pragma: no cover - orjson is installed
    try:
        return json.loads(data, parse_constant=_refuse_constant)
    except RecursionError as exc:
        raise ValueError("depth limit exceeded") from exc


# Strict JSON, for client bodies and upstream answers alike: NaN/Infinity, lone surrogates (they
# cannot be re-encoded as UTF-8) and nesting beyond 1024 levels are a ValueError, never a value
# or a RecursionError further on. No second try with the standard library: it accepts all
# three. orjson's own function, not a wrapper: it is called for every upstream event.
loads: Callable[[bytes | str], Any] = (
    orjson.loads if orjson is not None else _loads_without_orjson)


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
