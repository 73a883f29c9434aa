"""Prices and the cost of each request (issue 18): `iflow2api setprice` on a real server's
database, the cost in the request log from the upstream's usage (cached tokens priced as
cached), "cost unknown" (None, never 0) for an unpriced model, the Prometheus counters."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import datetime
from decimal import Decimal

import httpx
import pytest
from django.utils import timezone

from accounts.services import SNAPSHOT_TTL_SECONDS
from proxy import metrics
from proxy.requestlog import RequestRecord
from tests.fakes import scenarios as sc
from tests.proxy.test_requestlog import rows_since
from tests.servers import ROOT, GatewayServer

MESSAGES = [{"role": "user", "content": "hi"}]
DEEPSEEK = {"prompt_tokens": 1200, "completion_tokens": 50, "total_tokens": 1250,
            "prompt_cache_hit_tokens": 1024, "prompt_cache_miss_tokens": 176}


def setprice(server: GatewayServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "iflow2api_site.cli", "setprice", *args],
                          cwd=ROOT, env=server.env, capture_output=True, text=True, timeout=60)


def cost_of(server: GatewayServer, start: datetime) -> tuple[str | None, str]:
    [row] = rows_since(server, start)
    code = f"from proxy.models import RequestLog\nr = RequestLog.objects.get(pk={row['id']})\n" \
           "print(r.cost, r.cost_currency or '-')"
    cost, currency = server.shell(code).strip().splitlines()[-1].split()
    return (None if cost == "None" else cost), currency


def chat(server: GatewayServer, model: str = "glm-5") -> httpx.Response:
    return httpx.post(server.url + "/v1/chat/completions", timeout=30,
                      json={"model": model, "messages": MESSAGES})


def test_setprice_then_each_request_has_its_cost(gateway, upstream):
    try:
        done = setprice(gateway, "glm-5", "--input", "0.27", "--cached-input", "0.07",
                        "--output", "1.10", "--currency", "usd")
        assert done.returncode == 0, done.stderr
        assert "input 0.27, cached input 0.07" in done.stdout and "USD" in done.stdout
        shown = setprice(gateway, "glm-5")  # no options: shows them
        assert "output 1.1" in shown.stdout and "priced" in shown.stdout
        upstream.script(sc.text("ok", usage=DEEPSEEK))
        # The CLI is another process: the server's routing snapshot (the prices) takes the
        # change within its TTL. A faster machine made the chat land inside it.
        time.sleep(SNAPSHOT_TTL_SECONDS + 0.2)
        start = timezone.now()
        assert chat(gateway).status_code == 200
        # 176 × 0.27 + 1024 × 0.07 + 50 × 1.10 = 174.20 per million tokens
        assert cost_of(gateway, start) == ("0.0001742000", "USD")
    finally:
        assert setprice(gateway, "glm-5", "--clear").returncode == 0


def test_an_unpriced_model_has_no_cost_not_zero(gateway, upstream):
    cleared = setprice(gateway, "glm-5", "--clear")
    assert 'cost unknown' in cleared.stdout
    upstream.script(sc.text("ok", usage=DEEPSEEK))
    start = timezone.now()
    assert chat(gateway).status_code == 200
    assert cost_of(gateway, start) == (None, "-")


@pytest.mark.parametrize("args", [
    ("no-such-model", "--input", "1"),
    ("glm-5", "--input", "-1"),
    ("glm-5", "--input", "cheap"),
    ("glm-5", "--output", "0.0000001"),  # more than 6 decimals
    ("glm-5", "--currency", "dollars"),
])
def test_setprice_refuses_bad_input_clearly(gateway, args):
    done = setprice(gateway, *args)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr and done.stderr.strip()


def test_spend_and_cached_tokens_are_prometheus_counters(settings):
    settings.METRICS_ENABLED = True
    labels = {"instance": "unit-cost", "model": "priced-model"}
    counters = metrics.Metrics()  # a Runtime's
    counters.observe(RequestRecord(started_at=datetime.now(), api="openai", model="priced-model",
                                   instance="unit-cost", tokens_in=1200, tokens_cached=1024,
                                   cost=Decimal("0.0001742"), currency="USD"))
    counters.observe(RequestRecord(started_at=datetime.now(), api="openai", model="priced-model",
                                   instance="unit-cost", tokens_in=10, cost=None))
    sample = counters.registry.get_sample_value
    assert sample("iflow2api_cached_tokens_total", labels) == 1024
    assert sample("iflow2api_spend_total", {**labels, "currency": "USD"}) == pytest.approx(
        0.0001742)
