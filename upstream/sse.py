"""Server-sent events: splitting an upstream byte stream into `data` payloads.

Upstreams differ: iFlow writes `data:{...}` with no space, some servers use CRLF, chunks split
lines anywhere. The parser keeps its partial line between `feed` calls, one instance per stream.
"""

from __future__ import annotations


class SSEDataParser:
    """Collects the `data` field of each event; ignores comments, `event:`, `id:` and `retry:`."""

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[str]:
        self._buffer += chunk
        events: list[str] = []
        while True:
            newline = self._buffer.find(b"\n")
            if newline < 0:
                break
            line = self._buffer[:newline].rstrip(b"\r")
            self._buffer = self._buffer[newline + 1 :]
            self._take_line(line.decode("utf-8", errors="replace"), events)
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
