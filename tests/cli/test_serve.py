"""`iflow2api serve` and friends, run as a user runs them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile

import anthropic
import httpx
import pytest

from tests.servers import ROOT, GatewayServer


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60):
    home = tempfile.mkdtemp(prefix="iflow2api-cli-")
    full_env = {k: v for k, v in os.environ.items()
                if k not in {"DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE"}}
    full_env.update({"IFLOW2API_HOME": home, "IMPORT_IFLOW_SETTINGS": "0", **(env or {})})
    return subprocess.run([sys.executable, "-m", "iflow2api_site.cli", *args], cwd=ROOT,
                          env=full_env, capture_output=True, text=True, timeout=timeout)


def test_refuses_a_public_address_without_client_keys():
    result = run_cli("serve", "--host", "0.0.0.0", "--port", "1")
    assert result.returncode != 0
    assert "IFLOW2API_API_KEYS" in result.stderr
    assert "Traceback" not in result.stderr


def test_port_in_use_is_a_clear_error():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("serve", "--port", str(port))
    assert result.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_prints_urls_and_how_to_create_an_admin():
    with GatewayServer() as server:
        out = server.output()
        assert f"iflow2api serving on http://127.0.0.1:{server.port}" in out
        assert "iflow2api createsuperuser" in out
        assert "/admin/" in out
        health = httpx.get(server.url + "/health").json()
        assert health["status"] == "degraded" and health["upstream_configured"] is False
        admin = httpx.get(server.url + "/admin/", follow_redirects=False)
        assert admin.status_code == 302 and "/admin/login/" in admin.headers["location"]


def test_createsuperuser_noinput_works():
    home = tempfile.mkdtemp(prefix="iflow2api-cli-")
    env = {"IFLOW2API_HOME": home, "DJANGO_SUPERUSER_USERNAME": "root",
           "DJANGO_SUPERUSER_PASSWORD": "a-long-random-pass-9137", "DJANGO_SUPERUSER_EMAIL":
           "root@example.test"}
    assert run_cli("migrate", "--noinput", env=env).returncode == 0
    result = run_cli("createsuperuser", "--noinput", env=env)
    assert result.returncode == 0, result.stderr
    assert "Superuser created" in result.stdout


def test_client_keys_are_required_when_configured(fake_iflow):
    from tests.conftest import FAKE_KEY

    env = {"IFLOW_API_KEY": FAKE_KEY, "IFLOW_BASE_URL": fake_iflow.base_url,
           "IFLOW2API_API_KEYS": "sk-client-one,sk-client-two"}
    body = {"model": "glm-5", "messages": [{"role": "user", "content": "hi"}]}
    with GatewayServer(env) as server:
        url = server.url + "/v1/chat/completions"
        missing = httpx.post(url, json=body)
        assert missing.status_code == 401 and missing.json()["error"]["code"] == "missing_api_key"
        wrong = httpx.post(url, json=body, headers={"authorization": "Bearer sk-nope"})
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
        bearer = httpx.post(url, json=body, headers={"authorization": "Bearer sk-client-two"})
        assert bearer.status_code == 200, bearer.text
        x_api_key = httpx.post(url, json=body, headers={"x-api-key": "sk-client-one"})
        assert x_api_key.status_code == 200
        assert httpx.get(server.url + "/v1/models").status_code == 401
        assert httpx.get(server.url + "/v1/models",
                         headers={"x-api-key": "sk-client-one"}).status_code == 200
        assert httpx.get(server.url + "/health").status_code == 200  # probes need no key

        message = {"model": "claude-sonnet-4-6", "max_tokens": 10, "messages": body["messages"]}
        with_key = anthropic.Anthropic(base_url=server.url, api_key="sk-client-one",
                                       max_retries=0)
        assert with_key.messages.create(**message).content[0].type == "text"
        with_token = anthropic.Anthropic(base_url=server.url, auth_token="sk-client-two",
                                         api_key=None, max_retries=0)
        assert with_token.messages.create(**message).content[0].type == "text"
        with pytest.raises(anthropic.AuthenticationError) as caught:
            anthropic.Anthropic(base_url=server.url, api_key="sk-wrong",
                                max_retries=0).messages.create(**message)
        assert caught.value.body["error"]["type"] == "authentication_error"


def test_a_wrong_upstream_key_is_a_401_for_the_client(fake_iflow):
    env = {"IFLOW_API_KEY": "sk-not-the-fakes-key", "IFLOW_BASE_URL": fake_iflow.base_url}
    body = {"model": "glm-5", "messages": [{"role": "user", "content": "hi"}]}
    with GatewayServer(env) as server:
        response = httpx.post(server.url + "/v1/chat/completions", json=body)
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "authentication_error"
        assert fake_iflow.requests[-1].auth_error  # the fake refused it with its 434 envelope
