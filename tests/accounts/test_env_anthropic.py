"""An Anthropic-compatible account from the environment (UPSTREAM_PROVIDER=anthropic, issue 16):
checked like `addaccount --provider anthropic` checks its options, and served by a real
`iflow2api serve` as the passthrough against the fake Anthropic upstream
(tests/fakes/anthropic_upstream.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import anthropic
import httpx
import pytest

from accounts.importers import import_environment
from accounts.logins import LoginError
from accounts.models import Account, ModelInfo
from tests.fakes.anthropic_upstream import FakeAnthropic, message, stream_events, text_block
from tests.fakes.anthropic_upstream import thinking as thinking_block
from tests.servers import GatewayServer

KEY = "sk-ant-env-upstream-key-0123"
ACCOUNT_VERSION = "2024-10-22"  # sent when a client sends no anthropic-version
ENV = {"UPSTREAM_PROVIDER": "anthropic", "UPSTREAM_API_KEY": KEY,
       "UPSTREAM_MODELS": "glm-env, glm-env-air", "UPSTREAM_AUTH_HEADER": "bearer",
       "UPSTREAM_BETA_POLICY": "allow", "UPSTREAM_ALLOW_BETAS": "known-beta-1, other-beta"}


# ------------------------------------------------------------------------- the import itself


@pytest.mark.django_db
def test_the_environment_describes_an_anthropic_account():
    [account] = import_environment({**ENV, "UPSTREAM_BASE_URL": "https://vendor.test/api/anthropic/",
                                    "UPSTREAM_ANTHROPIC_VERSION": "2023-06-01"})
    assert (account.provider, account.base_url, account.label) == (
        "anthropic", "https://vendor.test/api/anthropic", "Anthropic-compatible (environment)")
    assert (account.auth_header, account.beta_policy, account.beta_allowlist) == (
        "bearer", "allow", "known-beta-1, other-beta")
    assert account.api_key == KEY and account.max_concurrency == 0
    assert set(ModelInfo.objects.filter(accounts=account).values_list("model_id", "provider")) \
        == {("glm-env", "anthropic"), ("glm-env-air", "anthropic")}
    # The environment is the whole description: a setting taken out of it goes back to its
    # default, on the same account.
    [again] = import_environment({"UPSTREAM_PROVIDER": "anthropic", "UPSTREAM_API_KEY": KEY,
                                  "UPSTREAM_BASE_URL": "https://vendor.test/api/anthropic"})
    assert again.pk == account.pk and Account.objects.count() == 1
    assert (again.auth_header, again.beta_policy, again.beta_allowlist) == (
        "x-api-key", "drop", "")


@pytest.mark.django_db
def test_openai_stays_the_default_provider():
    [account] = import_environment({"UPSTREAM_BASE_URL": "http://127.0.0.1:8/v1",
                                    "UPSTREAM_API_KEY": "sk-up"})
    assert (account.provider, account.label) == ("openai", "OpenAI-compatible (environment)")


@pytest.mark.django_db
@pytest.mark.parametrize(("env", "says"), [
    ({"UPSTREAM_PROVIDER": "iflow"}, "UPSTREAM_PROVIDER must be openai or anthropic"),
    ({"UPSTREAM_AUTH_HEADER": "bearer", "UPSTREAM_ALLOW_BETAS": "x"},
     "UPSTREAM_AUTH_HEADER, UPSTREAM_ALLOW_BETAS: only for UPSTREAM_PROVIDER=anthropic"),
    ({"UPSTREAM_PROVIDER": "anthropic", "UPSTREAM_AUTH_HEADER": "api-key"}, "auth_header"),
    ({"UPSTREAM_PROVIDER": "anthropic", "UPSTREAM_BETA_POLICY": "some"}, "beta_policy"),
    ({"UPSTREAM_BASE_URL": "not a url"}, "base_url"),
])
def test_settings_that_make_no_valid_account_are_refused(env, says):
    with pytest.raises(LoginError) as refused:
        import_environment({"UPSTREAM_BASE_URL": "https://vendor.test/api/anthropic", **env})
    assert says in refused.value.message
    assert not Account.objects.filter(source="env:UPSTREAM_BASE_URL").exists()


def test_serve_stops_with_the_reason_instead_of_serving():
    gateway = GatewayServer({"UPSTREAM_BASE_URL": "http://127.0.0.1:9/v1",
                             "UPSTREAM_BETA_POLICY": "drop"})
    with pytest.raises(RuntimeError) as stopped:
        gateway.start()
    assert "cannot import the upstream account from the environment" in str(stopped.value)
    assert "UPSTREAM_BETA_POLICY: only for UPSTREAM_PROVIDER=anthropic" in str(stopped.value)


# ------------------------------------------------------------------------ served as passthrough


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(KEY, auth="bearer", known_betas={"known-beta-1", "other-beta"},
                       models=["glm-env"]) as upstream:
        yield upstream


@pytest.fixture(scope="module")
def server(fake: FakeAnthropic) -> Iterator[GatewayServer]:
    with GatewayServer({**ENV, "UPSTREAM_BASE_URL": fake.url,
                        "UPSTREAM_ANTHROPIC_VERSION": ACCOUNT_VERSION}) as gateway:
        yield gateway


@pytest.fixture
def upstream(fake: FakeAnthropic) -> Iterator[FakeAnthropic]:
    fake.reset()
    yield fake
    fake.reset()


# What must reach the upstream untouched: thinking with its signature, cache_control, tool ids,
# odd spacing. The model has no upstream id of its own, so not one byte changes.
BODY = (
    '{"model": "glm-env",  "max_tokens":1024, "system":[{"type":"text","text":"Be brief.",'
    '"cache_control":{"type":"ephemeral"}}],"messages":[{"role":"user","content":"Read a.txt"},'
    '{"role":"assistant","content":[{"type":"thinking","thinking":"Let me look.","signature":'
    '"EqQBCkYIARgCKkDsig+/=="},{"type":"tool_use","id":"toolu_env_01","name":"read","input":'
    '{"path":"a.txt"}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":'
    '"toolu_env_01","content":"done ✓"}]}],"thinking":{"type":"enabled","budget_tokens":1024}}'
)


def test_messages_pass_through_byte_for_byte_with_the_envs_key_and_betas(server, upstream):
    upstream.script(message([thinking_block("Fine.", "sig-env-1"), text_block("Done.")]))
    response = httpx.post(server.url + "/v1/messages", content=BODY.encode(), timeout=20,
                          headers={"content-type": "application/json",
                                   "anthropic-version": "2023-06-01",
                                   "anthropic-beta": "known-beta-1,unknown-beta-2"})
    assert response.status_code == 200, response.text
    [sent] = upstream.messages_requests
    assert sent.body == BODY.encode()
    assert sent.bearer == KEY and sent.header("x-api-key") is None
    assert sent.header("anthropic-beta") == "known-beta-1"  # the allow-list from the env
    assert sent.header("anthropic-version") == "2023-06-01"  # the client's own
    assert response.json()["content"][0]["signature"] == "sig-env-1"


def test_the_stream_is_the_upstreams_events_and_the_sdk_reads_them(server, upstream):
    reply = message([thinking_block("Plan ✓", "sig-env-stream"), text_block("Hello there")])
    upstream.script(reply)
    body = b'{"model":"glm-env","max_tokens":256,"stream":true,"messages":[{"role":"user",' \
           b'"content":"hi"}]}'
    with httpx.stream("POST", server.url + "/v1/messages", content=body, timeout=20) as response:
        assert response.status_code == 200
        received = b"".join(response.iter_bytes())
    events = b"".join(block + b"\n\n" for block in received.split(b"\n\n")
                      if block and not block.startswith(b":"))
    [sent] = upstream.messages_requests
    assert sent.body == body
    assert sent.header("anthropic-version") == ACCOUNT_VERSION  # the client sent none
    assert events == b"".join(stream_events(reply, "glm-env", sent.body))
    upstream.script(reply)
    client = anthropic.Anthropic(base_url=server.url, api_key="unused", max_retries=0)
    with client.messages.stream(model="glm-env", max_tokens=256,
                                messages=[{"role": "user", "content": "hi"}]) as stream:
        final = stream.get_final_message()
    assert final.content[0].signature == "sig-env-stream"
    assert final.content[1].text == "Hello there"


def test_count_tokens_is_the_upstreams(server, upstream):
    body = json.dumps({"model": "glm-env", "messages": [{"role": "user", "content": "hi"}]})
    response = httpx.post(server.url + "/v1/messages/count_tokens", content=body, timeout=20,
                          headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    [sent] = [r for r in upstream.requests if r.path == "/v1/messages/count_tokens"]
    assert response.json() == {"input_tokens": 1000 + len(sent.body)}
    assert sent.bearer == KEY
