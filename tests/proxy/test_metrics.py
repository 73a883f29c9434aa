"""GET /metrics (proxy/metrics.py): off by default, behind a bearer token when one is set, and
counting what a real `iflow2api serve` did: requests, latency, time to first token, tokens,
upstream errors, the account pool."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime

import httpx
import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from proxy import metrics
from proxy.requestlog import RequestRecord
from tests.conftest import FAKE_KEY
from tests.fakes import scenarios as sc
from tests.servers import GatewayServer

TOKEN = "metrics-scrape-token-42"
MESSAGES = [{"role": "user", "content": "hi"}]


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: dict, name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


@pytest.fixture(scope="module")
def server(fake_iflow) -> Iterator[GatewayServer]:
    env = {"IFLOW_API_KEY": FAKE_KEY, "IFLOW_BASE_URL": fake_iflow.base_url,
           "METRICS_ENABLED": "true", "METRICS_TOKEN": TOKEN}
    with GatewayServer(env) as gateway:
        yield gateway


def scrape(server: GatewayServer, **headers: str) -> httpx.Response:
    return httpx.get(server.url + "/metrics", headers=headers, timeout=10)


def test_metrics_are_off_by_default(gateway):
    assert scrape(gateway).status_code == 404
    assert scrape(gateway, authorization="Bearer anything").status_code == 404


def test_the_token_is_required_when_set_and_there_is_no_cors(server):
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": TOKEN},
                    {"authorization": f"Basic {TOKEN}"}):
        response = scrape(server, **headers, origin="https://elsewhere.example")
        assert response.status_code == 401, headers
        assert response.headers["www-authenticate"].startswith("Bearer")
    response = scrape(server, authorization=f"Bearer {TOKEN}", origin="https://elsewhere.example")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "access-control-allow-origin" not in response.headers
    assert response.headers["cache-control"] == "no-store"


def test_requests_tokens_latency_and_errors_are_counted(server, upstream):
    post = {"timeout": 30}
    body = {"model": "glm-5", "messages": MESSAGES}
    upstream.script(sc.text("Hello", usage={"prompt_tokens": 11, "completion_tokens": 3,
                                            "total_tokens": 14}))
    assert httpx.post(server.url + "/v1/chat/completions", json=body, **post).status_code == 200
    upstream.script(sc.slow(sc.text("one two three", chunks=3, usage={
        "prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25}), first_delay=0.3))
    stream = httpx.post(server.url + "/v1/chat/completions", json={**body, "stream": True},
                        **post)
    assert stream.status_code == 200 and "[DONE]" in stream.text
    upstream.script(sc.http_error(500, {"error": {"message": "upstream broke"}}))
    assert httpx.post(server.url + "/v1/chat/completions", json=body, **post).status_code == 502

    found = samples(scrape(server, authorization=f"Bearer {TOKEN}").text)
    common = {"instance": "default", "model": "glm-5"}
    assert value(found, "iflow2api_requests_total", api="openai", status="200", **common) == 2
    assert value(found, "iflow2api_requests_total", api="openai", status="502", **common) == 1
    assert value(found, "iflow2api_tokens_total", direction="in", **common) == 31
    assert value(found, "iflow2api_tokens_total", direction="out", **common) == 8
    assert value(found, "iflow2api_request_duration_seconds_count", stream="false",
                 **common) == 2
    assert value(found, "iflow2api_request_duration_seconds_count", stream="true", **common) == 1
    assert value(found, "iflow2api_time_to_first_token_seconds_count", **common) == 1
    assert value(found, "iflow2api_time_to_first_token_seconds_sum", **common) >= 0.3
    assert value(found, "iflow2api_time_to_first_token_seconds_bucket", le="0.25",
                 **common) == 0
    assert value(found, "iflow2api_upstream_errors_total", provider="iflow", status="502") == 1
    # At scrape time: nothing in flight, the environment's account, its slot (limit 1).
    assert value(found, "iflow2api_requests_in_flight") == 0
    assert value(found, "iflow2api_streams_active") == 0
    assert value(found, "iflow2api_pool_waiting") == 0
    assert value(found, "iflow2api_accounts", provider="iflow", state="active") == 1
    [(slot_labels, in_use)] = [(dict(k[1]), v) for k, v in found.items()
                               if k[0] == "iflow2api_pool_slots_in_use"]
    assert slot_labels["provider"] == "iflow" and in_use == 0
    assert value(found, "iflow2api_pool_slots_limit", **slot_labels) >= 1
    assert ("iflow2api_request_log_rows_total", frozenset({("outcome", "dropped")})) in found
    assert value(found, "process_resident_memory_bytes") > 0


def test_spend_and_cached_tokens_of_streams_are_counted(server, upstream):
    """A priced model's streams (chat and Messages) add their cost and cached tokens; an
    unpriced model's add cached tokens and no spend."""
    server.cli("setprice", "kimi-k2", "--input", "0.27", "--cached-input", "0.07",
               "--output", "1.10", "--currency", "USD")
    # Another process changed the prices: the server's routing snapshot (which holds them) may
    # have been loaded just before, and lives 2 s (accounts/services.py SNAPSHOT_TTL_SECONDS).
    time.sleep(2.3)
    usage = {"prompt_tokens": 1200, "completion_tokens": 50, "total_tokens": 1250,
             "prompt_cache_hit_tokens": 1024}  # DeepSeek's field: 0.0001742 USD at these prices
    upstream.default = lambda r: sc.text("ok", usage=usage)
    before = samples(scrape(server, authorization=f"Bearer {TOKEN}").text)
    for model in ("kimi-k2", "kimi-k2", "glm-5"):
        for path, body in (("/v1/chat/completions", {"messages": MESSAGES}),
                           ("/v1/messages", {"messages": MESSAGES, "max_tokens": 64})):
            answer = httpx.post(server.url + path, timeout=30,
                                json={**body, "model": model, "stream": True})
            assert answer.status_code == 200 and "event: error" not in answer.text
    found = samples(scrape(server, authorization=f"Bearer {TOKEN}").text)

    def added(name: str, **labels: str) -> float:
        return (value(found, name, **labels) or 0) - (value(before, name, **labels) or 0)

    kimi, glm = {"instance": "default", "model": "kimi-k2"}, {"instance": "default",
                                                            "model": "glm-5"}
    assert added("iflow2api_spend_total", currency="USD", **kimi) == pytest.approx(
        4 * 0.0001742)
    assert added("iflow2api_cached_tokens_total", **kimi) == 4 * 1024
    assert added("iflow2api_cached_tokens_total", **glm) == 2 * 1024
    assert not [k for k in found if k[0] == "iflow2api_spend_total"
                and ("model", "glm-5") in k[1]]  # cost unknown: never a spend of 0

