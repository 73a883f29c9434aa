"""A cheap local token estimate for /v1/messages/count_tokens.

Claude Code fires dozens of these per second at start-up and compacts based on the answer, so it
must be fast, never 0 for real input, and count system, messages AND tools. No tokenizer: ASCII
text is ~4 chars/token, CJK ~1 token/char (3 UTF-8 bytes), other scripts in between — measured
with two C-speed encodes instead of a per-character Python loop or a regex.
"""

from __future__ import annotations

import json
from typing import Any

IMAGE_TOKENS = 1600  # Anthropic's cost of a full-size (~1.15 MP) image; images are usually that
PDF_BYTES_PER_TOKEN = 32  # a ~100 KB PDF page costs ~3k tokens (text + page image)
MESSAGE_OVERHEAD = 4  # role and separators
TOOL_OVERHEAD = 8  # wrapper around each tool definition
REQUEST_OVERHEAD = 3


def estimate_text_tokens(text: str) -> int:
    if not text:
        return 0
    if text.isascii():
        return (len(text) + 3) // 4
    ascii_chars = len(text.encode("ascii", "ignore"))
    other_bytes = len(text.encode("utf-8", "surrogatepass")) - ascii_chars
    # ceil(ascii/4 + bytes/3) in integers: CJK (3 bytes) -> 1 token, Cyrillic (2 bytes) -> ~0.7.
    return (3 * ascii_chars + 4 * other_bytes + 11) // 12


def _json_tokens(value: Any) -> int:
    try:
        return estimate_text_tokens(json.dumps(value, ensure_ascii=False, default=str))
    except (TypeError, ValueError):  # circular or otherwise unserialisable: count its repr
        return estimate_text_tokens(repr(value))


def _source_tokens(block: dict[str, Any]) -> int:
    source = block.get("source")
    if not isinstance(source, dict):
        return 0
    data = source.get("data")
    if block.get("type") == "image":
        return IMAGE_TOKENS
    if source.get("type") == "base64" and isinstance(data, str):
        return max(IMAGE_TOKENS, len(data) * 3 // 4 // PDF_BYTES_PER_TOKEN)
    if isinstance(data, str):
        return estimate_text_tokens(data)
    return _content_tokens(source.get("content"))


def _block_tokens(block: Any) -> int:
    if isinstance(block, str):
        return estimate_text_tokens(block)
    if not isinstance(block, dict):
        return 0
    kind = block.get("type")
    if kind == "text":
        text = block.get("text")
        return estimate_text_tokens(text) if isinstance(text, str) else 0
    if kind == "thinking":
        text = block.get("thinking")
        return estimate_text_tokens(text) if isinstance(text, str) else 0
    if kind in ("image", "document"):
        return _source_tokens(block)
    if kind == "tool_use":
        name = block.get("name")
        name_tokens = estimate_text_tokens(name) if isinstance(name, str) else 0
        return name_tokens + _json_tokens(block.get("input", {})) + MESSAGE_OVERHEAD
    if kind == "tool_result":
        return _content_tokens(block.get("content")) + MESSAGE_OVERHEAD
    if kind == "redacted_thinking":
        return 0
    return _json_tokens(block)  # unknown blocks: their JSON is a fair upper bound


def _content_tokens(content: Any) -> int:
    if isinstance(content, str):
        return estimate_text_tokens(content)
    if isinstance(content, list):
        return sum(_block_tokens(b) for b in content)
    return 0


def _tool_tokens(tool: Any) -> int:
    if not isinstance(tool, dict):
        return 0
    total = TOOL_OVERHEAD
    for key in ("name", "description"):
        value = tool.get(key)
        if isinstance(value, str):
            total += estimate_text_tokens(value)
    schema = tool.get("input_schema")
    if schema is not None:
        total += _json_tokens(schema)
    return total


def estimate_tokens(body: dict[str, Any]) -> int:
    """Tolerant of any shape (never raises); at least 1 for a non-empty request."""
    if not isinstance(body, dict):
        return 1
    total = REQUEST_OVERHEAD + _content_tokens(body.get("system"))
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, dict):
                total += MESSAGE_OVERHEAD + _content_tokens(message.get("content"))
    tools = body.get("tools")
    if isinstance(tools, list):
        total += sum(_tool_tokens(t) for t in tools)
    return max(total, 1)
