"""The text lane: most events of a streamed answer are the same chunk with other text in it.

An OpenAI-compatible upstream repeats, in every event, the same id, created time, model and
choice fields; only `choices[0].delta.content` changes. Parsing each event into a dict that the
relay then takes apart again, event by event, was a good part of what a stream cost the gateway
beyond a JSON answer. Here a parsed text chunk of the stream becomes a template: its payload
with the text's JSON string cut out, proven (once, when a payload first matches it) by parsing
it back around other text. Payloads that follow and are that template around another JSON
string come as one `TextRun`: the template and each text's literal, found with a few string
operations per payload and no parse. A run stands for exactly the chunks a parse would have
given (`TextRun.chunks()`), so nothing is lost; the sessions that take runs write their events
around the literals at once (proxy/chat.py) or hand the texts to their translator
(proxy/translate/text_runs.py).

A payload that differs anywhere but in the text, or whose "string" is not one JSON string of
non-empty text, ends the run and is parsed as before (and may become the next template). One
lane per stream, never shared.
"""

from __future__ import annotations

import json
import re
from typing import Any

from iflow2api_lib.wire import dumps, loads

# What the text of a literal that is spelt as orjson spells it, and needs no decoding, lacks
# (besides quotes): escapes and control characters.
_ESCAPE_OR_CONTROL = re.compile(r"[\\\x00-\x1f]")
_PROBE = "\u00a7probe\u00a7"
_KEYS = ('"content":', '"content": ')
# Templates learnt in a row that no payload matched: the upstream varies more than the text
# between events (a per-event timestamp or id), so learning is given up for the stream.
_MAX_IDLE_TEMPLATES = 3


class TextTemplate:
    """A text chunk's payload around its text: `prefix` + a JSON string + `suffix`."""

    __slots__ = ("matched", "prefix", "sample", "suffix")

    def __init__(self, prefix: str, suffix: str, sample: dict[str, Any]) -> None:
        self.prefix = prefix
        self.suffix = suffix
        self.sample = sample  # the parsed chunk it was learnt from (never changed)
        self.matched = False

    def proven(self) -> bool:
        """Whether the cut is the text's place: another text there, parsed back, is the chunk
        with that text (the same text elsewhere in the payload would fail it)."""
        try:
            probe = loads(self.prefix + dumps(_PROBE).decode() + self.suffix)
        except ValueError:
            return False
        return bool(probe == self.chunk_with(_PROBE))

    def chunk_with(self, text: str) -> dict[str, Any]:
        """The chunk a parse of this template around `text` gives."""
        chunk = dict(self.sample)
        choice = dict(chunk["choices"][0])
        choice["delta"] = {**choice["delta"], "content": text}
        chunk["choices"] = [choice]
        return chunk


class TextRun:
    """Consecutive chunks that are `template` around texts: each text as its JSON string
    literal, quotes included, spelt as orjson writes it (what `dumps(text)` gives)."""

    __slots__ = ("literals", "template")

    def __init__(self, template: TextTemplate, literals: list[str]) -> None:
        self.template = template
        self.literals = literals

    def text(self, index: int) -> str:
        text = loads(self.literals[index])
        assert type(text) is str
        return text

    def texts(self) -> list[str]:
        literals = self.literals
        if "\\" in "".join(literals):  # escapes: each literal decoded
            return [self.text(i) for i in range(len(literals))]
        return [literal[1:-1] for literal in literals]

    def chunks(self) -> list[dict[str, Any]]:
        """The chunks a parse would have given."""
        return [self.template.chunk_with(text) for text in self.texts()]


