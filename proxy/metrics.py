"""Prometheus metrics: GET /metrics when METRICS_ENABLED=true (404 otherwise), behind
`Authorization: Bearer <METRICS_TOKEN>` when a token is set. Never under CORS (it is not an API
path).

- Per request, from the request log's record (`Metrics.observe()`, the Runtime's, called by
  `RequestLogWriter.log()`): requests, latency, time to first token, tokens, upstream errors.
- At scrape time: requests in flight, open streams, the account pool (accounts by state, slots
  in use, requests waiting for a slot) and the request log's own counters.

Each web process counts for itself (one Daphne process per replica): scrape every replica and
sum. prometheus_client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR) is not used.
Labels are bounded: the model is the catalogue id actually used (never the client's string),
the instance an admin-defined name.
"""

from __future__ import annotations

import hmac
import logging
import math
import threading
import time
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db.models import Count
from django.http import Http404, HttpRequest, HttpResponse
from django.utils.translation import gettext as _
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client import metrics as prometheus_metrics
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from iflow2api_lib.conf import setting
from iflow2api_lib.scope import RUNTIME_SCOPE_KEY

if TYPE_CHECKING:
    from accounts.pool import AccountPool
    from accounts.services import Routing
    from iflow2api_lib.snapshot import Snapshot
    from proxy.lifecycle import Lifecycle
    from proxy.requestlog import RequestLogWriter, RequestRecord

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320, 600)
TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64)
LABEL_MAX = 100


def _label(value: str | None) -> str:
    return (value or "-")[:LABEL_MAX]


def enabled() -> bool:
    return bool(setting("METRICS_ENABLED", False))


@dataclass(frozen=True, eq=False)  # compared and hashed as itself: a dict key per count
class Family:
    """A labelled counter, or a histogram when it has `buckets` (upper bounds; +Inf added)."""

    name: str
    doc: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = ()


REQUESTS = Family("iflow2api_requests", "API requests by client API, instance, model and status",
                  ("api", "instance", "model", "status"))
LATENCY = Family("iflow2api_request_duration_seconds",
                 "API request duration (streams: until the end)", ("instance", "model", "stream"),
                 LATENCY_BUCKETS)
TTFT = Family("iflow2api_time_to_first_token_seconds", "Streams: time until the first token",
              ("instance", "model"), TTFT_BUCKETS)
TOKENS = Family("iflow2api_tokens",
                "Tokens reported by the upstream, in (prompt) and out (completion)",
                ("instance", "model", "direction"))
CACHED_TOKENS = Family("iflow2api_cached_tokens",
                       "Input tokens the upstream read from its prompt cache (part of the tokens "
                       "in)", ("instance", "model"))
SPEND = Family("iflow2api_spend", "Cost of the requests from the usage and the model's prices, in "
               "the prices' currency (requests with an unknown cost are not counted)",
               ("instance", "model", "currency"))
UPSTREAM_ERRORS = Family("iflow2api_upstream_errors", "Requests that reached an upstream account "
                         "and failed, by provider and client status", ("provider", "status"))
FAMILIES = (REQUESTS, LATENCY, TTFT, TOKENS, CACHED_TOKENS, SPEND, UPSTREAM_ERRORS)

# A series: [total (a histogram's sum), created at (unix time), a histogram's count per bucket
# (not cumulative; +Inf last)...].
Series = list[float]


