"""Responses `input` items (+ instructions) -> chat messages.

Item order is kept, with the chat rules the upstreams enforce: one leading system message
(instructions, then every system/developer message's text, in order: several upstream chat
templates reject a system message anywhere else); consecutive assistant-side items (message,
function_call, custom_tool_call, reasoning) form one assistant message; every tool call is
answered by a tool message directly after it (a call whose output never came gets a
placeholder, as Codex leaves behind after an interrupted turn); images and files returned by a
tool go in a user message after the tool messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from proxy.translate.anthropic_messages import IMAGE_OMITTED
from proxy.translate.responses_items import decode_reasoning
from proxy.translate.responses_tools import ToolMap, custom_arguments
from proxy.translate.types import TranslateOptions, TranslationError, gettext_noop

NO_OUTPUT = "[no output was recorded for this tool call]"
_JOIN = "\n\n"
_TEXT_PARTS = ("input_text", "output_text", "text", "summary_text", "reasoning_text")
# Calls made by OpenAI-hosted tools in an earlier (real OpenAI) turn: nothing a chat upstream
# can replay; dropped together with their outputs.
_HOSTED_ITEMS = frozenset({
    "web_search_call", "file_search_call", "computer_call", "computer_call_output",
    "code_interpreter_call", "image_generation_call", "local_shell_call",
    "local_shell_call_output", "shell_call", "shell_call_output", "apply_patch_call",
    "apply_patch_call_output", "mcp_call", "mcp_list_tools", "mcp_approval_request",
    "mcp_approval_response", "tool_search_call", "tool_search_output", "compaction",
})


def input_items(raw: Any) -> list[dict[str, Any]]:
    """`input` as a list of items (a string is one user message), e.g. for storing it."""
    if raw is None:
        return []
    if isinstance(raw, str):
        return [{"type": "message", "role": "user",
                 "content": [{"type": "input_text", "text": raw}]}]
    if not isinstance(raw, list):
        raise TranslationError.at("input", gettext_noop("expected a string or a list of items"))
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise TranslationError.at(f"input.{i}", gettext_noop("expected an object"))
    return list(raw)


def _string(item: dict[str, Any], key: str, param: str) -> str:
    value = item.get(key)
    if not isinstance(value, str):
        raise TranslationError.at(f"{param}.{key}", gettext_noop("expected a string"))
    return value


def _image_part(part: dict[str, Any], param: str, opts: TranslateOptions) -> dict[str, Any]:
    url = part.get("image_url")
    if not isinstance(url, str) or not url:
        if part.get("file_id") is not None:
            raise TranslationError.at(f"{param}.file_id", gettext_noop(
                "file ids are not supported by this gateway; send image_url (a URL or data URL)"))
        raise TranslationError.at(f"{param}.image_url", gettext_noop("expected a non-empty string"))
    if not opts.vision:  # validated first so bad input fails the same way on every model
        return {"type": "text", "text": IMAGE_OMITTED}
    image: dict[str, Any] = {"url": url}
    if part.get("detail") in ("low", "high"):
        image["detail"] = part["detail"]
    return {"type": "image_url", "image_url": image}


def _file_part(part: dict[str, Any], param: str) -> dict[str, Any]:
    data = part.get("file_data")
    if not isinstance(data, str) or not data:
        raise TranslationError.at(f"{param}.file_data", gettext_noop(
            "only inline files (file_data) are supported by this gateway"))
    filename = part.get("filename") if isinstance(part.get("filename"), str) else ""
    return {"type": "file", "file": {"file_data": data, "filename": filename or "file"}}


def _parts(content: Any, param: str, opts: TranslateOptions) -> list[dict[str, Any]]:
    """Message or tool-output content -> chat parts (text, image_url, file)."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise TranslationError.at(param, gettext_noop("expected a string or a list"))
    out: list[dict[str, Any]] = []
    for i, part in enumerate(content):
        pparam = f"{param}.{i}"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in _TEXT_PARTS:
            text = _string(part, "text", pparam)
            if text:
                out.append({"type": "text", "text": text})
        elif kind == "refusal":
            out.append({"type": "text", "text": _string(part, "refusal", pparam)})
        elif kind == "input_image":
            out.append(_image_part(part, pparam, opts))
        elif kind == "input_file":
            out.append(_file_part(part, pparam))
        else:
            raise TranslationError.at(f"{pparam}.type",
                                      gettext_noop("unsupported content part %(value)r"),
                                      value=kind)
    return out


def _text(parts: list[dict[str, Any]]) -> str:
    return _JOIN.join(p["text"] for p in parts if p["type"] == "text")


