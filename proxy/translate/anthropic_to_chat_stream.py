"""Anthropic Messages SSE events -> OpenAI chat.completion.chunk dicts (the reverse of
anthropic_stream.py). One translator per request; feed() takes each event's parsed `data`.

Output grammar (wire-protocols.md §B): `role` only in the first delta; a tool call's `id`, `type`
and `name` only in its first fragment, `index` in every one; the finish chunk once; with
`include_usage` a last chunk with `choices: []` and `usage`. Thinking goes out as
`reasoning_content` deltas (signatures dropped). The chunks are upstream-shaped: the caller may
pass them through openai_chat.OpenAIStreamNormalizer for the gateway's reasoning policy.

Ending: `message_stop` (or the end of the stream after a `stop_reason`) finishes the answer; a
stream that ends before any `stop_reason` is truncated and ends with the in-band
`upstream_disconnected` error, never with a made-up finish_reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from proxy.translate.anthropic_to_chat_errors import ChatError, chat_error, disconnected_error
from proxy.translate.anthropic_to_chat_response import chat_usage, finish_reason, tool_arguments
from proxy.translate.openai_chat import new_completion_id

Chunk = dict[str, Any]


@dataclass
class _ToolBlock:
    index: int  # our tool_calls index (0, 1, 2... in order of start)
    start_input: Any  # a non-empty `input` in content_block_start (some servers send it whole)
    streamed: bool = False  # input_json_delta fragments were sent


class AnthropicToChatStream:
    def __init__(
        self,
        *,
        model: str,
        completion_id: str | None = None,
        created: int = 0,
        include_usage: bool = False,
    ) -> None:
        self.model = model
        self.id = completion_id or new_completion_id()
        self.created = created
        self.include_usage = include_usage
        self.failure: ChatError | None = None  # set when the stream ended in an error
        self.finish_reason: str | None = None  # set once finished, handy for logging
        self._started = False
        self._done = False
        self._stop_reason: str | None = None
        self._usage: dict[str, Any] = {}
        self._tools: dict[int, _ToolBlock] = {}  # Anthropic block index -> tool call

    # ---- public API -------------------------------------------------------------------------

    def feed(self, event: Any) -> list[Chunk]:
        if self._done or not isinstance(event, dict):
            return []
        kind = event.get("type")
        if kind == "error":
            return self._fail(chat_error(event))
        if kind == "ping":
            return []
        out = self._start()
        if kind == "message_start":
            message = event.get("message")
            if isinstance(message, dict):
                self._take_usage(message.get("usage"))
        elif kind == "content_block_start":
            self._block_start(event, out)
        elif kind == "content_block_delta":
            self._block_delta(event, out)
        elif kind == "content_block_stop":
            self._block_stop(event, out)
        elif kind == "message_delta":
            delta = event.get("delta")
            reason = delta.get("stop_reason") if isinstance(delta, dict) else None
            if isinstance(reason, str) and reason:
                self._stop_reason = reason
            self._take_usage(event.get("usage"))
        elif kind == "message_stop":
            out += self._finish()
        return out

    def close(self) -> list[Chunk]:
        """The upstream stream ended: finish, or report the truncation."""
        if self._done:
            return []
        if self._stop_reason is None:
            return self._start() + self._fail(disconnected_error())
        return self._start() + self._finish()

    def fail(self, message: str, *, code: str | None = None, error_type: str = "api_error",
             status: int = 502) -> list[Chunk]:
        """The caller's own failure mid-stream (transport error, timeout): one in-band error."""
        if self._done:
            return []
        return self._fail(ChatError(status, message, error_type, code))

    # ---- helpers ----------------------------------------------------------------------------

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> Chunk:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    def _start(self) -> list[Chunk]:
        if self._started:
            return []
        self._started = True
        return [self._chunk({"role": "assistant", "content": ""})]

    def _fail(self, error: ChatError) -> list[Chunk]:
        self._done = True
        self.failure = error
        return [error.body()]

    def _take_usage(self, usage: Any) -> None:
        """message_start carries input and cache counts, message_delta the (cumulative) rest."""
        if isinstance(usage, dict):
            self._usage.update({k: v for k, v in usage.items() if v is not None})

    def _block_start(self, event: dict[str, Any], out: list[Chunk]) -> None:
        block = event.get("content_block")
        if not isinstance(block, dict):
            return
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str) and block["text"]:
            out.append(self._chunk({"content": block["text"]}))
        elif kind == "thinking" and isinstance(block.get("thinking"), str) and block["thinking"]:
            out.append(self._chunk({"reasoning_content": block["thinking"]}))
        elif kind == "tool_use" and isinstance(block.get("name"), str) and block["name"]:
            key = event.get("index")
            tool = _ToolBlock(index=len(self._tools), start_input=block.get("input") or None)
            self._tools[key if isinstance(key, int) else -1 - len(self._tools)] = tool
            call_id = block.get("id") if isinstance(block.get("id"), str) else ""
            call = {"index": tool.index, "id": call_id or f"call_{self.id}_{tool.index}",
                    "type": "function", "function": {"name": block["name"], "arguments": ""}}
            out.append(self._chunk({"tool_calls": [call]}))
        # redacted_thinking, server_tool_use and their results have no OpenAI form: dropped

    def _block_delta(self, event: dict[str, Any], out: list[Chunk]) -> None:
        delta = event.get("delta")
        if not isinstance(delta, dict):
            return
        kind = delta.get("type")
        if kind == "text_delta" and isinstance(delta.get("text"), str) and delta["text"]:
            out.append(self._chunk({"content": delta["text"]}))
        elif kind == "thinking_delta" and isinstance(delta.get("thinking"), str) \
                and delta["thinking"]:
            out.append(self._chunk({"reasoning_content": delta["thinking"]}))
        elif kind == "input_json_delta":
            tool = self._tool_at(event.get("index"))
            fragment = delta.get("partial_json")
            if tool is not None and isinstance(fragment, str) and fragment:
                tool.streamed = True
                out.append(self._arguments(tool, fragment))
        # signature_delta and citations_delta: dropped

    def _block_stop(self, event: dict[str, Any], out: list[Chunk]) -> None:
        tool = self._tool_at(event.get("index"))
        if tool is None or tool.streamed:
            return
        # No fragments: the whole input came with the start (or there is none). Arguments are
        # never left empty, since clients json.loads them.
        tool.streamed = True
        out.append(self._arguments(tool, tool_arguments(tool.start_input)))

    def _tool_at(self, index: Any) -> _ToolBlock | None:
        return self._tools.get(index) if isinstance(index, int) else None

    def _arguments(self, tool: _ToolBlock, fragment: str) -> Chunk:
        return self._chunk({"tool_calls": [{"index": tool.index,
                                            "function": {"arguments": fragment}}]})

    def _finish(self) -> list[Chunk]:
        self._done = True
        out: list[Chunk] = []
        for key in sorted(k for k, t in self._tools.items() if not t.streamed):
            self._block_stop({"index": key}, out)  # a block left open: its input still counts
        self.finish_reason = finish_reason(self._stop_reason, tool_calls=bool(self._tools))
        out.append(self._chunk({}, self.finish_reason))
        if self.include_usage:
            usage_chunk = self._chunk({})
            usage_chunk["choices"] = []
            usage_chunk["usage"] = chat_usage(self._usage)
            out.append(usage_chunk)
        return out
