"""A client that goes away before its answer: the upstream request is closed at once and both
the access log and the request log record 499, on the fast path and through Django (issue 13
item 13)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime

import httpx
import pytest
from django.utils import timezone

from tests.conftest import FAKE_KEY
from tests.fakes import scenarios as sc
from tests.servers import GatewayServer

MESSAGES = [{"role": "user", "content": "hi"}]
CLIENT_WAITS = 1.0  # then it closes the connection


@pytest.fixture(scope="module", params=["fast path", "django"])
def server(request, fake_iflow) -> Iterator[GatewayServer]:
    env = {"IFLOW_API_KEY": FAKE_KEY, "IFLOW_BASE_URL": fake_iflow.base_url,
           # Far longer than the test waits: only the client leaving can end the upstream call.
           "UPSTREAM_READ_TIMEOUT": "60",
           "FAST_PATH": "true" if request.param == "fast path" else "false"}
    with GatewayServer(env) as gateway:
        yield gateway


def request_log_rows(server: GatewayServer, since: datetime) -> list[dict]:
    code = f"""
import datetime, json, time
from proxy.models import RequestLog
since = datetime.datetime.fromisoformat({since.isoformat()!r})
for _ in range(100):
    rows = list(RequestLog.objects.filter(started_at__gte=since).values("status", "error"))
    if rows:
        break
    time.sleep(0.1)
print(json.dumps(rows))
"""
    return json.loads(server.shell(code).strip().splitlines()[-1])


def access_lines(server: GatewayServer, request_id: str) -> list[str]:
    return [line for line in server.output().splitlines()
            if f"[{request_id}]" in line and " iflow2api.access " in line]


@pytest.mark.parametrize("path, body", [
    ("/v1/chat/completions", {"model": "glm-5", "messages": MESSAGES}),
    ("/v1/messages", {"model": "glm-5", "max_tokens": 10, "messages": MESSAGES}),
], ids=["chat", "messages"])
def test_the_upstream_call_ends_when_the_client_leaves(server, upstream, path, body):
    upstream.script(sc.hang())  # answers nothing until its client goes away
    request_id = f"left-{path.rsplit('/', 1)[-1]}-{time.monotonic_ns()}"
    since = timezone.now()
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.url + path, json=body, timeout=CLIENT_WAITS,
                   headers={"x-request-id": request_id})
    left = time.monotonic()
    upstream.wait_for_disconnect(timeout=5)
    assert time.monotonic() - left < 2.0, "the upstream call ran on after the client left"

    [row] = request_log_rows(server, since)
    assert row["status"] == 499
    deadline = time.monotonic() + 5
    while not access_lines(server, request_id) and time.monotonic() < deadline:
        time.sleep(0.1)
    [line] = access_lines(server, request_id)
    assert f"POST {path} 499 " in line, line


def test_a_stream_the_client_leaves_is_499_in_both_logs(server, upstream):
    upstream.script(sc.slow(sc.text("one two three four five six", chunks=6), chunk_delay=0.5))
    request_id = f"left-stream-{time.monotonic_ns()}"
    since = timezone.now()
    with httpx.stream("POST", server.url + "/v1/chat/completions", timeout=10,
                      headers={"x-request-id": request_id},
                      json={"model": "glm-5", "stream": True, "messages": MESSAGES}) as response:
        assert response.status_code == 200
        next(response.iter_bytes())  # the answer has begun; then the client goes
    upstream.wait_for_disconnect(timeout=5)
    [row] = request_log_rows(server, since)
    assert row["status"] == 499
    deadline = time.monotonic() + 5
    while not access_lines(server, request_id) and time.monotonic() < deadline:
        time.sleep(0.1)
    [line] = access_lines(server, request_id)
    assert "POST /v1/chat/completions 499 " in line, line
