"""Helpers for end-to-end instance tests: read a server's SQLite database, wait for instance
states, log in to the admin, and tiny loopback HTTP and SOCKS5 proxies that record what they
forward."""

from __future__ import annotations

import contextlib
import re
import selectors
import socket
import socketserver
import sqlite3
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.servers import GatewayServer

KEY_LINE = re.compile(r"sk-i2a-[A-Za-z0-9_-]{20,}")


def db_path(server: GatewayServer) -> Path:
    return Path(server.env["IFLOW2API_HOME"]) / "db.sqlite3"


def query(server: GatewayServer, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    """Rows of a read-only query on the server's SQLite database (reading it directly is
    faster than a shell and changes nothing)."""
    uri = f"file:{db_path(server)}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=20)) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(row) for row in conn.execute(sql, params)]


def wait_until(predicate: Callable[[], Any], timeout: float = 8.0, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def instance_row(server: GatewayServer, name: str) -> dict[str, Any]:
    [row] = query(server, "SELECT * FROM instances_instance WHERE name = ?", (name,))
    return row


def wait_for_state(server: GatewayServer, name: str, state: str,
                   timeout: float = 8.0) -> dict[str, Any]:
    row = wait_until(lambda: (r := instance_row(server, name))["state"] == state and r,
                     timeout=timeout)
    assert row, f"instance {name} not {state}: {instance_row(server, name)}\n{server.output()}"
    return row


def wait_for_port(port: int, timeout: float = 8.0) -> None:
    def answers() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    assert wait_until(answers, timeout=timeout), f"nothing answers on port {port}"


def last_line(text: str) -> str:
    return text.rstrip("\n").rsplit("\n", 1)[-1]


def admin_session(server: GatewayServer, username: str, password: str) -> httpx.Client:
    """An httpx client logged in through the admin's login form (CSRF token included)."""
    client = httpx.Client(base_url=server.url, timeout=30)
    form = client.get("/admin/login/", params={"next": "/admin/"})
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)
    assert token, form.text
    answer = client.post("/admin/login/?next=/admin/", data={
        "csrfmiddlewaretoken": token.group(1), "username": username, "password": password})
    assert answer.status_code == 302, answer.text
    return client


def csrf_token(page: httpx.Response) -> str:
    found = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert found, page.text
    return found.group(1)


def hidden_fields(html: str) -> dict[str, str]:
    """A form's hidden inputs but the CSRF token (inline formsets' management forms, popup
    markers), as a browser sends them back."""
    return {m["name"]: m["value"] for m in re.finditer(
        r'<input type="hidden" name="(?P<name>[^"]+)" value="(?P<value>[^"]*)"', html)
        if m["name"] != "csrfmiddlewaretoken"}


# --- proxies ------------------------------------------------------------------------------------


def _read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """The bytes up to the blank line after the head, and what came after it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the end of the head")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _without(lines: list[bytes], names: set[bytes]) -> list[bytes]:
    return [line for line in lines if line.split(b":", 1)[0].strip().lower() not in names]


HOP_HEADERS = {b"connection", b"proxy-connection", b"keep-alive"}


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class _LoopbackProxy:
    """A proxy server in a background thread; `seen` lists the targets it forwarded to."""

    scheme = ""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                with contextlib.suppress(OSError, ConnectionError):
                    proxy.serve(self.request)

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.server.server_address[1]}"

    def record(self, target: str) -> None:
        with self.lock:
            self.seen.append(target)

    def reset(self) -> None:
        with self.lock:
            self.seen.clear()

    def serve(self, client: socket.socket) -> None:
        raise NotImplementedError

    def __enter__(self) -> _LoopbackProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class HttpProxy(_LoopbackProxy):
    """A forwarding HTTP proxy: one request per connection (it answers `Connection: close`),
    the absolute URL rewritten to a path, the answer passed through as it streams."""

    scheme = "http"

    def serve(self, client: socket.socket) -> None:
        head, rest = _read_head(client)
        request_line, *headers = head.split(b"\r\n")
        method, url, _version = request_line.split(b" ")
        self.record(f"{method.decode()} {url.decode()}")
        found = re.match(rb"http://([^/:]+):(\d+)(/.*)", url)
        if found is None:  # CONNECT or an origin-form target: not needed here
            client.sendall(b"HTTP/1.1 501 Not Implemented\r\nContent-Length: 0\r\n\r\n")
            return
        length = 0
        for line in headers:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(rest) < length:
            chunk = client.recv(65536)
            if not chunk:
                return
            rest += chunk
        host, port, path = found.group(1).decode(), int(found.group(2)), found.group(3)
        with socket.create_connection((host, port), timeout=30) as upstream:
            upstream.sendall(b"\r\n".join([
                method + b" " + path + b" HTTP/1.1",
                *_without(headers, HOP_HEADERS), b"Connection: close", b"", b""]) + rest)
            answer_head, answer_rest = _read_head(upstream)
            status_line, *answer_headers = answer_head.split(b"\r\n")
            client.sendall(b"\r\n".join([
                status_line, *_without(answer_headers, HOP_HEADERS), b"Connection: close",
                b"", b""]) + answer_rest)
            while chunk := upstream.recv(65536):
                client.sendall(chunk)


class Socks5Proxy(_LoopbackProxy):
    """A SOCKS5 proxy (no authentication, CONNECT only) that pipes bytes both ways."""

    scheme = "socks5"

    def serve(self, client: socket.socket) -> None:
        greeting = client.recv(2)
        if len(greeting) < 2 or greeting[0] != 5:
            return
        client.recv(greeting[1])  # the offered methods: we take "no authentication"
        client.sendall(b"\x05\x00")
        version, command, _reserved, kind = client.recv(4)
        if kind == 1:
            host = socket.inet_ntoa(client.recv(4))
        elif kind == 3:
            host = client.recv(client.recv(1)[0]).decode()
        else:
            host = socket.inet_ntop(socket.AF_INET6, client.recv(16))
        (port,) = struct.unpack(">H", client.recv(2))
        if version != 5 or command != 1:
            client.sendall(b"\x05\x07\x00\x01\x00\x00\x00\x00\x00\x00")
            return
        self.record(f"{host}:{port}")
        with socket.create_connection((host, port), timeout=30) as upstream:
            client.sendall(b"\x05\x00\x00\x01\x00\x00\x00\x00\x00\x00")
            _pipe(client, upstream)


def _pipe(one: socket.socket, other: socket.socket) -> None:
    """Copies bytes both ways until either side closes."""
    with selectors.DefaultSelector() as selector:
        selector.register(one, selectors.EVENT_READ, other)
        selector.register(other, selectors.EVENT_READ, one)
        while True:
            for key, _events in selector.select(timeout=60):
                data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                if not data:
                    return
                key.data.sendall(data)
