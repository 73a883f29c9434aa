"""iflow2api_site/listener.py GuardedRequest: a plain HTTP request starts its application with
the same scope, body messages and refusals as Daphne's own WebRequest.process, which it
replaces for such requests (without Daphne's Deferred machinery around it)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from daphne.http_protocol import WebRequest
from twisted.internet.testing import StringTransport

from iflow2api_site.listener import GuardedChannel, GuardedRequest


class RecordingServer:
    """What Daphne's Server gives a request: create_application records the scope and hands
    out a queue that records the body messages."""

    root_path = ""
    server_name = "daphne"
    proxy_forwarded_address_header = None
    request_buffer_size = 8  # small, so that a body comes in several messages

    def __init__(self) -> None:
        self.started: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []

    def create_application(self, protocol: object, scope: dict[str, Any]) -> Any:
        messages: list[dict[str, Any]] = []
        self.started.append((scope, messages))
        return SimpleNamespace(put_nowait=messages.append)

    def protocol_connected(self, protocol: object) -> None:
        pass

    def protocol_disconnected(self, protocol: object) -> None:
        pass


def channel_of(server: RecordingServer) -> GuardedChannel:
    channel = GuardedChannel()
    channel.factory = SimpleNamespace(server=server, timeOut=None, log=lambda request: None,
                                      _logDateTime="", _logFormatter=None)
    return channel


def run(raw: bytes, daphnes: bool) -> tuple[list[Any], bytes]:
    """Feeds one request to a GuardedChannel; with `daphnes`, Daphne's own process() runs."""
    server = RecordingServer()
    channel = channel_of(server)
    channel.requestFactory = (type("DaphnesRequest", (GuardedRequest,), {
        "process": lambda self: WebRequest.process(self)}) if daphnes else GuardedRequest)
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(raw)
    started = [(dict(scope), list(messages)) for scope, messages in server.started]
    return started, transport.value()


REQUESTS = [
    b"POST /v1/chat/completions?x=1&y=%20 HTTP/1.1\r\nHost: a\r\nContent-Type: application/json"
    b"\r\nX-Request-Id: abc\r\nX_Api_Key: dropped\r\nAccept: a\r\nAccept: b\r\n"
    b"Content-Length: 21\r\n\r\n{\"model\": \"m\", \"a\":1}",
    b"GET /v1/models%2Fx HTTP/1.0\r\nHost: a\r\n\r\n",
    b"GET /docs HTTP/1.1\r\nHost: a\r\nDaphne-Root-Path: /gw%20x\r\n\r\n",
    b"POST /v1/messages HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
    b"GET /v1/models HTTP/1.1\r\nHost: a\r\nX-Bad: a\x0bb\r\n\r\n",  # a bad header value: 400
    b"GET /v1/\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n",  # a path that is not ASCII: 400
    b"GET /v1/models?q=\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n",  # nor the query string: 400
]


@pytest.mark.parametrize("raw", REQUESTS, ids=range(len(REQUESTS)))
def test_a_request_starts_as_daphnes_would_start_it(raw: bytes) -> None:
    ours, answered = run(raw, daphnes=False)
    assert (ours, answered) == run(raw, daphnes=True)
    assert len(ours) == (0 if answered else 1)  # an application, or Daphne's 400


def test_the_scope_and_body_of_a_plain_request() -> None:
    [(scope, messages)], answered = run(REQUESTS[0], daphnes=False)
    assert answered == b""
    assert scope["path"] == "/v1/chat/completions" and scope["query_string"] == b"x=1&y=%20"
    assert (b"x-request-id", b"abc") in scope["headers"]
    assert [v for k, v in scope["headers"] if k == b"accept"] == [b"a", b"b"]
    assert not [k for k, _ in scope["headers"] if b"_" in k]  # as Daphne: dropped
    assert b"".join(m["body"] for m in messages) == b'{"model": "m", "a":1}'
    assert [m["more_body"] for m in messages] == [True, True, False]


def test_a_connection_reads_its_addresses_once() -> None:
    """Twisted asked the transport (getsockname) for every request of a connection."""
    server = RecordingServer()
    channel = channel_of(server)
    transport = StringTransport()
    asked = {"host": 0, "peer": 0}
    host, peer = transport.getHost, transport.getPeer
    transport.getHost = lambda: (asked.__setitem__("host", asked["host"] + 1), host())[1]
    transport.getPeer = lambda: (asked.__setitem__("peer", asked["peer"] + 1), peer())[1]
    channel.makeConnection(transport)
    for _ in range(3):
        channel.dataReceived(b"GET /v1/models HTTP/1.1\r\nHost: a\r\n\r\n")
        channel.requests[-1].finish()  # answered: the connection takes the next request
    assert len(server.started) == 3
    assert [scope["client"] for scope, _ in server.started] == [server.started[0][0]["client"]] * 3
    assert asked == {"host": 1, "peer": 1}