class Metrics:
    """A process's counters, in a CollectorRegistry of their own (the Runtime's; never
    prometheus_client's global REGISTRY, so two Runtimes in one process — tests — or another
    library registering metrics cannot clash). `routing`: the Runtime's routing snapshot, for
    the provider of a failed request without a database query.

    The counts are plain numbers under one lock, turned into metric families at scrape time
    (`_Counts`): prometheus_client's Counter and Histogram took a lock and several calls per
    increment, and observe() makes up to seven of them per request (~2.5 % of a request's CPU
    at c=50, paired against METRICS_ENABLED=false). The exposition is the same: series appear
    when first counted, with their _created time."""

    def __init__(self, routing: Snapshot[Routing] | None = None) -> None:
        self.routing = routing
        self.registry = registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        self._lock = threading.Lock()  # observe() runs on the loop, and in threads (sync code)
        self._series: dict[tuple[Family, tuple[str, ...]], Series] = {}
        registry.register(_Counts(self))

    def _count(self, family: Family, labels: tuple[str, ...], amount: float) -> None:
        series = self._series.get((family, labels))
        if series is None:
            series = self._series[(family, labels)] = [0.0, time.time()]
        series[0] += amount

    def _observe(self, family: Family, labels: tuple[str, ...], value: float) -> None:
        series = self._series.get((family, labels))
        if series is None:
            series = self._series[(family, labels)] = [
                0.0, time.time(), *([0] * (len(family.buckets) + 1))]
        series[0] += value
        series[2 + bisect_left(family.buckets, value)] += 1  # the first bound >= value

    def _provider(self, record: RequestRecord) -> str:
        """From the routing snapshot already in memory; never a database query on the hot
        path."""
        routing = self.routing.value if self.routing is not None else None
        if routing is None:
            return "unknown"
        model = routing.find_model(record.model) if record.model else None
        if model is not None:
            return model.provider
        account = next((a for a in routing.accounts if a.id == record.account_id), None)
        return account.provider if account is not None else "unknown"

    def observe(self, record: RequestRecord) -> None:
        """Counts one finished API request. Cheap, and never raises."""
        if not enabled():
            return
        try:
            instance, model = _label(record.instance), _label(record.model)
            latency = max(0, record.latency_ms) / 1000
            ttft = max(0, record.ttft_ms) / 1000 if record.ttft_ms is not None else None
            spend = float(record.cost) if record.cost else 0.0
            # 499: the client left; that is no upstream failure.
            failed = (record.account_id is not None and record.status >= 400
                      and record.status != 499)
            provider = self._provider(record) if failed else ""
            with self._lock:
                self._count(REQUESTS, (record.api, instance, model, str(record.status)), 1)
                self._observe(LATENCY, (instance, model, "true" if record.stream else "false"),
                              latency)
                if ttft is not None:
                    self._observe(TTFT, (instance, model), ttft)
                if record.tokens_in:
                    self._count(TOKENS, (instance, model, "in"), record.tokens_in)
                if record.tokens_out:
                    self._count(TOKENS, (instance, model, "out"), record.tokens_out)
                if record.tokens_cached:
                    self._count(CACHED_TOKENS, (instance, model), record.tokens_cached)
                if spend:
                    self._count(SPEND, (instance, model, _label(record.currency)), spend)
                if failed:
                    self._count(UPSTREAM_ERRORS, (provider, str(record.status)), 1)
        except Exception:
            log.debug("metrics: a request was not counted", exc_info=True)

    def families(self) -> list[Metric]:
        """The counters as metric families, in FAMILIES order (a scrape)."""
        with self._lock:
            taken = [(family, labels, list(series))
                     for (family, labels), series in self._series.items()]
        # As prometheus_client's own counters: no _created series once they are disabled
        # (PROMETHEUS_DISABLE_CREATED_SERIES, disable_created_metrics()).
        with_created = getattr(prometheus_metrics, "_use_created", True)
        out: dict[Family, Metric] = {}
        for family in FAMILIES:
            if family.buckets:
                out[family] = HistogramMetricFamily(family.name, family.doc,
                                                    labels=family.labels)
            else:
                out[family] = CounterMetricFamily(family.name, family.doc, labels=family.labels)
        for family, labels, series in taken:
            metric = out[family]
            if not family.buckets:
                metric.add_metric(labels, series[0],  # type: ignore[call-arg]
                                  created=series[1] if with_created else None)
                continue
            cumulative, buckets = 0.0, []
            for bound, count in zip((*family.buckets, math.inf), series[2:], strict=True):
                cumulative += count
                buckets.append((floatToGoString(bound), cumulative))
            metric.add_metric(labels, buckets, series[0])  # type: ignore[call-arg]
            if with_created:
                metric.samples.append(Sample(family.name + "_created", dict(zip(
                    family.labels, labels, strict=True)), series[1], None, None))
        return list(out.values())


