"""The troubleshooting lists quote the gateway's messages as it writes them (issue 17: the
README once quoted "no upstream account is configured", which the gateway no longer said).
Each quote that opens a troubleshooting bullet in docs/clients.md is either a client's own
words (listed below) or found in our code: every piece of it between `…` and placeholders
(N, M) long enough to mean something is in one of our string literals."""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("proxy", "accounts", "instances", "iflow2api_site", "upstream", "iflow2api_lib")
# What the clients print themselves, not the gateway.
CLIENTS_SAY = {
    "API Error: 401": "Claude Code",
    "Missing environment variable: IFLOW2API_KEY": "the Codex CLI",
    "401 Unauthorized": "the Codex CLI, from the status",
    "stream disconnected before completion": "the Codex CLI",
}
MEANINGFUL = 12  # shorter pieces ("The model ", " maps to ") prove nothing


def troubleshooting_quotes(text: str) -> list[str]:
    """The `quoted` messages a troubleshooting bullet opens with (before its first ": ")."""
    quotes = []
    for block in re.findall(r"\*\*Troubleshooting\.\*\*(.*?)(?:\n\n|\Z)", text, re.S):
        for bullet in re.split(r"\n- ", block)[1:]:
            if bullet.startswith("`"):
                head = re.split(r"(?<=[`)]): ", bullet, maxsplit=1)[0]
                quotes += re.findall(r"`([^`]+)`", head)
    return quotes


@cache
def literals() -> tuple[str, ...]:
    """Every string literal (f-strings: their constant parts) in our packages."""
    found = []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    found.append(node.value)
    return tuple(found)


def pieces(quote: str) -> list[str]:
    return [p for p in re.split(r"…|\b[NM]\b", quote) if len(p.strip()) >= MEANINGFUL]


def test_the_quoted_messages_are_the_gateways():
    quotes = troubleshooting_quotes((ROOT / "docs" / "clients.md").read_text(encoding="utf-8"))
    assert len(quotes) >= 8, quotes
    ours = [q for q in quotes if q not in CLIENTS_SAY]
    assert {"no upstream account serves …", "prompt is too long: N tokens > M maximum"} <= \
        set(ours), ours
    missing = [(quote, piece) for quote in ours for piece in pieces(quote)
               if not any(piece in literal for literal in literals())]
    assert missing == [], "quoted in docs/clients.md, said nowhere in the code"
    assert all(pieces(quote) for quote in ours), "a quote too short to check"


def test_a_message_the_gateway_no_longer_says_is_caught():
    assert [p for p in pieces("no upstream account is configured") if not any(
        p in literal for literal in literals())] == ["no upstream account is configured"]
