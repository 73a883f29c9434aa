"""Two instances in one real `iflow2api serve`, each with its own settings: reasoning policy,
default model and claude-* tiers, model aliases, accounts, vision model, body logging and
upstream proxy. Instance "default" (A) and instance "b" (B) differ in every one of them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import anthropic
import httpx
import openai
import pytest

from tests.conftest import FAKE_KEY
from tests.fakes import scenarios as sc
from tests.fakes.upstream import FakeUpstream
from tests.images import data_url, png
from tests.instances.helpers import (
    HttpProxy,
    Socks5Proxy,
    last_line,
    query,
    wait_for_port,
    wait_until,
)
from tests.servers import GatewayServer, free_port

pytestmark = pytest.mark.e2e

SECOND_KEY = "sk-fake-second-upstream-9876543210"
MESSAGES = [{"role": "user", "content": "2+2?"}]

SETUP = """
import json
from accounts.models import Account, ModelInfo
from instances.models import ClientKey, Instance
mine = Account.objects.get(source="env:IFLOW_API_KEY")
theirs = Account.objects.create(provider="iflow", label="second fake", base_url={base_url!r},
                                api_key={api_key!r}, max_concurrency=0)
ModelInfo.objects.filter(model_id="kimi-k2.5").update(vision=True)
a = Instance.objects.get(name="default")
a.preserve_reasoning_content = True
a.claude_tiers = {{"opus": "kimi-k2"}}
a.model_aliases = {{"house-model": "minimax-m2.5"}}
a.upstream_proxy = {proxy!r}
a.log_bodies = True
a.save()
a.accounts.set([mine])
b = Instance.objects.create(
    name="b", host="127.0.0.1", port={port}, preserve_reasoning_content=False,
    default_model="qwen3-coder-plus", model_aliases={{"house-model": "deepseek-v3.2-chat"}},
    vision_model="kimi-k2.5")
