"""The listeners of a real `iflow2api serve`: their listen backlog, the body limit enforced
before a body is read (nothing over it reaches the disk), and the slow-client timeouts
(issue 12 item 1; issue 13 items 1 and 3)."""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import FAKE_KEY
from tests.fakes import scenarios as sc
from tests.servers import GatewayServer, free_port

LIMIT = 1024 * 1024  # MAX_BODY_BYTES of the server here
GIB = 1024 * 1024 * 1024
HEADER_TIMEOUT = BODY_TIMEOUT = 1.0
KEEPALIVE_TIMEOUT = 2.0
CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def server(fake_iflow) -> Iterator[GatewayServer]:
    tmpdir = tempfile.mkdtemp(prefix="iflow2api-tmp-")
    env = {"IFLOW_API_KEY": FAKE_KEY, "IFLOW_BASE_URL": fake_iflow.base_url,
           "MAX_BODY_BYTES": str(LIMIT), "HEADER_TIMEOUT": str(HEADER_TIMEOUT),
           "BODY_TIMEOUT": str(BODY_TIMEOUT), "KEEPALIVE_TIMEOUT": str(KEEPALIVE_TIMEOUT),
           "TMPDIR": tmpdir}  # where Twisted would spool bodies
    with GatewayServer(env) as gateway:
        yield gateway
    shutil.rmtree(tmpdir, ignore_errors=True)


# --- the listen backlog -------------------------------------------------------------------------


def listen_backlog(port: int) -> int | None:
    """The backlog of the socket listening on the port: `ss` shows it as Send-Q."""
    out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True,
                         timeout=10, check=True).stdout.split()
    return int(out[2]) if len(out) >= 3 and out[0] == "LISTEN" else None


def test_every_listener_has_a_large_backlog(server):
    if shutil.which("ss") is None:
        pytest.skip("`ss` (iproute2) is not installed: no way to read a socket's backlog")
    try:
        somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
    except OSError:
        pytest.skip("no /proc/sys/net/core/somaxconn: not Linux")
    expected = min(2048, somaxconn)  # the default LISTEN_BACKLOG, capped by the kernel's
    assert listen_backlog(server.port) == expected
    # An instance enabled while the server runs: the supervisor opens its listener.
    later = free_port()
    server.shell("from instances.models import Instance\n"
                 f"Instance.objects.create(name='later', port={later})\n")
    deadline = time.monotonic() + 20
    while listen_backlog(later) is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert listen_backlog(later) == expected, server.output()[-2000:]


# --- the body limit -----------------------------------------------------------------------------


def head(path: str, *lines: str) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            + "".join(line + "\r\n" for line in lines) + "\r\n").encode()


def answer_with_head(sock: socket.socket, timeout: float = 5.0) -> tuple[list[bytes], bytes]:
    """The head's lines (status line first) and the body of the answer on a raw connection
    (it closes after it)."""
    sock.settimeout(timeout)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    top, _, body = data.partition(b"\r\n\r\n")
    return top.split(b"\r\n"), body


def answer(sock: socket.socket, timeout: float = 5.0) -> tuple[bytes, bytes]:
    """The status line and body of the answer on a raw connection (it closes after it)."""
    lines, body = answer_with_head(sock, timeout)
    return lines[0], body


def test_a_declared_length_over_the_limit_is_413_before_the_body_is_sent(server):
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(head(CHAT, f"content-length: {LIMIT + 1}"))  # no body follows
        status, body = answer(sock)
    assert status.startswith(b"HTTP/1.1 413 ")
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "request_too_large" and "1 MiB" in error["message"]
    deadline = time.monotonic() + 5  # one access line, like any request
    while "iflow2api.access" not in server.output() or \
            f"POST {CHAT} 413 " not in server.output():
        assert time.monotonic() < deadline, server.output()[-2000:]
        time.sleep(0.1)


def test_anthropic_clients_get_their_shape_and_no_100_continue(server):
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(head("/v1/messages", f"content-length: {LIMIT + 1}",
                          "expect: 100-continue", "accept-language: zh-Hans",
                          "x-request-id: trace-listener-1"))
        lines, body = answer_with_head(sock)
    assert lines[0].startswith(b"HTTP/1.1 413 ")  # not `100 Continue` first
    error = json.loads(body)
    assert error["type"] == "error" and error["error"]["type"] == "request_too_large"
    assert "请求体过大" in error["error"]["message"]  # the language the request asked for
    # The request's one id, as for a request the application answers: body, headers, log.
    assert error["request_id"] == "trace-listener-1"
    assert {b"x-request-id: trace-listener-1", b"request-id: trace-listener-1"} <= set(lines)
    deadline = time.monotonic() + 5
    while "iflow2api.access [trace-listener-1] POST /v1/messages 413 " not in server.output():
        assert time.monotonic() < deadline, server.output()[-2000:]
        time.sleep(0.1)


