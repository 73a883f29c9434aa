"""OpenAI Responses request -> OpenAI Chat Completions request (docs/responses-api.md).

Pure: a dict in, a dict out, plus what the response side needs (tool names to map back, the
hosted tools dropped, the fields a response echoes). Accepted but without upstream effect:
metadata, prompt_cache_key, client_metadata, store, include, service_tier, stream_options,
max_tool_calls, top_logprobs, safety_identifier, truncation "disabled". Options we cannot honour
(background mode, server-side truncation, prompt templates, conversations) raise
TranslationError (the caller answers 400). `previous_response_id` is resolved by the caller
with `combine_input` before translating.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from proxy.translate.responses_input import convert_input, input_items
from proxy.translate.responses_tools import ToolMap, convert_tool_choice, convert_tools
from proxy.translate.tokens import (
    IMAGE_TOKENS,
    MESSAGE_OVERHEAD,
    REQUEST_OVERHEAD,
    TOOL_OVERHEAD,
    estimate_text_tokens,
)
from proxy.translate.types import TranslateOptions, TranslationError, gettext_noop

__all__ = ["ResponsesTranslation", "combine_input", "estimate_input_tokens", "response_echo",
           "responses_to_openai"]

# Responses effort -> chat reasoning_effort ("none" switches thinking off upstream).
_EFFORTS = {"none": "none", "minimal": "low", "low": "low", "medium": "medium",
            "high": "high", "xhigh": "high"}


@dataclass
class ResponsesTranslation:
    """The upstream chat body plus what the response side needs."""

    body: dict[str, Any]
    model: str  # as the client asked for it
    tools: ToolMap = field(default_factory=ToolMap)
    dropped_tools: list[str] = field(default_factory=list)  # hosted tool types, e.g. web_search
    echo: dict[str, Any] = field(default_factory=dict)  # for responses_items.build_response
    stream: bool = False


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _refuse_unsupported(body: dict[str, Any]) -> None:
    if body.get("background") is True:
        raise TranslationError.at("background", gettext_noop(
            "background mode is not supported by this gateway; use stream or a plain request"))
    if body.get("truncation") not in (None, "disabled"):
        raise TranslationError.at("truncation", gettext_noop(
            "only \"disabled\" is supported: this gateway does not truncate conversations"))
    if body.get("prompt") is not None:
        raise TranslationError.at("prompt", gettext_noop(
            "prompt templates are not supported by this gateway; send instructions and input"))
    if body.get("conversation") is not None:
        raise TranslationError.at("conversation", gettext_noop(
            "conversations are not supported by this gateway; use previous_response_id"))


def _max_tokens(body: dict[str, Any], opts: TranslateOptions) -> int | None:
    value = body.get("max_output_tokens")
    if value is None:
        return opts.max_output_tokens
    if not _is_int(value) or value < 1:
        raise TranslationError.at("max_output_tokens", gettext_noop("expected a positive integer"))
    return min(value, opts.max_output_tokens) if opts.max_output_tokens else value


def _reasoning_effort(raw: Any) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise TranslationError.at("reasoning", gettext_noop("expected an object"))
    effort = raw.get("effort")
    if effort is None:
        return None  # e.g. Codex's {"summary": "auto"}: the provider's default
    if not isinstance(effort, str) or effort not in _EFFORTS:
        raise TranslationError.at("reasoning.effort", gettext_noop("unsupported value %(value)r"),
                                  value=effort)
    return _EFFORTS[effort]


def _response_format(raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise TranslationError.at("text", gettext_noop("expected an object"))
    fmt = raw.get("format")
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        name, schema = fmt.get("name"), fmt.get("schema")
        if not isinstance(name, str) or not name:
            raise TranslationError.at("text.format.name",
                                      gettext_noop("expected a non-empty string"))
        if not isinstance(schema, dict):
            raise TranslationError.at("text.format.schema", gettext_noop("expected an object"))
        spec: dict[str, Any] = {"name": name, "schema": schema}
        for key in ("description", "strict"):
            if fmt.get(key) is not None:
                spec[key] = fmt[key]
        return {"type": "json_schema", "json_schema": spec}
    raise TranslationError.at("text.format.type", gettext_noop("unsupported value %(value)r"),
                              value=kind)


def _instructions(body: dict[str, Any]) -> str:
    value = body.get("instructions")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise TranslationError.at("instructions", gettext_noop("expected a string"))
    return value


def _sampling(body: dict[str, Any], out: dict[str, Any]) -> None:
    for key in ("temperature", "top_p"):
        value = body.get(key)
        if value is None:
            continue
        if not _is_number(value):
            raise TranslationError.at(key, gettext_noop("expected a number"))
        out[key] = value


def responses_to_openai(body: Any, opts: TranslateOptions) -> ResponsesTranslation:
    if not isinstance(body, dict):
        raise TranslationError("request body must be a JSON object",
                               problem=gettext_noop("request body must be a JSON object"))
    _refuse_unsupported(body)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise TranslationError.at("model", gettext_noop("expected a non-empty string"))
    chat_tools, tools, dropped = convert_tools(body.get("tools"))
    messages = convert_input(body.get("input"), _instructions(body), opts, tools)

    out: dict[str, Any] = {"model": opts.upstream_model, "messages": messages}
    max_tokens = _max_tokens(body, opts)
    if max_tokens is not None:
        out["max_tokens"] = max_tokens
    _sampling(body, out)
    stream = body.get("stream") is True
    if stream:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}  # usage only comes when asked for
    choice = convert_tool_choice(body.get("tool_choice"), tools)
    if chat_tools:
        out["tools"] = chat_tools
        # tool_choice without tools is rejected upstream (e.g. only hosted tools were sent).
        if choice is not None:
            out["tool_choice"] = choice
        if isinstance(body.get("parallel_tool_calls"), bool):
            out["parallel_tool_calls"] = body["parallel_tool_calls"]
    effort = _reasoning_effort(body.get("reasoning"))
    if effort is not None:
        out["reasoning_effort"] = effort
    response_format = _response_format(body.get("text"))
    if response_format is not None:
        out["response_format"] = response_format
    user = body.get("user")
    if isinstance(user, str) and user:
        out["user"] = user
    return ResponsesTranslation(body=out, model=model, tools=tools, dropped_tools=dropped,
                                echo=response_echo(body), stream=stream)


def response_echo(body: dict[str, Any]) -> dict[str, Any]:
    """The request fields a response object repeats, with the API's defaults."""
    text = body.get("text") if isinstance(body.get("text"), dict) else {}
    reasoning = body.get("reasoning") if isinstance(body.get("reasoning"), dict) else None
    return {
        "instructions": body.get("instructions"),
        "tools": body.get("tools") if isinstance(body.get("tools"), list) else [],
        "tool_choice": body.get("tool_choice") if body.get("tool_choice") is not None else "auto",
        "parallel_tool_calls": body.get("parallel_tool_calls") is not False,
        "temperature": body.get("temperature"),
        "top_p": body.get("top_p"),
        "max_output_tokens": body.get("max_output_tokens"),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")}
        if reasoning is not None else None,
        "text": {**text, "format": text.get("format") or {"type": "text"}},
        "store": body.get("store") is not False,
        "background": False,
        "truncation": "disabled",
        "metadata": body.get("metadata") if isinstance(body.get("metadata"), dict) else {},
        "user": body.get("user"),
        "prompt_cache_key": body.get("prompt_cache_key"),
        "service_tier": "default",
    }