class _Counts(Collector):
    """A Metrics' counters in its registry."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        yield from self.metrics.families()


# --- read at scrape time ------------------------------------------------------------------------


@dataclass
class PoolState:
    accounts: dict[tuple[str, str], int] = field(default_factory=dict)  # (provider, state)
    # (account id, provider, slots in use, limit)
    slots: list[tuple[str, str, int, int]] = field(default_factory=list)


def _account_counts() -> dict[tuple[str, str], int]:
    from django.db import close_old_connections

    from accounts.models import Account

    close_old_connections()
    counts: dict[tuple[str, str], int] = {}
    rows = Account.objects.values("provider", "state", "enabled").annotate(n=Count("id"))
    for row in rows:
        state = row["state"] if row["enabled"] else "disabled"
        key = (row["provider"], state)
        counts[key] = counts.get(key, 0) + row["n"]
    return counts


async def read_pool_state(pool: AccountPool, routing: Snapshot[Routing]) -> PoolState:
    """One query for the account states, and the slot count of each usable account with a
    concurrency limit (from Redis when REDIS_URL is set: the same for every replica)."""
    state = PoolState(accounts=await sync_to_async(_account_counts)())
    slots = pool.slots
    for account in (await routing.get()).accounts:
        if account.max_concurrency:
            used = await slots.busy(account)
            state.slots.append((str(account.id), account.provider, used, account.max_concurrency))
    return state


class LiveSources(Protocol):
    """What a scrape reads from the process's Runtime (proxy/runtime.py), named by its shape:
    the Runtime imports this module (its request log reports to observe()), not the reverse."""

    lifecycle: Lifecycle
    pool: AccountPool
    requests: RequestLogWriter
    metrics: Metrics
    routing: Snapshot[Routing]


class LiveCollector(Collector):
    """One scrape: the Runtime's counters (its Metrics' registry), then the gauges read now
    from it (in-flight requests, open streams, the pool, the request log's counters)."""

    def __init__(self, runtime: LiveSources, pool_state: PoolState | None) -> None:
        self.runtime = runtime
        self.pool_state = pool_state

    def collect(self) -> Iterator[Metric]:
        runtime = self.runtime
        yield from runtime.metrics.registry.collect()
        lifecycle = runtime.lifecycle
        yield GaugeMetricFamily("iflow2api_requests_in_flight",
                                "API requests being served by this process",
                                value=lifecycle.in_flight)
        yield GaugeMetricFamily("iflow2api_streams_active", "Open SSE streams in this process",
                                value=len(getattr(lifecycle, "_stop_signals", ())))
        yield GaugeMetricFamily("iflow2api_pool_waiting",
                                "Requests in this process waiting for an account slot",
                                value=runtime.pool.waiting)
        written = CounterMetricFamily("iflow2api_request_log_rows",
                                      "Request log rows: written, dropped (queue full) or failed",
                                      labels=["outcome"])
        for outcome in ("written", "dropped", "failed"):
            written.add_metric([outcome], getattr(runtime.requests.stats, outcome))
        yield written
        if self.pool_state is None:
            return
        accounts = GaugeMetricFamily("iflow2api_accounts", "Upstream accounts by state",
                                     labels=["provider", "state"])
        for (provider, state), count in sorted(self.pool_state.accounts.items()):
            accounts.add_metric([provider, state], count)
        yield accounts
        used = GaugeMetricFamily("iflow2api_pool_slots_in_use",
                                 "Busy slots of accounts with a concurrency limit",
                                 labels=["account_id", "provider"])
        limit = GaugeMetricFamily("iflow2api_pool_slots_limit",
                                  "Concurrency limit of accounts that have one",
                                  labels=["account_id", "provider"])
        for account_id, provider, busy, maximum in self.pool_state.slots:
            used.add_metric([account_id, provider], busy)
            limit.add_metric([account_id, provider], maximum)
        yield used
        yield limit


def exposition(runtime: LiveSources, pool_state: PoolState | None) -> CollectorRegistry:
    """What one scrape shows (a registry of its own: nothing of a scrape outlives it)."""
    scrape = CollectorRegistry(auto_describe=False)
    scrape.register(LiveCollector(runtime, pool_state))
    return scrape


# --- the endpoint -------------------------------------------------------------------------------


def _authorized(request: HttpRequest) -> bool:
    token = getattr(settings, "METRICS_TOKEN", "")
    if not token:
        return True
    scheme, _sep, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(),
                                                              token.encode())


async def metrics_view(request: HttpRequest) -> HttpResponse:
    if not enabled():
        raise Http404
    if not _authorized(request):
        response = HttpResponse(_("A metrics token is required."), status=401,
                                content_type="text/plain; charset=utf-8")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    # The process's Runtime, as the ASGI application put it in the scope (proxy/runtime.py).
    runtime = request.scope[RUNTIME_SCOPE_KEY]  # type: ignore[attr-defined]
    try:
        pool_state: PoolState | None = await read_pool_state(runtime.pool, runtime.routing)
    except Exception:  # the database or Redis away: serve the rest
        log.warning("metrics: could not read the account pool", exc_info=True)
        pool_state = None
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    response = HttpResponse(encoder(exposition(runtime, pool_state)), content_type=content_type)
    response["Cache-Control"] = "no-store"
    return response
