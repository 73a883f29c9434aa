"""upstream/providers/anthropic.py (pure) and the whole-event SSE parser it relies on."""

from __future__ import annotations

import json
import random

import pytest

from upstream.providers import get_provider
from upstream.providers.anthropic import api_url, beta_header
from upstream.sse import SSEEventParser
from upstream.types import UpstreamTarget

PROVIDER = get_provider("anthropic")


def target(**kwargs: object) -> UpstreamTarget:
    base = {"provider": "anthropic", "base_url": "https://open.bigmodel.cn/api/anthropic",
            "api_key": "sk-zhipu-1"}
    return UpstreamTarget(**{**base, **kwargs})  # type: ignore[arg-type]


@pytest.mark.parametrize(("base", "url"), [
    ("https://open.bigmodel.cn/api/anthropic", "https://open.bigmodel.cn/api/anthropic/v1/messages"),
    ("https://api.deepseek.com/anthropic/", "https://api.deepseek.com/anthropic/v1/messages"),
    ("https://api.z.ai/api/anthropic/v1", "https://api.z.ai/api/anthropic/v1/messages"),
    ("http://127.0.0.1:8080", "http://127.0.0.1:8080/v1/messages"),
])
def test_the_base_url_is_written_as_vendors_document_it(base, url):
    assert api_url(base, "messages") == url


def test_the_key_goes_in_the_accounts_header_and_the_body_byte_for_byte():
    raw = b'{"model":"glm-4.6",  "max_tokens":1}'
    prepared = PROVIDER.prepare_messages(target(), raw, stream=True)
    assert prepared.body is raw
    assert ("x-api-key", "sk-zhipu-1") in prepared.headers
    assert ("Accept", "text/event-stream") in prepared.headers
    assert ("anthropic-version", "2023-06-01") in prepared.headers
    bearer = PROVIDER.prepare_messages(target(auth_header="bearer"), raw, stream=False,
                                       client_version="2026-10-21")
    names = [k.lower() for k, _ in bearer.headers]
    assert ("Authorization", "Bearer sk-zhipu-1") in bearer.headers and "x-api-key" not in names
    assert ("anthropic-version", "2026-10-21") in bearer.headers  # the client's, when sent
    keyless = PROVIDER.prepare_messages(target(api_key=""), raw, stream=False)
    assert not {"x-api-key", "authorization"} & {k.lower() for k, _ in keyless.headers}
    count = PROVIDER.prepare_count_tokens(target(), raw)
    assert count.url.endswith("/api/anthropic/v1/messages/count_tokens")
    assert PROVIDER.prepare_models(target()).url.endswith("/api/anthropic/v1/models")


def test_beta_policies():
    betas = "interleaved-thinking-2025-05-14, context-1m-2025-08-07"
    assert beta_header(target(beta_policy="drop"), betas) is None
    assert beta_header(target(beta_policy="forward"), betas) == betas
    allow = target(beta_policy="allow", beta_allowlist=("context-1m-2025-08-07",))
    assert beta_header(allow, betas) == "context-1m-2025-08-07"
    assert beta_header(allow, "interleaved-thinking-2025-05-14") is None
    assert beta_header(target(beta_policy="forward"), None) is None


@pytest.mark.parametrize(("status", "kind", "ours", "code", "action"), [
    (400, "invalid_request_error", 400, "upstream_400", None),
    (401, "authentication_error", 401, "invalid_api_key", "cooldown"),
    (404, "not_found_error", 404, "model_not_found", None),
    (429, "rate_limit_error", 429, "rate_limit_exceeded", "cooldown"),
    (500, "api_error", 502, "upstream_500", None),
    (529, "overloaded_error", 503, "overloaded", None),
])
def test_errors_keep_the_document_and_map_the_status(status, kind, ours, code, action):
    message = "model: glm-x not found" if status == 404 else "nope"
    body = json.dumps({"type": "error", "error": {"type": kind, "message": message}}).encode()
    error = PROVIDER.error_from_response(status, {"retry-after": "3"}, body)
    assert (error.status, error.code, error.account_action) == (ours, code, action)
    assert error.upstream_status == str(status) and error.native["error"]["type"] == kind
    assert error.retry_after == 3.0


def test_a_prompt_too_long_is_a_context_overflow_and_foreign_shapes_are_not_native():
    long = {"type": "error", "error": {"type": "invalid_request_error",
                                       "message": "prompt is too long: 210000 tokens > 200000"}}
    assert PROVIDER.error_from_response(400, {}, json.dumps(long).encode()).code == \
        "context_length_exceeded"
    llama = {"error": {"code": 400, "type": "exceed_context_size_error",
                       "message": "the request exceeds the available context size"}}
    error = PROVIDER.error_from_response(400, {}, json.dumps(llama).encode())
    assert error.code == "context_length_exceeded" and error.native is None


def test_an_error_event_is_an_error_and_a_message_is_not():
    event = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    error = PROVIDER.error_from_payload(event)
    assert error is not None and error.status == 503 and error.upstream_status == "529"
    assert PROVIDER.error_from_payload({"type": "message", "content": []}) is None


STREAM = (b'event: message_start\r\ndata: {"type":"message_start","message":{}}\r\n\r\n'
          b": a comment\n\n"
          b'event: content_block_delta\ndata: {"type":"content_block_delta",\n'
          b'data: "delta":{"text":"\xc3\xa4"}}\n\n'
          b'event: message_stop\ndata: {"type":"message_stop"}\n\n')


def test_event_parser_keeps_each_events_bytes_whatever_the_splits():
    for seed in range(50):
        rng = random.Random(seed)
        cuts = sorted(rng.sample(range(1, len(STREAM)), rng.randint(0, 12)))
        parser = SSEEventParser()
        events = []
        for start, end in zip([0, *cuts], [*cuts, len(STREAM)], strict=True):
            events += parser.feed(STREAM[start:end])
        events += parser.close()
        assert [e.name for e in events] == ["message_start", "content_block_delta",
                                            "message_stop"]
        assert b"".join(e.raw for e in events) == STREAM.replace(b": a comment\n\n", b"")
        assert json.loads(events[1].data)["delta"]["text"] == "ä"


def test_a_last_event_without_its_blank_line_is_terminated():
    parser = SSEEventParser()
    assert parser.feed(b'event: message_stop\ndata: {"type":"message_stop"}') == []
    [last] = parser.close()
    assert last.raw.endswith(b"\n\n") and json.loads(last.data) == {"type": "message_stop"}
