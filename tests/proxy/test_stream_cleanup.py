"""A stream whose client leaves before its first byte gives back everything it held: the
account's pool slot, the rate-limit stream slot and the upstream request, on the fast path and
through Django (FAST_PATH=false), wherever the client leaves (while the gateway waits for the
upstream's first event, or just as the answer would begin), and also when Django never
starts sending the stream at all."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from django.core.asgi import get_asgi_application

from proxy import adapter, routes
from proxy.http import ApiRequest, StreamResult
from proxy.runtime import RUNTIME_SCOPE_KEY, Runtime
from tests.conftest import FAKE_KEY
from tests.fakes import scenarios as sc
from tests.servers import GatewayServer
from tests.sse import openai_chunks

PRELUDE = 0.3  # STREAM_PRELUDE_SECONDS: the gateway's wait for the first upstream event
ONE_SLOT = """
from accounts.models import Account
from instances.models import Instance, RateRule
Account.objects.update(max_concurrency=1)
RateRule.objects.all().delete()
RateRule.objects.create(scope="instance", instance=Instance.objects.get(name="default"),
                        concurrent_streams=1)
"""
BODY = b'{"model": "glm-5", "stream": true, "messages": [{"role": "user", "content": "hi"}]}'


@pytest.fixture(scope="module", params=["fast path", "django"])
def one_slot(request, fake_iflow) -> Iterator[GatewayServer]:
    """A gateway with one account slot and one concurrent stream for the whole instance."""
    env = {"IFLOW_API_KEY": FAKE_KEY, "IFLOW_BASE_URL": fake_iflow.base_url,
           "STREAM_PRELUDE_SECONDS": str(PRELUDE), "UPSTREAM_READ_TIMEOUT": "60",
           "POOL_QUEUE_TIMEOUT": "1",
           "FAST_PATH": "true" if request.param == "fast path" else "false"}
    with GatewayServer(env) as gateway:
        gateway.shell(ONE_SLOT)
        time.sleep(2.5)  # every process rereads its directory and routing within 2 s
        yield gateway


def open_and_leave(server: GatewayServer, after: float) -> None:
    """Sends a stream request and closes the connection `after` seconds later, unread."""
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n"
                     b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                     % (len(BODY), BODY))
        time.sleep(after)


def next_stream(server: GatewayServer) -> httpx.Response:
    """A stream request; while the last one's slots are held it is refused (429)."""
    deadline = time.monotonic() + 5
    while True:
        response = httpx.post(server.url + "/v1/chat/completions", content=BODY, timeout=30,
                              headers={"content-type": "application/json"})
        if response.status_code != 429 or time.monotonic() > deadline:
            return response
        time.sleep(0.2)


@pytest.mark.parametrize("leaves_after", [0.1, PRELUDE - 0.02, PRELUDE, PRELUDE + 0.02],
                         ids=["waiting", "just-before-first-byte", "at-first-byte", "just-after"])
def test_a_client_leaving_before_the_first_byte_frees_every_slot(one_slot, upstream,
                                                                 leaves_after):
    upstream.script(sc.hang(), sc.text("the slots came back"))
    open_and_leave(one_slot, leaves_after)
    upstream.wait_for_disconnect(timeout=5)  # the upstream request was closed
    response = next_stream(one_slot)
    assert response.status_code == 200, response.text
    text = "".join(c["choices"][0]["delta"].get("content", "")
                   for c in openai_chunks(response.content) if c["choices"])
    assert text == "the slots came back"


def test_a_stream_django_never_starts_sending_is_still_cleaned_up():
    """Django may never iterate a streaming response: here the client leaves just as the
    answer would begin, Django cancels the send and closes the response unread. The adapter
    beneath it still runs the stream's cleanup (which gives back the slots and closes the
    upstream request). In-process, so the moment the client leaves is exact; the handler is
    a stand-in whose stream records what happens to it."""
    asyncio.run(django_never_iterates())


async def django_never_iterates() -> None:
    events: list[str] = []

    async def chunks() -> AsyncIterator[bytes]:
        events.append("iterated")
        yield b"data: never sent\n\n"

    async def cleanup() -> None:
        events.append("cleaned up")

    async def handler(request: ApiRequest) -> StreamResult:
        return StreamResult(chunks(), cleanup=cleanup)

    route = dataclasses.replace(routes.find("POST", "/v1/chat/completions"), handler=handler)
    runtime = Runtime.build(redis_url="")
    left = asyncio.Event()
    body = [{"type": "http.request", "body": BODY, "more_body": False}]

    async def receive() -> dict:
        if body:
            return body.pop()
        await left.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            left.set()  # the client is gone as the answer would begin
            await asyncio.Event().wait()  # the send never completes: Django cancels it

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/v1/chat/completions",
             "raw_path": b"/v1/chat/completions", "query_string": b"", "root_path": "",
             "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
                         (b"content-length", str(len(BODY)).encode())],
             "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 80),
             RUNTIME_SCOPE_KEY: runtime}
    try:
        await asyncio.wait_for(adapter.serve(route, scope, receive, send,
                                             adapter.django_carrier(get_asgi_application())), 10)
    finally:
        await runtime.aclose()
    assert events == ["cleaned up"]  # never iterated, yet cleaned up
    assert runtime.lifecycle.in_flight == 0
