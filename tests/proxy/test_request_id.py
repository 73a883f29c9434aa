"""One request id end to end: the id a client quotes (the x-request-id header, Anthropic's
request-id header and error body's request_id, the SDKs' `_request_id`) is the one on the
server's log lines and in the request log."""

from __future__ import annotations

import json
import time

import anthropic
import httpx
import openai

from tests.fakes import scenarios as sc
from tests.servers import GatewayServer

MESSAGES = [{"role": "user", "content": "hi"}]


def request_log_row(server: GatewayServer, request_id: str) -> dict:
    """The request log's row of `request_id`, waiting for the writer (one shell)."""
    code = f"""
import json, time
from proxy.models import RequestLog
for _ in range(100):
    rows = list(RequestLog.objects.filter(request_id={request_id!r})
                .values("request_id", "api", "status"))
    if rows:
        break
    time.sleep(0.1)
print(json.dumps(rows))
"""
    rows = json.loads(server.shell(code).strip().splitlines()[-1])
    assert len(rows) == 1, rows
    return rows[0]


def access_line(server: GatewayServer, request_id: str) -> str:
    deadline = time.monotonic() + 5
    while True:
        lines = [x for x in server.output().splitlines()
                 if f" iflow2api.access [{request_id}] " in x]
        if lines or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(lines) == 1, server.output()[-2000:]
    return lines[0]


def test_an_anthropic_answer_and_error_quote_the_id_of_the_logs(gateway, upstream):
    upstream.script(sc.text("Hello"))
    client = anthropic.Anthropic(base_url=gateway.url, api_key="any", max_retries=0)
    raw = client.messages.with_raw_response.create(model="glm-5", max_tokens=10,
                                                   messages=MESSAGES)
    rid = raw.headers["x-request-id"]
    assert raw.headers["request-id"] == rid and raw.parse()._request_id == rid
    assert " 200 " in access_line(gateway, rid)
    assert request_log_row(gateway, rid) == {"request_id": rid, "api": "anthropic",
                                             "status": 200}

    try:  # refused before the upstream (no model), with the client's own id
        client.messages.create(model="", max_tokens=10, messages=MESSAGES,
                               extra_headers={"x-request-id": "trace.client-42"})
        raise AssertionError("expected a 400")
    except anthropic.BadRequestError as error:
        body, headers, quoted = error.body, error.response.headers, error.request_id
    assert body["request_id"] == "trace.client-42" == quoted  # type: ignore[index]
    assert headers["request-id"] == headers["x-request-id"] == "trace.client-42"
    assert " 400 " in access_line(gateway, "trace.client-42")
    assert request_log_row(gateway, "trace.client-42")["status"] == 400


def test_an_upstream_failure_in_a_stream_and_an_openai_error_carry_the_same_id(
        gateway, upstream):
    upstream.script(sc.http_error(500, {"error": {"message": "upstream broke"}}))
    response = httpx.post(gateway.url + "/v1/messages", timeout=30, json={
        "model": "glm-5", "max_tokens": 10, "messages": MESSAGES, "stream": True})
    assert response.status_code == 502
    rid = response.headers["x-request-id"]
    assert response.json()["request_id"] == response.headers["request-id"] == rid
    assert " 502 " in access_line(gateway, rid)
    assert request_log_row(gateway, rid)["status"] == 502

    upstream.script(sc.text("Hi"))
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="any", max_retries=0)
    completion = client.chat.completions.create(model="glm-5", messages=MESSAGES)
    rid = completion._request_id  # the openai SDK reads x-request-id
    assert rid and " 200 " in access_line(gateway, rid)
    assert request_log_row(gateway, rid)["api"] == "openai"
