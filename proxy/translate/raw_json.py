"""Rewriting top-level values of a JSON object in its own bytes, leaving every other byte as
the client wrote it (the Anthropic passthrough forwards a body with only `model` changed:
signatures, cache_control, numbers and spacing stay exactly as sent).

Pure, standard library only. The input must already be valid JSON (the gateway parsed it).
"""

from __future__ import annotations

import json
import re
from typing import Any

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
# Inside a nested value only strings and brackets matter: strings are skipped whole.
_NESTED_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)
_SCALAR_END = re.compile(r"[\s,}\]]")
_WS = re.compile(r"\s*")


def _skip_ws(text: str, i: int) -> int:
    match = _WS.match(text, i)
    return match.end() if match else i


def _value_end(text: str, i: int) -> int:
    """The end of the JSON value starting at `i`."""
    first = text[i]
    if first == '"':
        match = _STRING.match(text, i)
        if match is None:
            raise ValueError("unterminated string")
        return match.end()
    if first in "[{":
        depth = 0
        for match in _NESTED_TOKEN.finditer(text, i):
            token = match.group()
            if token in "[{":
                depth += 1
            elif token in "]}":
                depth -= 1
                if depth == 0:
                    return match.end()
        raise ValueError("unbalanced brackets")
    match = _SCALAR_END.search(text, i)
    return match.start() if match else len(text)


def top_level_spans(text: str) -> list[tuple[str, int, int]]:
    """(key, value start, value end) of each member of the top-level object, in order
    (duplicates included)."""
    i = _skip_ws(text, 0)
    if text[i:i + 1] != "{":
        raise ValueError("not a JSON object")
    i = _skip_ws(text, i + 1)
    spans: list[tuple[str, int, int]] = []
    while i < len(text) and text[i] != "}":
        key_end = _value_end(text, i)
        key = json.loads(text[i:key_end])
        i = _skip_ws(text, key_end)
        if text[i] != ":":
            raise ValueError("expected ':'")
        start = _skip_ws(text, i + 1)
        end = _value_end(text, start)
        spans.append((key, start, end))
        i = _skip_ws(text, end)
        if text[i:i + 1] == ",":
            i = _skip_ws(text, i + 1)
    return spans


def replace_top_level(raw: bytes, values: dict[str, Any]) -> bytes:
    """`raw` with the value of each top-level key in `values` replaced (every occurrence, so a
    duplicated key cannot smuggle another value past the rewrite); keys absent from `raw` are
    not added. Unchanged input comes back as the same bytes."""
    text = raw.decode("utf-8")
    replaced = [(start, end, json.dumps(values[key], ensure_ascii=False))
                for key, start, end in top_level_spans(text) if key in values]
    if not replaced:
        return raw
    parts: list[str] = []
    last = 0
    for start, end, value in replaced:
        parts += [text[last:start], value]
        last = end
    parts.append(text[last:])
    return "".join(parts).encode("utf-8")
