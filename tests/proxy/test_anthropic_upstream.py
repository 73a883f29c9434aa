"""Anthropic-compatible accounts through a real gateway (issue 16): the passthrough for
Anthropic clients (bodies and events byte for byte, betas per policy, the key in the account's
header, the upstream's own errors), count_tokens, and OpenAI chat clients through the reverse
translators. The upstream is tests/fakes/anthropic_upstream.py on loopback."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator

import anthropic
import httpx
import openai
import pytest

from tests.fakes.anthropic_upstream import (
    FakeAnthropic,
    Reply,
    http_error,
    message,
    text_block,
    thinking,
    tool_use,
)
from tests.servers import GatewayServer

KEY = "sk-ant-fake-upstream-key-0123"
OTHER_KEY = "sk-ant-other-upstream-key-4567"
BETAS = "interleaved-thinking-2025-05-14,known-beta-1"
# model id (what clients ask) -> (upstream id, account options)
MODELS = {
    "glm-drop": ("glm-4.6-up", {"auth_header": "bearer", "beta_policy": "drop"}),
    "glm-forward": ("glm-4.6-up", {"auth_header": "bearer", "beta_policy": "forward"}),
    "glm-allow": ("glm-4.6-up", {"auth_header": "bearer", "beta_policy": "allow",
                                 "beta_allowlist": "known-beta-1, other-beta"}),
}


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(KEY, auth="bearer", known_betas={"known-beta-1", "other-beta"},
                       models=["glm-4.6-up", "glm-5-up"]) as upstream:
        yield upstream


@pytest.fixture(scope="module")
def fake_x_api_key() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(OTHER_KEY, auth="x-api-key", count_tokens=False) as upstream:
        yield upstream


@pytest.fixture(scope="module")
def server(fake: FakeAnthropic, fake_x_api_key: FakeAnthropic) -> Iterator[GatewayServer]:
    gateway = GatewayServer({"UPSTREAM_READ_TIMEOUT": "5"})
    # The command as a user types it (its base URL as vendors document it, with /v1 here).
    gateway.cli("addaccount", "--provider", "anthropic", "--label", "fake x-api-key",
                "--base-url", fake_x_api_key.url + "/v1", "--api-key", "-",
                "--models", "kimi-xkey", stdin=OTHER_KEY + "\n")
    setup = ["from accounts.logins import add_api_key_account",
             "from accounts.models import ModelInfo"]
    for model_id, (upstream_id, options) in MODELS.items():
        setup.append(f"add_api_key_account('anthropic', {model_id!r}, {fake.url!r}, "
                     f"{KEY!r}, [{model_id!r}], **{options!r})")
        setup.append(f"ModelInfo.objects.filter(model_id={model_id!r})"
                     f".update(upstream_id={upstream_id!r})")
    for label in ("two-a", "two-b"):  # one model, two accounts: failover between them
        setup.append(f"add_api_key_account('anthropic', {label!r}, {fake.url!r}, {KEY!r}, "
                     "['glm-two'], auth_header='bearer')")
    gateway.shell("\n".join(setup))
    with gateway:
        yield gateway


@pytest.fixture
def upstream(fake: FakeAnthropic) -> Iterator[FakeAnthropic]:
    fake.reset()
    yield fake
    fake.reset()


def post(server: GatewayServer, path: str, body: bytes, **headers: str) -> httpx.Response:
    return httpx.post(server.url + path, content=body, timeout=20, headers={
        "content-type": "application/json", "anthropic-version": "2023-06-01", **headers})


# A body an Anthropic client sends, with what must reach the upstream untouched: thinking with
# its signature, cache_control, tool ids, a document, odd spacing and number spellings.
CLIENT_BODY = (
    '{"model": "glm-drop",  "max_tokens":1024, "temperature":0.70, "system":[{"type":"text",'
    '"text":"Be brief.","cache_control":{"type":"ephemeral"}}],"messages":[{"role":"user",'
    '"content":[{"type":"document","source":{"type":"base64","media_type":"application/pdf",'
    '"data":"JVBERi0xLjQK"},"title":"a.pdf"},{"type":"text","text":"Read it ✓"}]},'
    '{"role":"assistant","content":[{"type":"thinking","thinking":"Let me look.",'
    '"signature":"EqQBCkYIARgCKkDsig+/=="},{"type":"tool_use","id":"toolu_01A09q90qw90lq917835",'
    '"name":"read","input":{"path":"a.pdf"}}]},{"role":"user","content":[{"type":'
    '"tool_result","tool_use_id":"toolu_01A09q90qw90lq917835","content":"done",'
    '"cache_control":{"type":"ephemeral"}}]}],"thinking":{"type":"enabled","budget_tokens":1024},'
    '"unknown_vendor_field":{"keep":[1,2.50,true,null]}}'
)


def test_passthrough_body_is_the_clients_bytes_with_only_the_model_rewritten(server, upstream):
    upstream.script(message([thinking("Fine.", "sig-upstream-1"), text_block("Done.")]))
    response = post(server, "/v1/messages", CLIENT_BODY.encode())
    assert response.status_code == 200, response.text
    [sent] = upstream.messages_requests
    assert sent.body == CLIENT_BODY.replace('"glm-drop"', '"glm-4.6-up"').encode()
    assert sent.bearer == KEY and sent.header("x-api-key") is None
    assert sent.header("anthropic-version") == "2023-06-01"
    # The answer is the upstream's bytes: the signature and everything else as it sent them.
    assert response.json()["content"][0] == {"type": "thinking", "thinking": "Fine.",
                                             "signature": "sig-upstream-1"}
    assert response.headers["request-id"]


def test_a_max_tokens_above_the_models_limit_is_the_only_other_rewrite(server, upstream):
    server.shell("from accounts.models import ModelInfo\n"
                 "ModelInfo.objects.filter(model_id='glm-drop').update(max_output_tokens=4096)")
    try:
        body = CLIENT_BODY.replace('"max_tokens":1024', '"max_tokens":32000')
        deadline = time.monotonic() + 5
        while True:  # the routing snapshot is rebuilt within 2 seconds
            upstream.reset()
            assert post(server, "/v1/messages", body.encode()).status_code == 200
            if b'"max_tokens":4096' in upstream.messages_requests[0].body:
                break
            assert time.monotonic() < deadline, upstream.messages_requests[0].body[:80]
            time.sleep(0.3)
        expected = body.replace('"glm-drop"', '"glm-4.6-up"').replace(
            '"max_tokens":32000', '"max_tokens":4096')
        assert upstream.messages_requests[0].body == expected.encode()
    finally:
        server.shell("from accounts.models import ModelInfo\nModelInfo.objects.filter("
                     "model_id='glm-drop').update(max_output_tokens=None)")


def _events(data: bytes) -> bytes:
    """The stream without the gateway's keep-alive comments."""
    return b"".join(block + b"\n\n" for block in data.split(b"\n\n")
                    if block and not block.startswith(b":"))


