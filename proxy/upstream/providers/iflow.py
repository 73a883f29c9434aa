"""iFlow upstream: the official CLI's headers, signature and body shaping, and its error envelopes.

Facts from /work/shared/spec/iflow-upstream.md (§1 chat call, §3 body, §4 errors, §5 models).
Pure functions: no I/O, no Django. The caller keeps `session-id` / `conversation-id` per account.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import secrets
import time
import uuid
from typing import Any

from proxy.upstream.errors import (
    envelope_fields,
    error_from_openai_object,
    error_message_from_body,
    error_type_for,
    is_success_code,
    openai_error_fields,
    parse_json_object,
    retry_after_from_headers,
    retry_after_from_object,
)
from proxy.upstream.providers.base import FunctionProvider, join_url
from proxy.upstream.types import PreparedRequest, UpstreamError, UpstreamTarget

DEFAULT_BASE_URL = "https://apis.iflow.cn/v1"
# Exactly this, no version: it is what unlocks the CLI-only models (glm-4.7, glm-5).
USER_AGENT = "iFlow-Cli"
TOOL_NOT_EXECUTED = "tool not executed"

# ---------------------------------------------------------------------------- headers / signature


def sign(api_key: str, session_id: str, timestamp_ms: int) -> str:
    """Lower-case hex HMAC-SHA256(key=api_key, msg="iFlow-Cli:{session_id}:{timestamp_ms}")."""
    message = f"iFlow-Cli:{session_id}:{timestamp_ms}"
    return hmac.new(api_key.encode("utf-8"), message.encode("utf-8"), hashlib.sha256).hexdigest()


def new_session_id() -> str:
    """A fresh `session-<uuid4>`; the caller should store it on the account and reuse it."""
    return f"session-{uuid.uuid4()}"


def new_conversation_id() -> str:
    """A fresh uuid4 conversation id; the caller should store it on the account and reuse it."""
    return str(uuid.uuid4())


def new_traceparent() -> str:
    """W3C traceparent `00-<32 hex>-<16 hex>-01`, fresh per request like the CLI's."""
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def build_headers(
    target: UpstreamTarget, *, timestamp_ms: int, traceparent: str
) -> list[tuple[str, str]]:
    """The official CLI's chat headers, in its order (the order is part of its fingerprint).

    Empty session/conversation ids on the target are replaced by fresh ones for this request
    only; a fixed pair per process was singled out as a fingerprint, and a new pair per request
    is not what the CLI does either, so callers should persist one pair per account.
    """
    session_id = target.session_id or new_session_id()
    conversation_id = target.conversation_id or new_conversation_id()
    headers: list[tuple[str, str]] = [("Content-Type", "application/json")]
    if target.api_key:
        headers.append(("Authorization", f"Bearer {target.api_key}"))
    headers += [
        ("user-agent", USER_AGENT),
        ("session-id", session_id),
        ("conversation-id", conversation_id),
    ]
    if target.api_key:
        # Without a key there is nothing to sign; the timestamp only exists for the signature.
        headers += [
            ("x-iflow-signature", sign(target.api_key, session_id, timestamp_ms)),
            ("x-iflow-timestamp", str(timestamp_ms)),
        ]
    headers += [
        ("traceparent", traceparent),
        ("accept", "*/*"),
        ("accept-language", "*"),
        ("sec-fetch-mode", "cors"),
        # Faithful to the CLI; the HTTP client must be able to decode br or strip this header.
        ("accept-encoding", "br, gzip, deflate"),
    ]
    return headers


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


def encode_body(body: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON, like the CLI's JSON.stringify."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def prepare_chat(
    target: UpstreamTarget,
    body: dict[str, Any],
    *,
    stream: bool,
    timestamp_ms: int | None = None,
    traceparent: str | None = None,
) -> PreparedRequest:
    """POST {base}/chat/completions with the CLI's headers and shaped body."""
    headers = build_headers(
        target,
        timestamp_ms=int(time.time() * 1000) if timestamp_ms is None else timestamp_ms,
        traceparent=traceparent or new_traceparent(),
    )
    return PreparedRequest(
        url=join_url(target.base_url or DEFAULT_BASE_URL, "chat/completions"),
        headers=headers,
        body=encode_body(shape_body(body, stream=stream)),
    )


def prepare_models(target: UpstreamTarget) -> PreparedRequest:
    """GET {base}/models with the same identity headers (iFlow had no dependable list)."""
    headers = build_headers(
        target, timestamp_ms=int(time.time() * 1000), traceparent=new_traceparent()
    )
    headers = [(k, v) for k, v in headers if k != "Content-Type"]  # a GET has no body
    return PreparedRequest(
        url=join_url(target.base_url or DEFAULT_BASE_URL, "models"), headers=headers, body=b""
    )