def chat_body(size: int) -> bytes:
    start, end = b'{"model": "glm-5", "messages": [{"role": "user", "content": "', b'"}]}'
    return start + b"x" * (size - len(start) - len(end)) + end


def test_a_body_of_exactly_the_limit_is_served(server, upstream):
    upstream.script(sc.text("ok"), sc.text("ok"))
    body = chat_body(LIMIT)
    assert httpx.post(server.url + CHAT, content=body, timeout=30).status_code == 200
    # Chunked (no length given): counted as it comes, the same limit.
    chunked = httpx.post(server.url + CHAT, timeout=30,
                         content=(body[i:i + 65536] for i in range(0, len(body), 65536)))
    assert chunked.status_code == 200
    assert len(upstream.chat_requests[-1].body) >= LIMIT - 100


class SpoolWatch:
    """The most bytes the server process held in files under its TMPDIR at once (deleted
    temporary files included: they are found through /proc/<pid>/fd)."""

    def __init__(self, server: GatewayServer) -> None:
        self.pid = server.process.pid
        self.tmpdir = os.path.realpath(server.env["TMPDIR"])
        self.most = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _held(self) -> int:
        total = 0
        fd_dir = f"/proc/{self.pid}/fd"
        for fd in os.listdir(fd_dir):
            try:
                if os.readlink(f"{fd_dir}/{fd}").startswith(self.tmpdir):
                    total += os.stat(f"{fd_dir}/{fd}").st_size
            except OSError:
                continue  # closed meanwhile
        return total

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.most = max(self.most, self._held())
            time.sleep(0.005)

    def __enter__(self) -> SpoolWatch:
        if not os.path.isdir(f"/proc/{self.pid}/fd"):
            pytest.skip("no /proc/<pid>/fd: cannot watch the server's temporary files")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def upload_gib(server: GatewayServer, *, declared: bool) -> tuple[int, int | None]:
    """Streams a 1 GiB body from a generator; returns the bytes the client got to send and the
    status it read (None when the server cut the connection first)."""
    sent = 0

    def body() -> Iterator[bytes]:
        nonlocal sent
        chunk = b"x" * (1024 * 1024)
        for _ in range(GIB // len(chunk)):
            sent += len(chunk)
            yield chunk

    headers = {"content-type": "application/json"}
    if declared:
        headers["content-length"] = str(GIB)
    try:
        status = httpx.post(server.url + CHAT, content=body(), headers=headers,
                            timeout=30).status_code
    except httpx.TransportError:
        status = None
    return sent, status


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_a_gib_body_is_refused_without_reading_it_or_spooling_it(server, declared):
    with SpoolWatch(server) as spool:
        sent, status = upload_gib(server, declared=declared)
    assert spool.most <= LIMIT, f"{spool.most} bytes held in temporary files"
    # The server stopped reading: the client could send only what the limit, the bytes read
    # and dropped after the answer (twice the limit) and the socket buffers hold.
    assert sent < 64 * 1024 * 1024, f"the client sent {sent} bytes"
    assert status in {None, 413}
    assert httpx.get(server.url + "/health", timeout=10).status_code == 200


# --- slow clients -------------------------------------------------------------------------------


def dribble(port: int, start: bytes, then: bytes, gap: float = 0.2,
            give_up: float = 10.0) -> tuple[float, bytes]:
    """Sends `start`, then `then` a byte every `gap` seconds until the server answers or
    closes; returns how long that took and what it answered."""
    began = time.monotonic()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(start)
        for byte in then:
            if select.select([sock], [], [], gap)[0] or time.monotonic() - began > give_up:
                break
            try:
                sock.send(bytes([byte]))
            except OSError:
                break
        try:
            status, _body = answer(sock, timeout=give_up)
        except OSError:
            status = b""
    return time.monotonic() - began, status


def test_a_client_sending_its_headers_slowly_is_cut_off(server):
    seconds, status = dribble(server.port, b"POST /v1/chat/completions HTTP/1.1\r\n",
                              b"x-padding: " + b"a" * 200)
    assert status.startswith(b"HTTP/1.1 408 ")
    assert seconds < HEADER_TIMEOUT + 3


def test_a_client_sending_its_body_slowly_is_cut_off(server):
    seconds, status = dribble(server.port, head(CHAT, "content-length: 200"), b"b" * 200)
    assert status.startswith(b"HTTP/1.1 408 ")
    assert seconds < BODY_TIMEOUT + 3


def received(sock: socket.socket, data: bytes, enough: Callable[[bytes], bool],
             gone: str) -> bytes:
    """`data` and what the socket sends after it, until `enough(data)`; `gone` if it closes
    first."""
    while not enough(data):
        more = sock.recv(65536)
        assert more, gone
        data += more
    return data


def read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """The head of an answer on a kept-alive connection, and what came after it."""
    data = received(sock, b"", lambda d: b"\r\n\r\n" in d, "the connection closed before the head")
    head, rest = data.split(b"\r\n\r\n", 1)
    return head, rest


def health_answer(sock: socket.socket) -> bytes:
    """One GET /health on a kept-alive connection: its whole answer (head and body may come in
    separate reads)."""
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    head, body = read_head(sock)
    length = int(re.search(rb"(?i)\r\ncontent-length: *(\d+)", head).group(1))
    body = received(sock, body, lambda b: len(b) >= length, "closed inside the answer")
    assert len(body) == length
    return head


def closed_after(sock: socket.socket, give_up: float = 10.0) -> float:
    began = time.monotonic()
    sock.settimeout(give_up)
    while sock.recv(65536):
        pass
    return time.monotonic() - began


def test_idle_connections_are_closed(server):
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        assert closed_after(sock) < KEEPALIVE_TIMEOUT + 3  # never sent a request
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        for _ in range(2):  # kept alive between requests while within the timeout
            sock.settimeout(5)
            assert health_answer(sock).startswith(b"HTTP/1.1 200 ")
            time.sleep(KEEPALIVE_TIMEOUT / 4)
        assert closed_after(sock) < KEEPALIVE_TIMEOUT + 3


def test_the_idle_timeout_counts_from_the_end_of_the_last_answer(server):
    """The connection lives as long as requests keep coming within KEEPALIVE_TIMEOUT of each
    other (however long that is in all), and closes KEEPALIVE_TIMEOUT after the last answer,
    not earlier (the listener's one timer per connection is set again while it is in use)."""
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.settimeout(5)
        began = time.monotonic()
        for _ in range(4):
            time.sleep(KEEPALIVE_TIMEOUT * 0.6)
            assert health_answer(sock).startswith(b"HTTP/1.1 200 ")
        assert time.monotonic() - began > KEEPALIVE_TIMEOUT * 2  # open all along
        idle = closed_after(sock)
        assert KEEPALIVE_TIMEOUT - 0.3 < idle < KEEPALIVE_TIMEOUT + 1.5, idle


def test_a_stream_longer_than_every_timeout_is_not_cut(server, upstream):
    upstream.script(sc.slow(sc.text("one two three four five six", chunks=6), chunk_delay=0.6))
    began = time.monotonic()
    response = httpx.post(server.url + CHAT, timeout=30, json={
        "model": "glm-5", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    assert time.monotonic() - began > max(HEADER_TIMEOUT, BODY_TIMEOUT, KEEPALIVE_TIMEOUT) + 1
    assert response.status_code == 200
    assert b"[DONE]" in response.content and b"six" in response.content


# --- writes to a client (iflow2api_site/tuning.py: write_through_tcp) --------------------------


def read_http_answer(sock: socket.socket) -> tuple[bytes, bytes]:
    """The head and the de-chunked body of one chunked HTTP/1.1 answer."""
    head, rest = read_head(sock)
    body = b""
    while True:
        rest = received(sock, rest, lambda r: b"\r\n" in r, "the connection closed between chunks")
        size_line, rest = rest.split(b"\r\n", 1)
        size = int(size_line, 16)
        rest = received(sock, rest, lambda r, size=size: len(r) >= size + 2,
                        "the connection closed inside a chunk")
        if size == 0:
            return head, body
        body, rest = body + rest[:size], rest[size + 2:]


def test_a_client_reading_slowly_gets_every_byte_in_order(server, upstream):
    # Sends meet a full socket buffer: what the socket does not take at once must follow in
    # order, after what it took, whatever the mix of sent-at-once and buffered writes.
    # 600 KB, every word distinct: more than the kernel's buffers take while the client does
    # not read (strace: Twisted's own 128 KiB sends drain the rest), and read through a 4 KiB
    # window at ~40 KB/s (2.4 MB took a minute)
    content = "".join(f"{i:07d} " for i in range(75_000))
    upstream.script(sc.text(content, chunks=48))
    request = json.dumps({"model": "glm-5", "stream": True,
                          "messages": [{"role": "user", "content": "hi"}]}).encode()
    head = (f"POST {CHAT} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(request)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(head + request)
        time.sleep(1.0)  # not reading: the server's socket buffer fills
        status, body = read_http_answer(sock)
    assert status.startswith(b"HTTP/1.1 200")
    chunks = [json.loads(line[6:]) for line in body.decode().split("\n")
              if line.startswith("data: {")]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks
                   if c["choices"]) == content
    assert body.endswith(b"data: [DONE]\n\n")
