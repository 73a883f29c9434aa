"""Reading SSE bytes in tests, independent of the gateway's own parser."""

from __future__ import annotations

import json
from typing import Any


def split_events(raw: bytes) -> list[str]:
    """Events as text blocks; asserts the stream is made of complete `\\n\\n`-ended events."""
    text = raw.decode()
    assert text.endswith("\n\n"), f"stream does not end with a blank line: {text[-80:]!r}"
    return [block for block in text.split("\n\n") if block]


def data_payloads(raw: bytes) -> list[str]:
    """The `data:` values of all events, comments skipped."""
    out = []
    for block in split_events(raw):
        lines = [line for line in block.split("\n") if not line.startswith(":")]
        if not lines:
            continue
        assert all(line.startswith("data: ") for line in lines), block
        out.append("\n".join(line[6:] for line in lines))
    return out


def openai_chunks(raw: bytes) -> list[dict[str, Any]]:
    payloads = data_payloads(raw)
    assert payloads.count("[DONE]") == 1 and payloads[-1] == "[DONE]", payloads[-3:]
    return [json.loads(p) for p in payloads[:-1]]


def named_events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """Anthropic-style events: every one must have an `event:` line and one `data:` line."""
    out = []
    for block in split_events(raw):
        lines = block.split("\n")
        if all(line.startswith(":") for line in lines):
            continue
        assert lines[0].startswith("event: ") and lines[1].startswith("data: "), block
        out.append((lines[0][7:], json.loads(lines[1][6:])))
    return out
