"""Anthropic tool definitions, tool_choice and tool names/ids -> their OpenAI counterparts."""

from __future__ import annotations

import hashlib
from typing import Any

from proxy.translate.types import TranslationError, gettext_noop

# OpenAI (and every OpenAI-compatible server we know) rejects function names over 64 chars;
# MCP tools in Claude Code easily exceed it (mcp__<server>__<tool>).
MAX_TOOL_NAME = 64
_HASH_LEN = 8

# Anthropic-only tool types run on Anthropic's side; an OpenAI upstream cannot run them.
_FUNCTION_TOOL_TYPES = (None, "custom")


def _digest(text: str, length: int) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def shorten_tool_name(name: str) -> str:
    """Deterministic: the same long name always maps to the same 64-char name (prefix + hash)."""
    if len(name) <= MAX_TOOL_NAME:
        return name
    return f"{name[: MAX_TOOL_NAME - _HASH_LEN - 1]}_{_digest(name, _HASH_LEN)}"


def synth_tool_id(*parts: object) -> str:
    """A stable `toolu_` id from positions/names, so replays of the same history match."""
    return "toolu_" + _digest(":".join(str(p) for p in parts), 24)


class ToolNamer:
    """Shortens names consistently across tools, history and tool_choice; records the mapping."""

    def __init__(self) -> None:
        self.mapping: dict[str, str] = {}

    def __call__(self, name: str) -> str:
        short = shorten_tool_name(name)
        if short != name:
            self.mapping[short] = name
        return short


def convert_tools(raw: Any, namer: ToolNamer) -> list[dict[str, Any]]:
    """Client tools -> OpenAI function tools; Anthropic server tools are dropped."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise TranslationError.at("tools", gettext_noop("expected a list"))
    out: list[dict[str, Any]] = []
    for i, tool in enumerate(raw):
        param = f"tools.{i}"
        if not isinstance(tool, dict):
            raise TranslationError.at(param, gettext_noop("expected an object"))
        if tool.get("type") not in _FUNCTION_TOOL_TYPES:
            continue  # web_search_20250305 & co.
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise TranslationError.at(f"{param}.name", gettext_noop("expected a non-empty string"))
        schema = tool.get("input_schema")
        if schema is None:
            schema = {"type": "object", "properties": {}}
        elif not isinstance(schema, dict):
            raise TranslationError.at(f"{param}.input_schema", gettext_noop("expected an object"))
        function: dict[str, Any] = {"name": namer(name)}
        description = tool.get("description")
        if isinstance(description, str) and description:
            function["description"] = description
        elif description is not None and not isinstance(description, str):
            raise TranslationError.at(f"{param}.description", gettext_noop("expected a string"))
        # Built fresh: cache_control, strict, defer_loading, input_examples... never leak upstream.
        function["parameters"] = schema
        out.append({"type": "function", "function": function})
    return out


def convert_tool_choice(raw: Any, namer: ToolNamer) -> tuple[Any, bool | None]:
    """Returns (OpenAI tool_choice or None, parallel_tool_calls or None)."""
    if raw is None:
        return None, None
    if isinstance(raw, str):  # tolerated shorthand: "auto" / "any" / "none"
        raw = {"type": raw}
    if not isinstance(raw, dict):
        raise TranslationError.at("tool_choice", gettext_noop("expected an object"))
    kind = raw.get("type")
    parallel = False if raw.get("disable_parallel_tool_use") is True else None
    if kind == "auto":
        return "auto", parallel
    if kind == "any":
        return "required", parallel
    if kind == "none":
        return "none", None
    if kind == "tool":
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            raise TranslationError.at(
                "tool_choice.name", gettext_noop("expected a non-empty string"))
        return {"type": "function", "function": {"name": namer(name)}}, parallel
    raise TranslationError.at("tool_choice.type", gettext_noop("unsupported value %(value)r"),
                                 value=kind)