class TextLane:
    """One stream's template, learnt from its parsed text chunks, and the runs of payloads
    that match it."""

    __slots__ = ("_idle", "_template")

    def __init__(self) -> None:
        self._template: TextTemplate | None = None
        self._idle = 0  # templates learnt in a row that nothing matched

    def take_run(self, payloads: list[str], start: int) -> TextRun | None:
        """The run of payloads from `start` that are the template around a non-empty JSON
        string; None when the payload at `start` is not one."""
        template = self._template
        if template is None:
            return None
        prefix, suffix, first = template.prefix, template.suffix, payloads[start]
        if not (first.startswith(prefix) and first.endswith(suffix)):
            return None
        cut = slice(len(prefix), -len(suffix) if suffix else None)
        if start == len(payloads) - 1:  # one payload (a paced stream's every read): no loop
            literals = _leading_literals([first[cut]])
        else:
            pieces: list[str] = []
            for payload in payloads[start:] if start else payloads:
                if not (payload.startswith(prefix) and payload.endswith(suffix)):
                    break
                pieces.append(payload[cut])
            literals = pieces if _all_plain(pieces) else _leading_literals(pieces)
        if not literals:
            return None
        if not template.matched:  # its first match: the proof, once
            if not template.proven():
                self._template = None
                self._idle += 1
                return None
            template.matched = True
            self._idle = 0
        return TextRun(template, literals)

    def learn(self, payload: str, chunk: dict[str, Any]) -> None:
        """Takes a parsed chunk that did not match as the new template, when it is a text
        chunk of one choice and its text can be cut out of the payload exactly."""
        if self._idle >= _MAX_IDLE_TEMPLATES or chunk.get("usage") is not None:
            return  # (`"usage": null` on every chunk is OpenAI's own way)
        choices = chunk.get("choices")
        if type(choices) is not list or len(choices) != 1 or type(choices[0]) is not dict:
            return
        choice = choices[0]
        delta = choice.get("delta")
        if choice.get("usage") is not None or type(delta) is not dict:
            return
        text = delta.get("content")
        if type(text) is not str or not text:
            return
        cut = _cut(payload, text)
        if cut is None:
            return
        prefix, suffix = cut
        if self._template is not None and not self._template.matched:
            self._idle += 1
        # Proven when a payload first matches it (most streams' first text chunk differs from
        # the rest: it carries the role, so its template never matches and is never proven).
        self._template = TextTemplate(prefix, suffix, chunk)


def _all_plain(pieces: list[str]) -> bool:
    """Whether every piece is a JSON string of text that needs no decoding, without a step
    per piece: all their quotes are their own two, none is empty, nothing is escaped."""
    if min(map(len, pieces)) < 3:
        return False
    glued = "\x00".join(pieces)
    return (glued[0] == '"' and glued[-1] == '"' and glued.count('"') == 2 * len(pieces)
            and glued.count('"\x00"') == len(pieces) - 1
            and _ESCAPE_OR_CONTROL.search("".join(pieces)) is None)


def _leading_literals(pieces: list[str]) -> list[str]:
    """The leading pieces that are each one whole JSON string of non-empty text, spelt as
    orjson writes them; one that is not ends the run."""
    literals: list[str] = []
    for piece in pieces:
        if piece.count('"') == 2 and len(piece) >= 3 and piece[0] == '"' == piece[-1] \
                and _ESCAPE_OR_CONTROL.search(piece) is None:
            literals.append(piece)
            continue
        try:  # escapes, or not a string at all
            text = loads(piece)
        except ValueError:
            break
        if type(text) is not str or not text:
            break
        literals.append(dumps(text).decode())  # `\u00e9`, `\/`: spelt as orjson writes them
    return literals


def _cut(payload: str, text: str) -> tuple[str, str] | None:
    """The payload before and after the text's JSON string, found as the value of a
    `content` key, written as orjson or as Python's json module would (raw or ASCII-escaped;
    the same for ASCII text); None when it is not found exactly once."""
    literal = dumps(text).decode()
    spellings = (literal,) if text.isascii() else (literal, json.dumps(text))
    for spelt in spellings:
        for key in _KEYS:
            needle = key + spelt
            at = payload.find(needle)
            if at >= 0 and payload.find(needle, at + 1) < 0:
                start = at + len(key)
                return payload[:start], payload[start + len(spelt):]
    return None
