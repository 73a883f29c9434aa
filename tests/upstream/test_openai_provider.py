"""Generic OpenAI-compatible provider: untouched pass-through, headers, error mapping."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest

from upstream.providers import UnknownProviderError, get_provider, openai
from upstream.providers.base import Provider
from upstream.types import UpstreamTarget

TARGET = UpstreamTarget(provider="openai", base_url="https://api.deepseek.com/v1/", api_key="sk-x")
NO_KEY = UpstreamTarget(provider="openai", base_url="http://localhost:11434/v1", api_key="")

RICH_BODY: dict[str, Any] = {
    "model": "deepseek-chat",
    "messages": [
        {"role": "system", "content": "s1"},
        {"role": "developer", "content": [{"type": "text", "text": "s2"}]},
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": "https://x/a.png"}}],
        },
        {"role": "assistant", "content": "", "tool_calls": [{"id": "c", "type": "function"}]},
        {"role": "tool", "tool_call_id": "orphan", "content": "x"},
    ],
    "max_tokens": 10,
    "max_completion_tokens": 20,
    "temperature": None,
    "reasoning_effort": "high",
    "tools": [],
    "tool_choice": "auto",
    "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": {}}},
    "stop": [],
    "stream_options": {"include_usage": True},
    "user": "ünïcode",
}


@pytest.mark.parametrize("stream", [False, True])
def test_body_passes_through_untouched_except_stream(stream: bool) -> None:
    body = copy.deepcopy(RICH_BODY)
    body["stream"] = not stream
    before = copy.deepcopy(body)
    req = openai.prepare_chat(TARGET, body, stream=stream)
    assert body == before  # input not mutated
    sent = json.loads(req.body)
    assert sent.pop("stream") is stream
    expected = copy.deepcopy(before)
    expected.pop("stream")
    assert sent == expected
    assert list(sent) == list(expected)  # key order kept too
    assert "ünïcode".encode() in req.body and b", " not in req.body


def test_stream_added_when_absent() -> None:
    req = openai.prepare_chat(TARGET, {"model": "m", "messages": []}, stream=False)
    assert json.loads(req.body) == {"model": "m", "messages": [], "stream": False}


def test_chat_url_and_headers() -> None:
    req = openai.prepare_chat(TARGET, {"model": "m", "messages": []}, stream=False)
    assert req.url == "https://api.deepseek.com/v1/chat/completions"
    assert req.headers == [
        ("Content-Type", "application/json"),
        ("Authorization", "Bearer sk-x"),
        ("Accept", "application/json"),
    ]
    req = openai.prepare_chat(NO_KEY, {"model": "m", "messages": []}, stream=True)
    assert req.url == "http://localhost:11434/v1/chat/completions"
    assert req.headers == [("Content-Type", "application/json"), ("Accept", "text/event-stream")]


def test_models_request() -> None:
    req = openai.prepare_models(TARGET)
    assert req.url == "https://api.deepseek.com/v1/models"
    assert req.body == b""
    assert req.headers == [("Authorization", "Bearer sk-x"), ("Accept", "application/json")]
    assert openai.prepare_models(NO_KEY).headers == [("Accept", "application/json")]


def test_get_provider() -> None:
    for name in ("openai", "OpenAI", "openai-compatible"):
        provider = get_provider(name)
        assert isinstance(provider, Provider) and provider.name == "openai"
    assert get_provider("iflow").name == "iflow"
    for exc in (KeyError, ValueError, UnknownProviderError):
        with pytest.raises(exc):
            get_provider("nope")


def err_body(message: str, etype: str | None = None, code: Any = None) -> bytes:
    return json.dumps({"error": {"message": message, "type": etype, "code": code}}).encode()


HTTP_TABLE = [
    # status, headers, body, (status, code, action, retry_after)
    (
        401,
        {},
        err_body("Incorrect API key", "invalid_request_error", "invalid_api_key"),
        (401, "invalid_api_key", "cooldown", None),  # may work again: not blocked for good
    ),
    (
        401,
        {},
        err_body("Your account has been deactivated", "invalid_request_error",
                 "account_deactivated"),
        (401, "account_deactivated", "disable", None),
    ),
    (403, {}, err_body("Forbidden", "permission_error"), (403, "upstream_403", None, None)),
    (403, {}, err_body("该账号已被封禁"), (403, "upstream_403", "disable", None)),
    (402, {}, err_body("Insufficient Balance"), (402, "upstream_402", "cooldown", None)),
    (
        404,
        {},
        err_body("The model `gpt-9` does not exist", "invalid_request_error"),
        (404, "model_not_found", None, None),
    ),
    (404, {}, err_body("no route"), (404, "upstream_404", None, None)),
    (404, {}, err_body("x", code="model_not_found"), (404, "model_not_found", None, None)),
    (
        429,
        {"retry-after": "20"},
        err_body("Rate limit", "requests", "rate_limit_exceeded"),
        (429, "rate_limit_exceeded", "cooldown", 20.0),
    ),
    (
        429,
        {"retry-after-ms": "1500"},
        err_body("slow"),
        (429, "rate_limit_exceeded", "cooldown", 1.5),
    ),
    (
        429,
        {},
        err_body("quota", "insufficient_quota", "insufficient_quota"),
        (429, "insufficient_quota", "cooldown", None),
    ),
    (
        400,
        {},
        err_body("too long", "invalid_request_error", "context_length_exceeded"),
        (400, "context_length_exceeded", None, None),
    ),
    (
        400,
        {},
        json.dumps(
            {
                "object": "error",
                "type": "BadRequestError",
                "code": 400,
                "message": "This model's maximum context length is 4096 tokens.",
            }
        ).encode(),
        (400, "context_length_exceeded", None, None),
    ),
    (
        400,
        {},
        err_body("bad param", "invalid_request_error", "invalid_value"),
        (400, "invalid_value", None, None),
    ),
    (413, {}, b"Payload Too Large", (413, "request_too_large", None, None)),
    (500, {}, err_body("internal"), (502, "upstream_500", None, None)),
    (503, {"retry-after": "5"}, b"<html>unavailable</html>", (502, "upstream_503", None, 5.0)),
]


@pytest.mark.parametrize(("status", "headers", "body", "expected"), HTTP_TABLE)
def test_error_mapping(
    status: int, headers: dict[str, str], body: bytes, expected: tuple[Any, ...]
) -> None:
    err = openai.error_from_response(status, headers, body)
    assert (err.status, err.code, err.account_action, err.retry_after) == expected
    assert err.upstream_status == str(status)
    assert err.message


def test_error_keeps_upstream_message() -> None:
    err = openai.error_from_response(401, {}, err_body("Incorrect API key provided: sk-x.", "auth"))
    assert err.message == "Incorrect API key provided: sk-x."
    err = openai.error_from_response(502, {}, b"")
    assert err.message == "upstream returned HTTP 502"


def test_retry_after_http_date() -> None:
    when = datetime.now(UTC) + timedelta(seconds=60)
    err = openai.error_from_response(429, {"retry-after": format_datetime(when, usegmt=True)}, b"")
    assert err.retry_after is not None and 55 <= err.retry_after <= 60


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ({"error": {"message": "Rate limit", "type": "rate_limit_error"}}, (429, "cooldown")),
        ({"error": {"message": "bad", "type": "invalid_request_error"}}, (400, None)),
        ({"error": {"message": "boom", "type": "server_error"}}, (502, None)),
        ({"error": "plain text error"}, (502, None)),
        ({"object": "error", "message": "overloaded", "code": 503}, (502, None)),
    ],
)
def test_error_payload_detected(obj: dict[str, Any], expected: tuple[Any, ...]) -> None:
    err = openai.error_from_payload(obj)
    assert err is not None
    assert (err.status, err.account_action) == expected
    assert err.message


@pytest.mark.parametrize(
    "obj",
    [
        {"id": "x", "object": "chat.completion.chunk", "choices": []},
        {"id": "x", "object": "chat.completion", "choices": [], "error": None},
        {"status": "434", "msg": "iFlow envelope is not this provider's dialect"},
    ],
)
def test_normal_payload_is_not_error(obj: dict[str, Any]) -> None:
    assert openai.error_from_payload(obj) is None
