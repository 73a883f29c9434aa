"""OpenAI Chat Completions request -> Anthropic Messages request (the reverse of
anthropic_request.py; the mapping is documented in docs/anthropic-upstreams.md).

Pure: a dict in, a dict out. What Anthropic cannot express either fails with TranslationError
(`n` > 1, logprobs, audio: the client would silently get less than it asked for) or is dropped
(penalties, seed, logit_bias, store, OpenAI `metadata`...). Unknown fields are ignored.
"""

from __future__ import annotations

import json
from typing import Any

from proxy.translate.chat_to_anthropic_messages import convert_chat_messages, named_function
from proxy.translate.types import (
    TranslatedRequest,
    TranslateOptions,
    TranslationError,
    gettext_noop,
)

# reasoning_effort -> thinking budget. Chosen so that anthropic_request.reasoning_effort maps
# each budget back to the same effort (low < 4096 <= medium < 16384 <= high).
THINKING_BUDGETS = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 24576, "xhigh": 32768}
MIN_THINKING_BUDGET = 1024  # Anthropic's minimum budget_tokens
# Anthropic's temperature range is 0..1 (OpenAI's 0..2): values above 1 are clamped.
MAX_TEMPERATURE = 1.0
JSON_OBJECT_INSTRUCTION = (
    "Respond with a single valid JSON object and nothing else: no prose, no code fences.")
JSON_SCHEMA_INSTRUCTION = (
    "Respond with a single valid JSON object and nothing else (no prose, no code fences) that "
    "conforms to this JSON schema{name}:\n{schema}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _refuse_unsupported(body: dict[str, Any]) -> None:
    """Features whose loss the client could not notice: refused, not dropped."""
    n = body.get("n")
    if n is not None and n != 1:
        raise TranslationError.at(
            "n", gettext_noop("only n=1 is supported by this upstream"))
    if body.get("logprobs") or body.get("top_logprobs"):
        raise TranslationError.at(
            "logprobs", gettext_noop("logprobs are not supported by this upstream"))
    modalities = body.get("modalities")
    if body.get("audio") is not None or (
            isinstance(modalities, list) and "audio" in modalities):
        raise TranslationError.at(
            "modalities", gettext_noop("audio output is not supported by this upstream"))
    if body.get("functions") is not None or body.get("function_call") is not None:
        raise TranslationError.at(
            "functions", gettext_noop("legacy functions are not supported; use tools"))


def _max_tokens(body: dict[str, Any], opts: TranslateOptions) -> int:
    for key in ("max_completion_tokens", "max_tokens"):  # the newer name wins
        value = body.get(key)
        if value is None:
            continue
        if not _is_int(value) or value < 1:
            raise TranslationError.at(key, gettext_noop("expected a positive integer"))
        break
    else:
        value = opts.default_max_tokens  # Anthropic requires max_tokens
    if opts.max_output_tokens is not None:
        value = min(value, opts.max_output_tokens)
    return value


def _stop_sequences(raw: Any) -> list[str] | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(s, str) for s in raw):
        raise TranslationError.at("stop", gettext_noop("expected a string or a list of strings"))
    return [s for s in raw if s] or None


def _sampling(body: dict[str, Any], out: dict[str, Any]) -> None:
    for key in ("temperature", "top_p", "top_k"):  # top_k: vLLM-style extension, Anthropic has it
        value = body.get(key)
        if value is None:
            continue
        if not _is_number(value) or value < 0:
            raise TranslationError.at(key, gettext_noop("expected a non-negative number"))
        if key == "temperature":
            value = min(value, MAX_TEMPERATURE)
        out[key] = value


def _tools(raw: Any) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise TranslationError.at("tools", gettext_noop("expected a list"))
    out: list[dict[str, Any]] = []
    for i, tool in enumerate(raw):
        param = f"tools.{i}"
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            raise TranslationError.at(param, gettext_noop("expected a function tool"))
        function, name = named_function(tool, param)
        schema = function.get("parameters")
        if schema is None:
            schema = {"type": "object", "properties": {}}
        elif not isinstance(schema, dict):
            raise TranslationError.at(
                f"{param}.function.parameters", gettext_noop("expected an object"))
        elif "type" not in schema:  # Anthropic requires input_schema.type
            schema = {"type": "object", **schema}
        converted: dict[str, Any] = {"name": name}
        description = function.get("description")
        if isinstance(description, str) and description:
            converted["description"] = description
        elif description is not None and not isinstance(description, str):
            raise TranslationError.at(
                f"{param}.function.description", gettext_noop("expected a string"))
        converted["input_schema"] = schema
        out.append(converted)
    return out


