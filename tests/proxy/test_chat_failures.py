"""Every failure of /v1/chat/completions answers in OpenAI's error shape, never a 500."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from tests.conftest import FAKE_KEY
from tests.fakes import scenarios as sc
from tests.servers import GatewayServer, free_port
from tests.sse import data_payloads

MESSAGES = [{"role": "user", "content": "hi"}]
URL = "/v1/chat/completions"


def post_raw(gateway, content: bytes | str, **kwargs):
    return httpx.post(gateway.url + URL, content=content, timeout=30,
                      headers={"content-type": "application/json"}, **kwargs)


def assert_openai_error(response, status, code=None):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code
    return error


@pytest.mark.parametrize(
    ("content", "param"),
    [
        (b"{not json", None),
        (b"", None),
        (b"[1, 2]", None),
        (json.dumps({"messages": MESSAGES}), "model"),
        (json.dumps({"model": "glm-5"}), "messages"),
        (json.dumps({"model": "glm-5", "messages": []}), "messages"),
        (json.dumps({"model": 5, "messages": MESSAGES}), "model"),
        (json.dumps({"model": "glm-5", "messages": "hi"}), "messages"),
        (json.dumps({"model": "glm-5", "messages": ["hi"]}), "messages[0]"),
        (json.dumps({"model": "glm-5", "messages": [{"role": "robot", "content": "x"}]}),
         "messages[0].role"),
        (json.dumps({"model": "glm-5", "messages": MESSAGES, "stream": "yes"}), "stream"),
        (json.dumps({"model": "glm-5", "messages": MESSAGES, "max_tokens": -1}), "max_tokens"),
    ],
)
def test_bad_requests_are_400(gateway, upstream, content, param):
    error = assert_openai_error(post_raw(gateway, content), 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert upstream.chat_requests == []


def test_unknown_model_is_404_model_not_found(gateway):
    error = assert_openai_error(
        post_raw(gateway, json.dumps({"model": "no-such-model", "messages": MESSAGES})), 404,
        "model_not_found")
    assert "no-such-model" in error["message"]


def test_sdk_raises_not_found_for_unknown_model(gateway):
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=MESSAGES)


def test_large_bodies_up_to_32_mib_are_accepted_and_beyond_is_413(gateway, upstream):
    upstream.script(sc.text("ok"))
    big = "x" * (6 * 1024 * 1024)
    ok = post_raw(gateway, json.dumps({"model": "glm-5", "messages": [
        {"role": "user", "content": big}]}))
    assert ok.status_code == 200, ok.text
    assert len(upstream.chat_requests[-1].body) > 6 * 1024 * 1024

    too_big = b'{"model": "glm-5", "messages": [{"role": "user", "content": "' + \
        b"y" * (33 * 1024 * 1024) + b'"}]}'
    assert_openai_error(post_raw(gateway, too_big), 413, "request_too_large")


def test_unknown_api_path_is_an_openai_404(gateway):
    assert_openai_error(httpx.get(gateway.url + "/v1/nothing-here"), 404)


@pytest.mark.parametrize(
    ("code", "status", "error_code"),
    [("439", 401, None), ("435", 400, None),
     ("429", 429, None), ("449", 429, None), ("8211", 429, None),
     ("511", 400, "context_length_exceeded"),
     ("514", 502, None), ("999", 502, None)],
)
@pytest.mark.parametrize("stream", [False, True])
def test_envelope_errors_map_to_status_before_the_stream(gateway, upstream, code, status,
                                                        error_code, stream):
    upstream.script(sc.envelope_error(code, f"upstream says {code}"))
    response = post_raw(gateway, json.dumps({"model": "glm-5", "messages": MESSAGES,
                                             "stream": stream}))
    error = assert_openai_error(response, status, error_code)
    assert error["message"] == f"upstream says {code}"  # the upstream's wording is kept


@pytest.mark.parametrize("code", ["434", "438"])
def test_blocked_key_envelopes_are_401_and_take_the_account_out(fake_iflow, upstream, code):
    # The first request of a new server, streaming: a busy machine (the suite runs on several
    # workers) can take longer than the test servers' 0.3 s prelude to bring the upstream's
    # answer in, and the error would go in-band; this test is about the error before that.
    env = {"IFLOW_API_KEY": FAKE_KEY, "IFLOW_BASE_URL": fake_iflow.base_url,
           "STREAM_PRELUDE_SECONDS": "5"}
    with GatewayServer(env) as server:
        upstream.script(sc.envelope_error(code, "Access to the current AK has been blocked"))
        first = post_raw(server, json.dumps({"model": "glm-5", "messages": MESSAGES,
                                             "stream": True}))
        error = assert_openai_error(first, 401)
        assert error["message"] == "Access to the current AK has been blocked"
        # The only account is out of rotation now, with a reason an admin can read.
        second = post_raw(server, json.dumps({"model": "glm-5", "messages": MESSAGES}))
        assert_openai_error(second, 403, "no_upstream")  # not retryable: an admin must act
        assert len(upstream.chat_requests) == 1
        health = httpx.get(server.url + "/health").json()
        assert health["upstream_configured"] is False


def test_envelope_context_too_long_is_context_length_exceeded(gateway, upstream):
    upstream.script(sc.envelope_error("511", "context too long"))
    response = post_raw(gateway, json.dumps({"model": "glm-5", "messages": MESSAGES}))
    assert_openai_error(response, 400, "context_length_exceeded")


def test_upstream_http_429_keeps_retry_after_and_cools_the_account(fake_iflow, upstream):
    env = {"IFLOW_API_KEY": FAKE_KEY, "IFLOW_BASE_URL": fake_iflow.base_url}
    with GatewayServer(env) as server:
        upstream.script(sc.http_error(429, {"error": {"message": "slow down"}},
                                      {"Retry-After": "7"}))
        response = post_raw(server, json.dumps({"model": "glm-5", "messages": MESSAGES}))
        assert_openai_error(response, 429)
        assert response.headers["retry-after"] == "7"
        # The account sits out its cooldown: the next request is not sent upstream.
        again = post_raw(server, json.dumps({"model": "glm-5", "messages": MESSAGES}))
        assert_openai_error(again, 429, "rate_limit_exceeded")
        assert 1 <= int(again.headers["retry-after"]) <= 7
        assert len(upstream.chat_requests) == 1


def test_empty_upstream_stream_is_an_error(gateway, upstream):
    upstream.script(sc.empty_stream())
    response = post_raw(gateway, json.dumps({"model": "glm-5", "messages": MESSAGES,
                                             "stream": True}))
    error = assert_openai_error(response, 502, "empty_stream")
    assert "empty" in error["message"]


def test_upstream_drop_mid_stream_gives_an_error_event_then_one_done(gateway, upstream):
    upstream.script(sc.drop_after(3, sc.text("a b c d e f g h i j", chunks=10)))
    response = post_raw(gateway, json.dumps({"model": "glm-5", "messages": MESSAGES,
                                             "stream": True}))
    assert response.status_code == 200
    payloads = data_payloads(response.content)
    assert payloads[-1] == "[DONE]" and payloads.count("[DONE]") == 1
    error = json.loads(payloads[-2])["error"]
    assert error["code"] == "upstream_disconnected" and error["message"]
    assert any("choices" in json.loads(p) for p in payloads[:-2])


def test_sdk_raises_on_mid_stream_error(gateway, upstream):
    upstream.script(sc.drop_after(3, sc.text("a b c d e f g h i j", chunks=10)))
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0)
    stream = client.chat.completions.create(model="glm-5", messages=MESSAGES, stream=True)
    with pytest.raises(openai.APIError):
        for _ in stream:
            pass


def test_upstream_silence_gets_keepalive_comments_and_headers_at_once(gateway, upstream):
    upstream.script(sc.slow(sc.text("late answer"), first_delay=2.0))
    started = time.monotonic()
    with httpx.stream("POST", gateway.url + URL, timeout=30, json={
            "model": "glm-5", "messages": MESSAGES, "stream": True}) as response:
        headers_after = time.monotonic() - started
        raw = response.read()
    assert response.status_code == 200
    assert headers_after < 1.5  # the upstream's first byte came after 2 s
    text = raw.decode()
    assert text.startswith(": ping\n\n")
    assert text.count(": ping\n\n") >= 2
    assert "late answer" in "".join(
        json.loads(p)["choices"][0]["delta"].get("content", "")
        for p in data_payloads(raw)[:-1] if json.loads(p)["choices"])


def test_client_disconnect_cancels_the_upstream_request(gateway, upstream):
    upstream.script(sc.slow(sc.text(" ".join(["word"] * 100)), chunk_delay=0.2))
    with httpx.stream("POST", gateway.url + URL, timeout=30, json={
            "model": "glm-5", "messages": MESSAGES, "stream": True}) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                break
        closed_at = time.monotonic()
    assert upstream.wait_for(lambda: upstream.chat_requests[-1].client_disconnected, timeout=5)
    record = upstream.chat_requests[-1]
    assert not record.finished
    assert record.disconnected_at - closed_at < 2.0


def test_upstream_timeout_is_504(gateway, upstream):
    upstream.script(sc.hang())
    response = post_raw(gateway, json.dumps({"model": "glm-5", "messages": MESSAGES}))
    assert_openai_error(response, 504, "upstream_timeout")


@pytest.fixture(scope="module")
def unreachable_gateway():
    env = {"IFLOW_API_KEY": "sk-x", "IFLOW_BASE_URL": f"http://127.0.0.1:{free_port()}/v1"}
    with GatewayServer(env) as server:
        yield server


@pytest.mark.parametrize("stream", [False, True])
def test_upstream_refused_is_502(unreachable_gateway, stream):
    response = post_raw(unreachable_gateway, json.dumps(
        {"model": "glm-5", "messages": MESSAGES, "stream": stream}))
    assert_openai_error(response, 502, "upstream_unreachable")


def test_no_traceback_ever_reaches_the_client(gateway, upstream):
    upstream.script(sc.raw(200, {"content-type": "text/event-stream"},
                           [b"data:{not json}\n\n", b"data:[1,2]\n\n"]))
    response = post_raw(gateway, json.dumps({"model": "glm-5", "messages": MESSAGES,
                                             "stream": True}))
    assert "Traceback" not in response.text
    assert_openai_error(response, 502, "empty_stream")  # nothing usable came


def test_an_upstream_error_quoting_the_account_key_never_shows_it(gateway, upstream):
    """Some upstreams echo the key they were called with in their error text: the client gets
    the error without it, before the stream and in-band."""
    quoted = {"error": {"message": f"Incorrect API key provided: {FAKE_KEY}", "type": "x"}}
    upstream.script(sc.http_error(500, quoted))
    answer = httpx.post(gateway.url + "/v1/chat/completions", timeout=30,
                        json={"model": "glm-5", "messages": MESSAGES})
    assert answer.status_code == 502
    assert FAKE_KEY not in answer.text and "[redacted]" in answer.json()["error"]["message"]

    first = {"choices": [{"index": 0, "delta": {"content": "partial"}}]}
    upstream.script(sc.slow(sc.events([first, quoted]), chunk_delay=0.6))
    stream = httpx.post(gateway.url + "/v1/chat/completions", timeout=30,
                        json={"model": "glm-5", "messages": MESSAGES, "stream": True})
    assert stream.status_code == 200  # the error came after the stream began: in-band
    payloads = data_payloads(stream.content)
    assert payloads[-1] == "[DONE]"
    error = json.loads(payloads[-2])["error"]
    assert "[redacted]" in error["message"] and FAKE_KEY not in stream.text