def test_responses_requests_are_counted_as_api_responses(server, upstream):
    labels = {"api": "responses", "instance": "default", "model": "glm-5"}
    before = samples(scrape(server, authorization=f"Bearer {TOKEN}").text)
    upstream.script(sc.text("Hello", usage={"prompt_tokens": 7, "completion_tokens": 2,
                                            "total_tokens": 9}),
                    sc.text("streamed"))
    body = {"model": "glm-5", "input": "hi"}
    assert httpx.post(server.url + "/v1/responses", json=body, timeout=30).status_code == 200
    stream = httpx.post(server.url + "/v1/responses", json={**body, "stream": True}, timeout=30)
    assert stream.status_code == 200 and "response.completed" in stream.text
    assert httpx.post(server.url + "/v1/responses", json={**body, "model": "nope"},
                      timeout=30).status_code == 404
    found = samples(scrape(server, authorization=f"Bearer {TOKEN}").text)

    def more(name: str, **labels: str) -> float:
        return (value(found, name, **labels) or 0) - (value(before, name, **labels) or 0)

    assert more("iflow2api_requests_total", status="200", **labels) == 2
    # A refusal before a model was resolved (here: an unknown model) is counted without one.
    assert more("iflow2api_requests_total", api="responses", status="404",
                instance="default", model="-") == 1
    tokens_in = {"instance": "default", "model": "glm-5", "direction": "in"}
    assert more("iflow2api_tokens_total", **tokens_in) >= 7
    assert value(found, "iflow2api_streams_active") == 0


# --- observe() in this process ------------------------------------------------------------------


def record(**fields: object) -> RequestRecord:
    base: dict = {"started_at": timezone.now(), "api": "anthropic", "model": "unit-model",
                  "instance": "unit", "status": 200}
    return RequestRecord(**{**base, **fields})


def count(counters: metrics.Metrics, **labels: str) -> float:
    return counters.registry.get_sample_value("iflow2api_requests_total", labels) or 0.0


def test_observe_counts_only_when_enabled_and_never_raises(settings):
    labels = {"api": "anthropic", "instance": "unit", "model": "unit-model", "status": "200"}
    counters = metrics.Metrics()  # a Runtime's
    settings.METRICS_ENABLED = False
    counters.observe(record())
    assert count(counters, **labels) == 0
    settings.METRICS_ENABLED = True
    counters.observe(record(tokens_in=4, tokens_out=2, ttft_ms=120, stream=True))
    assert count(counters, **labels) == 1
    assert counters.registry.get_sample_value(
        "iflow2api_tokens_total", {"instance": "unit", "model": "unit-model",
                                   "direction": "in"}) == 4
    # A client that left is no upstream error; a broken record is skipped, not raised.
    counters.observe(record(account_id=1, status=499))
    assert counters.registry.get_sample_value(
        "iflow2api_upstream_errors_total", {"provider": "unknown", "status": "499"}) is None
    counters.observe(record(latency_ms="soon"))  # type: ignore[arg-type]
    counters.observe(RequestRecord(started_at=datetime.now(), api="openai", model="m" * 500))
    assert count(counters, api="openai", instance="default", model="m" * 100, status="200") == 1