def _tool_choice(raw: Any, parallel: Any) -> dict[str, Any] | None:
    if parallel is not None and not isinstance(parallel, bool):
        raise TranslationError.at("parallel_tool_calls", gettext_noop("expected a boolean"))
    if raw is None:
        choice: dict[str, Any] | None = {"type": "auto"} if parallel is False else None
    elif raw in ("auto", "none"):
        choice = {"type": raw}
    elif raw == "required":
        choice = {"type": "any"}
    elif isinstance(raw, dict) and raw.get("type") == "function":
        function = raw.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str) or not name:
            raise TranslationError.at(
                "tool_choice.function.name", gettext_noop("expected a non-empty string"))
        choice = {"type": "tool", "name": name}
    else:
        raise TranslationError.at("tool_choice", gettext_noop("unsupported value %(value)r"),
                                  value=raw)
    if choice is not None and parallel is False and choice["type"] != "none":
        choice["disable_parallel_tool_use"] = True
    return choice


def _thinking_allowed(messages: list[dict[str, Any]]) -> bool:
    """Anthropic refuses thinking with an assistant prefill, and inside a tool loop unless the
    last assistant turn starts with its signed thinking block, which OpenAI clients never keep."""
    if messages[-1]["role"] == "assistant":
        return False
    if len(messages) < 2:
        return True
    last_assistant = messages[-2]["content"]
    loop = any(b["type"] == "tool_use" for b in last_assistant) and \
        messages[-1]["content"][0]["type"] == "tool_result"
    return not loop


def _thinking(body: dict[str, Any], out: dict[str, Any], limit: int | None) -> None:
    """reasoning_effort -> thinking, keeping Anthropic's rules: max_tokens > budget_tokens,
    no forced tool choice, temperature unset and top_p >= 0.95 while thinking."""
    effort = body.get("reasoning_effort")
    if effort is None:
        return
    if effort == "none":
        out["thinking"] = {"type": "disabled"}
        return
    if not isinstance(effort, str) or effort not in THINKING_BUDGETS:
        raise TranslationError.at("reasoning_effort", gettext_noop("unsupported value %(value)r"),
                                  value=effort)
    if out.get("tool_choice", {}).get("type") in ("any", "tool"):
        return  # a forced tool call is the client's explicit need; thinking forbids it
    if not _thinking_allowed(out["messages"]):
        return
    budget, max_tokens = THINKING_BUDGETS[effort], out["max_tokens"]
    if max_tokens <= budget:
        # OpenAI counts reasoning inside max_completion_tokens; keep what the client asked for
        # as the answer's room on top of the budget, unless the model's limit is lower.
        max_tokens += budget
        if limit is not None and max_tokens > limit:
            max_tokens = limit
            budget = min(budget, max_tokens // 2)
    if budget < MIN_THINKING_BUDGET:
        return  # too little room to think: answer without thinking, as asked
    out["max_tokens"] = max_tokens
    out["thinking"] = {"type": "enabled", "budget_tokens": budget}
    out.pop("temperature", None)
    if out.get("top_p", 1.0) < 0.95:
        out.pop("top_p")
    out.pop("top_k", None)


def _response_format(raw: Any) -> str | None:
    """Best effort: Anthropic has no JSON mode, so the format becomes a system instruction."""
    if raw is None:
        return None
    kind = raw.get("type") if isinstance(raw, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return JSON_OBJECT_INSTRUCTION
    if kind == "json_schema":
        spec = raw.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise TranslationError.at(
                "response_format.json_schema.schema", gettext_noop("expected an object"))
        name = spec.get("name")
        label = f" ({name})" if isinstance(name, str) and name else ""
        text = json.dumps(schema, ensure_ascii=False, separators=(",", ":"))
        return JSON_SCHEMA_INSTRUCTION.format(name=label, schema=text)
    raise TranslationError.at("response_format.type", gettext_noop("unsupported value %(value)r"),
                              value=kind)


def _system(texts: list[str]) -> str | list[dict[str, Any]] | None:
    if not texts:
        return None
    if len(texts) == 1:
        return texts[0]
    return [{"type": "text", "text": t} for t in texts]


def chat_to_anthropic(body: dict[str, Any], opts: TranslateOptions) -> TranslatedRequest:
    if not isinstance(body, dict):
        raise TranslationError("request body must be a JSON object",
                               problem=gettext_noop("request body must be a JSON object"))
    _refuse_unsupported(body)
    system, messages = convert_chat_messages(body.get("messages"), opts)
    instruction = _response_format(body.get("response_format"))
    if instruction:
        system.append(instruction)

    out: dict[str, Any] = {"model": opts.upstream_model, "max_tokens": _max_tokens(body, opts)}
    if system:
        out["system"] = _system(system)
    out["messages"] = messages
    stop = _stop_sequences(body.get("stop"))
    if stop:
        out["stop_sequences"] = stop
    _sampling(body, out)
    tools = _tools(body.get("tools"))
    choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
    if tools:
        out["tools"] = tools
        if choice is not None:  # tool_choice without tools is rejected upstream
            out["tool_choice"] = choice
    _thinking(body, out, opts.max_output_tokens)
    user = body.get("user")
    if user is not None:
        if not isinstance(user, str):
            raise TranslationError.at("user", gettext_noop("expected a string"))
        if user:
            out["metadata"] = {"user_id": user}
    if body.get("stream") is True:
        out["stream"] = True  # stream_options.include_usage is honoured by the response side
    return TranslatedRequest(body=out)
