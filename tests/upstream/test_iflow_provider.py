"""iFlow provider: signature, CLI headers, body shaping (spec §3) and error envelopes (spec §4)."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import re
from typing import Any

import pytest

from upstream.providers import get_provider, iflow
from upstream.providers.base import Provider
from upstream.types import UpstreamTarget

KEY = "sk-test"
SESSION = "session-00000000-0000-4000-8000-000000000000"
CONVERSATION = "11111111-2222-4333-8444-555555555555"
TS = 1700000000000
TRACE = "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01"
# Computed once with hmac: key "sk-test", msg f"iFlow-Cli:{SESSION}:{TS}".
KNOWN_SIGNATURE = "0e714708175abecc3f936816c5841e7f17b53d0fbde504322d902f1be7dc7ab4"

TARGET = UpstreamTarget(
    provider="iflow",
    base_url="https://apis.iflow.cn/v1/",
    api_key=KEY,
    session_id=SESSION,
    conversation_id=CONVERSATION,
)


def shape(body: dict[str, Any], stream: bool = False) -> dict[str, Any]:
    return iflow.shape_body(body, stream=stream)


def chat(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}


# ---------------------------------------------------------------------------- signature / headers


def test_sign_matches_independent_hmac() -> None:
    expected = hmac.new(
        KEY.encode(), f"iFlow-Cli:{SESSION}:{TS}".encode(), hashlib.sha256
    ).hexdigest()
    assert iflow.sign(KEY, SESSION, TS) == expected


def test_sign_known_vector() -> None:
    assert iflow.sign(KEY, SESSION, TS) == KNOWN_SIGNATURE
    assert re.fullmatch(r"[0-9a-f]{64}", KNOWN_SIGNATURE)


def test_headers_exact_order_and_values() -> None:
    headers = iflow.build_headers(TARGET, timestamp_ms=TS, traceparent=TRACE)
    assert headers == [
        ("Content-Type", "application/json"),
        ("Authorization", f"Bearer {KEY}"),
        ("user-agent", "iFlow-Cli"),
        ("session-id", SESSION),
        ("conversation-id", CONVERSATION),
        ("x-iflow-signature", KNOWN_SIGNATURE),
        ("x-iflow-timestamp", str(TS)),
        ("traceparent", TRACE),
        ("accept", "*/*"),
        ("accept-language", "*"),
        ("sec-fetch-mode", "cors"),
        ("accept-encoding", "br, gzip, deflate"),
    ]


def test_headers_without_key_have_no_auth_or_signature() -> None:
    target = UpstreamTarget("iflow", "https://x/v1", "", SESSION, CONVERSATION)
    names = [k for k, _ in iflow.build_headers(target, timestamp_ms=TS, traceparent=TRACE)]
    assert names == [
        "Content-Type",
        "user-agent",
        "session-id",
        "conversation-id",
        "traceparent",
        "accept",
        "accept-language",
        "sec-fetch-mode",
        "accept-encoding",
    ]


def test_headers_generate_ids_when_missing_and_sign_with_them() -> None:
    target = UpstreamTarget("iflow", "https://x/v1", KEY)
    headers = dict(iflow.build_headers(target, timestamp_ms=TS, traceparent=TRACE))
    uuid4 = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
    assert re.fullmatch(f"session-{uuid4}", headers["session-id"])
    assert re.fullmatch(uuid4, headers["conversation-id"])
    assert headers["x-iflow-signature"] == iflow.sign(KEY, headers["session-id"], TS)


def test_traceparent_format_and_fresh() -> None:
    values = {iflow.new_traceparent() for _ in range(20)}
    assert len(values) == 20
    for value in values:
        assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01", value)


def test_prepare_chat_url_headers_and_compact_utf8_body() -> None:
    body = chat("qwen3-coder-plus", messages=[{"role": "user", "content": "你好"}])
    req = iflow.prepare_chat(TARGET, body, stream=False, timestamp_ms=TS, traceparent=TRACE)
    assert req.url == "https://apis.iflow.cn/v1/chat/completions"
    assert req.headers == iflow.build_headers(TARGET, timestamp_ms=TS, traceparent=TRACE)
    assert "你好".encode() in req.body
    assert b", " not in req.body and b": " not in req.body
    assert json.loads(req.body) == shape(body)


def test_prepare_chat_defaults_fill_timestamp_and_traceparent() -> None:
    req = iflow.prepare_chat(TARGET, chat("glm-5"), stream=True)
    headers = dict(req.headers)
    assert headers["x-iflow-signature"] == iflow.sign(
        KEY, SESSION, int(headers["x-iflow-timestamp"])
    )
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01", headers["traceparent"])


def test_prepare_models_is_get_models_without_body() -> None:
    req = iflow.prepare_models(TARGET)
    assert req.url == "https://apis.iflow.cn/v1/models"
    assert req.body == b""
    assert ("user-agent", "iFlow-Cli") in req.headers
    assert "Content-Type" not in dict(req.headers)


def test_provider_object_satisfies_protocol() -> None:
    provider = get_provider("iflow")
    assert isinstance(provider, Provider)
    assert provider.name == "iflow"
    req = provider.prepare_chat(TARGET, chat("glm-5"), stream=False)
    assert req.url.endswith("/chat/completions")


# ---------------------------------------------------------------------------- body: stream / tokens


def test_stream_keys() -> None:
    streamed = shape(chat("glm-5", stream=False, stream_options={"include_usage": False}), True)
    assert streamed["stream"] is True
    assert streamed["stream_options"] == {"include_usage": True}
    plain = shape(chat("glm-5", stream=True, stream_options={"include_usage": True}), False)
    assert "stream" not in plain and "stream_options" not in plain


@pytest.mark.parametrize(
    ("model", "default", "sends_max_tokens"),
    [
        ("kimi-k2.5", 32768, True),
        ("kimi-k2", 32000, False),
        ("kimi-k2-0905", 32000, False),
        ("kimi-k2-thinking", 32000, False),
        ("iFlow-ROME-30BA3B", 64000, False),
        ("minimax-m2.5", 64000, False),
        ("glm-4.6", 32000, False),
        ("glm-4.7", 32000, False),
        ("glm-5", 32000, False),
        ("deepseek-v3.2-reasoner", 64000, False),
        ("deepseek-v3.2-chat", 8000, True),
        ("qwen3-coder-plus", 64000, False),
        ("qwen-vl-max", 8192, False),
        ("something-else", 8000, False),
    ],
)
def test_max_tokens_defaults_and_client_value(
    model: str, default: int, sends_max_tokens: bool
) -> None:
    out = shape(chat(model))
    assert out["max_new_tokens"] == default
    assert ("max_tokens" in out) is sends_max_tokens
    if sends_max_tokens:
        assert out["max_tokens"] == default

    out = shape(chat(model, max_tokens=1234))
    assert out["max_new_tokens"] == 1234
    assert out.get("max_tokens") == (1234 if sends_max_tokens else None)

    out = shape(chat(model, max_completion_tokens=777, max_tokens=1234))
    assert out["max_new_tokens"] == 777
    assert "max_completion_tokens" not in out


@pytest.mark.parametrize("bad", [0, -5, True, "100", 12.5, None])
def test_max_tokens_invalid_client_value_uses_default(bad: Any) -> None:
    out = shape(chat("glm-5", max_tokens=bad, max_completion_tokens=bad))
    assert out["max_new_tokens"] == 32000
    assert "max_tokens" not in out and "max_completion_tokens" not in out


def test_reasoner_after_rename_gets_reasoner_default_and_no_max_tokens() -> None:
    out = shape(chat("deepseek-v3.2-chat", reasoning_effort="high"))
    assert out["model"] == "deepseek-v3.2-reasoner"
    assert out["max_new_tokens"] == 64000
    assert "max_tokens" not in out


# ------------------------------------------------------------------------ body: sampling / names

CLIENT_SAMPLING = {"temperature": 0.2, "top_p": 0.5, "n": 3, "presence_penalty": 1.5}


@pytest.mark.parametrize(
    ("model", "expected", "absent"),
    [
        ("glm-4.7", {"temperature": 1, "top_p": 0.95, "n": 3}, []),
        ("glm-5", {"temperature": 1, "top_p": 0.95, "n": 3}, []),
        (
            "kimi-k2.5",
            {"top_p": 0.95, "n": 1, "presence_penalty": 0, "frequency_penalty": 0},
            ["temperature"],
        ),
        ("iFlow-ROME-30BA3B", {"temperature": 0.7, "top_p": 0.8, "top_k": 20}, []),
        ("qwen3-coder-plus", CLIENT_SAMPLING, ["top_k", "frequency_penalty"]),
        ("glm-4.6", CLIENT_SAMPLING, []),
    ],
)
def test_forced_sampling(model: str, expected: dict[str, Any], absent: list[str]) -> None:
    out = shape(chat(model, **CLIENT_SAMPLING))
    for key, value in expected.items():
        assert out[key] == value, key
    for key in absent:
        assert key not in out


def test_no_sampling_invented_for_other_models() -> None:
    out = shape(chat("minimax-m2.5"))
    assert "temperature" not in out and "top_p" not in out


@pytest.mark.parametrize(
    ("model", "body_extra", "sent"),
    [
        ("glm-4.6", {}, "glm-4.6-exp"),
        ("glm-4.6", {"reasoning_effort": "high"}, "glm-4.6-exp"),
        ("deepseek-v3.2-chat", {}, "deepseek-v3.2-chat"),
        ("deepseek-v3.2-chat", {"thinking": {"type": "enabled"}}, "deepseek-v3.2-reasoner"),
        ("glm-4.7", {}, "glm-4.7"),
        ("iFlow-ROME-30BA3B", {}, "iFlow-ROME-30BA3B"),
    ],
)
def test_renames(model: str, body_extra: dict[str, Any], sent: str) -> None:
    assert shape(chat(model, **body_extra))["model"] == sent


# ---------------------------------------------------------------------------- body: thinking

ON_SWITCHES: list[dict[str, Any]] = [
    {"reasoning_effort": "high"},
    {"reasoning_effort": "minimal"},
    {"enable_thinking": True},
    {"chat_template_kwargs": {"enable_thinking": True}},
    {"thinking": {"type": "enabled", "budget_tokens": 1024}},
    {"thinking": {"type": "adaptive"}},
    {"thinking": True},
]
OFF_SWITCHES: list[dict[str, Any]] = [
    {},
    {"reasoning_effort": "none"},
    {"enable_thinking": False},
    {"chat_template_kwargs": {"enable_thinking": False}},
    {"thinking": {"type": "disabled"}},
    {"thinking": False},
]
SWITCH_KEYS = ("reasoning_effort", "enable_thinking", "thinking", "reasoning", "thinking_mode")


@pytest.mark.parametrize("switch", ON_SWITCHES)
def test_thinking_requested_on(switch: dict[str, Any]) -> None:
    assert iflow.thinking_requested(chat("glm-5", **switch)) is True


@pytest.mark.parametrize("switch", OFF_SWITCHES)
def test_thinking_requested_off(switch: dict[str, Any]) -> None:
    assert iflow.thinking_requested(chat("glm-5", **switch)) is False


# (model, thinking on?, fields that must be exactly present, switch keys that must be absent)
THINKING_TABLE: list[tuple[str, bool, dict[str, Any], tuple[str, ...]]] = [
    (
        "glm-5",
        True,
        {
            "chat_template_kwargs": {"enable_thinking": True},
            "enable_thinking": True,
            "thinking": {"type": "enabled"},
        },
        ("reasoning_effort", "reasoning", "thinking_mode"),
    ),
    (
        "glm-5",
        False,
        {
            "chat_template_kwargs": {"enable_thinking": False},
            "enable_thinking": False,
            "thinking": {"type": "disabled"},
        },
        ("reasoning_effort", "reasoning", "thinking_mode"),
    ),
    (
        "glm-4.7",
        True,
        {"chat_template_kwargs": {"enable_thinking": True}},
        ("reasoning_effort", "enable_thinking", "thinking", "reasoning", "thinking_mode"),
    ),
    (
        "glm-4.7",
        False,
        {"chat_template_kwargs": {"enable_thinking": False}},
        ("reasoning_effort", "enable_thinking", "thinking", "reasoning", "thinking_mode"),
    ),
    (
        "deepseek-v3.2-chat",
        True,
        {"model": "deepseek-v3.2-reasoner", "reasoning": True, "thinking_mode": True},
        ("reasoning_effort", "enable_thinking", "thinking", "chat_template_kwargs"),
    ),
    ("deepseek-v3.2-chat", False, {"model": "deepseek-v3.2-chat"}, SWITCH_KEYS),
    (
        "kimi-k2.5",
        True,
        {"thinking": {"type": "enabled"}},
        ("reasoning_effort", "enable_thinking", "reasoning", "thinking_mode"),
    ),
    (
        "kimi-k2.5",
        False,
        {"thinking": {"type": "disabled"}},
        ("reasoning_effort", "enable_thinking", "reasoning", "thinking_mode"),
    ),
    (
        "kimi-k2-thinking",
        True,
        {"thinking_mode": True},
        ("reasoning_effort", "enable_thinking", "thinking", "reasoning", "chat_template_kwargs"),
    ),
    ("kimi-k2-thinking", False, {}, (*SWITCH_KEYS, "chat_template_kwargs")),
    ("qwen3-coder-plus", True, {}, (*SWITCH_KEYS, "chat_template_kwargs")),
    ("minimax-m2.5", False, {}, (*SWITCH_KEYS, "chat_template_kwargs")),
    ("glm-4.6", True, {"model": "glm-4.6-exp"}, (*SWITCH_KEYS, "chat_template_kwargs")),
]


@pytest.mark.parametrize(("model", "on", "present", "absent"), THINKING_TABLE)
@pytest.mark.parametrize("switch_index", range(3))
def test_thinking_fields_per_model(
    model: str, on: bool, present: dict[str, Any], absent: tuple[str, ...], switch_index: int
) -> None:
    switches = ON_SWITCHES if on else OFF_SWITCHES
    switch = switches[switch_index * 2 % len(switches)]
    out = shape(chat(model, **copy.deepcopy(switch)))
    for key, value in present.items():
        assert out[key] == value, (key, switch)
    for key in absent:
        assert key not in out, (key, switch)


def test_other_chat_template_kwargs_survive() -> None:
    out = shape(chat("glm-4.7", chat_template_kwargs={"enable_thinking": True, "foo": 1}))
    assert out["chat_template_kwargs"] == {"foo": 1, "enable_thinking": True}
    out = shape(chat("qwen3-coder-plus", chat_template_kwargs={"enable_thinking": True, "foo": 1}))
    assert out["chat_template_kwargs"] == {"foo": 1}


# ---------------------------------------------------------------------------- body: tools / misc


def tool(parameters: Any) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {"name": "f", "description": "d", "parameters": parameters},
    }


def test_empty_tools_dropped_with_tool_choice_and_response_format() -> None:
    out = shape(
        chat(
            "glm-5",
            tools=[],
            tool_choice="auto",
            parallel_tool_calls=False,
            response_format={"type": "json_object"},
        )
    )
    for key in ("tools", "tool_choice", "response_format", "parallel_tool_calls"):
        assert key not in out


def test_tools_kept_tool_choice_dropped() -> None:
    out = shape(chat("glm-5", tools=[tool({"type": "object"})], tool_choice="required"))
    assert out["tools"] == [tool({"type": "object", "additionalProperties": False})]
    assert "tool_choice" not in out


def test_tool_schema_cleanup_recursive() -> None:
    schema = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "title": "Args",
        "properties": {
            "path": {"type": "string", "description": "p", "minLength": 1, "format": "uri"},
            "mode": {"type": "string", "enum": ["a", "b"], "default": "a"},
            "tags": {
                "type": "array",
                "minItems": 1,
                "maxItems": 4,
                "items": {"type": "object", "properties": {"k": {"type": "string"}}},
            },
            "opts": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}},
            "free": {"type": "object", "additionalProperties": True},
            "maybe": {"anyOf": [{"type": "null"}, {"type": "integer"}], "description": "m"},
            # property *names* that look like schema keywords are data, not keywords
            "format": {"type": "string", "examples": ["x"]},
        },
        "required": ["path"],
        "definitions": {"x": {}},
    }
    assert iflow.clean_schema(schema) == {
        "type": "object",
        "properties": {
            "path": {"type": "string", "description": "p", "minLength": 1},
            "mode": {"type": "string", "enum": ["a", "b"]},
            "tags": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "properties": {"k": {"type": "string"}},
                    "additionalProperties": False,
                },
            },
            "opts": {"type": "object", "additionalProperties": {"type": "integer"}},
            "free": {"type": "object", "additionalProperties": True},
            "maybe": {"type": "integer", "description": "m"},
            "format": {"type": "string"},
        },
        "required": ["path"],
        "additionalProperties": False,
    }


def test_tool_schema_cleanup_does_not_touch_input() -> None:
    tools = [tool({"type": "object", "title": "t", "properties": {"a": {"type": "string"}}})]
    before = copy.deepcopy(tools)
    shape(chat("glm-5", tools=tools))
    assert tools == before


@pytest.mark.parametrize(
    ("stop", "kept"),
    [(None, False), ("", False), ([], False), ("END", True), (["a", "b"], True)],
)
def test_stop_only_when_non_empty(stop: Any, kept: bool) -> None:
    out = shape(chat("glm-5", stop=stop))
    assert ("stop" in out) is kept
    if kept:
        assert out["stop"] == stop


def test_other_fields_pass_through() -> None:
    extra = {"user": "u1", "seed": 7, "frequency_penalty": 0.3, "logprobs": True}
    out = shape(chat("qwen3-coder-plus", **extra))
    for key, value in extra.items():
        assert out[key] == value


def test_input_never_mutated() -> None:
    body = {
        "model": "deepseek-v3.2-chat",
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "s"}]},
            {"role": "user", "content": [{"type": "image_url", "image_url": "data:image/png;x"}]},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f"}}],
            },
            {"role": "tool", "tool_call_id": "nope", "content": "x"},
        ],
        "stream": True,
        "stream_options": {"include_usage": False},
        "max_tokens": 10,
        "max_completion_tokens": 20,
        "reasoning_effort": "high",
        "chat_template_kwargs": {"enable_thinking": True, "x": 1},
        "tools": [tool({"type": "object", "title": "t"})],
        "tool_choice": "auto",
        "response_format": {"type": "text"},
        "temperature": None,
        "stop": [],
    }
    before = copy.deepcopy(body)
    out = shape(body, stream=False)
    assert body == before
    assert out is not body
    out["messages"][0]["content"] = "changed"
    assert body == before


# ---------------------------------------------------------------------------- messages


def msgs(out: dict[str, Any]) -> list[dict[str, Any]]:
    return out["messages"]


def test_system_and_developer_merged_into_one_leading_message() -> None:
    body = {
        "model": "glm-5",
        "messages": [
            {"role": "user", "content": "q1"},
            {"role": "system", "content": "You are X."},
            {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
            {
                "role": "system",
                "content": [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}],
            },
            {"role": "system", "content": ""},
            {"role": "user", "content": "q2"},
        ],
    }
    assert msgs(shape(body)) == [
        {"role": "system", "content": "You are X. Be brief. A B"},
        {"role": "user", "content": "q1"},
        {"role": "user", "content": "q2"},
    ]


def test_no_system_message_when_none_given() -> None:
    assert msgs(shape(chat("glm-5"))) == [{"role": "user", "content": "hi"}]


def test_user_images_data_urls_kept_and_shorthand_normalised() -> None:
    content = [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}},
        {"type": "image_url", "image_url": "data:image/jpeg;base64,BBBB"},
    ]
    out = msgs(shape({"model": "qwen-vl-max", "messages": [{"role": "user", "content": content}]}))
    assert out[0]["content"] == [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}},
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,BBBB"}},
    ]


@pytest.mark.parametrize(
    ("url", "remote"),
    [
        ("https://example.com/a.png", True),
        ("http://example.com/a.png", True),
        ("data:image/png;base64,AAAA", False),
        ("DATA:image/png;base64,AAAA", False),
    ],
)
def test_has_remote_images(url: str, remote: bool) -> None:
    body = {
        "messages": [
            {"role": "user", "content": "plain"},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]},
        ]
    }
    assert iflow.has_remote_images(body) is remote
    body["messages"][1]["content"][0]["image_url"] = url  # string shorthand too
    assert iflow.has_remote_images(body) is remote


def test_has_remote_images_without_images() -> None:
    assert iflow.has_remote_images(chat("glm-5")) is False
    assert iflow.has_remote_images({}) is False


def call(call_id: str, name: str = "f") -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": "{}"}}


def result(call_id: str, content: str = "ok") -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": content}


def assistant(*calls: dict[str, Any], content: Any = "", **extra: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": content, "tool_calls": list(calls), **extra}


USER = {"role": "user", "content": "u"}
NOT_RUN = "tool not executed"

PAIRING_CASES = [
    pytest.param(
        [USER, assistant(call("a"), call("b")), result("a"), result("b"), USER],
        [USER, assistant(call("a"), call("b"), content=None), result("a"), result("b"), USER],
        id="complete",
    ),
    pytest.param(
        [USER, assistant(call("a"), call("b")), result("b"), USER],
        [
            USER,
            assistant(call("a"), call("b"), content=None),
            result("a", NOT_RUN),
            result("b"),
            USER,
        ],
        id="missing-filled-in-call-order",
    ),
    pytest.param(
        [USER, assistant(call("a")), USER],
        [USER, assistant(call("a"), content=None), result("a", NOT_RUN), USER],
        id="missing-at-end-of-turn",
    ),
    pytest.param(
        [USER, result("zzz"), assistant(call("a")), result("a"), result("x"), USER],
        [USER, assistant(call("a"), content=None), result("a"), USER],
        id="orphans-dropped",
    ),
    pytest.param(
        [USER, assistant(call("a")), USER, result("a")],
        [USER, assistant(call("a"), content=None), result("a"), USER],
        id="result-after-user-text-moved-up",
    ),
    pytest.param(
        [USER, assistant(call("a")), result("a", "1"), result("a", "2")],
        [USER, assistant(call("a"), content=None), result("a", "1")],
        id="duplicate-result-dropped",
    ),
    pytest.param(
        [USER, assistant(call("a")), {"role": "assistant", "content": "next"}, result("a")],
        [
            USER,
            assistant(call("a"), content=None),
            result("a", NOT_RUN),
            {"role": "assistant", "content": "next"},
        ],
        id="result-after-next-assistant-is-orphan",
    ),
    pytest.param(
        [USER, assistant(call("a"), content="I'll look"), result("a")],
        [USER, assistant(call("a"), content="I'll look"), result("a")],
        id="non-empty-content-kept",
    ),
]


@pytest.mark.parametrize(("given", "expected"), PAIRING_CASES)
def test_tool_result_pairing(given: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    assert msgs(shape({"model": "glm-5", "messages": given})) == expected


def test_assistant_reasoning_content_kept_and_empty_tool_calls_removed() -> None:
    messages = [
        USER,
        {"role": "assistant", "content": "", "reasoning_content": "hmm", "tool_calls": []},
        USER,
        assistant(call("a"), reasoning_content="think"),
        result("a"),
    ]
    out = msgs(shape({"model": "deepseek-v3.2-chat", "messages": messages}))
    assert out[1] == {"role": "assistant", "content": "", "reasoning_content": "hmm"}
    assert out[3]["reasoning_content"] == "think"
    assert out[3]["content"] is None


# ---------------------------------------------------------------------------- errors

ENVELOPE_TABLE = [
    # code, status, our code, account action
    ("434", 401, "upstream_434", "disable"),
    ("438", 401, "upstream_438", "disable"),
    ("439", 401, "upstream_439", "refresh"),
    ("435", 400, "model_not_supported", None),
    ("429", 429, "rate_limit_exceeded", "cooldown"),
    ("449", 429, "rate_limit_exceeded", "cooldown"),
    ("8211", 429, "rate_limit_exceeded", "cooldown"),
    ("511", 400, "context_length_exceeded", None),
    ("413", 400, "context_length_exceeded", None),
    ("514", 502, "upstream_514", None),
    ("500", 502, "upstream_500", None),
    ("999", 502, "upstream_999", None),
]


@pytest.mark.parametrize(("code", "status", "our_code", "action"), ENVELOPE_TABLE)
@pytest.mark.parametrize("as_int", [False, True])
def test_envelope_payload_mapping(
    code: str, status: int, our_code: str, action: str | None, as_int: bool
) -> None:
    msg = "Access to the current AK has been blocked due to unauthorized requests"
    envelope = {"status": int(code) if as_int else code, "msg": msg, "body": None}
    err = iflow.error_from_payload(envelope)
    assert err is not None
    assert (err.status, err.code, err.account_action) == (status, our_code, action)
    assert err.message == msg
    assert err.upstream_status == code


def test_envelope_retry_after_hint() -> None:
    err = iflow.error_from_payload({"status": "449", "msg": "busy", "body": None, "retryAfter": 7})
    assert err is not None and err.retry_after == 7.0
    err = iflow.error_from_payload({"status": "449", "msg": "busy", "body": None})
    assert err is not None and err.retry_after is None


@pytest.mark.parametrize(
    "obj",
    [
        {"id": "c", "object": "chat.completion.chunk", "choices": [{"delta": {"content": "x"}}]},
        {"id": "c", "object": "chat.completion", "choices": [], "usage": {"total_tokens": 3}},
        {"choices": [], "error": None},
        {"status": "200", "msg": "ok", "body": {}},
        {"status": "0", "msg": "", "body": {}},
    ],
)
def test_normal_payloads_are_not_errors(obj: dict[str, Any]) -> None:
    assert iflow.error_from_payload(obj) is None


def test_openai_error_payload() -> None:
    err = iflow.error_from_payload(
        {"error": {"message": "Rate limit reached", "type": "rate_limit_error", "code": None}}
    )
    assert err is not None and err.status == 429 and err.account_action == "cooldown"
    err = iflow.error_from_payload({"error": {"message": "blocked", "code": "434"}})
    assert err is not None and err.status == 401 and err.account_action == "disable"
    err = iflow.error_from_payload({"error": {"message": "boom", "type": "server_error"}})
    assert err is not None and err.status == 502 and err.message == "boom"


HTTP_TABLE = [
    # status, headers, body, expected (status, code, action, retry_after)
    (401, {}, b"", (401, "upstream_401", "refresh", None)),
    (406, {}, b"Not Acceptable", (502, "upstream_406", None, None)),
    (429, {"retry-after": "12"}, b"slow down", (429, "rate_limit_exceeded", "cooldown", 12.0)),
    (429, {}, b"", (429, "rate_limit_exceeded", "cooldown", None)),
    (413, {}, b"too big", (400, "context_length_exceeded", None, None)),
    (500, {}, b"<html>oops</html>", (502, "upstream_500", None, None)),
    (503, {}, b"", (502, "upstream_503", None, None)),
    (400, {}, b'{"error":{"message":"bad"}}', (400, "upstream_400", None, None)),
    (403, {}, b"forbidden", (403, "upstream_403", None, None)),
    (404, {}, b"", (404, "upstream_404", None, None)),
]


@pytest.mark.parametrize(("status", "headers", "body", "expected"), HTTP_TABLE)
def test_http_error_mapping(
    status: int, headers: dict[str, str], body: bytes, expected: tuple[Any, ...]
) -> None:
    err = iflow.error_from_response(status, headers, body)
    assert (err.status, err.code, err.account_action, err.retry_after) == expected
    assert err.upstream_status == str(status)
    assert err.message


def test_http_406_message_explains_refused_headers() -> None:
    err = iflow.error_from_response(406, {}, b"Not Acceptable")
    assert "406" in err.message and "header" in err.message and "Not Acceptable" in err.message


def test_http_error_keeps_body_message() -> None:
    err = iflow.error_from_response(400, {}, b'{"error":{"message":"bad thing","type":"x"}}')
    assert err.message == "bad thing"
    err = iflow.error_from_response(500, {}, b'{"status":"500","msg":"server busy","body":null}')
    assert err.message == "server busy" and err.status == 502


def test_http_body_with_known_envelope_code_wins() -> None:
    body = json.dumps({"status": "439", "msg": "token expired", "body": None}).encode()
    err = iflow.error_from_response(500, {}, body)
    assert (err.status, err.account_action, err.upstream_status) == (401, "refresh", "439")
    assert err.message == "token expired"
    body = json.dumps({"status": "8211", "msg": "limit", "body": None}).encode()
    err = iflow.error_from_response(400, {"retry-after": "3"}, body)
    assert (err.status, err.retry_after, err.account_action) == (429, 3.0, "cooldown")