# ---------------------------------------------------------------------------- errors

# envelope code → (our status, our code or None for "upstream_<code>", account action)
ENVELOPE_MAP: dict[str, tuple[int, str | None, str | None]] = {
    "434": (401, None, "disable"),
    "438": (401, None, "disable"),
    "439": (401, None, "refresh"),
    "435": (400, "model_not_supported", None),
    "429": (429, "rate_limit_exceeded", "cooldown"),
    "449": (429, "rate_limit_exceeded", "cooldown"),
    "8211": (429, "rate_limit_exceeded", "cooldown"),
    "511": (413, "context_length_exceeded", None),
    "413": (413, "context_length_exceeded", None),
    "514": (502, None, None),
}


def envelope_error(code: str, message: str, *, retry_after: float | None = None) -> UpstreamError:
    """Map one iFlow status code (from an envelope or an error object) per spec §4."""
    status, our_code, action = ENVELOPE_MAP.get(code, (502, None, None))
    return UpstreamError(
        status=status,
        # Keep iFlow's wording: clients (Claude Code) match on it.
        message=message or f"iFlow upstream error {code}",
        code=our_code or f"upstream_{code}",
        retry_after=retry_after if status == 429 else None,
        upstream_status=code,
        account_action=action,
        extra={"type": error_type_for(status)},
    )


def error_from_payload(obj: dict[str, Any]) -> UpstreamError | None:
    """An HTTP-200 JSON object (body or SSE payload) that is really an error, else None."""
    env = envelope_fields(obj)
    if env is not None:
        code, msg = env
        if is_success_code(code):
            return None
        return envelope_error(code, msg, retry_after=retry_after_from_object(obj))
    fields = openai_error_fields(obj)
    if fields is not None and fields["code"] in ENVELOPE_MAP:
        return envelope_error(
            fields["code"], fields["message"], retry_after=retry_after_from_object(obj)
        )
    return error_from_openai_object(obj)


def error_from_response(status: int, headers: dict[str, str], body: bytes) -> UpstreamError:
    """A non-2xx HTTP answer from iFlow. A known envelope code in the body wins over the status."""
    obj = parse_json_object(body)
    message = error_message_from_body(body)
    retry_after = retry_after_from_headers(headers)
    if retry_after is None and obj is not None:
        retry_after = retry_after_from_object(obj)
    if obj is not None:
        env = envelope_fields(obj)
        fields = openai_error_fields(obj)
        code = env[0] if env else (fields["code"] if fields else None)
        if code in ENVELOPE_MAP:
            return envelope_error(code, message, retry_after=retry_after)

    seen = str(status)
    if status == 401:
        return UpstreamError(
            status=401,
            message=message or "iFlow rejected the API key (HTTP 401, expired?)",
            code="upstream_401",
            upstream_status=seen,
            account_action="refresh",
            extra={"type": "authentication_error"},
        )
    if status == 406:
        # Seen for CLI-only models when the CLI headers were missing or refused: our fault or
        # iFlow's, never the client's, hence 502.
        detail = f": {message}" if message else ""
        return UpstreamError(
            status=502,
            message=(
                "iFlow refused the request headers (HTTP 406; CLI-only model without "
                f"accepted iFlow CLI headers){detail}"
            ),
            code="upstream_406",
            upstream_status=seen,
            extra={"type": "api_error"},
        )
    if status == 429:
        return UpstreamError(
            status=429,
            message=message or "iFlow rate limit (HTTP 429)",
            code="rate_limit_exceeded",
            retry_after=retry_after,
            upstream_status=seen,
            account_action="cooldown",
            extra={"type": "rate_limit_error"},
        )
    if status == 413:
        return UpstreamError(
            status=413,
            message=message or "Request too large for the model's context (HTTP 413)",
            code="context_length_exceeded",
            upstream_status=seen,
            extra={"type": "request_too_large"},
        )
    ours = status if 400 <= status < 500 else 502
    return UpstreamError(
        status=ours,
        message=message or f"iFlow returned HTTP {status}",
        code=f"upstream_{status}",
        retry_after=retry_after,
        upstream_status=seen,
        extra={"type": error_type_for(ours)},
    )


PROVIDER = FunctionProvider("iflow", prepare_chat, prepare_models, error_from_response,
                            error_from_payload)