def _user_content(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """Plain string when text-only: many upstreams (and text-only models) reject part arrays."""
    if all(p["type"] == "text" for p in parts):
        return _text(parts)
    return parts


def _reasoning_text(item: dict[str, Any]) -> str:
    """Ours comes back whole in encrypted_content; otherwise the visible text, if any."""
    decoded = decode_reasoning(item.get("encrypted_content"))
    if decoded is not None:
        return decoded
    for key in ("content", "summary"):
        parts = item.get(key)
        if isinstance(parts, list):
            texts = [p["text"] for p in parts
                     if isinstance(p, dict) and isinstance(p.get("text"), str) and p["text"]]
            if texts:
                return _JOIN.join(texts)
    return ""


@dataclass
class _State:
    opts: TranslateOptions
    tools: ToolMap
    system: list[str] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    assistant: dict[str, Any] | None = None  # the assistant message being collected
    reasoning: list[str] = field(default_factory=list)  # for the next assistant message
    awaiting: list[str] = field(default_factory=list)  # call ids still without output
    deferred: list[dict[str, Any]] = field(default_factory=list)  # tool images/files
    call_ids: dict[str, str] = field(default_factory=dict)  # client call id -> upstream id

    def close_assistant(self) -> None:
        message = self.assistant
        if message is None:
            return
        self.assistant = None
        texts = message.pop("_texts")
        content = _JOIN.join(texts)
        # "" next to tool_calls breaks some upstreams: null is the canonical "no text".
        message["content"] = content or (None if message.get("tool_calls") else "")
        if not content and not message.get("tool_calls"):
            return  # reasoning alone: no answer to replay
        self.messages.append(message)
        self.awaiting = [c["id"] for c in message.get("tool_calls", [])]

    def settle(self) -> None:
        """Before anything that is not a tool output: close the turn's tool messages."""
        self.close_assistant()
        for pending in self.awaiting:
            self.messages.append({"role": "tool", "tool_call_id": pending, "content": NO_OUTPUT})
        self.awaiting = []
        if self.deferred:
            self.messages.append({"role": "user", "content": self.deferred})
            self.deferred = []

    def open_assistant(self, *, for_call: bool) -> dict[str, Any]:
        current = self.assistant
        if current is not None and (for_call or not current.get("tool_calls")):
            return current
        self.settle()
        self.assistant = {"role": "assistant", "_texts": []}
        if self.reasoning:
            self.assistant["reasoning_content"] = _JOIN.join(self.reasoning)
            self.reasoning = []
        return self.assistant


def _message(item: dict[str, Any], param: str, state: _State) -> None:
    role = item.get("role")
    parts = _parts(item.get("content"), f"{param}.content", state.opts)
    if role in ("system", "developer"):
        text = _text(parts)
        if text:
            state.system.append(text)
    elif role == "user":
        state.settle()
        if parts:
            state.messages.append({"role": "user", "content": _user_content(parts)})
    elif role == "assistant":
        text = _text(parts)
        if text:
            state.open_assistant(for_call=False)["_texts"].append(text)
    else:
        raise TranslationError.at(f"{param}.role", gettext_noop("unsupported role %(value)r"),
                                  value=role)


def _call(item: dict[str, Any], param: str, state: _State, *, custom: bool) -> None:
    call = _string(item, "call_id", param)
    name = _string(item, "name", param)
    namespace = item.get("namespace") if isinstance(item.get("namespace"), str) else None
    if custom:
        arguments = custom_arguments(_string(item, "input", param))
    else:
        arguments = item.get("arguments", "")
        if not isinstance(arguments, str):
            raise TranslationError.at(f"{param}.arguments", gettext_noop("expected a string"))
    upstream = state.tools.upstream_name(name, namespace)
    function = {"name": upstream, "arguments": arguments or "{}"}
    if state.opts.kimi_tool_ids:  # Kimi rejects ids in any other shape
        state.call_ids[call] = f"functions.{upstream}:{len(state.call_ids)}"
    message = state.open_assistant(for_call=True)
    message.setdefault("tool_calls", []).append(
        {"id": state.call_ids.get(call, call), "type": "function", "function": function})


def _call_output(item: dict[str, Any], param: str, state: _State) -> None:
    call = _string(item, "call_id", param)
    call = state.call_ids.get(call, call)
    parts = _parts(item.get("output"), f"{param}.output", state.opts)
    text = _text(parts)
    state.close_assistant()
    state.deferred.extend(p for p in parts if p["type"] != "text")
    if call in state.awaiting:
        state.awaiting.remove(call)
        state.messages.append({"role": "tool", "tool_call_id": call, "content": text})
        return
    # An output without its call (e.g. the call was a dropped hosted one): keep it as text.
    state.settle()
    state.messages.append({"role": "user", "content": f"[output of tool call {call}]\n{text}"})


def _item(item: dict[str, Any], param: str, state: _State) -> None:
    kind = item.get("type", "message" if "role" in item else None)
    if kind == "message":
        _message(item, param, state)
    elif kind in ("function_call", "custom_tool_call"):
        _call(item, param, state, custom=kind == "custom_tool_call")
    elif kind in ("function_call_output", "custom_tool_call_output"):
        _call_output(item, param, state)
    elif kind == "reasoning":
        text = _reasoning_text(item)
        if text and state.assistant is not None:
            previous = state.assistant.get("reasoning_content")
            state.assistant["reasoning_content"] = _JOIN.join(filter(None, (previous, text)))
        elif text:
            state.reasoning.append(text)
    elif kind == "item_reference":
        raise TranslationError.at(param, gettext_noop(
            "item references are not supported by this gateway; send the items themselves"))
    elif not isinstance(kind, str) or kind not in _HOSTED_ITEMS:
        raise TranslationError.at(f"{param}.type",
                                  gettext_noop("unsupported input item type %(value)r"),
                                  value=kind)


def convert_input(raw: Any, instructions: str, opts: TranslateOptions,
                  tools: ToolMap) -> list[dict[str, Any]]:
    state = _State(opts, tools)
    if instructions:
        state.system.append(instructions)
    for i, item in enumerate(input_items(raw)):
        _item(item, f"input.{i}", state)
    state.settle()
    if state.system:
        state.messages.insert(0, {"role": "system", "content": _JOIN.join(state.system)})
    return state.messages