def test_stream_events_are_relayed_byte_for_byte(server, upstream):
    from tests.fakes.anthropic_upstream import stream_events
    reply = message([thinking("Think ✓ twice", "sig-stream-9"), text_block("Hello there"),
                     tool_use("toolu_keep_me_01", "read", {"path": "ä.txt"})],
                    stop_reason="tool_use", usage={"cache_read_input_tokens": 40})
    upstream.script(reply)
    body = CLIENT_BODY.replace('"max_tokens":1024', '"max_tokens":1024,"stream":true')
    with httpx.stream("POST", server.url + "/v1/messages", content=body.encode(), timeout=20,
                      headers={"content-type": "application/json"}) as response:
        assert response.status_code == 200
        received = b"".join(response.iter_bytes())
    [sent] = upstream.messages_requests
    assert _events(received) == b"".join(stream_events(reply, "glm-4.6-up", sent.body))


def test_anthropic_sdk_stream_keeps_thinking_signatures_and_tool_ids(server, upstream):
    upstream.script(message([thinking("Plan.", "sig-sdk-7"),
                             tool_use("toolu_sdk_01", "get_weather", {"city": "Paris"})],
                            stop_reason="tool_use"))
    client = anthropic.Anthropic(base_url=server.url, api_key="unused", max_retries=0)
    with client.messages.stream(model="glm-drop", max_tokens=2048, messages=[
            {"role": "user", "content": "weather?"}], tools=[{
            "name": "get_weather", "input_schema": {"type": "object"}}]) as stream:
        final = stream.get_final_message()
    assert final.content[0].type == "thinking" and final.content[0].signature == "sig-sdk-7"
    assert final.content[1].id == "toolu_sdk_01" and final.content[1].input == {"city": "Paris"}
    assert final.stop_reason == "tool_use" and final.usage.input_tokens > 0


