"""A cheap local token estimate for /v1/messages/count_tokens.

Claude Code fires dozens of these per second at start-up and compacts based on the answer, so it
must be fast, never 0 for real input, and count system, messages AND tools. No tokenizer: ASCII
text is ~4 chars/token, CJK ~1 token/char (3 UTF-8 bytes), other scripts in between — measured
with two C-speed encodes instead of a per-character Python loop or a regex.

`estimate_parts` keeps the kinds apart (text, tool definitions, images and documents) so that
the per-model calibration (proxy/translate/token_ratio.py) can learn a ratio for each; it reads
Anthropic Messages bodies and, with `estimate_chat_parts`, OpenAI chat bodies.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
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


@dataclass
class TokenParts:
    """An estimate by kind: text (system, messages, tool calls and results), tool definitions,
    and media (images, documents: a fixed guess, not calibrated)."""

    text: int = 0
    tools: int = 0
    media: int = 0

    @property
    def total(self) -> int:
        return max(self.text + self.tools + self.media, 1)


def _source_tokens(block: dict[str, Any], parts: TokenParts) -> int:
    source = block.get("source")
    if not isinstance(source, dict):
        return 0
    data = source.get("data")
    if block.get("type") == "image":
        parts.media += IMAGE_TOKENS
        return 0
    if source.get("type") == "base64" and isinstance(data, str):
        parts.media += max(IMAGE_TOKENS, len(data) * 3 // 4 // PDF_BYTES_PER_TOKEN)
        return 0
    if isinstance(data, str):
        return estimate_text_tokens(data)
    return _content_tokens(source.get("content"), parts)


def _block_tokens(block: Any, parts: TokenParts) -> int:
    """A content block's text tokens; its media go to `parts.media`."""
    if isinstance(block, str):
        return estimate_text_tokens(block)
    if not isinstance(block, dict):
        return 0
    kind = block.get("type")
    if kind in ("text", "input_text", "output_text"):
        text = block.get("text")
        return estimate_text_tokens(text) if isinstance(text, str) else 0
    if kind == "thinking":
        text = block.get("thinking")
        return estimate_text_tokens(text) if isinstance(text, str) else 0
    if kind in ("image", "document"):
        return _source_tokens(block, parts)
    if kind in ("image_url", "input_image", "input_audio", "file"):  # OpenAI chat parts
        parts.media += IMAGE_TOKENS
        return 0
    if kind == "tool_use":
        name = block.get("name")
        name_tokens = estimate_text_tokens(name) if isinstance(name, str) else 0
        return name_tokens + _json_tokens(block.get("input", {})) + MESSAGE_OVERHEAD
    if kind == "tool_result":
        return _content_tokens(block.get("content"), parts) + MESSAGE_OVERHEAD
    if kind == "redacted_thinking":
        return 0
    return _json_tokens(block)  # unknown blocks: their JSON is a fair upper bound


def _content_tokens(content: Any, parts: TokenParts) -> int:
    if isinstance(content, str):
        return estimate_text_tokens(content)
    if isinstance(content, list):
        return sum(_block_tokens(b, parts) for b in content)
    return 0


def _tool_tokens(tool: Any) -> int:
    """An Anthropic tool ({name, description, input_schema}) or an OpenAI chat one
    ({type: function, function: {name, description, parameters}})."""
    if not isinstance(tool, dict):
        return 0
    if isinstance(tool.get("function"), dict):
        tool = tool["function"]
    total = TOOL_OVERHEAD
    for key in ("name", "description"):
        value = tool.get(key)
        if isinstance(value, str):
            total += estimate_text_tokens(value)
    schema = tool.get("input_schema", tool.get("parameters"))
    if schema is not None:
        total += _json_tokens(schema)
    return total


def _tools_tokens(tools: Any) -> int:
    return sum(_tool_tokens(t) for t in tools) if isinstance(tools, list) else 0


def estimate_parts(body: dict[str, Any]) -> TokenParts:
    """An Anthropic Messages body by kind. Tolerant of any shape (never raises)."""
    parts = TokenParts()
    if not isinstance(body, dict):
        return parts
    text = REQUEST_OVERHEAD + _content_tokens(body.get("system"), parts)
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, dict):
                text += MESSAGE_OVERHEAD + _content_tokens(message.get("content"), parts)
    parts.text += text
    parts.tools += _tools_tokens(body.get("tools"))
    return parts


def estimate_chat_parts(body: dict[str, Any]) -> TokenParts:
    """An OpenAI chat body by kind: the same counting, its tool calls' arguments as text."""
    parts = TokenParts()
    if not isinstance(body, dict):
        return parts
    text = REQUEST_OVERHEAD
    messages = body.get("messages")
    for message in messages if isinstance(messages, list) else ():
        if not isinstance(message, dict):
            continue
        text += MESSAGE_OVERHEAD + _content_tokens(message.get("content"), parts)
        calls = message.get("tool_calls")
        for call in calls if isinstance(calls, list) else ():
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                text += MESSAGE_OVERHEAD + estimate_text_tokens(str(function.get("name") or ""))
                arguments = function.get("arguments")
                text += estimate_text_tokens(arguments) if isinstance(arguments, str) else \
                    _json_tokens(arguments)
    parts.text += text
    parts.tools += _tools_tokens(body.get("tools"))
    return parts


def estimate_tokens(body: dict[str, Any]) -> int:
    """Tolerant of any shape (never raises); at least 1 for a non-empty request."""
    return estimate_parts(body).total
