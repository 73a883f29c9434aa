"""Server-sent events: splitting an upstream byte stream into `data` payloads.

Upstreams differ: iFlow writes `data:{...}` with no space, some servers use CRLF, chunks split
lines anywhere. The parser keeps its partial line between `feed` calls, one instance per stream.
"""

from __future__ import annotations

from typing import Any


class SSEDataParser:
    """Collects the `data` field of each event; ignores comments, `event:`, `id:` and `retry:`."""

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[str]:
        if not self._buffer and not self._data:
            plain = _plain_events(chunk)
            if plain is not None:
                return plain
        buffer = self._buffer + chunk if self._buffer else chunk
        end = buffer.rfind(b"\n")
        if end < 0:
            self._buffer = buffer
            return []
        self._buffer = buffer[end + 1 :]
        # One decode and one split per chunk (a 20-event chunk was sliced and decoded line by
        # line). A newline is never part of a multi-byte UTF-8 sequence, so decoding the whole
        # lines at once gives what decoding each line gives.
        events: list[str] = []
        for line in buffer[:end].decode("utf-8", errors="replace").split("\n"):
            self._take_line(line.rstrip("\r"), events)
        return events

    def close(self) -> list[str]:
        """Flush what is left: a last event without its blank line still counts."""
        events: list[str] = []
        if self._buffer:
            self._take_line(self._buffer.rstrip(b"\r").decode("utf-8", errors="replace"), events)
            self._buffer = b""
        if self._data:
            events.append("\n".join(self._data))
            self._data = []
        return events

    def _take_line(self, line: str, events: list[str]) -> None:
        if not line:
            if self._data:
                events.append("\n".join(self._data))
                self._data = []
            return
        if line.startswith(":"):
            return
        name, _, value = line.partition(":")
        if name == "data":
            self._data.append(value[1:] if value.startswith(" ") else value)


def _plain_events(chunk: bytes) -> list[str] | None:
    """The data of a chunk made only of whole one-line `data: ...` events, as most upstreams
    send them (one or more per network read); None for anything else, which the line parser
    takes. Gives exactly what the line parser gives, without a step per line."""
    if not (chunk.startswith(b"data: ") and chunk.endswith(b"\n\n")) or b"\r" in chunk:
        return None
    events = chunk[6:-2].decode("utf-8", errors="replace").split("\n\ndata: ")
    if chunk.count(b"\n") != 2 * len(events):  # a multi-line event, a comment, a named one
        return None
    return events


class SSEEvent:
    """One whole event: its `event:` name, its data (the text; the client puts the parsed JSON
    in `data`), and its bytes exactly as the upstream sent them, blank line included, for
    relaying without re-encoding."""

    __slots__ = ("data", "name", "raw")

    def __init__(self, name: str, data: Any, raw: bytes) -> None:
        self.name = name
        self.data = data
        self.raw = raw


class SSEEventParser:
    """Splits a byte stream into whole events, keeping each one's bytes (Anthropic's named
    events). Blocks without data (comments, keep-alives) are dropped. One per stream."""

    def __init__(self) -> None:
        self._buffer = b""
        self._raw: list[bytes] = []
        self._name = ""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        self._buffer += chunk
        events: list[SSEEvent] = []
        start = 0
        while True:
            newline = self._buffer.find(b"\n", start)
            if newline < 0:
                break
            line = self._buffer[start:newline + 1]
            start = newline + 1
            self._take_line(line, events)
        self._buffer = self._buffer[start:]
        return events

    def close(self) -> list[SSEEvent]:
        """A last event without its blank line still counts (terminated for our client)."""
        events: list[SSEEvent] = []
        if self._buffer:
            line, self._buffer = self._buffer, b""
            self._take_line(line + b"\n", events)
        if self._data:
            self._raw.append(b"\n")
            self._emit(events)
        return events

    def _take_line(self, line: bytes, events: list[SSEEvent]) -> None:
        self._raw.append(line)
        text = line.rstrip(b"\r\n")
        if not text:
            if self._data:
                self._emit(events)
            else:
                self._raw, self._name = [], ""
            return
        if text.startswith(b":"):
            return
        name, _, value = text.decode("utf-8", errors="replace").partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._name = value

    def _emit(self, events: list[SSEEvent]) -> None:
        events.append(SSEEvent(self._name, "\n".join(self._data), b"".join(self._raw)))
        self._raw, self._name, self._data = [], "", []