@pytest.mark.parametrize(("model", "sent"), [
    ("glm-drop", None), ("glm-allow", "known-beta-1"), ("glm-forward", BETAS)])
def test_betas_follow_the_accounts_policy(server, upstream, model, sent):
    body = CLIENT_BODY.replace('"glm-drop"', json.dumps(model)).encode()
    response = post(server, "/v1/messages", body, **{"anthropic-beta": BETAS})
    [request] = upstream.messages_requests
    assert request.header("anthropic-beta") == sent
    if model == "glm-forward":  # the vendor refuses a beta it does not know: its own error
        assert response.status_code == 400
        error = response.json()
        assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
        assert "anthropic-beta" in error["error"]["message"]
    else:
        assert response.status_code == 200, response.text


def test_x_api_key_accounts_and_a_v1_base_url(server, fake_x_api_key):
    fake_x_api_key.reset()
    client = anthropic.Anthropic(base_url=server.url, api_key="unused", max_retries=0)
    answer = client.messages.create(model="kimi-xkey", max_tokens=64,
                                    messages=[{"role": "user", "content": "hi"}])
    assert answer.content[0].text == "Hello from the fake Anthropic."
    [sent] = fake_x_api_key.messages_requests
    assert sent.path == "/v1/messages" and sent.header("x-api-key") == OTHER_KEY
    assert sent.header("authorization") is None


