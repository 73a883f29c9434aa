"""iFlow request bodies as iflow-cli sends them: per-model defaults (max_tokens, thinking,
sampling), tool schemas it accepts, and message normalisation (spec §3). Pure functions."""

from __future__ import annotations

import copy
from typing import Any

TOOL_NOT_EXECUTED = "tool not executed"

# ---------------------------------------------------------------------------- model rules


def _is_kimi_k25(model: str) -> bool:
    return model.startswith("kimi-k2.5")


def _is_deepseek(model: str) -> bool:
    return model.startswith("deepseek")


def _is_deepseek_reasoner(model: str) -> bool:
    return _is_deepseek(model) and ("reasoner" in model or model.startswith("deepseek-r1"))


def default_max_tokens(model: str) -> int:
    """The CLI's per-model `max_new_tokens` when the client gave none (spec §3)."""
    m = model.lower()
    if _is_kimi_k25(m):
        return 32768
    if m.startswith("kimi"):
        return 32000
    if m.startswith("iflow-rome") or m.startswith("minimax"):
        return 64000
    if m.startswith("glm"):
        return 32000
    if _is_deepseek(m):
        return 64000 if _is_deepseek_reasoner(m) else 8000
    if m.startswith("qwen3-coder"):
        return 64000
    if m.startswith("qwen"):
        return 8192
    return 8000