b.accounts.set([theirs])
_, key = ClientKey.create(b, "b-client")
print(json.dumps({{"key": key}}))
"""


@dataclass
class Pair:
    server: GatewayServer
    b_url: str
    b_key: str
    proxy: HttpProxy
    socks: Socks5Proxy

    @property
    def a_url(self) -> str:
        return self.server.url

    @property
    def b_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.b_key}"}


@pytest.fixture(scope="module")
def second_fake() -> Iterator[FakeUpstream]:
    with FakeUpstream(api_key=SECOND_KEY, flavor="iflow") as fake:
        yield fake


@pytest.fixture
def other(second_fake: FakeUpstream) -> Iterator[FakeUpstream]:
    """The second fake upstream (instance B's account), emptied for each test."""
    second_fake.reset()
    yield second_fake
    second_fake.reset()


@pytest.fixture(scope="module")
def pair(fake_iflow: FakeUpstream, second_fake: FakeUpstream) -> Iterator[Pair]:
    env = {"IFLOW_API_KEY": FAKE_KEY, "IFLOW_BASE_URL": fake_iflow.base_url}
    with HttpProxy() as proxy, Socks5Proxy() as socks, GatewayServer(env) as server:
        port = free_port()
        out = server.shell(SETUP.format(base_url=second_fake.base_url, api_key=SECOND_KEY,
                                        proxy=proxy.url, port=port))
        found = Pair(server, f"http://127.0.0.1:{port}", json.loads(last_line(out))["key"],
                     proxy, socks)
        wait_for_port(port)
        # Settings reach the running server within the directory's 2 s cache.
        assert wait_until(lambda: "house-model" in httpx.get(server.url + "/v1/models").text)
        yield found


@pytest.fixture
def proxies(pair: Pair) -> Pair:
    pair.proxy.reset()
    pair.socks.reset()
    return pair


def chat(url: str, headers: dict[str, str] | None = None, **body: object) -> httpx.Response:
    return httpx.post(url + "/v1/chat/completions", headers=headers, timeout=30,
                      json={"model": "glm-5", "messages": MESSAGES, **body})


def now_utc() -> str:
    """The time as the request log stores it (UTC, SQLite's text form)."""
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def log_rows(server: GatewayServer, since: str, count: int) -> list[dict]:
    """The rows of requests started since `since`, once `count` of them are written (the
    log is written in batches, off the hot path)."""
    def rows() -> list[dict]:
        found = query(server, "SELECT * FROM proxy_requestlog WHERE started_at >= ? "
                              "ORDER BY id", (since,))
        return found if len(found) >= count else []

    found = wait_until(rows, timeout=5)
    assert len(found) == count, found
    return found


# --- models -------------------------------------------------------------------------------------


def test_reasoning_content_policy_per_instance(pair, upstream, other):
    upstream.script(sc.reasoning("Let me think.", "4"))
    kept = chat(pair.a_url).json()["choices"][0]["message"]
    assert kept == {"role": "assistant", "content": "4", "reasoning_content": "Let me think."}
    other.script(sc.reasoning("Let me think.", "4"))
    client = openai.OpenAI(base_url=pair.b_url + "/v1", api_key=pair.b_key, max_retries=0)
    merged = client.chat.completions.create(model="glm-5", messages=MESSAGES).choices[0].message
    assert merged.content == "Let me think.\n\n4"
    assert getattr(merged, "reasoning_content", None) is None


def test_default_model_and_claude_tiers_per_instance(pair, upstream, other):
    message = {"max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}
    a = anthropic.Anthropic(base_url=pair.a_url, api_key="unused", max_retries=0)
    a.messages.create(model="claude-opus-4-1", **message)
    a.messages.create(model="claude-sonnet-4-6", **message)
    # A: its own opus model; other tiers follow the global default (glm-5).
    assert [r.model for r in upstream.chat_requests] == ["kimi-k2", "glm-5"]
    b = anthropic.Anthropic(base_url=pair.b_url, api_key=pair.b_key, max_retries=0)
    answer = b.messages.create(model="claude-opus-4-1", **message)
    b.messages.create(model="some-unknown-model", **message)
    # B: no tiers of its own, so every tier and unknown name goes to its default model.
    assert [r.model for r in other.chat_requests] == ["qwen3-coder-plus", "qwen3-coder-plus"]
    assert answer.content[0].type == "text"


def test_model_aliases_per_instance(pair, upstream, other):
    assert chat(pair.a_url, model="house-model").status_code == 200
    assert chat(pair.b_url, pair.b_headers, model="house-model").status_code == 200
    assert [r.model for r in upstream.chat_requests] == ["minimax-m2.5"]
    assert [r.model for r in other.chat_requests] == ["deepseek-v3.2-chat"]
    listed = {m["id"]: m for m in httpx.get(pair.a_url + "/v1/models").json()["data"]}
    assert listed["house-model"]["display_name"] == "house-model → MiniMax-M2.5"
    listed = {m["id"]: m for m in httpx.get(pair.b_url + "/v1/models",
                                            headers=pair.b_headers).json()["data"]}
    assert listed["house-model"]["display_name"] == "house-model → DeepSeek-V3.2"


def test_each_instance_uses_only_its_own_accounts(pair, upstream, other):
    for _ in range(3):
        assert chat(pair.a_url).status_code == 200
        assert chat(pair.b_url, pair.b_headers, stream=True).status_code == 200
    assert len(upstream.chat_requests) == 3 and len(other.chat_requests) == 3
    assert {r.bearer for r in upstream.chat_requests} == {FAKE_KEY}
    assert {r.bearer for r in other.chat_requests} == {SECOND_KEY}


def test_vision_model_per_instance(pair, upstream, other):
    body = {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": data_url(png())}}]}]}
    assert chat(pair.a_url, **body).status_code == 200
    assert chat(pair.b_url, pair.b_headers, **body).status_code == 200
    assert upstream.chat_requests[-1].model == "qwen-vl-max"  # VISION_MODEL
    assert other.chat_requests[-1].model == "kimi-k2.5"  # B's vision model


# --- the request log ----------------------------------------------------------------------------


def test_bodies_are_logged_only_where_the_instance_asks(pair, upstream, other):
    before = now_utc()
    upstream.script(sc.text("answer for A"), sc.text("streamed for A"))
    other.script(sc.text("answer for B"))
    assert chat(pair.a_url, user="marker-a-1").status_code == 200
    assert chat(pair.a_url, stream=True, user="marker-a-2").status_code == 200
    assert chat(pair.b_url, pair.b_headers, user="marker-b").status_code == 200
    rows = log_rows(pair.server, before, 3)
    [other_row] = [r for r in rows if r["instance"] == "b"]
    [plain] = [r for r in rows if "marker-a-1" in r["request_body"]]
    [streamed] = [r for r in rows if "marker-a-2" in r["request_body"]]
    assert plain["instance"] == streamed["instance"] == "default"
    assert "answer for A" in plain["response_body"]
    assert "streamed" in streamed["response_body"] and "data:" in streamed["response_body"]
    assert other_row["request_body"] == "" and other_row["response_body"] == ""
    assert other_row["key_label"].startswith("b-client (sk-i2a-")
    assert other_row["status"] == 200


def test_refused_requests_are_logged_with_their_instance(pair, upstream, other):
    before = now_utc()
    assert httpx.post(pair.a_url + "/v1/chat/completions", content=b"{not json",
                      timeout=30).status_code == 400
    assert chat(pair.a_url, model="no-such-model").status_code == 404
    wrong = httpx.post(pair.b_url + "/v1/messages", headers={"x-api-key": "sk-i2a-wrong"},
                       timeout=30, json={"model": "claude-opus-4-1", "max_tokens": 5,
                                         "messages": [{"role": "user", "content": "hi"}]})
    assert wrong.status_code == 401
    rows = log_rows(pair.server, before, 3)
    found = {(r["instance"], r["api"], r["status"], r["requested_model"]) for r in rows}
    assert found == {("default", "openai", 400, ""), ("default", "openai", 404, "no-such-model"),
                     ("b", "anthropic", 401, "")}
    assert all(r["error"] for r in rows)
    assert upstream.chat_requests == [] and other.chat_requests == []


# --- upstream proxies ---------------------------------------------------------------------------


def test_the_upstream_proxy_is_per_instance(proxies, upstream, other):
    assert chat(proxies.a_url).status_code == 200
    streamed = chat(proxies.a_url, stream=True)
    assert streamed.status_code == 200 and "[DONE]" in streamed.text
    assert chat(proxies.b_url, proxies.b_headers).status_code == 200
    target = f"POST {upstream.base_url}/chat/completions"
    assert proxies.proxy.seen == [target, target]  # A's two calls; none of B's
    assert len(upstream.chat_requests) == 2 and len(other.chat_requests) == 1


def test_a_socks5_upstream_proxy(proxies, upstream, other):
    proxies.server.shell("from instances.models import Instance\n"
                         f"Instance.objects.filter(name='b').update(upstream_proxy="
                         f"{proxies.socks.url!r})")
    try:
        # The directory picks the change up within 2 s.
        assert wait_until(lambda: chat(proxies.b_url, proxies.b_headers).status_code == 200
                          and proxies.socks.seen, timeout=6)
        streamed = chat(proxies.b_url, proxies.b_headers, stream=True)
        assert streamed.status_code == 200 and "[DONE]" in streamed.text
        assert set(proxies.socks.seen) == {f"127.0.0.1:{other.port}"}
        assert proxies.proxy.seen == [] and upstream.chat_requests == []
    finally:
        proxies.server.shell("from instances.models import Instance\n"
                             "Instance.objects.filter(name='b').update(upstream_proxy='')")
