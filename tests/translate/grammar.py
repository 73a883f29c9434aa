"""The Anthropic streaming grammar (wire-protocols.md §A) as an executable checker.

`check_anthropic_stream(events)` raises AssertionError naming the first offending event.
Events are (event_name, data) pairs as produced by the translators, before SSE encoding.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, NoReturn

Fail = Callable[[str], NoReturn]

_DELTAS = {
    "text": {"text_delta"},
    "thinking": {"thinking_delta", "signature_delta"},
    "tool_use": {"input_json_delta"},
}
_START_FIELDS = {
    "text": {"type": "text", "text": ""},
    "thinking": {"type": "thinking", "thinking": ""},
}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _Checker:
    def __init__(self, allow_truncated_tool_json: bool) -> None:
        self.allow_truncated_tool_json = allow_truncated_tool_json
        self.started = False
        self.next_index = 0
        self.open: dict[str, Any] | None = None  # {"index", "type", "parts", "last"}
        self.delta_seen = False
        self.stopped = False
        self.errored = False

    def check(self, position: int, name: str, data: Any) -> None:
        def fail(problem: str) -> NoReturn:
            raise AssertionError(f"event #{position} ({name}): {problem}")

        if not isinstance(data, dict) or data.get("type") != name:
            fail(f"data.type must equal the event name, got {data!r:.200}")
        if self.errored or self.stopped:
            fail("event after the end of the stream (message_stop or error)")
        if name == "ping":
            if not self.started:  # Claude Code and the SDKs expect message_start first
                fail("ping before message_start: the stream must begin with message_start")
            return
        if name == "error":
            error = data.get("error")
            if not isinstance(error, dict) or not isinstance(error.get("message"), str):
                fail("error needs error.type and error.message")
            if not isinstance(error.get("type"), str):
                fail("error needs error.type")
            self.errored = True
            return
        if not self.started and name != "message_start":
            fail("the stream must begin with message_start")
        handler = getattr(self, "_" + name, None)
        if handler is None:
            fail("unknown event name")
        handler(data, fail)

    def _message_start(self, data: dict[str, Any], fail: Fail) -> None:
        if self.started:
            fail("second message_start")
        self.started = True
        message = data.get("message")
        if not isinstance(message, dict):
            fail("message_start needs a message object")
        for key, value in (("type", "message"), ("role", "assistant"), ("content", [])):
            if message.get(key) != value:
                fail(f"message.{key} must be {value!r}")
        for key in ("id", "model"):
            if not isinstance(message.get(key), str) or not message[key]:
                fail(f"message.{key} must be a non-empty string")
        if message.get("stop_reason") is not None:
            fail("message.stop_reason must be null in message_start")
        usage = message.get("usage")
        if not isinstance(usage, dict):
            fail("message.usage is required")
        for key in ("input_tokens", "output_tokens"):
            if not _is_int(usage.get(key)):
                fail(f"message.usage.{key} must be an int")

    def _content_block_start(self, data: dict[str, Any], fail: Fail) -> None:
        if self.delta_seen:
            fail("content block after message_delta")
        if self.open is not None:
            fail(f"block {self.open['index']} is still open")
        if data.get("index") != self.next_index:
            fail(f"index must be {self.next_index}, got {data.get('index')!r}")
        block = data.get("content_block")
        kind = block.get("type") if isinstance(block, dict) else None
        if kind not in _DELTAS:
            fail(f"unknown content_block {block!r}")
        if kind in _START_FIELDS and block != _START_FIELDS[kind]:
            fail(f"a {kind} block must start as {_START_FIELDS[kind]!r}")
        if kind == "tool_use":
            for key in ("id", "name"):
                if not isinstance(block.get(key), str) or not block[key]:
                    fail(f"tool_use.{key} must be a non-empty string")
            if block.get("input") != {}:
                fail("tool_use must start with input {}")
        self.open = {"index": self.next_index, "type": kind, "parts": [], "last": None}
        self.next_index += 1

    def _content_block_delta(self, data: dict[str, Any], fail: Fail) -> None:
        block = self.open
        if block is None or data.get("index") != block["index"]:
            fail(f"delta for index {data.get('index')!r}, which is not the open block")
        delta = data.get("delta")
        kind = delta.get("type") if isinstance(delta, dict) else None
        if kind not in _DELTAS[block["type"]]:
            fail(f"{kind!r} delta inside a {block['type']} block")
        if block["last"] == "signature_delta":
            fail("signature_delta must be the last delta of a thinking block")
        field = {
            "text_delta": "text",
            "thinking_delta": "thinking",
            "signature_delta": "signature",
            "input_json_delta": "partial_json",
        }[kind]
        value = delta.get(field)
        if not isinstance(value, str):
            fail(f"{kind}.{field} must be a string")
        if kind == "signature_delta" and not value:
            fail("signature must be non-empty")
        if kind != "signature_delta":
            block["parts"].append(value)
        block["last"] = kind

    def _content_block_stop(self, data: dict[str, Any], fail: Fail) -> None:
        block = self.open
        if block is None or data.get("index") != block["index"]:
            fail(f"stop for index {data.get('index')!r}, which is not the open block")
        joined = "".join(block["parts"])
        if block["type"] == "text" and not joined:
            fail("empty text block (Claude Code replays it and the API rejects the history)")
        if block["type"] == "thinking" and block["last"] != "signature_delta":
            fail("a thinking block must end with a signature_delta")
        if block["type"] == "tool_use" and block["parts"] and not self.allow_truncated_tool_json:
            try:
                parsed = json.loads(joined)
            except ValueError as exc:
                fail(f"tool_use partial_json does not parse ({exc}): {joined!r:.200}")
            if not isinstance(parsed, dict):
                fail(f"tool_use input must be a JSON object, got {joined!r:.200}")
        self.open = None

    def _message_delta(self, data: dict[str, Any], fail: Fail) -> None:
        if self.open is not None:
            fail(f"block {self.open['index']} is still open")
        if self.delta_seen:
            fail("second message_delta")
        self.delta_seen = True
        delta = data.get("delta")
        if not isinstance(delta, dict) or "stop_reason" not in delta:
            fail("message_delta needs delta.stop_reason")
        if "stop_sequence" not in delta:
            fail("message_delta needs delta.stop_sequence (null is fine)")
        usage = data.get("usage")
        if not isinstance(usage, dict) or not _is_int(usage.get("output_tokens")):
            fail("message_delta needs usage.output_tokens as an int")

    def _message_stop(self, data: dict[str, Any], fail: Fail) -> None:
        if not self.delta_seen:
            fail("message_stop before message_delta")
        self.stopped = True

    def finish(self) -> None:
        if self.errored:
            return
        if not self.stopped:
            raise AssertionError("the stream must end with message_stop (or an error event)")


def check_anthropic_stream(
    events: list[tuple[str, dict[str, Any]]], *, allow_truncated_tool_json: bool = False
) -> None:
    """`allow_truncated_tool_json`: for streams cut by max_tokens inside a tool call."""
    checker = _Checker(allow_truncated_tool_json)
    for position, event in enumerate(events):
        if not isinstance(event, tuple | list) or len(event) != 2:
            raise AssertionError(f"event #{position}: expected (name, data), got {event!r:.200}")
        checker.check(position, event[0], event[1])
    checker.finish()
