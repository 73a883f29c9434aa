"""OpenAI chat `messages` -> Anthropic `system` + `messages` (the conversation half of a request).

Anthropic is stricter than OpenAI: roles alternate starting with a user turn, tool results are
`tool_result` blocks at the head of the user turn right after the assistant's `tool_use`, every
call is answered, no text block is empty and a final (prefill) assistant turn has no trailing
whitespace. The converter builds turns, merges same-role neighbours, then repairs the tool pairing.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from proxy.translate.anthropic_messages import IMAGE_OMITTED, MISSING_TOOL_RESULT
from proxy.translate.types import TranslateOptions, TranslationError, gettext_noop
from proxy.translate.vision import IMAGE_TYPES

# Anthropic requires the first turn to be the user's; a history that opens with the assistant
# gets this one-word user turn in front.
LEADING_USER_TEXT = "(continued)"
_SYSTEM_ROLES = ("system", "developer")
# Anthropic's tool ids: ^[a-zA-Z0-9_-]+$ (Kimi-style `functions.name:0` ids are rejected).
_VALID_TOOL_ID = re.compile(r"^[A-Za-z0-9_-]+$")
_INVALID_ID_CHARS = re.compile(r"[^A-Za-z0-9_-]")
_DOCUMENT_TYPES = frozenset({"application/pdf"})


@dataclass
class _Turn:
    role: str  # "user" | "assistant"
    blocks: list[dict[str, Any]] = field(default_factory=list)


def anthropic_tool_id(raw: str) -> str:
    """A client tool id Anthropic accepts: kept when valid, else sanitised plus a short hash
    (deterministic, so a call and its result map to the same id)."""
    if _VALID_TOOL_ID.match(raw):
        return raw
    digest = hashlib.sha256(raw.encode("utf-8")).hexdigest()[:8]
    return f"{_INVALID_ID_CHARS.sub('_', raw)}_{digest}"


def _text_of(content: Any, param: str) -> str:
    """String or text parts -> one string (system, developer and tool messages)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise TranslationError.at(param, gettext_noop("expected a string or a list"))
    texts: list[str] = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") != "text":
            raise TranslationError.at(f"{param}.{j}", gettext_noop("expected a text part"))
        texts.append(_string(part.get("text"), f"{param}.{j}.text"))
    return "\n\n".join(t for t in texts if t)


def _string(value: Any, param: str) -> str:
    if not isinstance(value, str):
        raise TranslationError.at(param, gettext_noop("expected a string"))
    return value


def _data_url(url: str, param: str) -> tuple[str, str]:
    """(media type, base64 payload) of a `data:<type>;base64,<data>` URL; not decoded here."""
    header, comma, payload = url.partition(",")
    if not comma or not header.startswith("data:") or not header.endswith(";base64") \
            or not payload:
        raise TranslationError.at(
            param, gettext_noop("image data URLs must be data:<type>;base64,<data>"))
    return header[5:-7].lower(), payload.strip()


def _image_block(part: dict[str, Any], param: str, opts: TranslateOptions) -> dict[str, Any]:
    value = part.get("image_url")
    url = value.get("url") if isinstance(value, dict) else value
    if not isinstance(url, str) or not url:
        raise TranslationError.at(param, gettext_noop("image_url.url must be a non-empty string"))
    if url.startswith("data:"):
        media_type, data = _data_url(url, param)
        if media_type not in IMAGE_TYPES:
            raise TranslationError.at(
                param, gettext_noop("unsupported image type %(type)s; send PNG, JPEG, GIF or WebP"),
                type=media_type or "unknown")
        source: dict[str, Any] = {"type": "base64", "media_type": media_type, "data": data}
    elif url.startswith(("http://", "https://")):
        source = {"type": "url", "url": url}
    else:
        raise TranslationError.at(
            param, gettext_noop("image URLs must be http(s) or data: URLs"))
    if not opts.vision:  # validated first so bad input fails the same way on every model
        return {"type": "text", "text": IMAGE_OMITTED}
    return {"type": "image", "source": source}


def _file_block(part: dict[str, Any], param: str) -> dict[str, Any]:
    file = part.get("file")
    data = file.get("file_data") if isinstance(file, dict) else None
    if not isinstance(data, str) or not data.startswith("data:"):
        raise TranslationError.at(
            param, gettext_noop("only inline files (file.file_data as a data: URL) are supported"))
    media_type, payload = _data_url(data, param)
    if media_type not in _DOCUMENT_TYPES:
        raise TranslationError.at(param, gettext_noop("unsupported file type %(type)s"),
                                  type=media_type or "unknown")
    source = {"type": "base64", "media_type": media_type, "data": payload}
    block: dict[str, Any] = {"type": "document", "source": source}
    filename = file.get("filename")
    if isinstance(filename, str) and filename:
        block["title"] = filename
    return block


