"""The usage page (staff with view access to the request log): requests, tokens or spend per
day, model, account, client key and instance over the last 7 or 30 days, as server-rendered SVG
bars, with the prompt cache's hit rate (cached / input tokens). Spend is shown in one currency
at a time (the prices' currencies are never converted); requests without a cost count as
"cost unknown", never as zero."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import Avg, Count, F, Q, QuerySet, Sum
from django.db.models.functions import TruncDate
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from proxy.models import RequestLog

RANGES = (7, 30)
METRICS = {"requests": gettext_lazy("Requests"), "tokens": gettext_lazy("Tokens (in + out)"),
           "spend": gettext_lazy("Spend")}
TOP = 15
ERRORS = ~Q(status__range=(200, 299))
UNPRICED = Q(status__range=(200, 299), cost__isnull=True)
CHART_WIDTH = 720
CHART_HEIGHT = 180
LABEL_SPACE = 18
BASELINE = CHART_HEIGHT - LABEL_SPACE


@dataclass
class Bar:
    label: str
    requests: int
    errors: int
    tokens_in: int
    tokens_out: int
    cached: int = 0
    spend: Decimal = Decimal(0)
    unpriced: int = 0  # answered requests whose cost is unknown
    money: bool = False  # the value is spend
    value: int | Decimal = 0
    share: float = 0.0  # of the largest value, 0–100
    error_share: float = 0.0
    # the per-day column chart
    x: float = 0.0
    width: float = 0.0
    height: float = 0.0
    error_height: float = 0.0
    show_label: bool = True

    @property
    def tokens(self) -> int:
        return self.tokens_in + self.tokens_out

    @property
    def top(self) -> float:
        return round(BASELINE - self.height, 2)

    @property
    def error_top(self) -> float:
        return round(BASELINE - self.error_height, 2)

    @property
    def center(self) -> float:
        return self.x + self.width / 2

    @property
    def value_text(self) -> str:
        return money(self.value) if self.money else f"{self.value:,}"

    @property
    def cache_rate_text(self) -> str:
        return cache_rate(self.cached, self.tokens_in)

    @property
    def errors_text(self) -> str:
        return f"{self.errors:,}"

    @property
    def summary(self) -> str:
        text = (_("%(label)s: %(requests)s requests, %(errors)s errors, %(input)s tokens in, "
                  "%(output)s tokens out")
                % {"label": self.label, "requests": f"{self.requests:,}",
                   "errors": f"{self.errors:,}", "input": f"{self.tokens_in:,}",
                   "output": f"{self.tokens_out:,}"})
        text += ", " + _("cache hit rate %(rate)s") % {"rate": self.cache_rate_text}
        if self.money:
            text += ", " + _("spend %(spend)s") % {"spend": money(self.spend)}
            if self.unpriced:
                text += ", " + _("cost unknown for %(count)s requests") % {
                    "count": f"{self.unpriced:,}"}
        return text


def money(value: Decimal | int) -> str:
    """Small amounts keep their digits (a request may cost 0.0002)."""
    value = Decimal(value)
    return f"{value:,.2f}" if value >= 100 else f"{value:,.4f}" if value >= 1 else \
        f"{value:,.6f}"


def cache_rate(cached: int, tokens_in: int) -> str:
    return f"{100 * cached / tokens_in:.1f} %" if tokens_in else "–"


def _sums(currency: str) -> dict[str, Any]:
    return {"requests": Count("id"), "errors": Count("id", filter=ERRORS),
            "input": Sum("tokens_in", default=0), "output": Sum("tokens_out", default=0),
            "cached": Sum("tokens_cached", default=0),
            "spend": Sum("cost", filter=Q(cost_currency=currency), default=Decimal(0)),
            "unpriced": Count("id", filter=UNPRICED)}


def _stats(rows: QuerySet, currency: str) -> QuerySet:
    return rows.annotate(**_sums(currency))


def _bar(label: str, row: dict[str, Any], metric: str) -> Bar:
    return Bar(label, row["requests"], row["errors"], row["input"] or 0, row["output"] or 0,
               cached=row["cached"] or 0, spend=row["spend"] or Decimal(0),
               unpriced=row["unpriced"], money=metric == "spend")


def _scale(bars: list[Bar], metric: str) -> list[Bar]:
    for bar in bars:
        bar.value = {"requests": bar.requests, "spend": bar.spend}.get(metric, bar.tokens)
    top = max((bar.value for bar in bars), default=0) or 1
    for bar in bars:
        bar.share = round(float(100 * bar.value / top), 2)
        if metric == "requests":
            bar.error_share = round(100 * bar.errors / top, 2)
    return bars


def _grouped(rows: QuerySet, field: str, metric: str, blank: str, currency: str) -> list[Bar]:
    order = {"requests": "-requests", "spend": "-spend"}.get(metric, "-tokens")
    grouped = (_stats(rows.values(field), currency)
               .annotate(tokens=F("input") + F("output"))
               .order_by(order, field)[:TOP])
    return _scale([_bar(str(row[field] or blank), row, metric) for row in grouped], metric)


def _api_names(bars: list[Bar]) -> list[Bar]:
    """openai / anthropic / responses as the request log names them (OpenAI Responses…)."""
    names = dict(RequestLog.Api.choices)
    for bar in bars:
        bar.label = str(names.get(bar.label, bar.label))
    return bars


def _per_day(rows: QuerySet, first: dt.date, days: int, metric: str, currency: str
             ) -> list[Bar]:
    tz = timezone.get_current_timezone()
    found = {row["day"]: row for row in _stats(
        rows.annotate(day=TruncDate("started_at", tzinfo=tz)).values("day"),
        currency).order_by("day")}
    empty = {"requests": 0, "errors": 0, "input": 0, "output": 0, "cached": 0,
             "spend": Decimal(0), "unpriced": 0}
    bars = _scale([_bar(f"{day:%m-%d}", found.get(day, empty), metric) for day in
                   (first + dt.timedelta(days=i) for i in range(days))], metric)
    slot = CHART_WIDTH / days
    every = 1 if days <= 10 else 5
    usable = BASELINE - 14  # room for the value above the highest bar
    for i, bar in enumerate(bars):
        bar.x, bar.width = round(i * slot + slot * 0.15, 2), round(slot * 0.7, 2)
        bar.height = round(usable * bar.share / 100, 2)
        bar.error_height = round(usable * bar.error_share / 100, 2)
        bar.show_label = i % every == 0 or i == days - 1
    return bars


def _number(value: float | None, unit: str = "") -> str:
    return "–" if value is None else f"{round(value):,}{unit}"


def usage(request: HttpRequest) -> HttpResponse:
    if not request.user.has_perm("proxy.view_requestlog"):
        raise PermissionDenied
    days = int(request.GET["days"]) if request.GET.get("days") in {"7", "30"} else RANGES[0]
    metric = request.GET.get("metric") if request.GET.get("metric") in METRICS else "requests"
    first = timezone.localdate() - dt.timedelta(days=days - 1)
    since = timezone.make_aware(dt.datetime.combine(first, dt.time.min))
    rows = RequestLog.objects.filter(started_at__gte=since)
    # The currencies spent in this range, the most used first; one is shown at a time.
    currencies = [row["cost_currency"] for row in rows.exclude(cost__isnull=True)
                  .values("cost_currency").annotate(n=Count("id")).order_by("-n",
                                                                            "cost_currency")]
    asked = request.GET.get("currency", "")
    currency = asked if asked in currencies else (currencies[0] if currencies else "")
    totals = rows.aggregate(**_sums(currency), latency=Avg("latency_ms"), ttft=Avg("ttft_ms"))
    spend = {"spend": money(totals.pop("spend")), "currency": currency,
             "cache_rate": cache_rate(totals["cached"], totals["input"]),
             "unpriced": f"{totals.pop('unpriced'):,}"}
    context = {
        **admin.site.each_context(request),
        "title": _("Usage"),
        "opts": RequestLog._meta,
        "days": days,
        "ranges": RANGES,
        "metric": metric,
        "metrics": METRICS,
        "metric_name": METRICS[metric],
        "since": first,
        "since_start": since,
        "totals": {name: _number(value, " ms" if name in {"latency", "ttft"} else "")
                   for name, value in totals.items()},
        "spend": spend,
        "currencies": currencies,
        "chart_width": CHART_WIDTH,
        "chart_height": CHART_HEIGHT,
        "baseline": BASELINE,
        "per_day": _per_day(rows, first, days, metric, currency),
        # (heading, first column, bars)
        "charts": [
            (_("Per model"), _("Model"), _grouped(rows, "model", metric, _("(none)"), currency)),
            (_("Per account"), _("Account"),
             _grouped(rows, "account__label", metric, _("(no account)"), currency)),
            (_("Per client key"), _("Client key"),
             _grouped(rows, "key_label", metric, _("(no key)"), currency)),
            (_("Per instance"), _("Instance"),
             _grouped(rows, "instance", metric, _("(none)"), currency)),
            (_("Per API"), _("API"), _api_names(
                _grouped(rows, "api", metric, _("(none)"), currency))),
        ],
    }
    return render(request, "proxy/usage.html", context)