def _positive_int(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


def _switch_on(value: Any) -> bool:
    """Whether one client-side thinking switch asks for thinking."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return value.strip().lower() not in ("", "none", "disabled", "off", "false")
    if isinstance(value, dict):
        kind = value.get("type")
        if isinstance(kind, str):
            return kind.lower() in ("enabled", "adaptive")
        if isinstance(value.get("enabled"), bool):
            return value["enabled"]
        effort = value.get("effort")
        if isinstance(effort, str):
            return effort.strip().lower() != "none"
    return False


# Client-side switches (OpenAI, Anthropic, vLLM/SGLang, iFlow's own dialect). None reaches iFlow
# as sent: each model gets only its own fields, rebuilt below.
_THINKING_SWITCHES = (
    "reasoning_effort",
    "enable_thinking",
    "thinking",
    "reasoning",
    "thinking_mode",
)


def thinking_requested(body: dict[str, Any]) -> bool:
    """On when any client switch asks for it; reasoning_effort "none" (or absent) means off."""
    for key in _THINKING_SWITCHES:
        if body.get(key) is not None and _switch_on(body[key]):
            return True
    kwargs = body.get("chat_template_kwargs")
    return isinstance(kwargs, dict) and kwargs.get("enable_thinking") is True


def _apply_thinking(out: dict[str, Any], model: str, on: bool) -> None:
    for key in _THINKING_SWITCHES:
        out.pop(key, None)
    kwargs = out.pop("chat_template_kwargs", None)
    kwargs = dict(kwargs) if isinstance(kwargs, dict) else {}
    kwargs.pop("enable_thinking", None)

    if model.startswith("glm-5"):
        # GLM-5 without explicit thinking fields once streamed nothing: always send all three.
        kwargs["enable_thinking"] = on
        out["enable_thinking"] = on
        out["thinking"] = {"type": "enabled" if on else "disabled"}
    elif model.startswith("glm-4.7"):
        kwargs["enable_thinking"] = on
    elif _is_kimi_k25(model):
        out["thinking"] = {"type": "enabled" if on else "disabled"}
    elif _is_deepseek(model) and on:
        out["reasoning"] = True
        out["thinking_mode"] = True
    if "thinking" in model and on:
        out["thinking_mode"] = True
    if kwargs:
        out["chat_template_kwargs"] = kwargs


def _apply_sampling(out: dict[str, Any], model: str) -> None:
    if model.startswith("glm-4.7") or model.startswith("glm-5"):
        out["temperature"] = 1
        out["top_p"] = 0.95
    elif _is_kimi_k25(model):
        out.pop("temperature", None)
        out.update(top_p=0.95, n=1, presence_penalty=0, frequency_penalty=0)
    elif model.startswith("iflow-rome-30ba3b"):
        out.update(temperature=0.7, top_p=0.8, top_k=20)


# ---------------------------------------------------------------------------- tools

_SCHEMA_KEYS = frozenset(
    {
        "type",
        "description",
        "enum",
        "properties",
        "items",
        "required",
        "minItems",
        "minLength",
        "additionalProperties",
    }
)


def _is_object_schema(schema: dict[str, Any]) -> bool:
    kind = schema.get("type")
    if kind == "object" or (isinstance(kind, list) and "object" in kind):
        return True
    return kind is None and isinstance(schema.get("properties"), dict)


def clean_schema(schema: Any) -> Any:
    """Keep only the JSON-Schema keys iFlow accepts; objects default to additionalProperties false.

    A typeless `anyOf`/`oneOf` (e.g. Optional[X] from pydantic) collapses to its first non-null
    branch, so the cleaned schema keeps a type instead of becoming `{}`.
    """
    if not isinstance(schema, dict):
        return schema
    src = schema
    if "type" not in src:
        for key in ("anyOf", "oneOf"):
            branches = src.get(key)
            if isinstance(branches, list):
                pick = next(
                    (b for b in branches if isinstance(b, dict) and b.get("type") != "null"), None
                )
                if pick is not None:
                    # The outer description is the more specific one; let it win.
                    src = {**pick, **{k: v for k, v in schema.items() if k in _SCHEMA_KEYS}}
                break
    out: dict[str, Any] = {}
    for key, value in src.items():
        if key not in _SCHEMA_KEYS:
            continue
        if key == "properties" and isinstance(value, dict):
            value = {name: clean_schema(sub) for name, sub in value.items()}
        elif key == "items":
            value = (
                [clean_schema(v) for v in value] if isinstance(value, list) else clean_schema(value)
            )
        elif key == "additionalProperties" and isinstance(value, dict):
            value = clean_schema(value)
        out[key] = value
    if _is_object_schema(out) and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def clean_tools(tools: list[Any]) -> list[dict[str, Any]]:
    """Tools with their parameter schemas cleaned; non-dict entries dropped."""
    cleaned: list[dict[str, Any]] = []
    for tool in tools:
        if not isinstance(tool, dict):
            continue
        tool = dict(tool)
        function = tool.get("function")
        if isinstance(function, dict) and "parameters" in function:
            tool["function"] = {**function, "parameters": clean_schema(function["parameters"])}
        cleaned.append(tool)
    return cleaned


# ---------------------------------------------------------------------------- messages


def _text_of(content: Any) -> str:
    """Flatten string-or-parts content to text (parts joined by a space, non-text parts skipped)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts: list[str] = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif (
                isinstance(part, dict)
                and isinstance(part.get("text"), str)
                and part.get("type", "text") in ("text", "input_text")
            ):
                texts.append(part["text"])
        return " ".join(t for t in texts if t)
    return str(content)


def _image_url(part: Any) -> str | None:
    if not isinstance(part, dict) or part.get("type") != "image_url":
        return None
    ref = part.get("image_url")
    if isinstance(ref, dict):
        ref = ref.get("url")
    return ref if isinstance(ref, str) else None


def has_remote_images(body: dict[str, Any]) -> bool:
    """Whether any image part is not a data URL; the caller must inline those before sending."""
    for message in body.get("messages") or []:
        if not isinstance(message, dict) or not isinstance(message.get("content"), list):
            continue
        for part in message["content"]:
            url = _image_url(part)
            if url is not None and not url.lower().startswith("data:"):
                return True
    return False


def _normalize_user_content(content: Any) -> Any:
    if not isinstance(content, list):
        return content
    parts: list[Any] = []
    for part in content:
        # The string shorthand `image_url: "<url>"` becomes the object form the upstream reads.
        if isinstance(part, dict) and part.get("type") == "image_url":
            ref = part.get("image_url")
            if isinstance(ref, str):
                part = {**part, "image_url": {"url": ref}}
        parts.append(part)
    return parts


def _call_ids(message: dict[str, Any]) -> list[str]:
    ids: list[str] = []
    for call in message.get("tool_calls") or []:
        call_id = call.get("id") if isinstance(call, dict) else None
        if isinstance(call_id, str) and call_id and call_id not in ids:
            ids.append(call_id)
    return ids


def _pair_tool_results(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Put each tool call's result right after its assistant message; fill gaps, drop orphans.

    Results are looked for up to the next assistant message, so a result that a client placed
    after some user text is moved up rather than replaced by "tool not executed".
    """
    out: list[dict[str, Any]] = []
    i, n = 0, len(messages)
    while i < n:
        message = messages[i]
        i += 1
        if message.get("role") == "tool":
            continue  # not claimed by the preceding assistant message: an orphan
        out.append(message)
        if message.get("role") != "assistant" or not message.get("tool_calls"):
            continue
        ids = _call_ids(message)
        results: dict[str, dict[str, Any]] = {}
        others: list[dict[str, Any]] = []
        while i < n and messages[i].get("role") != "assistant":
            follower = messages[i]
            i += 1
            if follower.get("role") == "tool":
                call_id = follower.get("tool_call_id")
                if call_id in ids and call_id not in results:
                    results[call_id] = follower
            else:
                others.append(follower)
        for call_id in ids:
            out.append(
                results.get(call_id)
                or {"role": "tool", "tool_call_id": call_id, "content": TOOL_NOT_EXECUTED}
            )
        out.extend(others)
    return out


def normalize_messages(messages: list[Any]) -> list[dict[str, Any]]:
    """One leading system message, tool results paired with their calls (spec §3). Copies."""
    system_texts: list[str] = []
    rest: list[dict[str, Any]] = []
    for message in messages:
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        if role in ("system", "developer"):
            text = _text_of(message.get("content"))
            if text:
                system_texts.append(text)
            continue
        message = dict(message)
        if role == "user":
            message["content"] = _normalize_user_content(message.get("content"))
        elif role == "assistant":
            if "tool_calls" in message and not message["tool_calls"]:
                del message["tool_calls"]  # an empty list reads as "tools were called"
            if message.get("tool_calls") and message.get("content") == "":
                message["content"] = None
        rest.append(message)
    out: list[dict[str, Any]] = []
    if system_texts:
        out.append({"role": "system", "content": " ".join(system_texts)})
    return out + _pair_tool_results(rest)


# ---------------------------------------------------------------------------- body


def shape_body(body: dict[str, Any], *, stream: bool) -> dict[str, Any]:
    """The body the official CLI would send for this canonical request. Returns a new dict."""
    out = copy.deepcopy(body)
    # null means "unset" to OpenAI clients; several upstreams reject explicit nulls.
    for key in [k for k, v in out.items() if v is None]:
        del out[key]

    on = thinking_requested(out)
    model = str(out.get("model") or "")
    lowered = model.lower()
    if lowered == "glm-4.6":
        model = "glm-4.6-exp"
    elif lowered == "deepseek-v3.2-chat" and on:
        model = "deepseek-v3.2-reasoner"
    if "model" in out:
        out["model"] = model
    m = model.lower()

    out.pop("stream", None)
    out.pop("stream_options", None)
    if stream:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}

    # Pop both first: `or` would short-circuit and leave max_tokens behind.
    asked = [out.pop("max_completion_tokens", None), out.pop("max_tokens", None)]
    asked.append(out.get("max_new_tokens"))
    requested = next((v for v in map(_positive_int, asked) if v is not None), None)
    out["max_new_tokens"] = requested or default_max_tokens(model)
    if _is_kimi_k25(m) or (_is_deepseek(m) and not _is_deepseek_reasoner(m)):
        out["max_tokens"] = out["max_new_tokens"]

    _apply_sampling(out, m)
    _apply_thinking(out, m, on)

    tools = out.pop("tools", None)
    cleaned = clean_tools(tools) if isinstance(tools, list) else []
    if cleaned:
        out["tools"] = cleaned
    else:
        out.pop("parallel_tool_calls", None)  # meaningless (and rejected by some) without tools
    out.pop("tool_choice", None)
    out.pop("response_format", None)
    if not out.get("stop"):
        out.pop("stop", None)

    if isinstance(out.get("messages"), list):
        out["messages"] = normalize_messages(out["messages"])
    return out