def _part_block(part: Any, param: str, opts: TranslateOptions) -> dict[str, Any] | None:
    """One user content part -> an Anthropic block (None: an empty text part, dropped)."""
    if not isinstance(part, dict) or not isinstance(part.get("type"), str):
        raise TranslationError.at(param, gettext_noop("expected a part with a string 'type'"))
    kind = part["type"]
    if kind in ("text", "refusal"):
        text = _string(part.get(kind), f"{param}.{kind}")
        return {"type": "text", "text": text} if text.strip() else None
    if kind == "image_url":
        return _image_block(part, param, opts)
    if kind == "file":
        return _file_block(part, param)
    if kind == "input_audio":
        raise TranslationError.at(
            param, gettext_noop("audio input is not supported by this upstream"))
    raise TranslationError.at(f"{param}.type", gettext_noop("unsupported content part %(value)r"),
                              value=kind)


def _content_blocks(content: Any, param: str, opts: TranslateOptions) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content.strip() else []
    if not isinstance(content, list):
        raise TranslationError.at(param, gettext_noop("expected a string or a list"))
    blocks = [_part_block(part, f"{param}.{j}", opts) for j, part in enumerate(content)]
    return [b for b in blocks if b is not None]


def named_function(holder: dict[str, Any], param: str) -> tuple[dict[str, Any], str]:
    """The `function` object of a chat tool or tool call, and its name; a 400 naming the field
    (`{param}.function`, `{param}.function.name`) when either is missing."""
    function = holder.get("function")
    if not isinstance(function, dict):
        raise TranslationError.at(f"{param}.function", gettext_noop("expected an object"))
    name = function.get("name")
    if not isinstance(name, str) or not name:
        raise TranslationError.at(
            f"{param}.function.name", gettext_noop("expected a non-empty string"))
    return function, name


def _tool_use(call: Any, param: str) -> dict[str, Any]:
    if not isinstance(call, dict):
        raise TranslationError.at(param, gettext_noop("expected an object"))
    if call.get("type", "function") != "function":
        raise TranslationError.at(f"{param}.type", gettext_noop("unsupported value %(value)r"),
                                  value=call.get("type"))
    call_id = call.get("id")
    if not isinstance(call_id, str) or not call_id:
        raise TranslationError.at(f"{param}.id", gettext_noop("expected a non-empty string"))
    function, name = named_function(call, param)
    arguments = function.get("arguments")
    tool_input: Any = {}
    if isinstance(arguments, str) and arguments.strip():
        try:
            tool_input = json.loads(arguments)
        except ValueError:
            tool_input = None
    elif arguments is not None and not isinstance(arguments, str):
        tool_input = None
    if not isinstance(tool_input, dict):
        raise TranslationError.at(f"{param}.function.arguments",
                                  gettext_noop("expected a JSON object encoded as a string"))
    return {"type": "tool_use", "id": anthropic_tool_id(call_id), "name": name,
            "input": tool_input}


def _assistant_blocks(message: dict[str, Any], param: str,
                      opts: TranslateOptions) -> list[dict[str, Any]]:
    # reasoning_content is dropped: Anthropic accepts thinking blocks only with the signature
    # it issued, and OpenAI clients never keep one.
    blocks = _content_blocks(message.get("content"), f"{param}.content", opts)
    blocks = [b for b in blocks if b["type"] == "text"]  # images are not valid assistant content
    calls = message.get("tool_calls")
    if calls is not None and not isinstance(calls, list):
        raise TranslationError.at(f"{param}.tool_calls", gettext_noop("expected a list"))
    blocks.extend(_tool_use(call, f"{param}.tool_calls.{k}") for k, call in enumerate(calls or []))
    return blocks


def _tool_result(message: dict[str, Any], param: str, opts: TranslateOptions) -> dict[str, Any]:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise TranslationError.at(f"{param}.tool_call_id",
                                  gettext_noop("expected a non-empty string"))
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": anthropic_tool_id(call_id)}
    content = _content_blocks(message.get("content"), f"{param}.content", opts)
    if content and all(b["type"] == "text" for b in content):
        block["content"] = "\n\n".join(b["text"] for b in content)
    elif content:
        block["content"] = content
    return block


def _system_text(message: dict[str, Any], param: str) -> str:
    return _text_of(message.get("content"), f"{param}.content")


