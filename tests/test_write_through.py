"""iflow2api_site/tuning.py's write_through_tcp: a write on a Twisted TCP connection goes to the
socket at once when nothing waits before it, and otherwise the buffered way Twisted always
took; together they deliver every byte in order. Real sockets (a socketpair), Twisted's own
Connection; the reactor only records what the connection asks of it."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import pytest
from twisted.internet import tcp
from twisted.internet.protocol import Protocol

from iflow2api_site import tuning


class RecordingReactor:
    """What a Twisted connection asks of its reactor: to watch for writability, or to stop.
    (Twisted's method names.)"""

    def __init__(self) -> None:
        self.writers: set[object] = set()
        self.asked = 0

    def addWriter(self, selectable: object) -> None:
        self.writers.add(selectable)
        self.asked += 1

    def removeWriter(self, selectable: object) -> None:
        self.writers.discard(selectable)

    def addReader(self, selectable: object) -> None:
        pass

    def removeReader(self, selectable: object) -> None:
        pass


@pytest.fixture
def write_through() -> Iterator[None]:
    write, write_sequence = tcp.Connection.write, tcp.Connection.writeSequence
    tuning.write_through_tcp()
    yield
    tcp.Connection.write, tcp.Connection.writeSequence = (  # type: ignore[method-assign]
        write, write_sequence)


@pytest.fixture
def pair(write_through: None) -> Iterator[tuple[tcp.Connection, socket.socket,
                                                RecordingReactor]]:
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    reactor = RecordingReactor()
    peer.settimeout(5)
    conn = tcp.Connection(ours, Protocol(), reactor=reactor)  # type: ignore[arg-type]
    conn.connected = True  # as twisted.internet.tcp.Server sets it for an accepted connection
    yield conn, peer, reactor
    ours.close()
    peer.close()


def drain(conn: tcp.Connection, peer: socket.socket, reactor: RecordingReactor) -> bytes:
    """Everything the peer receives while the reactor runs the connection's writes."""
    peer.setblocking(False)
    got = b""
    for _ in range(10_000):
        with contextlib.suppress(BlockingIOError):
            got += peer.recv(1 << 20)
        if conn in reactor.writers:
            conn.doWrite()
        elif not got or conn.dataBuffer or conn._tempDataLen:
            continue
        else:
            try:
                got += peer.recv(1 << 20)
            except BlockingIOError:
                return got
    raise AssertionError("the writes did not drain")


def test_a_write_with_nothing_before_it_is_sent_at_once(pair) -> None:
    conn, peer, reactor = pair
    conn.write(b"head")
    conn.writeSequence([b"one ", b"two"])
    assert peer.recv(100) == b"headone two"
    assert reactor.asked == 0 and not conn._tempDataLen


def test_what_the_socket_does_not_take_follows_in_order(pair) -> None:
    conn, peer, reactor = pair
    big = bytes(range(256)) * 40_000  # 10 MB: more than the socket buffers hold
    conn.write(big)
    assert conn in reactor.writers and conn._tempDataLen  # the rest waits, buffered
    conn.write(b"|after")  # something waits before it: buffered too, behind it
    conn.writeSequence([b"|and", b"|last"])
    assert drain(conn, peer, reactor) == big + b"|after|and|last"
    conn.write(b"|idle again")  # drained: straight to the socket once more
    assert peer.recv(100) == b"|idle again"


def test_a_pull_producer_is_still_asked_for_more(pair) -> None:
    conn, _peer, reactor = pair

    class Pull:
        def resumeProducing(self) -> None:
            conn.write(b"x")

        def stopProducing(self) -> None:
            pass

    conn.registerProducer(Pull(), False)  # Twisted asks it once the buffer is empty
    assert conn in reactor.writers
    conn.doWrite()  # the pull producer writes: buffered, so the reactor will ask it again
    assert conn in reactor.writers and conn._tempDataLen == 1


def test_after_lose_connection_writes_take_the_buffered_way(pair) -> None:
    conn, peer, reactor = pair
    conn.write(b"before")
    conn.loseConnection()
    conn.write(b"after")
    assert conn._tempDataLen == len(b"after") and conn in reactor.writers
    assert peer.recv(100) == b"before"


def test_an_error_is_met_by_the_buffered_path(pair) -> None:
    conn, peer, reactor = pair
    peer.close()
    conn.write(b"to nobody")  # the send fails: Twisted's doWrite reports the loss
    assert conn in reactor.writers
    assert conn.doWrite() is not None


def test_client_connections_send_small_writes_without_delay() -> None:
    # Head and body can now leave as two sends: Nagle's algorithm must not hold the second.
    from twisted.internet.testing import StringTransport

    from iflow2api_site.listener import GuardedChannel

    class TcpTransport(StringTransport):
        no_delay: bool | None = None

        def setTcpNoDelay(self, enabled: bool) -> None:
            self.no_delay = enabled

    transport = TcpTransport()
    channel = GuardedChannel()
    channel.makeConnection(transport)
    try:
        assert transport.no_delay is True
    finally:
        channel.connectionLost(None)