def test_upstream_errors_keep_their_anthropic_shape_and_status(server, upstream):
    upstream.script(http_error(529, "overloaded_error", f"Overloaded (key {KEY})"))
    client = anthropic.Anthropic(base_url=server.url, api_key="unused", max_retries=0)
    with pytest.raises(anthropic.APIStatusError) as caught:
        client.messages.create(model="glm-drop", max_tokens=64,
                               messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 529
    error = caught.value.body["error"]
    assert error["type"] == "overloaded_error" and KEY not in error["message"]
    assert error["message"].startswith("Overloaded")


def test_a_truncated_upstream_stream_ends_with_an_error_event(server, upstream):
    upstream.script(Reply(content=(text_block("one two three four"),), cut_after=4))
    body = b'{"model":"glm-drop","max_tokens":64,"stream":true,"messages":[{"role":"user",' \
           b'"content":"hi"}]}'
    with httpx.stream("POST", server.url + "/v1/messages", content=body, timeout=20) as response:
        received = b"".join(response.iter_bytes())
    blocks = [b for b in received.split(b"\n\n") if b and not b.startswith(b":")]
    assert blocks[0].startswith(b"event: message_start")
    assert blocks[-1].startswith(b"event: error"), received
    assert b"message_stop" not in received
    assert json.loads(blocks[-1].split(b"data: ", 1)[1])["error"]["type"] == "api_error"


def test_a_pause_longer_than_the_read_timeout_ends_the_stream_with_an_error_event(server,
                                                                                  upstream):
    """UPSTREAM_READ_TIMEOUT (5 s here) is the longest silent gap (upstream/deadline.py): the
    error event comes when it runs out, not when the upstream speaks again."""
    upstream.script(Reply(content=(text_block("one two three four"),), delays=(0, 0, 0, 8.0)))
    body = b'{"model":"glm-drop","max_tokens":64,"stream":true,"messages":[{"role":"user",' \
           b'"content":"hi"}]}'
    arrivals: list[tuple[float, bytes]] = []
    with httpx.stream("POST", server.url + "/v1/messages", content=body, timeout=30) as response:
        for piece in response.iter_bytes():
            arrivals.append((time.monotonic(), piece))
    received = b"".join(piece for _, piece in arrivals)
    blocks = [b for b in received.split(b"\n\n") if b and not b.startswith(b":")]
    assert blocks[-1].startswith(b"event: error"), received
    assert b"message_stop" not in received and b"four" not in received
    assert "timed out" in json.loads(blocks[-1].split(b"data: ", 1)[1])["error"]["message"]
    last_event = max(at for at, piece in arrivals if b"content_block_delta" in piece
                     or b"content_block_start" in piece)
    assert 4.5 <= arrivals[-1][0] - last_event < 6.5


def test_an_upstream_error_event_is_passed_on_as_it_came(server, upstream):
    upstream.script(Reply(content=(text_block("partial answer"),), error_event_after=4))
    body = b'{"model":"glm-drop","max_tokens":64,"stream":true,"messages":[{"role":"user",' \
           b'"content":"hi"}]}'
    with httpx.stream("POST", server.url + "/v1/messages", content=body, timeout=20) as response:
        received = b"".join(response.iter_bytes())
    assert received.rstrip().endswith(
        b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error",'
        b'"message":"Overloaded"}}')
    assert received.count(b"event: error") == 1


def test_count_tokens_asks_the_upstream_or_estimates_when_it_has_none(server, upstream,
                                                                      fake_x_api_key):
    body = b'{"model":"glm-drop","messages":[{"role":"user","content":"count me"}]}'
    counted = post(server, "/v1/messages/count_tokens", body)
    assert counted.status_code == 200
    [sent] = [r for r in upstream.requests if r.path == "/v1/messages/count_tokens"]
    assert sent.body == body.replace(b"glm-drop", b"glm-4.6-up")
    assert counted.json() == {"input_tokens": 1000 + len(sent.body)}
    estimated = post(server, "/v1/messages/count_tokens", body.replace(b"glm-drop", b"kimi-xkey"))
    assert estimated.status_code == 200 and 0 < estimated.json()["input_tokens"] < 100



def test_an_overloaded_account_fails_over_to_the_next(server, upstream):
    upstream.script(http_error(529, "overloaded_error", "Overloaded"),
                    message([text_block("From the second account.")]))
    body = b'{"model":"glm-two","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}'
    response = post(server, "/v1/messages", body)
    assert response.status_code == 200, response.text
    assert response.json()["content"][0]["text"] == "From the second account."
    assert [r.status for r in upstream.messages_requests] == [529, 200]


def test_the_request_log_reads_the_passthrough_streams_usage(server, upstream):
    upstream.script(message([text_block("counted")], usage={
        "input_tokens": 11, "output_tokens": 5, "cache_read_input_tokens": 30}))
    body = b'{"model":"glm-allow","max_tokens":16,"stream":true,"messages":[{"role":"user",' \
           b'"content":"usage please"}]}'
    with httpx.stream("POST", server.url + "/v1/messages", content=body, timeout=20) as response:
        assert response.status_code == 200
        assert b"message_stop" in b"".join(response.iter_bytes())
    query = ("from proxy.models import RequestLog\n"
             "row = RequestLog.objects.filter(requested_model='glm-allow', stream=True)"
             ".order_by('-id').first()\n"
             "print(row and (row.api, row.status, row.tokens_in, row.tokens_out, "
             "row.tokens_cached, row.model))")
    deadline = time.monotonic() + 10
    while True:  # the request log is written off the request path, in batches
        row = server.shell(query).splitlines()[-1]
        if row != "None" or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert row == "('anthropic', 200, 41, 5, 30, 'glm-allow')"

# ---------------------------------------------------------------- OpenAI chat clients


def test_openai_sdk_on_an_anthropic_upstream(server, upstream):
    upstream.script(message([text_block("Four.")],
                            usage={"input_tokens": 12, "output_tokens": 3}))
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    completion = client.chat.completions.create(model="glm-drop", messages=[
        {"role": "system", "content": "Be terse."}, {"role": "user", "content": "2+2?"}],
        max_tokens=50)
    assert completion.choices[0].message.content == "Four."
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens == 12 and completion.usage.completion_tokens == 3
    request = upstream.messages_requests[0]
    assert request.header("anthropic-version") == "2023-06-01"  # the account's: none came
    sent = request.json
    assert sent["model"] == "glm-4.6-up" and sent["system"] == "Be terse."
    assert sent["messages"] == [{"role": "user", "content": [{"type": "text", "text": "2+2?"}]}]


def test_openai_sdk_stream_with_tools_on_an_anthropic_upstream(server, upstream):
    upstream.script(message([text_block("Checking."),
                             tool_use("toolu_w1", "get_weather", {"city": "Paris"})],
                            stop_reason="tool_use"))
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    stream = client.chat.completions.create(
        model="glm-drop", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "weather in Paris?"}],
        tools=[{"type": "function", "function": {"name": "get_weather", "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}}}}}])
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    calls = [t for c in chunks if c.choices for t in c.choices[0].delta.tool_calls or []]
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and
              c.choices[0].finish_reason]
    assert text == "Checking." and finish == ["tool_calls"]
    assert calls[0].id == "toolu_w1" and calls[0].function.name == "get_weather"
    assert json.loads("".join(c.function.arguments or "" for c in calls)) == {"city": "Paris"}
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens > 0
    sent = upstream.messages_requests[0].json
    assert sent["stream"] is True and sent["tools"][0]["name"] == "get_weather"


def test_openai_clients_get_upstream_errors_in_their_own_shape(server, upstream):
    upstream.script(http_error(429, "rate_limit_error", "slow down"))
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="glm-drop",
                                       messages=[{"role": "user", "content": "hi"}])
    assert caught.value.body["code"] == "rate_limit_exceeded"
    assert "slow down" in caught.value.body["message"]


def test_openai_clients_get_a_400_for_what_messages_cannot_express(server, upstream):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="glm-drop", n=2,
                                       messages=[{"role": "user", "content": "hi"}])
    assert caught.value.body["param"] == "n"
    assert upstream.messages_requests == []