def test_each_runtime_counts_in_a_registry_of_its_own(settings):
    """Two Runtimes in one process (tests, or a second ASGI application) never share counters,
    and nothing lands in prometheus_client's global REGISTRY."""
    from prometheus_client import REGISTRY as GLOBAL

    from proxy.runtime import Runtime

    settings.METRICS_ENABLED = True
    one, two = Runtime.build(redis_url=""), Runtime.build(redis_url="")
    labels = {"api": "openai", "instance": "own", "model": "own-model", "status": "200"}
    one.requests.on_record(record(api="openai", instance="own", model="own-model"))
    assert count(one.metrics, **labels) == 1  # the request log reports to its Runtime's
    assert count(two.metrics, **labels) == 0
    assert GLOBAL.get_sample_value("iflow2api_requests_total", labels) is None


def test_series_are_made_once_and_only_when_first_counted(settings):
    """observe() keeps each labelled series it made and counts into it; a series appears only
    once something counted in it."""
    settings.METRICS_ENABLED = True
    counters = metrics.Metrics()
    tokens = {"instance": "unit", "model": "unit-model"}
    counters.observe(record(tokens_in=4))
    assert counters.registry.get_sample_value(
        "iflow2api_tokens_total", {**tokens, "direction": "out"}) is None
    made = dict(counters._series)
    counters.observe(record(tokens_in=6, status=503))
    counters.observe(record(tokens_in=1))
    assert all(counters._series[key] is series for key, series in made.items())
    assert len(counters._series) == len(made) + 1  # the 503's request series
    labels = {"api": "anthropic", **tokens}
    assert count(counters, **labels, status="200") == 2
    assert count(counters, **labels, status="503") == 1
    assert counters.registry.get_sample_value(
        "iflow2api_tokens_total", {**tokens, "direction": "in"}) == 11
    assert counters.registry.get_sample_value(
        "iflow2api_request_duration_seconds_count", {**tokens, "stream": "false"}) == 3


def test_the_exposition_is_what_prometheus_client_counters_give(settings):
    """The counts kept as plain numbers read out as prometheus_client's own Counter and
    Histogram fed the same requests would (every bucket edge, the sums, the _created series),
    in both exposition formats."""
    import re
    from decimal import Decimal

    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
    from prometheus_client.metrics import disable_created_metrics, enable_created_metrics
    from prometheus_client.openmetrics.exposition import generate_latest as openmetrics

    settings.METRICS_ENABLED = True
    counters = metrics.Metrics()
    reference = CollectorRegistry()
    kinds = {family: (Histogram(family.name, family.doc, family.labels, registry=reference,
                                buckets=family.buckets) if family.buckets else
                      Counter(family.name, family.doc, family.labels, registry=reference))
             for family in metrics.FAMILIES}
    records = [  # edges of the buckets (0.1, 0.25, 600; 0.05, 64), beyond them, nothing
        record(latency_ms=100, tokens_in=10, tokens_out=5),
        record(latency_ms=250, stream=True, ttft_ms=50, tokens_cached=2, cost=Decimal("0.5"),
               currency="USD"),
        record(latency_ms=600_000, ttft_ms=64_000, stream=True, status=502, account_id=3),
        record(latency_ms=600_001, ttft_ms=64_001, stream=True, api="openai"),
        record(latency_ms=0, status=499, account_id=1), record(latency_ms=101, model="other"),
    ]
    for one in records:
        counters.observe(one)
        instance, model = one.instance, one.model
        kinds[metrics.REQUESTS].labels(one.api, instance, model, str(one.status)).inc()
        kinds[metrics.LATENCY].labels(instance, model, str(one.stream).lower()).observe(
            one.latency_ms / 1000)
        if one.ttft_ms is not None:
            kinds[metrics.TTFT].labels(instance, model).observe(one.ttft_ms / 1000)
        for direction, tokens in (("in", one.tokens_in), ("out", one.tokens_out)):
            if tokens:
                kinds[metrics.TOKENS].labels(instance, model, direction).inc(tokens)
        if one.tokens_cached:
            kinds[metrics.CACHED_TOKENS].labels(instance, model).inc(one.tokens_cached)
        if one.cost:
            kinds[metrics.SPEND].labels(instance, model, one.currency).inc(float(one.cost))
        if one.status == 502:
            kinds[metrics.UPSTREAM_ERRORS].labels("unknown", "502").inc()

    def ours_of(text: bytes) -> list[str]:
        lines = [line for line in text.decode().splitlines() if "iflow2api_" in line]
        return [re.sub(r"(_created\{.*\}) \S+$", r"\1 <time>", line) for line in lines]

    for exposition in (generate_latest, openmetrics):
        ours = ours_of(exposition(counters.registry))
        assert ours == ours_of(exposition(reference))
        assert any('le="0.25"' in line and line.endswith(" 2.0") for line in ours)
    assert any("_created" in line for line in ours_of(generate_latest(counters.registry)))
    disable_created_metrics()
    try:
        ours = ours_of(generate_latest(counters.registry))
        assert ours and not [line for line in ours if "_created" in line]
    finally:
        enable_created_metrics()
