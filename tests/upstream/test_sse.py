"""upstream/sse.py's SSEDataParser: the data of every event, however the bytes are split.

Checked against a reference written here from the SSE rules (lines end with LF, a CR before it
is dropped; a blank line ends an event; `:` starts a comment; one space after `data:` is not
part of the value), for every split of each stream into two reads and for one byte per read,
so the whole-events shortcut and the line parser are both held to the same answer.
"""

from __future__ import annotations

import pytest

from upstream.sse import SSEDataParser


def reference(raw: bytes) -> list[str]:
    events: list[str] = []
    data: list[str] | None = None
    lines = raw.split(b"\n")
    tail = lines.pop()  # after the last LF: a line without its end, taken at close
    for line in [*lines, tail] if tail else lines:
        text = line.removesuffix(b"\r").decode("utf-8", errors="replace")
        if not text:
            if data is not None:
                events.append("\n".join(data))
            data = None
            continue
        name, _, value = text.partition(":")
        if text.startswith(":") or name != "data":
            continue
        data = [*(data or []), value.removeprefix(" ")]
    if data is not None:
        events.append("\n".join(data))  # the last event without its blank line still counts
    return events


def parse(reads: list[bytes]) -> list[str]:
    parser = SSEDataParser()
    out = [data for read in reads for data in parser.feed(read)]
    return out + parser.close()


STREAMS = {
    "one event": b'data: {"a":1}\n\n',
    "several events": b'data: {"a":1}\n\ndata: {"b":2}\n\ndata: [DONE]\n\n',
    "no space after the colon (iFlow)": b'data:{"a":1}\n\ndata:[DONE]\n\n',
    "two spaces": b'data:  {"a":1}\n\n',
    "CRLF": b'data: {"a":1}\r\n\r\ndata: [DONE]\r\n\r\n',
    "a CR inside a line": b'data: {"a":"x\ry"}\n\n',
    "CRLF ending the data line only": b'data: {"a":1}\r\n\ndata: {"b":2}\r\n\n',
    "a comment between events": b'data: {"a":1}\n\n: ping\n\ndata: {"b":2}\n\n',
    "a comment first": b': keep-alive\n\ndata: {"a":1}\n\n',
    "a named event": b'event: delta\ndata: {"a":1}\n\n',
    "id and retry fields": b'id: 7\nretry: 10\ndata: {"a":1}\n\n',
    "multi-line data": b'data: {"a":\ndata: 1}\n\n',
    "empty data": b"data: \n\ndata: {}\n\n",
    "a bare data field": b"data\n\n",
    "extra blank lines": b'data: {"a":1}\n\n\n\ndata: {"b":2}\n\n',
    "no blank line between events": b'data: {"a":1}\ndata: {"b":2}\n\n',
    "the last event without its blank line": b'data: {"a":1}\n\ndata: {"b":2}',
    "multi-byte text": 'data: {"t":"日本語 é 🙂"}\n\ndata: {"t":"ü"}\n\n'.encode(),
    "invalid UTF-8": b'data: {"t":"\xff\xfe"}\n\n',
    "a data line inside a comment": b': data: nope\n\ndata: {"a":1}\n\n',
    "another field named like data": b'datum: x\ndata: {"a":1}\n\n',
}


@pytest.mark.parametrize("raw", STREAMS.values(), ids=STREAMS.keys())
def test_whole_stream_in_one_read(raw: bytes) -> None:
    assert parse([raw]) == reference(raw)


@pytest.mark.parametrize("raw", STREAMS.values(), ids=STREAMS.keys())
def test_every_split_into_two_reads(raw: bytes) -> None:
    expected = reference(raw)
    for cut in range(1, len(raw)):
        assert parse([raw[:cut], raw[cut:]]) == expected, cut


@pytest.mark.parametrize("raw", STREAMS.values(), ids=STREAMS.keys())
def test_one_byte_per_read(raw: bytes) -> None:
    assert parse([raw[i:i + 1] for i in range(len(raw))]) == reference(raw)


def test_each_event_in_its_own_read_after_a_partial_one() -> None:
    # A read that ends mid-event leaves the parser holding a partial line: the reads after it
    # must join it whatever their own shape.
    reads = [b'data: {"a"', b':1}\n\n', b'data: {"b":2}\n\n', b"data: [DONE]\n\n"]
    assert parse(reads) == ['{"a":1}', '{"b":2}', "[DONE]"]


def test_an_event_split_after_its_data_line() -> None:
    reads = [b'data: {"a":1}\n', b'\ndata: {"b":2}\n\n']
    assert parse(reads) == ['{"a":1}', '{"b":2}']


def test_the_reference_reads_the_rules_as_meant() -> None:
    # The oracle itself, on the cases whose answers are plain to see.
    assert reference(b'data: {"a":1}\n\ndata: [DONE]\n\n') == ['{"a":1}', "[DONE]"]
    assert reference(b"data: a\ndata: b\n\n: c\n\n") == ["a\nb"]
    assert reference(b"event: x\n\n") == []
    assert reference(b"data:x") == ["x"]
