"""The bare-proxy ceiling: a raw ASGI app that forwards the request body to the upstream with one
aiohttp session and passes the answer back (streams chunk by chunk). No gateway logic at all:
no keys, routing, rate rules, request log, status or metrics. Under Daphne it shows what the
server plus one upstream call cost; the gateway is reported as a fraction of it.

  BARE_UPSTREAM=http://127.0.0.1:PORT/v1 python -m daphne -b 127.0.0.1 -p 8080 bare_proxy:app

(run_bench.py starts it like this, from the bench directory, pinned like the gateway.)
"""

from __future__ import annotations

import os
from typing import Any

import aiohttp

UPSTREAM = os.environ.get("BARE_UPSTREAM", "http://127.0.0.1:18000/v1").rstrip("/")
_session: aiohttp.ClientSession | None = None


def session() -> aiohttp.ClientSession:
    global _session
    if _session is None:  # made on the first request: it must live on Daphne's running loop
        _session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None, sock_read=60))
    return _session


async def read_body(receive: Any) -> bytes:
    parts = []
    while True:
        message = await receive()
        parts.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(parts)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        return
    if scope["type"] != "http":
        return
    body = await read_body(receive)
    path = scope["path"].removeprefix("/v1")
    headers = {"content-type": "application/json", "authorization": "Bearer sk-bench"}
    async with session().request(scope["method"], UPSTREAM + path, data=body,
                                 headers=headers) as resp:
        stream = resp.headers.get("content-type", "").startswith("text/event-stream")
        out = [(b"content-type", resp.headers.get("content-type", "").encode())]
        if not stream:
            data = await resp.read()
            out.append((b"content-length", str(len(data)).encode()))
            await send({"type": "http.response.start", "status": resp.status, "headers": out})
            await send({"type": "http.response.body", "body": data})
            return
        await send({"type": "http.response.start", "status": resp.status, "headers": out})
        async for chunk in resp.content.iter_any():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
