"""Streamed costs and budget refusals in every client's shape, on a real server (issue 18).

One server with a priced model (glm-5, DeepSeek's prices) and an unpriced one (kimi-k2), a
client key with a daily budget that three requests use up and one without a budget:

- a chat stream (openai SDK), a Messages stream (anthropic SDK) and a Responses stream (openai
  SDK) are priced in the request log from the upstream's streamed usage, cached tokens as
  cached; an unpriced model's streams have no cost (None), never 0;
- the budget is settled from answers and streams alike: past its warning share it is logged
  once and shown on the live status page; once used up, chat, Messages and Responses,
  streamed and not, each get one 402 budget_exceeded (x-should-retry: false, saying when it
  resets) that the SDKs raise without retrying, and nothing more reaches the upstream."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from datetime import datetime

import anthropic
import httpx
import httpx2
import openai
import pytest
from django.utils import timezone

from instances.budgets import period_window
from tests.conftest import FAKE_KEY
from tests.fakes import scenarios as sc
from tests.fakes.upstream import FakeUpstream
from tests.instances.test_status_live import add_admin, log_in
from tests.servers import GatewayServer

MESSAGES = [{"role": "user", "content": "hi"}]
DEEPSEEK = {"prompt_tokens": 1200, "completion_tokens": 50, "total_tokens": 1250,
            "prompt_cache_hit_tokens": 1024, "prompt_cache_miss_tokens": 176}
# 176 × 0.27 + 1024 × 0.07 + 50 × 1.10 = 174.20 per million tokens
ONE_COST = "0.0001742000"
LIMIT = "0.0005"  # two requests stay below it (0.0003484), the third passes it (0.0005226)


class Setup:
    def __init__(self, server: GatewayServer, keys: dict[str, str]) -> None:
        self.server, self.keys = server, keys

    def label(self, name: str) -> str:
        return f"{name} ({self.keys[name][:12]}…)"


@pytest.fixture(scope="module")
def setup(fake_iflow: FakeUpstream) -> Iterator[Setup]:
    env = {"IFLOW_API_KEY": FAKE_KEY, "IFLOW_BASE_URL": fake_iflow.base_url}
    with GatewayServer(env) as server:
        server.cli("setprice", "glm-5", "--input", "0.27", "--cached-input", "0.07",
                   "--output", "1.10", "--currency", "USD")
        out = server.shell(
            "import json\nfrom decimal import Decimal\n"
            "from instances.models import Budget, ClientKey, Instance\n"
            "default = Instance.objects.get(name='default')\n"
            "row, budgeted = ClientKey.create(default, 'budgeted')\n"
            f"Budget.objects.create(key=row, period='day', spend_limit=Decimal('{LIMIT}'),\n"
            "                      currency='USD', warn_percent=50)\n"
            "_, free = ClientKey.create(default, 'free')\n"
            "print(json.dumps({'budgeted': budgeted, 'free': free}))")
        keys = json.loads(out.strip().splitlines()[-1])
        add_admin(server)
        time.sleep(2.5)  # the server's snapshots (keys, budgets) see them
        yield Setup(server, keys)


def rows_of(server: GatewayServer, label: str, since: datetime, count: int) -> list[dict]:
    """The request log rows of `label`'s requests started after `since` (waits for `count`)."""
    code = f"""
import datetime, json, time
from proxy.models import RequestLog
since = datetime.datetime.fromisoformat({since.isoformat()!r})
for _ in range(100):
    rows = [{{**r, "cost": None if r["cost"] is None else str(r["cost"])}}
            for r in RequestLog.objects.filter(started_at__gte=since, key_label={label!r})
            .order_by("id").values("api", "model", "stream", "status", "cost",
                                   "cost_currency", "tokens_in", "tokens_cached")]
    if len(rows) >= {count}:
        break
    time.sleep(0.1)
print(json.dumps(rows))
"""
    return json.loads(server.shell(code).strip().splitlines()[-1])


def clients(setup: Setup, key: str, sent: list[httpx2.Request] | None = None
            ) -> tuple[openai.OpenAI, anthropic.Anthropic]:
    """The SDKs (on their own HTTP package) with their default retries; `sent` collects
    every HTTP request they make."""
    hooks = {"request": [sent.append]} if sent is not None else {}
    url = setup.server.url
    return (openai.OpenAI(base_url=url + "/v1", api_key=setup.keys[key],
                          http_client=httpx2.Client(event_hooks=hooks, timeout=30)),
            anthropic.Anthropic(base_url=url, api_key=setup.keys[key],
                                http_client=httpx2.Client(event_hooks=hooks, timeout=30)))


def three_streams(setup: Setup, key: str, model: str) -> None:
    """A chat, a Messages and a Responses stream, each read to its end."""
    oa, an = clients(setup, key)
    chunks = list(oa.chat.completions.create(model=model, messages=MESSAGES, stream=True))
    assert chunks and chunks[-1].choices[0].finish_reason == "stop"
    with an.messages.stream(model=model, max_tokens=64, messages=MESSAGES) as stream:
        assert stream.get_final_message().stop_reason == "end_turn"
    events = list(oa.responses.create(model=model, input="hi", stream=True))
    assert events[-1].type == "response.completed"


