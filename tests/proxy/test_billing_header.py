"""Claude Code's per-request billing block on the wire (issue 18): an OpenAI-compatible or iFlow
upstream receives the same bytes on every turn (the block is dropped, so its prefix cache can
hit); an Anthropic-compatible account, whose API reads it, receives it as the client sent it."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.servers import GatewayServer

ANTHROPIC_KEY = "sk-ant-billing-test-0123"


def claude_code_body(model: str, cch: str) -> bytes:
    return json.dumps({
        "model": model, "max_tokens": 512, "stream": False,
        "metadata": {"user_id": json.dumps({"session_id": "billing-session"})},
        "system": [
            {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.177.01c; "
                                     f"cc_entrypoint=cli; cch={cch};"},
            {"type": "text", "text": "You are Claude Code, Anthropic's official CLI.",
             "cache_control": {"type": "ephemeral"}},
        ],
        "messages": [{"role": "user", "content": "hi"}],
    }).encode()


def post(server, body: bytes) -> httpx.Response:
    return httpx.post(server.url + "/v1/messages", content=body, timeout=30, headers={
        "content-type": "application/json", "anthropic-version": "2023-06-01"})


def test_a_chat_upstream_gets_the_same_bytes_on_every_turn(gateway, upstream):
    for cch in ("36ee5", "0aaa9"):
        assert post(gateway, claude_code_body("claude-sonnet-4-6", cch)).status_code == 200
    first, second = upstream.chat_requests
    assert first.body == second.body  # byte for byte: the prefix cache can hit
    assert b"x-anthropic-billing-header" not in first.body and b"cch=" not in first.body
    assert b"You are Claude Code" in first.body


@pytest.fixture(scope="module")
def anthropic_server() -> Iterator[tuple[GatewayServer, FakeAnthropic]]:
    with FakeAnthropic(ANTHROPIC_KEY, auth="x-api-key", models=["claude-up"]) as fake:
        gateway = GatewayServer()
        gateway.cli("addaccount", "--provider", "anthropic", "--label", "anthropic",
                    "--base-url", fake.url + "/v1", "--api-key", "-",
                    "--models", "claude-up", stdin=ANTHROPIC_KEY + "\n")
        with gateway:
            yield gateway, fake


def test_an_anthropic_upstream_gets_the_block_as_the_client_sent_it(anthropic_server):
    server, fake = anthropic_server
    sent = [claude_code_body("claude-up", cch) for cch in ("36ee5", "0aaa9")]
    for body in sent:
        assert post(server, body).status_code == 200
    assert [r.body for r in fake.messages_requests] == sent  # the passthrough keeps it