# ---------------------------------------------------------------- Responses clients (composition)


def test_responses_clients_on_an_anthropic_upstream(server, upstream):
    """/v1/responses translates to chat, which the bridge sends as Messages: both steps."""
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    upstream.script(message([text_block("Hi from Messages.")],
                            usage={"input_tokens": 9, "output_tokens": 4}))
    response = client.responses.create(model="glm-drop", input="hello", store=False,
                                       instructions="Be kind.")
    assert response.output_text == "Hi from Messages."
    assert response.usage.input_tokens == 9 and response.usage.output_tokens == 4
    sent = upstream.messages_requests[-1].json
    assert sent["system"] == "Be kind." and sent["model"] == "glm-4.6-up"

    upstream.script(message([text_block("Let me check."),
                             tool_use("toolu_resp_01", "get_weather", {"city": "Oslo"})],
                            stop_reason="tool_use"))
    events = list(client.responses.create(
        model="glm-drop", input="weather in Oslo?", store=False, stream=True,
        tools=[{"type": "function", "name": "get_weather", "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}}}}]))
    assert events[-1].type == "response.completed"
    output = events[-1].response.output
    calls = [item for item in output if item.type == "function_call"]
    assert [(c.call_id, c.name, json.loads(c.arguments)) for c in calls] == [
        ("toolu_resp_01", "get_weather", {"city": "Oslo"})]
    assert upstream.messages_requests[-1].json["tools"][0]["name"] == "get_weather"


# ---------------------------------------------------------------- accounts (last: they add rows)


def test_addaccount_presets_fill_in_the_vendors_settings(server):
    added = server.cli("addaccount", "--preset", "zhipu", "--label", "zhipu", "--api-key", "-",
                       "--no-migrate", stdin="sk-zhipu-secret-1\n").stdout.strip()
    shown = server.shell(
        "from accounts.models import Account\n"
        f"a = Account.objects.get(pk={added})\n"
        "print(a.provider, a.base_url, a.auth_header, a.beta_policy, a.api_key == "
        "'sk-zhipu-secret-1')\na.delete()")
    assert shown.splitlines()[-1].split() == [
        "anthropic", "https://open.bigmodel.cn/api/anthropic", "bearer", "drop", "True"]
    with pytest.raises(subprocess.CalledProcessError) as refused:
        server.cli("addaccount", "--label", "x", "--base-url", "https://a.test/v1",
                   "--auth-header", "bearer", "--no-migrate")
    assert "for --provider anthropic" in refused.value.stderr


def test_model_sync_reads_the_anthropic_model_list(server, upstream):
    account = server.shell("from accounts.models import Account\n"
                           "print(Account.objects.get(label='glm-allow').pk)").split()[-1]
    server.cli("syncmodels", "--account", account)
    listed = server.shell(
        "from accounts.models import ModelInfo\nm = ModelInfo.objects.get(model_id='glm-5-up')\n"
        "print(m.provider, m.display_name, [a.label for a in m.accounts.all()])")
    assert listed.splitlines()[-1] == "anthropic GLM-5-UP ['glm-allow']"
    [request] = [r for r in upstream.requests if r.path == "/v1/models"]
    assert request.bearer == KEY and request.header("anthropic-version") == "2023-06-01"
