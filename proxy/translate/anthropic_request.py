"""Anthropic Messages request -> OpenAI Chat Completions request (spec: wire-protocols.md §C).

Pure: a dict in, a dict out. Fields the upstream cannot use (top_k, metadata, cache_control,
context_management, service_tier, output_config other than effort) are dropped; unknown fields
are ignored. Bad client input raises TranslationError (the caller answers 400).
"""

from __future__ import annotations

from typing import Any

from proxy.translate.anthropic_messages import TOOL_ERROR_PREFIX, convert_messages, system_text
from proxy.translate.anthropic_tools import ToolNamer, convert_tool_choice, convert_tools
from proxy.translate.types import (
    TranslatedRequest,
    TranslateOptions,
    TranslationError,
    gettext_noop,
)

__all__ = ["TOOL_ERROR_PREFIX", "anthropic_to_openai", "reasoning_effort"]

# budget_tokens thresholds: below 4096 is a light think, below 16384 a medium one.
_LOW_BUDGET = 4096
_MEDIUM_BUDGET = 16384
_EFFORTS = {"low": "low", "medium": "medium", "high": "high", "max": "high"}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def reasoning_effort(body: dict[str, Any]) -> str | None:
    """`thinking` (+ `output_config.effort` for adaptive) -> OpenAI reasoning_effort, or None."""
    thinking = body.get("thinking")
    if not isinstance(thinking, dict):
        return None
    kind = thinking.get("type")
    if kind == "enabled":
        budget = thinking.get("budget_tokens")
        if not _is_int(budget):
            return "medium"  # Anthropic requires a budget; tolerate its absence
        if budget < _LOW_BUDGET:
            return "low"
        return "medium" if budget < _MEDIUM_BUDGET else "high"
    if kind == "adaptive":
        config = body.get("output_config")
        effort = config.get("effort") if isinstance(config, dict) else None
        return _EFFORTS.get(effort, "medium") if isinstance(effort, str) else "medium"
    return None  # "disabled" and unknown kinds


def _max_tokens(body: dict[str, Any], opts: TranslateOptions) -> int:
    value = body.get("max_tokens")
    if value is None:
        value = opts.default_max_tokens
    elif not _is_int(value) or value < 1:
        raise TranslationError.at("max_tokens", gettext_noop("expected a positive integer"))
    if opts.max_output_tokens is not None:
        value = min(value, opts.max_output_tokens)
    return value


def _stop(raw: Any) -> list[str] | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or not all(isinstance(s, str) for s in raw):
        raise TranslationError.at("stop_sequences", gettext_noop("expected a list of strings"))
    return [s for s in raw if s] or None


def anthropic_to_openai(body: dict[str, Any], opts: TranslateOptions) -> TranslatedRequest:
    if not isinstance(body, dict):
        raise TranslationError("request body must be a JSON object",
                               problem=gettext_noop("request body must be a JSON object"))
    namer = ToolNamer()
    messages: list[dict[str, Any]] = []
    system = system_text(body.get("system"))
    if system:
        messages.append({"role": "system", "content": system})
    messages.extend(convert_messages(body.get("messages"), opts, namer))

    out: dict[str, Any] = {
        "model": opts.upstream_model,
        "messages": messages,
        "max_tokens": _max_tokens(body, opts),
    }
    stop = _stop(body.get("stop_sequences"))
    if stop:
        out["stop"] = stop
    for key in ("temperature", "top_p"):
        value = body.get(key)
        if value is None:
            continue
        if not _is_number(value):
            raise TranslationError.at(key, gettext_noop("expected a number"))
        out[key] = value
    if body.get("stream") is True:
        out["stream"] = True
        # Usage only arrives in a final chunk when asked for; message_delta needs it.
        out["stream_options"] = {"include_usage": True}

    tools = convert_tools(body.get("tools"), namer)
    choice, parallel = convert_tool_choice(body.get("tool_choice"), namer)
    if tools:
        out["tools"] = tools
        # tool_choice without tools is rejected upstream (e.g. all tools were server tools).
        if choice is not None:
            out["tool_choice"] = choice
        if parallel is not None:
            out["parallel_tool_calls"] = parallel

    effort = reasoning_effort(body)
    if effort is not None:
        out["reasoning_effort"] = effort
    return TranslatedRequest(body=out, tool_names=dict(namer.mapping))
