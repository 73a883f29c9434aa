"""OpenAI chat.completion.chunk stream -> Anthropic Messages SSE events (spec §A grammar, §C).

One translator per request. Upstream chunks are messy (role in every delta, tool-call id/name
repeated or late, usage after finish_reason, parallel calls interleaved); the output grammar is
strict: indexes 0,1,2... in start order, one open block at a time, no empty text block.

Parallel tool calls: a tool block is streamed live while it is the open block. Anything that
arrives while that block's arguments are still an incomplete JSON object (another call's
fragments, text, reasoning) is queued in arrival order; the queue drains once the open call's
arguments parse as a complete object, or at close(). So every block's partial_json concatenates
to that call's full arguments while sequential calls (the common case) still stream live.
"""

from __future__ import annotations

import contextlib
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from proxy.translate.anthropic_response import (
    matched_stop,
    reasoning_text,
    stop_at_end,
    stop_reason,
    stop_tail_length,
    thinking_signature,
)
from proxy.translate.anthropic_tools import synth_tool_id
from proxy.translate.tokens import estimate_text_tokens
from proxy.translate.upstream_chat import read_chunk
from proxy.translate.usage import anthropic_usage

Event = tuple[str, dict[str, Any]]


@dataclass
class _ToolCall:
    key: int  # upstream tool-call index
    id: str = ""
    name: str = ""
    buffer: list[str] = field(default_factory=list)  # arguments not emitted yet
    emitted: list[str] = field(default_factory=list)  # arguments already sent as partial_json
    block: int | None = None  # our content block index once started
    queued: bool = False
    complete: bool = False

    def startable(self) -> bool:
        # Name is required; an id may be synthesized once arguments show the call is real.
        return bool(self.name) and bool(self.id or self.buffer)


def _arguments_complete(call: _ToolCall) -> bool:
    """True once the emitted arguments are a whole JSON object (cached: JSON cannot un-complete)."""
    if not call.complete and call.emitted and call.emitted[-1].rstrip().endswith("}"):
        with contextlib.suppress(ValueError):
            call.complete = isinstance(json.loads("".join(call.emitted)), dict)
    return call.complete


