"""CORS on the API paths: preflights, headers on normal and streaming answers, origin lists."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import FAKE_KEY
from tests.fakes import scenarios as sc
from tests.servers import GatewayServer

PREFLIGHT = {
    "origin": "http://app.example",
    "access-control-request-method": "POST",
    "access-control-request-headers": "authorization,content-type,x-stainless-os,"
                                      "anthropic-version,x-api-key",
}
BODY = {"model": "glm-5", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/chat/completions", "/v1/messages",
                                  "/v1/models", "/health", "/v1/messages/count_tokens"])
def test_preflight_is_answered(gateway, path):
    response = httpx.options(gateway.url + path, headers=PREFLIGHT)
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == "*"
    assert "POST" in response.headers["access-control-allow-methods"]
    allowed = response.headers["access-control-allow-headers"].lower()
    for name in ("authorization", "content-type", "x-stainless-os", "anthropic-version",
                 "x-api-key"):
        assert name in allowed
    assert int(response.headers["access-control-max-age"]) >= 600
    assert "access-control-allow-credentials" not in response.headers


def test_preflight_without_requested_headers_lists_the_clients_headers(gateway):
    response = httpx.options(gateway.url + "/v1/messages", headers={
        "origin": "http://app.example", "access-control-request-method": "POST"})
    allowed = response.headers["access-control-allow-headers"]
    assert "anthropic-beta" in allowed and "x-api-key" in allowed


def test_normal_and_streaming_answers_carry_the_origin_header(gateway, upstream):
    upstream.script(sc.text("hi"), sc.text("hi there"))
    plain = httpx.post(gateway.url + "/v1/chat/completions", json=BODY,
                       headers={"origin": "http://app.example"})
    assert plain.headers["access-control-allow-origin"] == "*"
    with httpx.stream("POST", gateway.url + "/v1/chat/completions",
                      json={**BODY, "stream": True},
                      headers={"origin": "http://app.example"}) as stream:
        assert stream.headers["access-control-allow-origin"] == "*"
        assert "retry-after" in stream.headers["access-control-expose-headers"]
        stream.read()
    error = httpx.post(gateway.url + "/v1/chat/completions", content=b"{",
                       headers={"origin": "http://app.example"})
    assert error.status_code == 400 and error.headers["access-control-allow-origin"] == "*"


def test_the_admin_never_sends_cors_headers(gateway):
    for method, path in [("OPTIONS", "/admin/login/"), ("GET", "/admin/login/")]:
        response = httpx.request(method, gateway.url + path, headers=PREFLIGHT)
        assert not any(h.startswith("access-control-") for h in response.headers)


@pytest.fixture(scope="module")
def restricted_gateway(fake_iflow):
    env = {"IFLOW_API_KEY": FAKE_KEY, "IFLOW_BASE_URL": fake_iflow.base_url,
           "CORS_ALLOWED_ORIGINS": "http://good.example, http://also.example:8080"}
    with GatewayServer(env) as server:
        yield server


def test_restricted_origins(restricted_gateway, upstream):
    good = httpx.options(restricted_gateway.url + "/v1/chat/completions",
                         headers={**PREFLIGHT, "origin": "http://good.example"})
    assert good.status_code == 204
    assert good.headers["access-control-allow-origin"] == "http://good.example"
    assert good.headers["vary"] == "Origin"
    bad = httpx.options(restricted_gateway.url + "/v1/chat/completions", headers=PREFLIGHT)
    assert bad.status_code == 403
    assert "access-control-allow-origin" not in bad.headers
    upstream.script(sc.text("hi"))
    answer = httpx.post(restricted_gateway.url + "/v1/chat/completions", json=BODY,
                        headers={"origin": "http://evil.example"})
    assert "access-control-allow-origin" not in answer.headers
