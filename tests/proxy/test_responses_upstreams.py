"""POST /v1/responses on other upstream set-ups than the shared fake iFlow (each test its own
server): an upstream 429, an OpenAI-compatible upstream (what iFlow does not take: response
format, reasoning_effort, files, usage details), two accounts (a Codex session's account,
failover)."""

from __future__ import annotations

import openai
import pytest

from tests.conftest import FAKE_KEY
from tests.fakes import scenarios as sc
from tests.fakes.upstream import FakeUpstream
from tests.proxy.test_affinity import KEYS, RATE_LIMIT
from tests.proxy.test_responses import post, stream_events
from tests.servers import GatewayServer


def test_an_upstream_429_is_passed_on_with_retry_after(fake_iflow, upstream):
    # Its own server: the account then sits out the Retry-After, which would hold up others.
    env = {"IFLOW_API_KEY": FAKE_KEY, "IFLOW_BASE_URL": fake_iflow.base_url}
    with GatewayServer(env) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
        upstream.script(sc.http_error(429, {"error": {"message": "slow down"}},
                                      headers={"retry-after": "3"}))
        with pytest.raises(openai.RateLimitError) as raised:
            client.responses.create(model="glm-5", input="hi")
        assert raised.value.response.headers["retry-after"] == "3"
        assert raised.value.body["type"] == "rate_limit_error"



# --- an OpenAI-compatible upstream: what iFlow does not take reaches it -------------------------

SCHEMA = {"type": "object", "properties": {"colour": {"type": "string"}},
          "required": ["colour"], "additionalProperties": False}


@pytest.fixture
def openai_upstream():
    key, model = "sk-compatible-upstream-15", "local-model"
    with FakeUpstream(key, flavor="openai", models=[model]) as fake:
        env = {"UPSTREAM_BASE_URL": fake.base_url, "UPSTREAM_API_KEY": key,
               "UPSTREAM_MODELS": model}
        with GatewayServer(env) as server:
            yield openai.OpenAI(base_url=server.url + "/v1", api_key="unused",
                                max_retries=0), fake, model


def test_options_and_usage_on_an_openai_compatible_upstream(openai_upstream):
    client, fake, model = openai_upstream
    usage = {"prompt_tokens": 40, "completion_tokens": 9, "total_tokens": 49,
             "prompt_tokens_details": {"cached_tokens": 32},
             "completion_tokens_details": {"reasoning_tokens": 6}}
    fake.script(sc.text('{"colour": "red"}', usage=usage), sc.text("{}"))
    pdf = "data:application/pdf;base64,JVBERi0xLjQK"
    response = client.responses.create(
        model=model, reasoning={"effort": "low"},
        text={"format": {"type": "json_schema", "name": "answer", "schema": SCHEMA,
                         "strict": True}},
        input=[{"role": "user", "content": [
            {"type": "input_text", "text": "Colour?"},
            {"type": "input_file", "filename": "a.pdf", "file_data": pdf}]}])
    sent = fake.chat_requests[-1].json
    assert sent["reasoning_effort"] == "low"  # an OpenAI-compatible server's own switch
    assert sent["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "answer", "schema": SCHEMA, "strict": True}}
    assert sent["messages"][-1]["content"][1] == {
        "type": "file", "file": {"filename": "a.pdf", "file_data": pdf}}
    assert response.text.format.type == "json_schema"
    assert (response.usage.input_tokens, response.usage.output_tokens,
            response.usage.total_tokens) == (40, 9, 49)
    assert response.usage.input_tokens_details.cached_tokens == 32
    assert response.usage.output_tokens_details.reasoning_tokens == 6

    client.responses.create(model=model, input="JSON please",
                            text={"format": {"type": "json_object"}})
    assert fake.chat_requests[-1].json["response_format"] == {"type": "json_object"}


# --- the account pool: failover and a conversation's account (two accounts) --------------------

@pytest.fixture
def two_accounts():
    with FakeUpstream(api_key=KEYS[0], extra_keys=KEYS[1:], flavor="iflow") as fake:
        fake.default = lambda r: sc.text("ok")
        gateway = GatewayServer({"RATE_LIMIT_COOLDOWN_SECONDS": "30"})
        gateway.cli("migrate", "--noinput")
        gateway.shell("from accounts.models import Account\n" + "".join(
            f"Account.objects.create(label='a{i}', provider='iflow', base_url="
            f"{fake.base_url!r}, api_key={key!r}, max_concurrency=0)\n"
            for i, key in enumerate(KEYS)))
        with gateway:
            yield gateway, fake


def test_one_codex_session_one_account_and_failover(two_accounts):
    server, fake = two_accounts
    codex = {"session-id": "codex-session-r"}
    for stream in (False, True, False):
        answer = post(server, {"model": "glm-5", "input": "hi", "stream": stream,
                               "store": False}, headers=codex)
        assert answer.status_code == 200, answer.text
    pinned = {r.bearer for r in fake.chat_requests}
    assert len(pinned) == 1  # Codex's session-id header keeps the conversation on its account
    [first] = pinned
    other = next(k for k in KEYS if k != first)
    fake.default = lambda r: RATE_LIMIT if r.bearer == first else sc.text("ok")
    before = len(fake.chat_requests)
    events = stream_events(post(server, {"model": "glm-5", "input": "hi", "stream": True},
                                headers=codex))
    assert events[-1]["type"] == "response.completed"  # the other account answered
    assert [r.bearer for r in fake.chat_requests[before:]] == [first, other]
