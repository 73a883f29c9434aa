"""CORS on the API paths: preflights, headers on normal and streaming answers, origin lists; an
instance without client keys refuses web pages other than loopback ones unless told otherwise."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.conftest import FAKE_KEY
from tests.fakes import scenarios as sc
from tests.servers import GatewayServer, free_port

LOCAL_PAGE = "http://localhost:5173"  # a page served from this machine: allowed by default
PREFLIGHT = {
    "origin": LOCAL_PAGE,
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
    assert response.headers["access-control-allow-origin"] == LOCAL_PAGE
    assert response.headers["vary"] == "Origin"
    assert "POST" in response.headers["access-control-allow-methods"]
    allowed = response.headers["access-control-allow-headers"].lower()
    for name in ("authorization", "content-type", "x-stainless-os", "anthropic-version",
                 "x-api-key"):
        assert name in allowed
    assert int(response.headers["access-control-max-age"]) >= 600
    assert "access-control-allow-credentials" not in response.headers


def test_preflight_without_requested_headers_lists_the_clients_headers(gateway):
    response = httpx.options(gateway.url + "/v1/messages", headers={
        "origin": LOCAL_PAGE, "access-control-request-method": "POST"})
    allowed = response.headers["access-control-allow-headers"]
    assert "anthropic-beta" in allowed and "x-api-key" in allowed


def test_normal_and_streaming_answers_carry_the_origin_header(gateway, upstream):
    upstream.script(sc.text("hi"), sc.text("hi there"))
    plain = httpx.post(gateway.url + "/v1/chat/completions", json=BODY,
                       headers={"origin": LOCAL_PAGE})
    assert plain.headers["access-control-allow-origin"] == LOCAL_PAGE
    with httpx.stream("POST", gateway.url + "/v1/chat/completions",
                      json={**BODY, "stream": True},
                      headers={"origin": LOCAL_PAGE}) as stream:
        assert stream.headers["access-control-allow-origin"] == LOCAL_PAGE
        assert "retry-after" in stream.headers["access-control-expose-headers"]
        stream.read()
    error = httpx.post(gateway.url + "/v1/chat/completions", content=b"{",
                       headers={"origin": LOCAL_PAGE})
    assert error.status_code == 400
    assert error.headers["access-control-allow-origin"] == LOCAL_PAGE


@pytest.mark.parametrize("origin", ["http://127.0.0.1:3000", "http://[::1]:8080",
                                    "http://localhost", "https://localhost:8443"])
def test_loopback_pages_are_allowed_by_default(gateway, origin):
    response = httpx.options(gateway.url + "/v1/chat/completions",
                             headers={**PREFLIGHT, "origin": origin})
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == origin


@pytest.mark.parametrize("origin", ["https://evil.example", "http://localhost.evil.example",
                                    "http://127.0.0.1.evil.example:80", "null"])
def test_a_keyless_instance_refuses_other_web_pages(gateway, upstream, origin):
    """A `text/plain` POST is a "simple" request: the browser sends it without a preflight, so
    leaving out the CORS headers would not stop it; it must be refused."""
    upstream.script(sc.text("hi"))
    simple = {"origin": origin, "content-type": "text/plain"}
    chat = httpx.post(gateway.url + "/v1/chat/completions", headers=simple,
                      content=json.dumps(BODY))
    assert chat.status_code == 403, chat.text
    assert chat.json()["error"]["code"] == "origin_not_allowed"
    assert "access-control-allow-origin" not in chat.headers
    message = httpx.post(gateway.url + "/v1/messages", headers=simple, content=json.dumps(
        {"model": "glm-5", "max_tokens": 5, "messages": BODY["messages"]}))
    assert message.status_code == 403
    assert message.json()["type"] == "error"
    assert message.json()["error"]["type"] == "permission_error"
    assert httpx.get(gateway.url + "/v1/models", headers={"origin": origin}).status_code == 403
    preflight = httpx.options(gateway.url + "/v1/chat/completions",
                              headers={**PREFLIGHT, "origin": origin})
    assert preflight.status_code == 403
    assert "access-control-allow-origin" not in preflight.headers
    assert upstream.requests == []  # nothing was spent


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
    answer = httpx.post(restricted_gateway.url + "/v1/chat/completions", json=BODY,
                        headers={"origin": "http://evil.example"})
    assert answer.status_code == 403 and "access-control-allow-origin" not in answer.headers
    # A list replaces the loopback default.
    local = httpx.options(restricted_gateway.url + "/v1/chat/completions", headers=PREFLIGHT)
    assert local.status_code == 403


# --- per instance: A lists one origin, B asks for `*`, C has a key and sets nothing --------------

PER_INSTANCE_SETUP = """
from instances.models import ClientKey, Instance
Instance.objects.filter(name="default").update(cors_allowed_origins="http://a.test")
Instance.objects.create(name="b", host="127.0.0.1", port={port}, cors_allowed_origins="*")
c = Instance.objects.create(name="c", host="127.0.0.1", port={c_port})
print(ClientKey.create(c, "browser")[1])
"""


@pytest.fixture(scope="module")
def two_instances(fake_iflow):
    env = {"IFLOW_API_KEY": FAKE_KEY, "IFLOW_BASE_URL": fake_iflow.base_url}
    with GatewayServer(env) as server:
        port, c_port = free_port(), free_port()
        key = server.shell(PER_INSTANCE_SETUP.format(port=port, c_port=c_port)).split()[-1]
        b_url, c_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{c_port}"

        def all_ready() -> bool:  # B and C listen, and A's origin list reached the server
            try:
                preflight(b_url, "http://b.test")
                preflight(c_url, "http://b.test")
            except httpx.HTTPError:
                return False
            return preflight(server.url, "http://b.test").status_code == 403

        deadline = time.monotonic() + 8
        while not all_ready():
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.1)
        yield server.url, b_url, c_url, key, server


def preflight(url: str, origin: str) -> httpx.Response:
    return httpx.options(url + "/v1/chat/completions", headers={**PREFLIGHT, "origin": origin},
                         timeout=5)


def test_preflights_follow_each_instances_origins(two_instances):
    a_url, b_url, _c_url, _key, _server = two_instances
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
    a_url, b_url, _c_url, _key, _server = two_instances
    upstream.script(sc.text("hi"), sc.text("hi"))
    headers = {"origin": "http://b.test"}
    on_a = httpx.post(a_url + "/v1/chat/completions", json=BODY, headers=headers, timeout=30)
    assert on_a.status_code == 403 and "access-control-allow-origin" not in on_a.headers
    on_b = httpx.post(b_url + "/v1/chat/completions", json=BODY, headers=headers, timeout=30)
    assert on_b.headers["access-control-allow-origin"] == "*"
    mine = httpx.post(a_url + "/v1/chat/completions", json=BODY, timeout=30,
                      headers={"origin": "http://a.test"})
    assert mine.headers["access-control-allow-origin"] == "http://a.test"


def test_asking_for_any_origin_without_a_key_is_warned_about(two_instances):
    _a_url, _b_url, _c_url, _key, server = two_instances
    assert "instance b allows CORS origin * and has no client key" in server.output()
    assert "instance c allows" not in server.output()


def test_an_instance_with_keys_allows_any_page_that_brings_a_key(two_instances, upstream):
    """Without a listed origin, a key is what protects it: any page may call it with one."""
    _a_url, _b_url, c_url, key, _server = two_instances
    assert preflight(c_url, "https://app.example").headers["access-control-allow-origin"] == "*"
    upstream.script(sc.text("hi"))
    page = {"origin": "https://app.example"}
    keyless = httpx.post(c_url + "/v1/chat/completions", json=BODY, headers=page, timeout=30)
    assert keyless.status_code == 401
    keyed = httpx.post(c_url + "/v1/chat/completions", json=BODY, timeout=30,
                       headers={**page, "authorization": f"Bearer {key}"})
    assert keyed.status_code == 200 and keyed.headers["access-control-allow-origin"] == "*"
