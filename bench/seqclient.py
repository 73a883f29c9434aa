"""c=1 tails: one keep-alive connection, requests strictly one after another, each timed here.

wrk's percentiles at -c1 against Daphne are not trustworthy (coordinated omission and its
timer granularity), so the c=1 p50/p99/p99.9 come from this client: a blocking socket, a
prebuilt request, a minimal HTTP/1.1 response reader (Content-Length or chunked), the cyclic
garbage collector off while it measures. Per request it records the total time (whole body
read) and, for streams, the time to the first `data:` bytes (TTFB).
"""

from __future__ import annotations

import gc
import json
import socket
import time
from typing import Any

from loadgen import KINDS, body_for, path_for, pct, valid


class Conn:
    """One keep-alive HTTP/1.1 connection to 127.0.0.1."""

    def __init__(self, base: str, timeout: float = 30.0) -> None:
        assert base.startswith("http://127.0.0.1:"), base
        self.port = int(base.rsplit(":", 1)[1].split("/")[0])
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.buf = b""

    def connect(self) -> socket.socket:
        self.close()
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock, self.buf = sock, b""
        return sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _fill(self) -> None:
        assert self.sock is not None
        data = self.sock.recv(262144)
        if not data:
            raise ConnectionError("connection closed by the server")
        self.buf += data

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def request(self, raw: bytes) -> tuple[int, bytes, float, float | None, bool]:
        """Sends `raw`; returns (status, body, total s, first data: s or None, keep-alive)."""
        sock = self.sock or self.connect()
        t0 = time.perf_counter()
        sock.sendall(raw)
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for ln in lines[1:]:
            name, _, value = ln.partition(b":")
            headers[name.strip().lower()] = value.strip().lower()
        first: float | None = None
        if b"chunked" in headers.get(b"transfer-encoding", b""):
            parts = []
            while True:
                size = int(self._line().split(b";")[0], 16)
                if size == 0:
                    self._line()
                    break
                chunk = self._take(size)
                self._take(2)
                if first is None and b"data:" in chunk:
                    first = time.perf_counter()
                parts.append(chunk)
            body = b"".join(parts)
        else:
            body = self._take(int(headers.get(b"content-length", b"0")))
            if b"data:" in body:
                first = time.perf_counter()
        end = time.perf_counter()
        return status, body, end - t0, (None if first is None else first - t0), \
            headers.get(b"connection") != b"close"


def raw_request(base: str, kind: str) -> bytes:
    body = json.dumps(body_for(kind)).encode()
    return (f"POST {path_for(kind)} HTTP/1.1\r\nHost: {base[7:]}\r\n"
            "Content-Type: application/json\r\nAuthorization: Bearer sk-bench\r\n"
            "x-api-key: sk-bench\r\nanthropic-version: 2023-06-01\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000, 3)


def run(base: str, kind: str, n: int, warmup: int = 200) -> dict[str, Any]:
    """`warmup` untimed requests, then `n` timed ones, one at a time on one connection."""
    conn, raw = Conn(base), raw_request(base, kind)
    total: list[float] = []
    ttfb: list[float] = []
    errors: dict[str, int] = {}
    samples: dict[str, str] = {}
    gc_was = gc.isenabled()
    gc.disable()
    start = time.perf_counter()
    try:
        for i in range(warmup + n):
            if i == warmup:
                start = time.perf_counter()
            try:
                status, body, took, first, keep = conn.request(raw)
            except (OSError, ValueError) as exc:
                conn.close()
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                samples.setdefault(type(exc).__name__, repr(exc)[:300])
                continue
            if not keep:
                conn.close()
            if status != 200 or not valid(kind, body):
                kind_ = f"HTTP {status}" if status != 200 else "invalid body"
                errors[kind_] = errors.get(kind_, 0) + 1
                samples.setdefault(kind_, body[-300:].decode("utf-8", "replace"))
            elif i >= warmup:
                total.append(took)
                if first is not None:
                    ttfb.append(first)
        elapsed = time.perf_counter() - start
    finally:
        conn.close()
        if gc_was:
            gc.enable()
    total.sort()
    ttfb.sort()
    return {
        "ok": len(total), "errors": sum(errors.values()), "error_kinds": errors,
        "error_samples": samples, "rps": round(len(total) / elapsed, 1) if elapsed else 0.0,
        "p50_ms": ms(pct(total, 50)), "p99_ms": ms(pct(total, 99)),
        "p999_ms": ms(pct(total, 99.9)), "max_ms": ms(total[-1] if total else None),
        "ttfb_p50_ms": ms(pct(ttfb, 50)), "ttfb_p99_ms": ms(pct(ttfb, 99)),
        "ttfb_p999_ms": ms(pct(ttfb, 99.9)),
    }


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description="c=1 sequential keep-alive client")
    p.add_argument("base", help="http://127.0.0.1:PORT")
    p.add_argument("--kind", default="chat", choices=KINDS)
    p.add_argument("-n", type=int, default=10_000)
    a = p.parse_args()
    print(json.dumps(run(a.base, a.kind, a.n)))