def combine_input(previous_input: list[dict[str, Any]], previous_output: list[dict[str, Any]],
                  new_input: Any) -> list[dict[str, Any]]:
    """`previous_response_id`: the stored response's input items, then its output items, then
    the new input. Instructions are not carried over (the API applies only the new request's)."""
    return [*previous_input, *previous_output, *input_items(new_input)]


def _part_tokens(part: Any) -> int:
    if not isinstance(part, dict):
        return 0
    if part.get("type") == "text" and isinstance(part.get("text"), str):
        return estimate_text_tokens(part["text"])
    return IMAGE_TOKENS  # image_url / file: their data URL says nothing about their cost


def estimate_input_tokens(chat_body: dict[str, Any]) -> int:
    """A local estimate of the translated request's input tokens (messages, tool calls,
    reasoning, tools), for usage when the upstream reports none. At least 1."""
    total = REQUEST_OVERHEAD
    for message in chat_body.get("messages") or []:
        content = message.get("content")
        total += MESSAGE_OVERHEAD + (estimate_text_tokens(content) if isinstance(content, str)
                                     else sum(_part_tokens(p) for p in content or []))
        reasoning = message.get("reasoning_content")
        total += estimate_text_tokens(reasoning) if isinstance(reasoning, str) else 0
        if message.get("tool_calls"):
            total += estimate_text_tokens(json.dumps(message["tool_calls"], ensure_ascii=False))
    for tool in chat_body.get("tools") or []:
        total += TOOL_OVERHEAD + estimate_text_tokens(json.dumps(tool, ensure_ascii=False))
    return max(total, 1)