def test_streams_are_priced_from_their_usage_cached_tokens_as_cached(setup, upstream):
    start = timezone.now()
    upstream.default = lambda r: sc.text("ok", usage=DEEPSEEK)
    three_streams(setup, "free", "glm-5")
    rows = rows_of(setup.server, setup.label("free"), start, 3)
    assert [(r["api"], r["stream"], r["status"], r["tokens_in"], r["tokens_cached"], r["cost"],
             r["cost_currency"]) for r in rows] == [
        (api, True, 200, 1200, 1024, ONE_COST, "USD")
        for api in ("openai", "anthropic", "responses")]


def test_an_unpriced_models_streams_cost_unknown_never_zero(setup, upstream):
    start = timezone.now()
    upstream.default = lambda r: sc.text("ok", usage=DEEPSEEK)
    three_streams(setup, "free", "kimi-k2")
    rows = rows_of(setup.server, setup.label("free"), start, 3)
    assert [(r["model"], r["stream"], r["tokens_cached"], r["cost"], r["cost_currency"])
            for r in rows] == [("kimi-k2", True, 1024, None, "")] * 3


def warnings_in(server: GatewayServer, name: str) -> list[str]:
    """The log's budget warnings for the key `name` (the log hides the key's prefix)."""
    return [line for line in server.output().splitlines()
            if f"budget of {name} (" in line and "% used" in line]


def status_row(server: GatewayServer, label: str) -> str:
    with httpx.Client(base_url=server.url, timeout=10,
                      cookies={"sessionid": log_in(server)}) as http:
        html = http.get("/admin/status/").text
    rows = [row for row in re.findall(r"<tr>.*?</tr>", html, re.S) if label in row]
    assert len(rows) == 1, html
    return rows[0]


def refusals(oa: openai.OpenAI, an: anthropic.Anthropic) -> dict[str, Callable[[], object]]:
    return {
        "chat": lambda: oa.chat.completions.create(model="glm-5", messages=MESSAGES),
        "chat stream": lambda: list(oa.chat.completions.create(
            model="glm-5", messages=MESSAGES, stream=True)),
        "messages": lambda: an.messages.create(model="glm-5", max_tokens=64,
                                               messages=MESSAGES),
        "messages stream": lambda: list(an.messages.create(
            model="glm-5", max_tokens=64, messages=MESSAGES, stream=True)),
        "responses": lambda: oa.responses.create(model="glm-5", input="hi"),
        "responses stream": lambda: list(oa.responses.create(model="glm-5", input="hi",
                                                             stream=True)),
    }


def test_streams_fill_the_budget_then_every_client_is_refused_without_retry(setup, upstream):
    server, label = setup.server, setup.label("budgeted")
    start = timezone.now()
    resets = {period_window("day")[1].isoformat(timespec="seconds")}
    upstream.default = lambda r: sc.text("ok", usage=DEEPSEEK)
    oa, an = clients(setup, "budgeted")
    oa.chat.completions.create(model="glm-5", messages=MESSAGES)  # 35 % of the limit
    assert warnings_in(server, "budgeted") == []
    list(oa.chat.completions.create(model="glm-5", messages=MESSAGES, stream=True))  # 70 %
    rows_of(server, label, start, 2)
    # Past its 50 % warning share: one line in the log, "warning" on the live status page.
    [line] = warnings_in(server, "budgeted")
    assert "(day, USD): 70% used" in line
    row = status_row(server, label)
    assert 'class="state-warning"' in row and "0.0003 of 0.0005 USD" in row
    assert '<td class="num">70</td>' in row
    with an.messages.stream(model="glm-5", max_tokens=64, messages=MESSAGES) as stream:
        stream.get_final_message()  # the third passes the limit (105 %)
    rows = rows_of(server, label, start, 3)
    assert [r["cost"] for r in rows] == [ONE_COST] * 3  # the streams were settled
    assert len(warnings_in(server, "budgeted")) == 1  # once per period
    reached = len(upstream.chat_requests)
    assert reached == 3

    oa, an = clients(setup, "budgeted", sent := [])
    for shape, call in refusals(oa, an).items():
        sent.clear()
        with pytest.raises((openai.APIStatusError, anthropic.APIStatusError)) as raised:
            call()
        error = raised.value
        assert len(sent) == 1, shape  # the SDK did not retry
        assert error.status_code == 402, shape
        assert error.response.headers["x-should-retry"] == "false", shape
        body = error.body if shape.startswith("messages") else {"error": error.body}
        if shape.startswith("messages"):
            assert body["type"] == "error" and body["error"]["type"] == "billing_error", shape
        else:
            assert body["error"]["code"] == "budget_exceeded", shape
        message = body["error"]["message"]
        assert message.startswith("budget exceeded: the day budget of " + label), message
        resets.add(period_window("day")[1].isoformat(timespec="seconds"))
        assert any(f"resets at {reset}" in message for reset in resets), (message, resets)
    assert len(upstream.chat_requests) == reached  # nothing more reached the upstream
    rows = rows_of(server, label, start, 9)
    assert [(r["status"], r["api"], r["stream"]) for r in rows[3:]] == [
        (402, "openai", False), (402, "openai", True), (402, "anthropic", False),
        (402, "anthropic", True), (402, "responses", False), (402, "responses", True)]
    assert 'class="state-exceeded"' in status_row(server, label)
