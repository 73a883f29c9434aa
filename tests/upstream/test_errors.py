"""Shared error helpers: Retry-After parsing and best-effort error messages."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from upstream.errors import (
    error_message_from_body,
    parse_retry_after,
    retry_after_from_headers,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("  ", None),
        ("0", 0.0),
        ("12", 12.0),
        (" 7 ", 7.0),
        ("1.5", 1.5),
        ("-3", None),
        ("nan", None),
        ("inf", None),
        ("soon", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # in the past: retry now
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_parse_retry_after_future_http_date() -> None:
    when = datetime.now(UTC) + timedelta(seconds=120)
    seconds = parse_retry_after(format_datetime(when, usegmt=True))
    assert seconds is not None and 115 <= seconds <= 120


def test_retry_after_from_headers_prefers_ms() -> None:
    assert retry_after_from_headers({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after_from_headers({"retry-after-ms": "junk", "retry-after": "9"}) == 9.0
    assert retry_after_from_headers({}) is None


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"error":{"message":"Invalid key","type":"x"}}', "Invalid key"),
        (b'{"error":"plain"}', "plain"),
        (b'{"object":"error","message":"vllm says no","code":400}', "vllm says no"),
        (json.dumps({"status": "434", "msg": "AK blocked", "body": None}).encode(), "AK blocked"),
        ('{"status":"8211","msg":"请稍后再试","body":null}'.encode(), "请稍后再试"),
        (b'{"detail":"Not Found"}', "Not Found"),
        (b"  Bad Gateway \n", "Bad Gateway"),
        (b"", ""),
        (b"\xff\xfeoops", "\ufffd\ufffdoops"),
        (b"[1, 2]", "[1, 2]"),
    ],
)
def test_error_message_from_body(body: bytes, expected: str) -> None:
    assert error_message_from_body(body) == expected


def test_error_message_from_long_text_is_truncated() -> None:
    assert error_message_from_body(b"x" * 2000) == "x" * 500
