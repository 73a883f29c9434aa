"""Responses API tools and tool_choice -> chat function tools, and the names to map back.

`function` tools pass through; `namespace` tools are flattened to `<namespace>__<name>`
functions; `custom` (free-form) tools such as Codex's apply_patch become a function taking one
string argument `{"input": ...}`. Hosted tools (web_search, file_search, ...) run on OpenAI's
side: an upstream chat model cannot run them, so they are dropped and reported by type.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from proxy.translate.anthropic_tools import shorten_tool_name
from proxy.translate.types import TranslationError, gettext_noop

NAMESPACE_SEPARATOR = "__"
CUSTOM_INPUT_KEY = "input"  # the one argument of a custom tool's function
# Grammars can be long (apply_patch's is ~1 KB); the model only needs the gist.
_GRAMMAR_MAX_CHARS = 4000


@dataclass(frozen=True)
class ToolTarget:
    """What an upstream function name stands for on the client's side."""

    name: str
    namespace: str | None = None
    custom: bool = False


@dataclass
class ToolMap:
    """Upstream function name <-> client tool (name, namespace, kind), for one request."""

    targets: dict[str, ToolTarget] = field(default_factory=dict)
    _by_target: dict[tuple[str, str | None], str] = field(default_factory=dict)

    def add(self, target: ToolTarget) -> str:
        key = (target.name, target.namespace)
        if key in self._by_target:
            return self._by_target[key]
        base = flat_name(target.name, target.namespace)
        upstream, n = base, 1
        while upstream in self.targets:  # `a__b` as a plain tool and as namespace a's tool b
            n += 1
            upstream = shorten_tool_name(f"{base}_{n}")
        self.targets[upstream] = target
        self._by_target[key] = upstream
        return upstream

    def upstream_name(self, name: str, namespace: str | None = None) -> str:
        """The upstream name of a tool named in history or tool_choice (declared or not)."""
        known = self._by_target.get((name, namespace))
        return known if known is not None else flat_name(name, namespace)

    def target(self, upstream: str) -> ToolTarget:
        return self.targets.get(upstream) or ToolTarget(upstream)

    def is_custom(self, name: str, namespace: str | None = None) -> bool:
        upstream = self._by_target.get((name, namespace))
        return upstream is not None and self.targets[upstream].custom


def flat_name(name: str, namespace: str | None) -> str:
    return shorten_tool_name(f"{namespace}{NAMESPACE_SEPARATOR}{name}" if namespace else name)


def _text_field(tool: dict[str, Any], key: str, param: str) -> str:
    value = tool.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise TranslationError.at(f"{param}.{key}", gettext_noop("expected a string"))
    return value


def _name(tool: dict[str, Any], param: str) -> str:
    name = tool.get("name")
    if not isinstance(name, str) or not name:
        raise TranslationError.at(f"{param}.name", gettext_noop("expected a non-empty string"))
    return name


def _function(upstream: str, description: str, parameters: Any) -> dict[str, Any]:
    function: dict[str, Any] = {"name": upstream}
    if description:
        function["description"] = description
    # Built fresh: strict, defer_loading, output_schema... never leak upstream.
    function["parameters"] = parameters
    return {"type": "function", "function": function}


def _function_tool(tool: dict[str, Any], param: str, tools: ToolMap,
                   namespace: str | None, prefix: str) -> dict[str, Any]:
    parameters = tool.get("parameters")
    if parameters is None:
        parameters = {"type": "object", "properties": {}}
    elif not isinstance(parameters, dict):
        raise TranslationError.at(f"{param}.parameters", gettext_noop("expected an object"))
    upstream = tools.add(ToolTarget(_name(tool, param), namespace))
    description = _text_field(tool, "description", param)
    return _function(upstream, "\n\n".join(t for t in (prefix, description) if t), parameters)


def _custom_tool(tool: dict[str, Any], param: str, tools: ToolMap,
                 namespace: str | None, prefix: str) -> dict[str, Any]:
    upstream = tools.add(ToolTarget(_name(tool, param), namespace, custom=True))
    description = _text_field(tool, "description", param)
    input_help = "The raw input of the tool, as free-form text."
    fmt = tool.get("format")
    if isinstance(fmt, dict) and fmt.get("type") == "grammar":
        definition = fmt.get("definition")
        if isinstance(definition, str) and definition:
            syntax = fmt.get("syntax") if isinstance(fmt.get("syntax"), str) else "lark"
            input_help += (f" It must match this {syntax} grammar:\n"
                           f"{definition[:_GRAMMAR_MAX_CHARS]}")
    parameters = {
        "type": "object",
        "properties": {CUSTOM_INPUT_KEY: {"type": "string", "description": input_help}},
        "required": [CUSTOM_INPUT_KEY],
        "additionalProperties": False,
    }
    return _function(upstream, "\n\n".join(t for t in (prefix, description) if t), parameters)


