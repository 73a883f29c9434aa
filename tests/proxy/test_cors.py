"""CORS on the API paths: preflights, headers on normal and streaming answers, origin lists."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.conftest import FAKE_KEY
from tests.fakes import scenarios as sc
from tests.servers import GatewayServer, free_port

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


# --- per instance: A lists one origin, B keeps the default `*` ---------------------------------

PER_INSTANCE_SETUP = """
from instances.models import Instance
Instance.objects.filter(name="default").update(cors_allowed_origins="http://a.test")
Instance.objects.create(name="b", host="127.0.0.1", port={port})
"""


@pytest.fixture(scope="module")
def two_instances(fake_iflow):
    env = {"IFLOW_API_KEY": FAKE_KEY, "IFLOW_BASE_URL": fake_iflow.base_url}
    with GatewayServer(env) as server:
        port = free_port()
        server.shell(PER_INSTANCE_SETUP.format(port=port))
        b_url = f"http://127.0.0.1:{port}"

        def both_ready() -> bool:  # B listens, and A's origin list reached the server
            try:
                preflight(b_url, "http://b.test")
            except httpx.HTTPError:
                return False
            return preflight(server.url, "http://b.test").status_code == 403

        deadline = time.monotonic() + 8
        while not both_ready():
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.1)
        yield server.url, b_url


def preflight(url: str, origin: str) -> httpx.Response:
    return httpx.options(url + "/v1/chat/completions", headers={**PREFLIGHT, "origin": origin},
                         timeout=5)


def test_preflights_follow_each_instances_origins(two_instances):
    a_url, b_url = two_instances
    allowed = preflight(a_url, "http://a.test")
    assert allowed.status_code == 204
    assert allowed.headers["access-control-allow-origin"] == "http://a.test"
    assert allowed.headers["vary"] == "Origin"
    refused = preflight(a_url, "http://b.test")
    assert refused.status_code == 403 and "access-control-allow-origin" not in refused.headers
    for origin in ("http://a.test", "http://b.test"):
        anyone = preflight(b_url, origin)
        assert anyone.status_code == 204
        assert anyone.headers["access-control-allow-origin"] == "*"


def test_answers_follow_each_instances_origins(two_instances, upstream):
    a_url, b_url = two_instances
    upstream.script(sc.text("hi"), sc.text("hi"), sc.text("hi"))
    headers = {"origin": "http://b.test"}
    on_a = httpx.post(a_url + "/v1/chat/completions", json=BODY, headers=headers, timeout=30)
    assert on_a.status_code == 200 and "access-control-allow-origin" not in on_a.headers
    on_b = httpx.post(b_url + "/v1/chat/completions", json=BODY, headers=headers, timeout=30)
    assert on_b.headers["access-control-allow-origin"] == "*"
    mine = httpx.post(a_url + "/v1/chat/completions", json=BODY, timeout=30,
                      headers={"origin": "http://a.test"})
    assert mine.headers["access-control-allow-origin"] == "http://a.test"
