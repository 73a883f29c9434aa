"""OpenAI Chat Completions out: upstream chunks and completions made clean for strict clients.

Upstreams repeat `role` in every delta, repeat tool-call ids and names in every fragment (the
openai `.stream()` helper then doubles them), send `choices: null`, put usage on the finish
chunk. The normaliser emits what the SDKs expect, and applies the reasoning policy: by default
`reasoning_content` is merged into `content`; with `preserve_reasoning` it stays its own field
and `content` is never left empty.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from proxy.translate.usage import chunk_usage, openai_usage

REASONING_SEPARATOR = "\n\n"


def _random_hex24() -> str:
    # Unique, not secret: no system call per id (iflow2api_lib/ids.py says why; translation
    # imports only the standard library).
    return f"{random.getrandbits(96):024x}"


def new_completion_id() -> str:
    return "chatcmpl-" + _random_hex24()


def _reasoning_of(message: dict[str, Any]) -> str:
    value = message.get("reasoning_content")
    if value is None:
        value = message.get("reasoning")  # vLLM / OpenRouter spelling
    return value if isinstance(value, str) else ""


@dataclass
class _ChoiceState:
    role_sent: bool = False
    reasoning: list[str] = field(default_factory=list)
    content_sent: bool = False
    in_reasoning: bool = False
    tool_indexes: dict[int, int] = field(default_factory=dict)  # upstream index -> ours
    finish_reason: str | None = None


_PLAIN_KEYS = frozenset(("role", "content"))


def _plain_text(state: _ChoiceState, fragment: dict[str, Any]) -> str | None:
    """The text of the usual fragment, text only once the answer is under way (its delta is
    {"content": text}); None for any other (OpenAIStreamNormalizer._delta), which gives the
    same for this one, in more steps."""
    content = fragment.get("content")
    if (type(content) is str and content and state.role_sent and not state.in_reasoning
            and _PLAIN_KEYS.issuperset(fragment)):
        state.content_sent = True
        return content
    return None


class OpenAIStreamNormalizer:
    """One per request: feed(chunk) -> chunks to send; close() -> the final chunks."""

    def __init__(
        self,
        *,
        model: str,
        completion_id: str | None = None,
        created: int = 0,
        include_usage: bool = False,
        preserve_reasoning: bool = False,
    ) -> None:
        self.model = model
        self.id = completion_id or new_completion_id()
        self.created = created
        self.include_usage = include_usage
        self.preserve_reasoning = preserve_reasoning
        self.usage: dict[str, Any] | None = None
        self.system_fingerprint: str | None = None
        self._choices: dict[int, _ChoiceState] = {}
        self._closed = False

    def _chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
        if self.system_fingerprint:
            chunk["system_fingerprint"] = self.system_fingerprint
        return chunk

    def feed(self, upstream: dict[str, Any]) -> list[dict[str, Any]]:
        if self._closed:
            return []
        text = self.plain_text(upstream)
        if text is not None:
            return [self.text_chunk(text)]
        usage = chunk_usage(upstream)
        if usage is not None:
            self.usage = openai_usage(usage)
        fingerprint = upstream.get("system_fingerprint")
        if isinstance(fingerprint, str):
            self.system_fingerprint = fingerprint
        out = []
        for choice in upstream.get("choices") or []:
            if not isinstance(choice, dict):
                continue
            index = choice.get("index")
            if not isinstance(index, int):
                index = 0
            state = self._choices.get(index)
            if state is None:
                state = self._choices[index] = _ChoiceState()
            fragment = choice.get("delta")
            if not isinstance(fragment, dict):
                fragment = {}
            delta = self._delta(state, fragment)
            if choice.get("finish_reason"):
                # Held back until close(): a usage chunk or mirrored content may still follow.
                state.finish_reason = choice["finish_reason"]
            if delta:
                entry: dict[str, Any] = {"index": index, "delta": delta, "finish_reason": None}
                if choice.get("logprobs") is not None:
                    entry["logprobs"] = choice["logprobs"]
                out.append(self._chunk([entry]))
        return out

    def text_chunk(self, text: str) -> dict[str, Any]:
        """The chunk feed() gives for a text fragment of choice 0 (see plain_text)."""
        return self._chunk([{"index": 0, "delta": {"content": text}, "finish_reason": None}])

    def plain_text(self, upstream: dict[str, Any]) -> str | None:
        """The text of a chunk that feed() would turn into one text-only chunk for choice 0,
        noted as feed() notes it; None for any other chunk (usage, a finish_reason, logprobs,
        reasoning, tools, another choice, the role not yet sent), which feed() must take.
        Most chunks of an answer are such text, so it is read in as few steps as will do."""
        choices = upstream.get("choices")
        # `"usage": null` on every chunk (OpenAI's own streams with include_usage) is none.
        if (self._closed or type(choices) is not list or len(choices) != 1
                or upstream.get("usage") is not None):
            return None
        choice = choices[0]
        if (type(choice) is not dict or choice.get("index", 0) != 0
                or choice.get("usage") is not None or choice.get("finish_reason")
                or choice.get("logprobs") is not None):
            return None
        state = self._choices.get(0)
        fragment = choice.get("delta")
        if state is None or type(fragment) is not dict:
            return None
        text = _plain_text(state, fragment)
        if text is not None:
            fingerprint = upstream.get("system_fingerprint")
            if isinstance(fingerprint, str):
                self.system_fingerprint = fingerprint
        return text

    def in_plain_text(self) -> bool:
        """Whether plain_text() reads a chunk by its shape alone: choice 0's answer is under
        way, no reasoning open, not closed (the state plain_text() also checks)."""
        state = self._choices.get(0)
        return (not self._closed and state is not None and state.role_sent
                and not state.in_reasoning and state.content_sent)

    def _delta(self, state: _ChoiceState, upstream: dict[str, Any]) -> dict[str, Any]:
        delta: dict[str, Any] = {}
        reasoning = _reasoning_of(upstream)
        content = upstream.get("content") if isinstance(upstream.get("content"), str) else ""
        text = ""
        if reasoning:
            state.reasoning.append(reasoning)
            if self.preserve_reasoning:
                delta["reasoning_content"] = reasoning
            else:
                text = reasoning
                state.in_reasoning = True
        if content:
            if state.in_reasoning:  # thinking ends: keep it apart from the answer
                text += REASONING_SEPARATOR
                state.in_reasoning = False
            text += content
            state.content_sent = True
        if text:
            delta["content"] = text
        tool_calls = self._tool_calls(state, upstream.get("tool_calls"))
        if tool_calls:
            delta["tool_calls"] = tool_calls
        if isinstance(upstream.get("refusal"), str) and upstream["refusal"]:
            delta["refusal"] = upstream["refusal"]
        if delta and not state.role_sent:
            delta = {"role": "assistant", **delta}
            state.role_sent = True
        return delta

    def _tool_calls(self, state: _ChoiceState, calls: Any) -> list[dict[str, Any]]:
        out = []
        for position, call in enumerate(calls or []):
            if not isinstance(call, dict):
                continue
            upstream_index = call.get("index") if isinstance(call.get("index"), int) else position
            function = call.get("function") or {}
            arguments = function.get("arguments") if isinstance(function, dict) else None
            if upstream_index not in state.tool_indexes:
                ours = len(state.tool_indexes)
                state.tool_indexes[upstream_index] = ours
                out.append({
                    "index": ours,
                    "id": call.get("id") or "call_" + _random_hex24(),
                    "type": "function",
                    "function": {"name": function.get("name") or "",
                                 "arguments": arguments or ""},
                })
            elif arguments:
                out.append({"index": state.tool_indexes[upstream_index],
                            "function": {"arguments": arguments}})
        return out

    def close(self) -> list[dict[str, Any]]:
        if self._closed:
            return []
        self._closed = True
        if not self._choices:
            self._choices[0] = _ChoiceState()
        out = []
        for index, state in sorted(self._choices.items()):
            if self.preserve_reasoning and not state.content_sent and state.reasoning:
                # Clients that read only `content` must still see something.
                delta: dict[str, Any] = {"content": "".join(state.reasoning)}
                if not state.role_sent:
                    delta = {"role": "assistant", **delta}
                    state.role_sent = True
                out.append(self._chunk([{"index": index, "delta": delta, "finish_reason": None}]))
            finish = state.finish_reason or "stop"
            if state.tool_indexes and finish == "stop":
                finish = "tool_calls"
            final_delta: dict[str, Any] = {} if state.role_sent else {"role": "assistant"}
            out.append(self._chunk([{"index": index, "delta": final_delta,
                                     "finish_reason": finish}]))
        if self.include_usage:
            usage_chunk = self._chunk([])
            usage_chunk["usage"] = self.usage or {
                "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
            out.append(usage_chunk)
        return out


def normalize_completion(
    upstream: dict[str, Any],
    *,
    model: str,
    completion_id: str | None = None,
    created: int = 0,
    preserve_reasoning: bool = False,
) -> dict[str, Any]:
    """A non-streaming completion with our id/model and the reasoning policy applied."""
    choices = []
    for position, choice in enumerate(upstream.get("choices") or []):
        if not isinstance(choice, dict):
            continue
        message = dict(choice.get("message") or {})
        reasoning = _reasoning_of(message)
        message.pop("reasoning", None)
        content = message.get("content") if isinstance(message.get("content"), str) else ""
        if preserve_reasoning:
            if reasoning:
                message["reasoning_content"] = reasoning
                message["content"] = content or reasoning
        else:
            message.pop("reasoning_content", None)
            if reasoning:
                message["content"] = reasoning + REASONING_SEPARATOR + content if content \
                    else reasoning
        message["role"] = "assistant"
        message.setdefault("content", None)
        if message.get("tool_calls") in ([], None):
            message.pop("tool_calls", None)
        finish = choice.get("finish_reason") or "stop"
        if message.get("tool_calls") and finish == "stop":
            finish = "tool_calls"
        choices.append({
            "index": choice.get("index", position),
            "message": message,
            "logprobs": choice.get("logprobs"),
            "finish_reason": finish,
        })
    result: dict[str, Any] = {
        "id": completion_id or new_completion_id(),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": choices,
        "usage": openai_usage(upstream.get("usage"))
        or {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }
    if upstream.get("system_fingerprint"):
        result["system_fingerprint"] = upstream["system_fingerprint"]
    return result
