"""Anthropic `system` + `messages` -> OpenAI chat messages (the conversation half of a request)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from proxy.translate.anthropic_tools import ToolNamer, synth_tool_id
from proxy.translate.types import TranslateOptions, TranslationError, gettext_noop

TOOL_ERROR_PREFIX = "[tool error] "
IMAGE_OMITTED = "[image omitted: this model does not accept images]"
# Some upstreams (Qwen, DeepSeek) reject empty content; a tool may legitimately print nothing.
EMPTY_TOOL_RESULT = "(no output)"
MISSING_TOOL_RESULT = "[no result was returned for this tool call]"
_JOIN = "\n\n"


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


@dataclass
class _Block:
    """One client block with its position (for error params and stable synthesized ids)."""

    data: dict[str, Any]
    param: str
    msg_index: int
    block_index: int

    @property
    def type(self) -> str:
        return self.data["type"]


@dataclass
class _Turn:
    role: str
    blocks: list[_Block]


@dataclass
class _State:
    opts: TranslateOptions
    namer: ToolNamer
    id_map: dict[str, str] = field(default_factory=dict)  # client tool id -> upstream id
    calls_seen: int = 0
    pending: list[str] = field(default_factory=list)  # upstream ids of the last assistant turn


# Claude Code opens `system` with a block "x-anthropic-billing-header: cc_version=…;
# cc_entrypoint=…; cch=…;" whose cch changes with every request. Only Anthropic's own API reads
# it (the passthrough to Anthropic-compatible accounts keeps it); sent to any other upstream it
# makes every prompt's prefix new, so the upstream's prefix cache never hits: it is dropped.
BILLING_HEADER = "x-anthropic-billing-header:"


def is_billing_header(text: str) -> bool:
    return text.lstrip().startswith(BILLING_HEADER)


def system_text(raw: Any) -> str:
    """`system` string or text blocks -> one string (cache_control and other fields dropped,
    and Claude Code's billing header: see BILLING_HEADER)."""
    if raw is None:
        return ""
    if isinstance(raw, str):
        if is_billing_header(raw):  # the header as the string's first line
            return raw.partition("\n")[2].lstrip("\n")
        return raw
    if not isinstance(raw, list):
        raise TranslationError.at(
            "system", gettext_noop("expected a string or a list of text blocks"))
    texts: list[str] = []
    for i, block in enumerate(raw):
        if not isinstance(block, dict):
            raise TranslationError.at(f"system.{i}", gettext_noop("expected an object"))
        text = block.get("text")
        if block.get("type", "text") == "text" and isinstance(text, str) and text \
                and not is_billing_header(text):
            texts.append(text)
    return _JOIN.join(texts)


def _string(block: _Block, key: str) -> str:
    value = block.data.get(key)
    if not isinstance(value, str):
        raise TranslationError.at(f"{block.param}.{key}", gettext_noop("expected a string"))
    return value


def _keep(block: dict[str, Any]) -> bool:
    """Drop what the upstream must not see: empty/blank text blocks, redacted_thinking."""
    kind = block["type"]
    if kind == "text":
        text = block.get("text")
        return not isinstance(text, str) or bool(text.strip())  # non-strings fail later, loudly
    if kind == "thinking":
        return bool(block.get("thinking"))
    return kind != "redacted_thinking"


def _turns(raw: Any) -> list[_Turn]:
    """Validate, drop empty blocks/messages, merge consecutive same-role messages."""
    if not isinstance(raw, list) or not raw:
        raise TranslationError.at("messages", gettext_noop("expected a non-empty list"))
    turns: list[_Turn] = []
    for i, message in enumerate(raw):
        param = f"messages.{i}"
        if not isinstance(message, dict):
            raise TranslationError.at(param, gettext_noop("expected an object"))
        role = message.get("role")
        content = message.get("content")
        if role == "system":
            # Claude Code (mid-conversation-system beta) sends instructions as a message; the
            # upstream gets them as user text in place, which every chat template accepts.
            role, content = "user", system_text(content)
        if role not in ("user", "assistant"):
            raise TranslationError.at(
                f"{param}.role", gettext_noop("expected 'user', 'assistant' or 'system'"))
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        if not isinstance(content, list):
            raise TranslationError.at(
                f"{param}.content", gettext_noop("expected a string or a list"))
        blocks: list[_Block] = []
        for j, data in enumerate(content):
            bparam = f"{param}.content.{j}"
            if not isinstance(data, dict) or not isinstance(data.get("type"), str):
                raise TranslationError.at(
                    bparam, gettext_noop("expected a block with a string 'type'"))
            if _keep(data):
                blocks.append(_Block(data, bparam, i, j))
        if not blocks:
            continue
        if turns and turns[-1].role == role:
            turns[-1].blocks.extend(blocks)
        else:
            turns.append(_Turn(role, blocks))
    if not turns:
        raise TranslationError.at("messages", gettext_noop("every message is empty"))
    return turns


def _image_part(block: _Block, opts: TranslateOptions) -> dict[str, Any]:
    source = block.data.get("source")
    sparam = f"{block.param}.source"
    if not isinstance(source, dict):
        raise TranslationError.at(sparam, gettext_noop("expected an object"))
    kind = source.get("type")
    if kind == "base64":
        media_type, data = source.get("media_type"), source.get("data")
        if not isinstance(media_type, str) or not isinstance(data, str) or not data:
            raise TranslationError.at(
                sparam, gettext_noop("base64 source needs media_type and data"))
        url = f"data:{media_type};base64,{data}"
    elif kind == "url":
        url = source.get("url")
        if not isinstance(url, str) or not url:
            raise TranslationError.at(f"{sparam}.url", gettext_noop("expected a non-empty string"))
    else:
        raise TranslationError.at(f"{sparam}.type",
                                 gettext_noop("unsupported image source %(value)r"), value=kind)
    if not opts.vision:  # validated first so bad input fails the same way on every model
        return {"type": "text", "text": IMAGE_OMITTED}
    return {"type": "image_url", "image_url": {"url": url}}


def _text_of_blocks(raw: Any, param: str) -> str:
    """Text of a nested content list (document `content` source, search results)."""
    if isinstance(raw, str):
        return raw
    if not isinstance(raw, list):
        raise TranslationError.at(param, gettext_noop("expected a string or a list"))
    texts = [b["text"] for b in raw if isinstance(b, dict) and isinstance(b.get("text"), str)]
    return _JOIN.join(t for t in texts if t)


def _document_part(block: _Block) -> dict[str, Any]:
    source = block.data.get("source")
    sparam = f"{block.param}.source"
    if not isinstance(source, dict):
        raise TranslationError.at(sparam, gettext_noop("expected an object"))
    title = block.data.get("title") if isinstance(block.data.get("title"), str) else ""
    kind = source.get("type")
    if kind == "base64":
        media_type, data = source.get("media_type"), source.get("data")
        if not isinstance(media_type, str) or not isinstance(data, str) or not data:
            raise TranslationError.at(
                sparam, gettext_noop("base64 source needs media_type and data"))
        file = {
            "file_data": f"data:{media_type};base64,{data}",
            "filename": title or "document.pdf",
        }
        return {"type": "file", "file": file}
    if kind == "text":
        text = source.get("data")
        if not isinstance(text, str):
            raise TranslationError.at(f"{sparam}.data", gettext_noop("expected a string"))
    elif kind == "content":
        text = _text_of_blocks(source.get("content"), f"{sparam}.content")
    else:  # url / file sources would need fetching or the Files API
        raise TranslationError.at(f"{sparam}.type",
                                 gettext_noop("unsupported document source %(value)r"), value=kind)
    return {"type": "text", "text": f"{title}\n\n{text}" if title else text}


def _other_text(block: _Block) -> str | None:
    """Blocks we have no mapping for: keep their text if they have some (search_result...)."""
    data = block.data
    if data["type"] == "search_result":
        text = _text_of_blocks(data.get("content", []), f"{block.param}.content")
        head = " ".join(str(data[k]) for k in ("title", "source") if isinstance(data.get(k), str))
        return f"{head}\n{text}" if head else text
    text = data.get("text")
    return text if isinstance(text, str) and text else None


def _user_part(block: _Block, opts: TranslateOptions) -> dict[str, Any] | None:
    kind = block.type
    if kind == "text":
        return {"type": "text", "text": _string(block, "text")}
    if kind == "image":
        return _image_part(block, opts)
    if kind == "document":
        return _document_part(block)
    if kind == "tool_use":
        raise TranslationError.at(
            block.param, gettext_noop("tool_use is only valid in assistant messages"))
    if kind == "thinking":
        return None
    text = _other_text(block)
    return {"type": "text", "text": text} if text else None


def _content(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """Plain string when text-only: many upstreams (and text-only models) reject part arrays."""
    if all(p["type"] == "text" for p in parts):
        return _JOIN.join(p["text"] for p in parts)
    return parts


def _tool_result(
    block: _Block, state: _State, answered: list[str]
) -> tuple[dict[str, Any] | None, list[dict[str, Any]], str]:
    """One tool_result -> (tool message or None if orphaned, images to move, text)."""
    data = block.data
    raw_id = data.get("tool_use_id")
    if raw_id is not None and not isinstance(raw_id, str):
        raise TranslationError.at(f"{block.param}.tool_use_id", gettext_noop("expected a string"))
    if raw_id:
        call_id = state.id_map.get(raw_id, raw_id)
    else:  # no id: answer the first still-open call of the previous assistant turn
        open_calls = [c for c in state.pending if c not in answered]
        call_id = (
            open_calls[0]
            if open_calls
            else synth_tool_id("result", block.msg_index, block.block_index)
        )
    content = data.get("content")
    texts: list[str] = []
    images: list[dict[str, Any]] = []
    if isinstance(content, str):
        texts.append(content)
    elif isinstance(content, list):
        for j, raw in enumerate(content):
            inner_param = f"{block.param}.content.{j}"
            if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
                raise TranslationError.at(
                    inner_param, gettext_noop("expected a block with a string 'type'"))
            inner = _Block(raw, inner_param, block.msg_index, block.block_index)
            if raw["type"] == "tool_result":
                raise TranslationError.at(inner_param, gettext_noop("nested tool_result"))
            part = _user_part(inner, state.opts) if _keep(raw) else None
            if part is None:
                continue
            if part["type"] == "text":
                texts.append(part["text"])
            else:
                images.append(part)
    elif content is not None:
        raise TranslationError.at(
            f"{block.param}.content", gettext_noop("expected a string or a list"))
    text = _JOIN.join(t for t in texts if t)
    if images:
        note = f"[{len(images)} attachment(s) follow in the next user message]"
        text = f"{text}{_JOIN}{note}" if text else note
    if data.get("is_error") is True:
        text = TOOL_ERROR_PREFIX + text
    text = text or EMPTY_TOOL_RESULT
    if call_id not in state.pending:
        return None, images, text  # orphan: the upstream would reject a dangling tool message
    answered.append(call_id)
    return {"role": "tool", "tool_call_id": call_id, "content": text}, images, text


def _user_messages(turn: _Turn, state: _State) -> list[dict[str, Any]]:
    """Tool messages first (directly after the assistant turn), then one user message."""
    tools: list[dict[str, Any]] = []
    moved: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    answered: list[str] = []
    for block in turn.blocks:
        if block.type != "tool_result":
            part = _user_part(block, state.opts)
            if part is not None:
                parts.append(part)
            continue
        message, images, text = _tool_result(block, state, answered)
        if message is not None:
            tools.append(message)
        else:
            parts.append({"type": "text", "text": f"[tool result]\n{text}"})
        if images:
            owner = f" {message['tool_call_id']}" if message else ""
            label = f"Attachments from tool result{owner}:"
            moved.extend([{"type": "text", "text": label}, *images])
    # Every tool call needs an answer or strict upstreams reject the whole history.
    tools.extend(
        {"role": "tool", "tool_call_id": c, "content": MISSING_TOOL_RESULT}
        for c in state.pending
        if c not in answered
    )
    state.pending = []
    out = list(tools)
    if moved or parts:
        out.append({"role": "user", "content": _content(moved + parts)})
    return out


def _tool_call(block: _Block, state: _State) -> dict[str, Any]:
    name = _string(block, "name")
    if not name:
        raise TranslationError.at(
            f"{block.param}.name", gettext_noop("expected a non-empty string"))
    tool_input = block.data.get("input", {})
    if tool_input is None:
        tool_input = {}
    if not isinstance(tool_input, dict):
        raise TranslationError.at(f"{block.param}.input", gettext_noop("expected an object"))
    raw_id = block.data.get("id")
    if raw_id is not None and not isinstance(raw_id, str):
        raise TranslationError.at(f"{block.param}.id", gettext_noop("expected a string"))
    short = state.namer(name)
    if state.opts.kimi_tool_ids:
        call_id = f"functions.{short}:{state.calls_seen}"
    else:
        call_id = raw_id or synth_tool_id("use", block.msg_index, block.block_index)
    if raw_id:
        state.id_map[raw_id] = call_id
    state.calls_seen += 1
    function = {"name": short, "arguments": _dumps(tool_input)}
    return {"id": call_id, "type": "function", "function": function}


def _assistant_message(turn: _Turn, state: _State) -> dict[str, Any]:
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in turn.blocks:
        kind = block.type
        if kind == "text":
            texts.append(_string(block, "text"))
        elif kind == "thinking":
            reasoning.append(_string(block, "thinking"))
        elif kind == "tool_use":
            calls.append(_tool_call(block, state))
        elif kind == "tool_result":
            raise TranslationError.at(
                block.param, gettext_noop("tool_result is only valid in user messages"))
        elif kind not in ("image", "document"):  # not valid in assistant turns: dropped
            text = _other_text(block)
            if text:
                texts.append(text)
    content = _JOIN.join(texts)
    # "" next to tool_calls breaks some upstreams: null is the canonical "no text".
    message: dict[str, Any] = {"role": "assistant", "content": content or (None if calls else "")}
    if calls:
        message["tool_calls"] = calls
    if reasoning:  # DeepSeek/Kimi thinking modes require it back on tool-call turns
        message["reasoning_content"] = _JOIN.join(reasoning)
    state.pending = [c["id"] for c in calls]
    return message


def convert_messages(raw: Any, opts: TranslateOptions, namer: ToolNamer) -> list[dict[str, Any]]:
    state = _State(opts, namer)
    out: list[dict[str, Any]] = []
    for turn in _turns(raw):
        if turn.role == "assistant":
            out.append(_assistant_message(turn, state))
        else:
            out.extend(_user_messages(turn, state))
    return out