def _namespace_tools(tool: dict[str, Any], param: str, tools: ToolMap) -> list[dict[str, Any]]:
    namespace = _name(tool, param)
    inner = tool.get("tools")
    if not isinstance(inner, list):
        raise TranslationError.at(f"{param}.tools", gettext_noop("expected a list"))
    description = _text_field(tool, "description", param)
    out: list[dict[str, Any]] = []
    for i, member in enumerate(inner):
        mparam = f"{param}.tools.{i}"
        if not isinstance(member, dict):
            raise TranslationError.at(mparam, gettext_noop("expected an object"))
        kind = member.get("type", "function")
        if kind == "function":
            out.append(_function_tool(member, mparam, tools, namespace, description))
        elif kind == "custom":
            out.append(_custom_tool(member, mparam, tools, namespace, description))
        else:
            raise TranslationError.at(f"{mparam}.type",
                                      gettext_noop("unsupported value %(value)r"), value=kind)
    return out


def convert_tools(raw: Any) -> tuple[list[dict[str, Any]], ToolMap, list[str]]:
    """Returns (chat tools, name map, hosted tool types dropped)."""
    tools = ToolMap()
    if raw is None:
        return [], tools, []
    if not isinstance(raw, list):
        raise TranslationError.at("tools", gettext_noop("expected a list"))
    out: list[dict[str, Any]] = []
    dropped: list[str] = []
    for i, tool in enumerate(raw):
        param = f"tools.{i}"
        if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
            raise TranslationError.at(param, gettext_noop("expected an object with a type"))
        kind = tool["type"]
        if kind == "function":
            out.append(_function_tool(tool, param, tools, None, ""))
        elif kind == "custom":
            out.append(_custom_tool(tool, param, tools, None, ""))
        elif kind == "namespace":
            out.extend(_namespace_tools(tool, param, tools))
        elif kind not in dropped:
            dropped.append(kind)  # hosted: web_search, file_search, mcp, local_shell...
    return out, tools, dropped


def convert_tool_choice(raw: Any, tools: ToolMap) -> Any:
    """Responses tool_choice -> chat tool_choice (None: leave it out)."""
    if raw is None:
        return None
    if isinstance(raw, str):
        if raw in ("auto", "none", "required"):
            return raw
        raise TranslationError.at("tool_choice", gettext_noop("unsupported value %(value)r"),
                                  value=raw)
    if not isinstance(raw, dict):
        raise TranslationError.at("tool_choice", gettext_noop("expected a string or an object"))
    kind = raw.get("type")
    if kind in ("function", "custom"):
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            raise TranslationError.at("tool_choice.name",
                                      gettext_noop("expected a non-empty string"))
        namespace = raw.get("namespace") if isinstance(raw.get("namespace"), str) else None
        return {"type": "function", "function": {"name": tools.upstream_name(name, namespace)}}
    if kind == "allowed_tools":  # a subset we cannot express upstream: keep its mode
        return "required" if raw.get("mode") == "required" else "auto"
    if isinstance(kind, str):
        return "auto"  # a hosted tool (dropped): let the model answer by itself
    raise TranslationError.at("tool_choice.type", gettext_noop("unsupported value %(value)r"),
                              value=kind)


def custom_input(arguments: str) -> str:
    """A custom tool's function arguments -> its free-form input (raw text if not our shape)."""
    try:
        parsed = json.loads(arguments) if arguments.strip() else {}
    except ValueError:
        return arguments
    if isinstance(parsed, dict) and isinstance(parsed.get(CUSTOM_INPUT_KEY), str):
        return parsed[CUSTOM_INPUT_KEY]
    return arguments


def custom_arguments(text: str) -> str:
    """A custom tool call's input (history) -> the function arguments the upstream saw."""
    return json.dumps({CUSTOM_INPUT_KEY: text}, ensure_ascii=False)