class AnthropicStreamTranslator:
    def __init__(
        self,
        *,
        message_id: str,
        model: str,
        input_tokens: int = 0,
        tool_names: dict[str, str] | None = None,
        stop_sequences: list[str] | None = None,
    ) -> None:
        self.message_id = message_id
        self.model = model
        self.input_tokens = input_tokens or 0
        self.tool_names = tool_names or {}
        self.stop_sequences = stop_sequences or []
        self._tail_length = stop_tail_length(self.stop_sequences)
        self._text_tail = ""  # the text's last characters, to see a stop sequence it ends with
        self._started = False
        self._done = False  # after close() or error(): nothing more is emitted
        self._next_index = 0
        self._open_kind: str | None = None  # "text" | "thinking" | "tool_use"
        self._open_tool: _ToolCall | None = None
        self._thinking: list[str] = []  # text of the open thinking block, for its signature
        self._calls: dict[int, _ToolCall] = {}
        self._queue: deque[tuple[str, Any]] = deque()  # ("text"|"thinking", str) | ("tool", call)
        self._produced: list[str] = []  # everything emitted, for the output_tokens estimate
        self._tool_emitted = False
        self._finish_reason: str | None = None
        self._matched: str | None = None
        self._usage: dict[str, Any] | None = None
        self.stop_reason: str | None = None  # set by close(), handy for logging

    # ---- public API -------------------------------------------------------------------------

    def start(self) -> list[Event]:
        """message_start now, before the upstream's first chunk (once; feed() sends it
        otherwise): the stream's first event, ahead of any ping."""
        return [] if self._done else self._message_start()

    def feed(self, chunk: dict[str, Any]) -> list[Event]:
        if self._done:
            return []
        events = self._message_start()
        if not isinstance(chunk, dict):
            return events
        reading = read_chunk(chunk)
        if reading.error is not None:  # in-band upstream error with a 200 status
            return events + self.error(reading.error)
        if reading.usage is not None:
            self._usage = reading.usage
        for step in reading.steps:
            if step.delta is not None:
                self._delta(step.delta, events)
            if step.finish_reason:
                self._finish_reason = step.finish_reason
                self._matched = matched_stop(step.choice, chunk) or self._matched
        if self._matched is None and ("stopping_word" in chunk or "__verbose" in chunk):
            self._matched = matched_stop({}, chunk)  # llama.cpp: maybe before finish_reason
        return events

    def feed_texts(self, texts: list[str]) -> list[Event]:
        """What feed() gives for text-only chunks of these texts (proxy/translate/
        text_runs.py): their text, nothing else."""
        if self._done:
            return []
        events = self._message_start()
        for text in texts:
            self._piece("text", text, events)
        return events

    def close(self) -> list[Event]:
        if self._done:
            return []
        events = self._message_start()
        self._drain(events, force=True)
        self._close_block(events)
        self._done = True
        reason, sequence = stop_reason(
            self._finish_reason,
            matched=self._matched or stop_at_end(self._text_tail, self.stop_sequences),
            stop_sequences=self.stop_sequences,
            tool_emitted=self._tool_emitted,
        )
        self.stop_reason = reason
        usage = anthropic_usage(self._usage)
        # Missing (or all-zero) upstream usage: estimate rather than report 0, which would stop
        # Claude Code from ever auto-compacting.
        if not usage["input_tokens"] and not usage["cache_read_input_tokens"]:
            usage["input_tokens"] = self.input_tokens
        if not usage["output_tokens"]:
            usage["output_tokens"] = estimate_text_tokens("".join(self._produced))
        delta = {"stop_reason": reason, "stop_sequence": sequence}
        events.append(("message_delta", {"type": "message_delta", "delta": delta, "usage": usage}))
        events.append(("message_stop", {"type": "message_stop"}))
        return events

    def error(self, message: str, error_type: str = "api_error") -> list[Event]:
        if self._done:
            return []
        self._done = True
        body = {"type": "error", "error": {"type": error_type, "message": message}}
        return [("error", body)]

    # ---- upstream side ----------------------------------------------------------------------

    def _message_start(self) -> list[Event]:
        if self._started:
            return []
        self._started = True
        usage = anthropic_usage(None)
        usage["input_tokens"] = self.input_tokens
        message = {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": self.model,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        }
        return [("message_start", {"type": "message_start", "message": message})]

    def _delta(self, delta: dict[str, Any], events: list[Event]) -> None:
        reasoning = reasoning_text(delta)
        if reasoning:
            self._piece("thinking", reasoning, events)
        content = delta.get("content")
        if isinstance(content, str) and content:
            self._piece("text", content, events)
        fragments = delta.get("tool_calls")
        for fragment in fragments if isinstance(fragments, list) else []:
            if isinstance(fragment, dict):
                self._tool_fragment(fragment, events)

    def _blocked(self) -> bool:
        """True while the open tool block may still receive arguments."""
        return self._open_tool is not None and not _arguments_complete(self._open_tool)

    def _piece(self, kind: str, text: str, events: list[Event]) -> None:
        if self._queue or self._blocked():
            if self._queue and self._queue[-1][0] == kind:  # coalesce queued text
                self._queue[-1] = (kind, self._queue[-1][1] + text)
            else:
                self._queue.append((kind, text))
            return
        self._emit_piece(kind, text, events)

    def _call_for(self, fragment: dict[str, Any]) -> _ToolCall:
        key = fragment.get("index")
        call_id = fragment.get("id")
        if not isinstance(key, int) or isinstance(key, bool):
            # No index (some servers): a new id means a new call, otherwise the latest call.
            known = next((c for c in self._calls.values() if call_id and c.id == call_id), None)
            if known is not None:
                return known
            if call_id or not self._calls:
                key = max(self._calls, default=-1) + 1
            else:
                key = max(self._calls)
        if key not in self._calls:
            self._calls[key] = _ToolCall(key)
        return self._calls[key]

    def _tool_fragment(self, fragment: dict[str, Any], events: list[Event]) -> None:
        call = self._call_for(fragment)
        call_id = fragment.get("id")
        if not call.id and isinstance(call_id, str) and call_id:
            call.id = call_id  # first id wins: some servers repeat (or vary) it in every fragment
        function = fragment.get("function")
        function = function if isinstance(function, dict) else {}
        name = function.get("name")
        if not call.name and isinstance(name, str) and name:
            call.name = name
        arguments = function.get("arguments")
        if isinstance(arguments, dict):  # a few servers send the object itself
            arguments = json.dumps(arguments, ensure_ascii=False, separators=(",", ":"))
        if not isinstance(arguments, str):
            arguments = ""

        if call.block is not None:
            if call is self._open_tool:
                if arguments:
                    self._emit_arguments(call, arguments, events)
                if self._queue and _arguments_complete(call):
                    self._drain(events)
            # else: a fragment after the call's JSON was complete: only whitespace is valid JSON
            # there, and a closed block cannot take it anyway.
            return
        if arguments:
            call.buffer.append(arguments)
        if not call.queued:
            call.queued = True
            self._queue.append(("tool", call))
        if not self._blocked():
            self._drain(events)

    def _drain(self, events: list[Event], *, force: bool = False) -> None:
        """Emit queued items in arrival order until one must wait for more upstream data."""
        while self._queue:
            if not force and self._blocked():
                return
            kind, item = self._queue[0]
            if kind != "tool":
                self._queue.popleft()
                self._emit_piece(kind, item, events)
                continue
            call: _ToolCall = item
            if not call.startable():
                if not force:
                    return  # waiting for its name (or its first arguments)
                self._queue.popleft()
                if call.name:  # never got an id: synthesize one rather than lose the call
                    self._start_tool(call, events)
                continue  # no name at all: nothing the client could execute, dropped
            self._queue.popleft()
            self._start_tool(call, events)

    # ---- Anthropic side ---------------------------------------------------------------------

    def _start_block(self, kind: str, content_block: dict[str, Any], events: list[Event]) -> int:
        self._close_block(events)
        index = self._next_index
        self._next_index += 1
        self._open_kind = kind
        start = {"type": "content_block_start", "index": index, "content_block": content_block}
        events.append(("content_block_start", start))
        return index

    def _delta_event(self, delta: dict[str, Any], events: list[Event]) -> None:
        index = self._next_index - 1
        events.append(
            ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
        )

    def _close_block(self, events: list[Event]) -> None:
        if self._open_kind is None:
            return
        if self._open_kind == "thinking":
            signature = thinking_signature(self.message_id, "".join(self._thinking))
            self._delta_event({"type": "signature_delta", "signature": signature}, events)
            self._thinking = []
        elif self._open_tool is not None:
            if not self._open_tool.emitted:  # a call without arguments: its input is {}
                self._emit_arguments(self._open_tool, "{}", events)
            self._open_tool = None
        index = self._next_index - 1
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
        self._open_kind = None

    def _emit_piece(self, kind: str, text: str, events: list[Event]) -> None:
        if self._open_kind != kind:  # opened only now that there is non-empty content
            empty = {"type": kind, kind: ""}  # {"type":"text","text":""} / thinking alike
            self._start_block(kind, empty, events)
        if kind == "thinking":
            self._thinking.append(text)
            self._delta_event({"type": "thinking_delta", "thinking": text}, events)
        else:
            self._delta_event({"type": "text_delta", "text": text}, events)
            if self._tail_length:
                self._text_tail = (self._text_tail + text)[-self._tail_length:]
        self._produced.append(text)

    def _start_tool(self, call: _ToolCall, events: list[Event]) -> None:
        if not call.id:
            call.id = synth_tool_id(self.message_id, call.key)
        name = self.tool_names.get(call.name, call.name)
        block = {"type": "tool_use", "id": call.id, "name": name, "input": {}}
        call.block = self._start_block("tool_use", block, events)
        self._open_tool = call
        self._tool_emitted = True
        if call.buffer:
            pending, call.buffer = "".join(call.buffer), []
            self._emit_arguments(call, pending, events)

    def _emit_arguments(self, call: _ToolCall, text: str, events: list[Event]) -> None:
        call.emitted.append(text)
        self._produced.append(text)
        self._delta_event({"type": "input_json_delta", "partial_json": text}, events)
