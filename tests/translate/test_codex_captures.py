"""The requests the real Codex CLI 0.171.0 sent (tests/fixtures/responses/codex/README.md) all
translate to chat requests an upstream accepts: nothing Codex sends by default is a 400."""

from __future__ import annotations

import json
from typing import Any

import pytest

from proxy.translate.responses_compaction import prepare_compaction
from proxy.translate.responses_request import responses_to_openai
from proxy.translate.types import TranslateOptions
from tests.translate.golden import FIXTURES

CODEX = FIXTURES.parent / "responses" / "codex"
CAPTURES = sorted(p.stem for p in CODEX.glob("*.json"))
OPTS = TranslateOptions(upstream_model="glm-4.6", max_output_tokens=32000)


def capture(name: str) -> dict[str, Any]:
    return json.loads((CODEX / f"{name}.json").read_text(encoding="utf-8"))


def test_captures_exist() -> None:
    assert {"turn_first", "turn_tool_output", "turn_first_known_model", "local_compaction",
            "remote_compaction", "after_remote_compaction"} <= set(CAPTURES)


@pytest.mark.parametrize("name", CAPTURES)
def test_capture_translates(name: str) -> None:
    doc = capture(name)
    headers = dict(doc["headers"])
    assert doc["method"] == "POST" and doc["path"] == "/v1/responses"
    assert headers["accept"] == "text/event-stream"
    assert headers["x-codex-beta-features"] == "remote_compaction_v2"
    body = doc["body"]
    assert body["stream"] is True and body["store"] is False
    prepare_compaction(body)
    chat = responses_to_openai(body, OPTS).body
    messages = chat["messages"]
    assert messages[0]["role"] == "system"
    assert all(m["role"] in {"user", "assistant", "tool"} for m in messages[1:])
    assert chat["stream_options"] == {"include_usage": True}
    for message in messages:  # every call answered right after it
        for call in message.get("tool_calls") or []:
            answer = messages[messages.index(message) + 1]
            assert answer == {**answer, "role": "tool", "tool_call_id": call["id"]}


def test_codex_tools_reach_the_upstream_flattened() -> None:
    result = responses_to_openai(capture("turn_first")["body"], OPTS)
    names = [t["function"]["name"] for t in result.body["tools"]]
    assert names[0] == "exec_command"
    assert "multi_agent_v1__spawn_agent" in names  # the namespace tool, flattened
    assert result.tools.target("multi_agent_v1__spawn_agent").namespace == "multi_agent_v1"
    assert result.dropped_tools == ["web_search"]
    known = responses_to_openai(capture("turn_first_known_model")["body"], OPTS)
    assert known.tools.target("apply_patch").custom  # the freeform tool, one string argument
    assert known.dropped_tools == ["tool_search", "web_search"]
    assert known.body["reasoning_effort"] == "high"


def test_the_tool_round_trip_goes_up_as_call_and_tool_message() -> None:
    chat = responses_to_openai(capture("turn_tool_output")["body"], OPTS).body
    assistant, tool = chat["messages"][-2:]
    call = assistant["tool_calls"][0]
    assert call["function"] == {"name": "exec_command", "arguments": '{"cmd": "cat hello.txt"}'}
    assert tool["tool_call_id"] == call["id"] == "call_abc"
    assert "file content 42" in tool["content"]