def _build_turns(raw: list[Any], opts: TranslateOptions) -> tuple[list[str], list[_Turn]]:
    """(leading system texts, turns with same-role neighbours merged)."""
    system: list[str] = []
    turns: list[_Turn] = []
    for i, message in enumerate(raw):
        param = f"messages.{i}"
        if not isinstance(message, dict):
            raise TranslationError.at(param, gettext_noop("expected an object"))
        role = message.get("role")
        if role in _SYSTEM_ROLES:
            text = _system_text(message, param)
            if not turns:
                system.append(text)
                continue
            # Mid-conversation instructions stay in place, as user text (Anthropic has no
            # system turn); the order of the conversation is what the client meant.
            role, blocks = "user", ([{"type": "text", "text": text}] if text.strip() else [])
        elif role == "user":
            blocks = _content_blocks(message.get("content"), f"{param}.content", opts)
        elif role == "assistant":
            blocks = _assistant_blocks(message, param, opts)
        elif role == "tool":
            role, blocks = "user", [_tool_result(message, param, opts)]
        else:
            raise TranslationError.at(f"{param}.role", gettext_noop(
                "expected 'system', 'developer', 'user', 'assistant' or 'tool'"))
        if not blocks:
            continue
        if turns and turns[-1].role == role:
            turns[-1].blocks.extend(blocks)
        else:
            turns.append(_Turn(role, blocks))
    return [s for s in system if s.strip()], turns


def _pair_tool_results(turns: list[_Turn]) -> list[_Turn]:
    """Every tool_use answered in the next user turn (results first); stray results -> text."""
    out: list[_Turn] = []
    pending: list[str] = []
    for turn in turns:
        if turn.role == "assistant":
            if pending:  # the calls before this turn were never answered
                out.append(_Turn("user", _missing_results(pending)))
            out.append(turn)
            pending = [b["id"] for b in turn.blocks if b["type"] == "tool_use"]
            continue
        results: list[dict[str, Any]] = []
        answered: set[str] = set()
        for block in turn.blocks:  # the first result per call; a repeat is stray text
            if block["type"] == "tool_result" and block["tool_use_id"] in pending \
                    and block["tool_use_id"] not in answered:
                results.append(block)
                answered.add(block["tool_use_id"])
        kept = {id(b) for b in results}
        others = [_stray_result_text(b) if b["type"] == "tool_result" else b
                  for b in turn.blocks if id(b) not in kept]
        unanswered = [c for c in pending if c not in answered]
        out.append(_Turn("user", results + _missing_results(unanswered) + others))
        pending = []
    if pending:  # a conversation ending on tool calls: answer them so the history is valid
        out.append(_Turn("user", _missing_results(pending)))
    return out


def _missing_results(call_ids: list[str]) -> list[dict[str, Any]]:
    return [{"type": "tool_result", "tool_use_id": c, "content": MISSING_TOOL_RESULT,
             "is_error": True} for c in call_ids]


def _stray_result_text(block: dict[str, Any]) -> dict[str, Any]:
    """A result for no call of the previous turn: Anthropic would reject it, so it becomes text."""
    content = block.get("content", "")
    if isinstance(content, list):
        content = "\n\n".join(b["text"] for b in content if b["type"] == "text")
    return {"type": "text", "text": f"[tool result {block['tool_use_id']}]\n{content}"}


def _trim_prefill(turns: list[_Turn]) -> None:
    """A final assistant turn is a prefill; Anthropic rejects one ending in whitespace."""
    last = turns[-1]
    if last.role != "assistant" or last.blocks[-1]["type"] != "text":
        return
    text = last.blocks[-1]["text"].rstrip()
    if text:
        last.blocks[-1] = {**last.blocks[-1], "text": text}
    else:
        last.blocks.pop()
        if not last.blocks:
            turns.pop()


def convert_chat_messages(
    raw: Any, opts: TranslateOptions
) -> tuple[list[str], list[dict[str, Any]]]:
    """(system texts, Anthropic messages) for an OpenAI `messages` list."""
    if not isinstance(raw, list) or not raw:
        raise TranslationError.at("messages", gettext_noop("expected a non-empty list"))
    system, turns = _build_turns(raw, opts)
    if not turns:
        raise TranslationError.at("messages", gettext_noop("every message is empty"))
    if turns[0].role != "user":
        turns.insert(0, _Turn("user", [{"type": "text", "text": LEADING_USER_TEXT}]))
    turns = _pair_tool_results(turns)
    _trim_prefill(turns)
    return system, [{"role": t.role, "content": t.blocks} for t in turns]
