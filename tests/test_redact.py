"""redact(): the one way secrets are masked (logs, the request log, error texts, admin messages)."""

from __future__ import annotations

import pytest

from iflow2api_lib.redact import redact

ACCOUNT_KEY = "sk-acct-5f6e7d8c9b0a"
TOKEN = "at-0a1b2c3d4e5f6g7h"

MASKED = [
    # (text, held secrets, what must be gone)
    ("Authorization: Bearer abc.DEF-123_xyz", (), "abc.DEF-123_xyz"),
    ("Authorization: Basic dXNlcjpwYXNz", (), "dXNlcjpwYXNz"),
    ("upstream said: invalid key sk-live-0123456789abcdef", (), "0123456789abcdef"),
    ("GET /x?api_key=hunter2hunter2&page=2", (), "hunter2hunter2"),
    ('{"access_token": "tok-9988776655"}', (), "tok-9988776655"),
    ("GET https://iflow.cn/api/oauth/getUserInfo?accessToken=plainvalue", (), "plainvalue"),
    ("refresh_token=r3fr3sh-value;", (), "r3fr3sh-value"),
    ("x-api-key: plainsecretvalue", (), "plainsecretvalue"),
    ("client_secret=shhh-its-secret", (), "shhh-its-secret"),
    ("password: correct-horse", (), "correct-horse"),
    ("Cookie: BXAuth=abc123; other=def456", (), "abc123"),
    ("Set-Cookie: BXAuth=abc123", (), "abc123"),
    ("postgresql://user:pa55word@db:5432/x", (), "pa55word"),
    ("opaque " + "Ab3" * 14 + " end", (), "Ab3" * 14),
    ("opaque " + "k" * 45 + " end", (), "k" * 45),  # no digit, but no words either
    # the secrets the caller holds, wherever they are and whatever they look like
    ("the upstream quoted plainwords-of-the-account back", ("plainwords-of-the-account",),
     "plainwords-of-the-account"),
    (f"bad token {TOKEN}!", (TOKEN,), TOKEN),
    ("code 9f3c was rejected", ("9f3c",), "9f3c"),
    # a text cut short upstream that ends in a secret's start
    ("invalid key: " + ACCOUNT_KEY[:12], (ACCOUNT_KEY,), ACCOUNT_KEY[:12]),
]


@pytest.mark.parametrize("text, secrets, secret", MASKED)
def test_redact_masks(text, secrets, secret):
    masked = redact(text, secrets)
    assert secret not in masked
    assert "[redacted]" in masked


@pytest.mark.parametrize("text, secrets", [
    ("POST /v1/chat/completions 200 12ms", ()),
    ("request req_0123456789abcdef01234567 done", ()),
    ("account 3 (iFlow (environment)) needs a new login: expired", ()),
    ("/work/main/.venv/lib/python3.11/site-packages/django/core/handlers/exception.py", ()),
    ("test_an_upstream_error_is_logged_with_its_status_and_no_secret", ()),  # long, no digit
    ("3f2a3c1e-9b7d-4a51-8c0e-1d2e3f4a5b6c", ()),  # task ids (UUIDs)
    ("prompt_tokens=11 completion_tokens=3", ()),
    ("max_tokens is too large", ("", "abc")),  # empty and too-short secrets mask nothing
    ("the model said sk", (ACCOUNT_KEY,)),  # a 2-character start is not a secret's start
])
def test_redact_leaves_ordinary_text_alone(text, secrets):
    assert redact(text, secrets) == text


def test_the_longest_secret_wins_when_one_contains_another():
    assert redact("key abcdefgh-1234", ("abcd", "abcdefgh-1234")) == "key [redacted]"
