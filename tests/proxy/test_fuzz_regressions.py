"""What the schema fuzz run (tests/proxy/test_schema_fuzz.py) found, kept as plain tests: each
failed before its fix."""

from __future__ import annotations

import httpx
import pytest

CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"


def assert_openai_error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert {"message", "type", "param", "code"} <= set(error)
    assert "Traceback" not in response.text
    return error


def assert_anthropic_error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"].startswith("application/json")
    data = response.json()
    assert data["type"] == "error"
    assert {"type", "message"} <= set(data["error"])
    return data["error"]


@pytest.mark.parametrize("role", [{}, ["user"], {"user": 1}])
def test_a_chat_message_role_that_is_not_a_string_is_a_400(gateway, role):
    """An object or array as `role` was looked up in a set: TypeError, a 500."""
    body = {"model": "glm-5", "messages": [{"role": role, "content": "hi"}]}
    response = httpx.post(gateway.url + CHAT, json=body, timeout=30)
    error = assert_openai_error(response, 400)
    assert error["param"] == "messages[0].role"
    assert "Traceback" not in gateway.output()


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "TRACE"])
@pytest.mark.parametrize(("path", "shape"), [
    (CHAT, "openai"), ("/chat/completions", "openai"), (MESSAGES, "anthropic"),
    ("/v1/messages/count_tokens", "anthropic"), ("/messages/", "anthropic")])
def test_a_post_route_called_with_another_method_is_a_405_in_the_clients_shape(
        gateway, method, path, shape):
    """Django's 405 was `text/html` "Method not allowed", which no SDK can read."""
    response = httpx.request(method, gateway.url + path, timeout=30)
    check = assert_openai_error if shape == "openai" else assert_anthropic_error
    error = check(response, 405)
    assert method in error["message"] and "POST" in error["message"]
    assert response.headers["allow"] == "POST"


@pytest.mark.parametrize("path", ["/v1/models", "/models", "/health"])
def test_a_get_route_called_with_post_is_a_405_in_openais_shape(gateway, path):
    response = httpx.post(gateway.url + path, json={}, timeout=30)
    assert_openai_error(response, 405)
    assert response.headers["allow"] == "GET"


def test_the_405_follows_accept_language(gateway):
    response = httpx.put(gateway.url + MESSAGES, headers={"accept-language": "zh-Hans"})
    assert "不接受" in assert_anthropic_error(response, 405)["message"]


@pytest.mark.parametrize("path", ["/v1/messages/batches", "/v1/messages/batches/abc",
                                  "/v1/messages/count_tokens/x"])
def test_an_unknown_path_below_messages_is_a_404_in_anthropics_shape(gateway, path):
    """Anthropic clients asking for an API this gateway lacks (message batches) got OpenAI's
    error shape."""
    assert_anthropic_error(httpx.get(gateway.url + path, timeout=30), 404)


def test_other_unknown_api_paths_stay_in_openais_shape(gateway):
    assert_openai_error(httpx.get(gateway.url + "/v1/files", timeout=30), 404)
