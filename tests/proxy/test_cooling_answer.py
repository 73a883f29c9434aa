"""Every account cooling down after an upstream error (issue 17): when the cooldown is longer
than clients wait, the 429 tells the SDKs not to retry (x-should-retry: false) and names the
accounts' errors and the fix; a short cooldown stays an ordinary retryable 429."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import httpx
import httpx2
import openai
import pytest

from tests.fakes import scenarios as sc
from tests.fakes.upstream import FakeUpstream
from tests.servers import GatewayServer

KEY = "sk-cooling-answer-5555"
MODEL = "gpt-cooling"
MESSAGES = [{"role": "user", "content": "hi"}]
REFUSED = sc.http_error(401, {"error": {"message": "Incorrect API key provided",
                                        "type": "invalid_request_error",
                                        "code": "invalid_api_key"}})


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream(KEY, flavor="openai", models=[MODEL]) as upstream:
        yield upstream


def gateway(fake: FakeUpstream, cooldown: str) -> GatewayServer:
    return GatewayServer({"UPSTREAM_BASE_URL": fake.base_url, "UPSTREAM_API_KEY": KEY,
                          "UPSTREAM_MODELS": MODEL, "AUTH_COOLDOWN_SECONDS": cooldown})


def post(server: GatewayServer) -> httpx.Response:
    return httpx.post(server.url + "/v1/chat/completions", timeout=30,
                      json={"model": MODEL, "messages": MESSAGES})


class Counter:
    """Counts the HTTP requests an SDK sends, its retries included."""

    def __init__(self) -> None:
        self.sent = 0

    def __call__(self, request: httpx2.Request) -> None:
        self.sent += 1

    def client(self) -> httpx2.Client:
        return httpx2.Client(event_hooks={"request": [self]}, timeout=30)


def test_a_long_cooldown_is_not_retried_and_names_the_fix(fake):
    fake.script(REFUSED)
    with gateway(fake, "300") as server:
        assert post(server).status_code == 401  # the upstream's own answer, once
        held = post(server)
        assert held.status_code == 429 and held.headers["x-should-retry"] == "false"
        assert 290 <= int(held.headers["retry-after"]) <= 300
        error = held.json()["error"]
        assert error["code"] == "accounts_cooling_down"
        assert "Incorrect API key provided" in error["message"]  # the account's last error
        assert "iflow2api addaccount" in error["message"] and "5 more minute" in error["message"]
        assert KEY not in held.text

        counts = Counter(), Counter()
        with pytest.raises(openai.RateLimitError) as raised:
            openai.OpenAI(base_url=server.url + "/v1", api_key="x",
                          http_client=counts[0].client()).chat.completions.create(
                model=MODEL, messages=MESSAGES)
        assert "cooling down" in raised.value.message
        with pytest.raises(anthropic.RateLimitError):
            anthropic.Anthropic(base_url=server.url, api_key="x",
                                http_client=counts[1].client()).messages.create(
                model=MODEL, max_tokens=8, messages=MESSAGES)
        assert (counts[0].sent, counts[1].sent) == (1, 1)  # the SDKs did not retry
        assert len(fake.chat_requests) == 1


def test_a_short_cooldown_stays_retryable(fake):
    fake.script(REFUSED)
    with gateway(fake, "30") as server:
        assert post(server).status_code == 401
        held = post(server)
        assert held.status_code == 429 and "x-should-retry" not in held.headers
        assert int(held.headers["retry-after"]) <= 30
