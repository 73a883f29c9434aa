"""Failed upstream calls leave no reference cycles either (see test_request_garbage.py).

An exception kept in a local of a frame its own traceback holds is a cycle, and it keeps
whatever those frames hold: the request, its upstream body, the upstream response. With the
young-generation threshold `serve` sets, that would wait thousands of requests for a pass.
The one cycle left is asyncio's own, per broken connection (its transport's bound method and
socket, ~7 objects, nothing of the request's): it is allowed for, by name.
"""

from __future__ import annotations

from typing import Any

import httpx

from tests.fakes import scenarios as sc
from tests.fakes.upstream import FakeUpstream
from tests.proxy.test_request_garbage import MESSAGES, garbage_of
from tests.servers import GatewayServer

BODIES: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {"model": "glm-5", "messages": MESSAGES},
    "/v1/messages": {"model": "glm-5", "max_tokens": 16, "messages": MESSAGES},
    "/v1/responses": {"model": "glm-5", "input": "hi", "store": False},
}
# asyncio's transport of a connection the upstream broke (Python 3.11: a bound method of the
# transport kept on the transport); nothing in it holds a request.
ASYNCIO_TRANSPORT_CYCLE = {"tuple", "socket", "_SelectorSocketTransport", "TransportSocket",
                           "dict", "method"}


def failing_calls(client: httpx.Client, server: GatewayServer, upstream: FakeUpstream) -> int:
    """Per API: an upstream 500 without and with streaming, an empty stream, and a stream cut
    after two events. Returns how many connections the upstream broke."""
    broken = 0
    for path, body in BODIES.items():
        for scenario, stream in (
            (sc.http_error(500, {"error": {"message": "boom"}}), False),
            (sc.http_error(500, {"error": {"message": "boom"}}), True),
            (sc.empty_stream(), True),
            (sc.drop_after(2, sc.text("one two three four five six", chunks=6)), True),
        ):
            upstream.script(scenario)
            answer = client.post(server.url + path, json={**body, "stream": stream})
            assert answer.status_code in (200, 502), (path, answer.status_code, answer.text)
            broken += scenario.drop_after is not None
    return broken


def test_failed_upstream_calls_leave_no_cyclic_garbage(fake_iflow, tmp_path):
    fake_iflow.reset()
    try:
        found, broken = garbage_of(
            fake_iflow, tmp_path, lambda client, server: failing_calls(client, server, fake_iflow))
    finally:
        fake_iflow.reset()
    assert not found["frames"], found  # no exception keeps a request's frames
    assert set(found["kinds"]) <= ASYNCIO_TRANSPORT_CYCLE, found
    assert found["total"] <= 8 * broken, found
