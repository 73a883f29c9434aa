"""Claude Code's per-request billing block is dropped in the Messages -> chat translation
(issue 18), so the prompt a non-Anthropic upstream sees is byte-stable and its prefix cache can
hit; everything else in `system` stays."""

from __future__ import annotations

import json
from typing import Any

from proxy.translate.anthropic_request import anthropic_to_openai
from proxy.translate.types import TranslateOptions

OPTIONS = TranslateOptions(upstream_model="glm-5")


def claude_code_body(cch: str) -> dict[str, Any]:
    return {"model": "claude-sonnet-4-6", "max_tokens": 32000, "stream": True,
            "metadata": {"user_id": json.dumps({"session_id": "s-1"})},
            "system": [
                {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.177.01c; "
                                         f"cc_entrypoint=cli; cch={cch};"},
                {"type": "text", "text": "You are Claude Code, Anthropic's official CLI.",
                 "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "Quote: x-anthropic-billing-header: stays here."},
            ],
            "messages": [{"role": "user", "content": "hi"}]}


def translated(body: dict[str, Any]) -> bytes:
    out = anthropic_to_openai(body, OPTIONS).body
    return json.dumps(out, ensure_ascii=False, separators=(",", ":")).encode()


def test_two_turns_with_different_cch_translate_to_the_same_bytes() -> None:
    first, second = translated(claude_code_body("36ee5")), translated(claude_code_body("0aaa9"))
    assert first == second
    system = json.loads(first)["messages"][0]
    assert system["role"] == "system"
    assert system["content"].startswith("You are Claude Code")
    assert "Quote: x-anthropic-billing-header: stays here." in system["content"]
    assert "cch=" not in system["content"]


def test_the_string_form_and_a_system_of_only_the_billing_block() -> None:
    body = claude_code_body("abcde")
    body["system"] = "x-anthropic-billing-header: cch=abcde;\nBe brief."
    assert json.loads(translated(body))["messages"][0] == {"role": "system",
                                                           "content": "Be brief."}
    body["system"] = [{"type": "text", "text": "x-anthropic-billing-header: cch=abcde;"}]
    assert json.loads(translated(body))["messages"][0]["role"] == "user"  # no system left
