"""Small real images and a loopback image server for vision tests."""

from __future__ import annotations

import base64
import struct
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def png(width: int = 2, height: int = 2, padding: int = 0) -> bytes:
    """A valid RGB PNG; `padding` adds an ancillary chunk to make it bigger."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    raw = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    parts = [chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))]
    if padding:
        parts.append(chunk(b"tEXt", b"pad\x00" + b"x" * padding))
    parts += [chunk(b"IDAT", zlib.compress(raw)), chunk(b"IEND", b"")]
    return b"\x89PNG\r\n\x1a\n" + b"".join(parts)


def data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


@contextmanager
def image_server(files: dict[str, tuple[str, bytes]], *, seen: list[str] | None = None,
                 gate: threading.Event | None = None) -> Iterator[str]:
    """Serves {path: (content type, bytes)} on loopback; a path mapped to ("redirect", b"/x")
    redirects. Yields the base URL. `seen` records each requested path as it arrives; with a
    `gate`, answers wait until it is set (at most 20 s)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if seen is not None:
                seen.append(self.path)
            if gate is not None:
                gate.wait(20)
            content_type, body = files.get(self.path, ("text/plain", b""))
            if self.path not in files:
                self.send_response(404)
            elif content_type == "redirect":
                self.send_response(302)
                self.send_header("Location", body.decode())
                body = b""
            else:
                self.send_response(200)
                self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
