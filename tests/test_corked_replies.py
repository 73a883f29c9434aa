"""iflow2api_site/tuning.py's corked writes: what is written on a Twisted TCP connection inside
`corked()` goes to the socket as one send at the end, and Daphne's replies are corked where a
response starts or ends (`corked_replies`): a JSON answer is one send, a stream's head goes
with its first chunk and its last chunk with the chunked terminator. Real sockets, Twisted's
own connection and HTTP channel, Daphne's own request; the reactor only records what the
connection asks of it."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from daphne.http_protocol import HTTPFactory, WebRequest
from daphne.server import Server
from twisted.internet import tcp

from iflow2api_site import tuning
from tests.test_write_through import RecordingReactor


@pytest.fixture
def patched() -> Iterator[None]:
    write, write_sequence = tcp.Connection.write, tcp.Connection.writeSequence
    reply = WebRequest.handle_reply
    tuning.write_through_tcp()
    tuning.corked_replies()
    yield
    tcp.Connection.write, tcp.Connection.writeSequence = (  # type: ignore[method-assign]
        write, write_sequence)
    del tcp.Connection.held_writes  # type: ignore[attr-defined]
    WebRequest.handle_reply = reply  # type: ignore[method-assign]


class Wire:
    """A Twisted server-side TCP connection on a real loopback socket, its peer, and every
    send the connection made (what reached the socket in one call)."""

    def __init__(self, protocol: Any) -> None:
        listener = socket.create_server(("127.0.0.1", 0))
        self.peer = socket.create_connection(listener.getsockname())
        self.peer.settimeout(5)
        ours, address = listener.accept()
        listener.close()
        ours.setblocking(False)
        self.conn = tcp.Server(ours, protocol, address, None, 1,
                               RecordingReactor())  # type: ignore[arg-type]
        self.sends: list[bytes] = []
        send = self.conn.writeSomeData

        def recorded(data: bytes) -> Any:
            self.sends.append(bytes(data))
            return send(data)

        self.conn.writeSomeData = recorded  # type: ignore[method-assign]

    def received(self, size: int) -> bytes:
        got = b""
        while len(got) < size:
            got += self.peer.recv(size - len(got))
        return got

    def close(self) -> None:
        self.conn.socket.close()
        self.peer.close()


@pytest.fixture
def wire(patched: None) -> Iterator[Wire]:
    from twisted.internet.protocol import Protocol

    made = Wire(Protocol())
    yield made
    made.close()


def test_writes_inside_a_cork_are_one_send_at_its_end(wire: Wire) -> None:
    with tuning.corked(wire.conn):
        wire.conn.write(b"head ")
        wire.conn.writeSequence([b"one ", b"two"])
        assert wire.sends == []  # nothing went yet
    assert wire.sends == [b"head one two"]
    assert wire.received(12) == b"head one two"


def test_a_cork_inside_a_cork_leaves_the_sending_to_the_outer_one(wire: Wire) -> None:
    with tuning.corked(wire.conn):
        with tuning.corked(wire.conn):
            wire.conn.write(b"inner ")
        wire.conn.write(b"outer")
    assert wire.sends == [b"inner outer"]


def test_what_was_written_before_an_error_is_still_sent(wire: Wire) -> None:
    with pytest.raises(RuntimeError), tuning.corked(wire.conn):
        wire.conn.write(b"half")
        raise RuntimeError("the reply failed half-way")
    assert wire.received(4) == b"half"
    wire.conn.write(b" more")  # the cork is off: writes go at once again
    assert wire.sends == [b"half", b" more"]


def test_a_transport_that_is_not_twisted_tcp_is_left_alone(patched: None) -> None:
    from twisted.internet.testing import StringTransport

    transport = StringTransport()
    with tuning.corked(transport):
        transport.write(b"as it comes")
        assert transport.value() == b"as it comes"


def daphne_request(wire_for: Any) -> tuple[WebRequest, Wire]:
    """Daphne's request on a real connection, as Daphne's server makes one for a client."""
    server = Server(application=None, endpoints=["tcp:port=0:interface=127.0.0.1"])
    server.connections = {}
    factory = HTTPFactory(server)
    channel = factory.buildProtocol(None)
    made = wire_for(channel)
    channel.makeConnection(made.conn)
    request = WebRequest(channel._channel, queued=False)
    channel._channel.requests.append(request)
    request.clientproto, request.method, request.uri = b"HTTP/1.1", b"POST", b"/v1/x"
    return request, made


def test_a_stream_goes_out_head_with_first_chunk_and_last_chunk_with_its_end(patched) -> None:
    request, made = daphne_request(Wire)
    try:
        request.handle_reply({"type": "http.response.start", "status": 200,
                              "headers": [(b"content-type", b"text/event-stream")]})
        assert made.sends == []
        request.handle_reply({"type": "http.response.body", "body": b"one", "more_body": True})
        request.handle_reply({"type": "http.response.body", "body": b"two", "more_body": True})
        request.handle_reply({"type": "http.response.body", "body": b"three"})
        head, middle, last = made.sends
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and head.endswith(b"\r\n\r\n3\r\none\r\n")
        assert middle == b"3\r\ntwo\r\n"
        assert last == b"5\r\nthree\r\n0\r\n\r\n"
        assert made.received(len(head + middle + last)) == head + middle + last
    finally:
        made.close()


def test_a_json_answer_is_one_send(patched) -> None:
    request, made = daphne_request(Wire)
    try:
        body = b'{"ok":true}'
        request.handle_reply({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode())]})
        request.handle_reply({"type": "http.response.body", "body": body})
        [whole] = made.sends
        assert whole.startswith(b"HTTP/1.1 200 OK\r\n") and whole.endswith(b"\r\n\r\n" + body)
    finally:
        made.close()
