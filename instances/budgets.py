"""Budgets: what each key and instance may spend per day, week or month, and what it spent.

The spend of a budget's current period is a counter kept in Redis when REDIS_URL is set (one
atomic HINCRBY per request, so every web process sees the same sum), in this process
otherwise. A counter starts from the request log's sum for the period (after a restart, or
when Redis lost it). Money is counted in integer units of 1e-10 (the request log's precision):
no float ever adds up costs. The proxy checks and settles them (proxy/budgets.py)."""

from __future__ import annotations

import calendar
import datetime as dt
import logging
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Protocol

from django.apps import apps
from django.db import close_old_connections
from django.db.models import Q, Sum
from django.utils import timezone

from accounts import config_version
from iflow2api_lib.scope import runtime_of
from iflow2api_lib.snapshot import Snapshot

if TYPE_CHECKING:
    from iflow2api_lib.redis_client import SharedRedis
    from instances.models import Budget

log = logging.getLogger(__name__)

UNIT = Decimal("1e-10")  # one counter unit of money
SNAPSHOT_TTL_SECONDS = 2.0


@dataclass(frozen=True)
class BudgetRef:
    id: int
    scope: str  # "key" | "instance"
    owner_id: int  # the key's or the instance's id
    instance_name: str  # for the request log's rows
    key_label: str  # "" for an instance budget
    period: str  # "day" | "week" | "month"
    spend_limit: Decimal | None
    currency: str
    token_limit: int | None
    warn_percent: int

    @property
    def owner(self) -> str:
        return self.key_label or self.instance_name


@dataclass(frozen=True)
class Spent:
    money: Decimal  # in the budget's currency
    tokens: int

    def share(self, budget: BudgetRef) -> float:
        """The larger of the spend's and the tokens' share of their limits (0 … 1+)."""
        shares = [0.0]
        if budget.spend_limit:
            shares.append(float(self.money / budget.spend_limit))
        elif budget.spend_limit is not None:  # a zero limit: nothing may be spent
            shares.append(1.0)
        if budget.token_limit is not None:
            shares.append(self.tokens / budget.token_limit if budget.token_limit else 1.0)
        return max(shares)

    def exceeded(self, budget: BudgetRef) -> bool:
        return ((budget.spend_limit is not None and self.money >= budget.spend_limit)
                or (budget.token_limit is not None and self.tokens >= budget.token_limit))


def period_window(period: str, now: dt.datetime | None = None) -> tuple[dt.datetime, dt.datetime]:
    """The current period's start and end (the next reset), in the server's time zone."""
    local = timezone.localtime(now)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        start = midnight
        end = start + dt.timedelta(days=1)
    elif period == "week":
        start = midnight - dt.timedelta(days=local.weekday())
        end = start + dt.timedelta(days=7)
    else:
        start = midnight.replace(day=1)
        days = calendar.monthrange(start.year, start.month)[1]
        end = start + dt.timedelta(days=days)
    # Back through naive local times: a DST change inside the period keeps midnight midnight.
    tz = timezone.get_current_timezone()
    return (timezone.make_aware(start.replace(tzinfo=None), tz),
            timezone.make_aware(end.replace(tzinfo=None), tz))


def ref_of(row: Budget) -> BudgetRef | None:
    if row.key is not None:
        key = row.key
        label = f"{key.name} ({key.prefix}…)" if key.name else f"{key.prefix}…"  # KeyRef.label
        scope, owner, instance = "key", key.pk, key.instance.name
    elif row.instance is not None:
        scope, owner, instance, label = "instance", row.instance.pk, row.instance.name, ""
    else:
        return None
    return BudgetRef(
        id=row.pk, scope=scope, owner_id=owner, instance_name=instance, key_label=label,
        period=row.period, spend_limit=row.spend_limit, currency=row.currency.upper(),
        token_limit=row.token_limit, warn_percent=row.warn_percent)


def load_budgets() -> dict[tuple[str, int], list[BudgetRef]]:
    from instances.models import Budget

    close_old_connections()
    found: dict[tuple[str, int], list[BudgetRef]] = {}
    rows = Budget.objects.filter(enabled=True).select_related("key", "instance", "key__instance")
    for ref in filter(None, map(ref_of, rows)):
        found.setdefault((ref.scope, ref.owner_id), []).append(ref)
    return found


def spent_now(row: Budget) -> tuple[BudgetRef, Spent, dt.datetime] | None:
    """A budget's spend in its current period from the request log, and the next reset (the
    admin and the live status page; sync ORM)."""
    ref = ref_of(row)
    if ref is None:
        return None
    start, end = period_window(ref.period)
    return ref, spent_in_log(ref, start, end), end


class HoldsBudgets(Protocol):
    """What holds a process's budget store: its Runtime (proxy/runtime.py)."""

    budgets: LocalBudgets | RedisBudgets


def invalidate_budgets(request: object) -> None:
    """Budgets changed in the admin: the store of the process serving `request` re-reads them
    at once (when the request came through the gateway's ASGI app), the others within
    SNAPSHOT_TTL_SECONDS."""
    runtime: HoldsBudgets | None = runtime_of(request)
    if runtime is not None:
        runtime.budgets.table.invalidate()


def spent_in_log(budget: BudgetRef, start: dt.datetime, end: dt.datetime) -> Spent:
    """The period's spend as the request log has it (sync ORM): the admin's figures, and where
    a counter starts from."""
    rows = apps.get_model("proxy", "RequestLog").objects.filter(
        started_at__gte=start, started_at__lt=end, instance=budget.instance_name)
    if budget.scope == "key":
        rows = rows.filter(key_label=budget.key_label)
    sums = rows.aggregate(
        money=Sum("cost", filter=Q(cost_currency=budget.currency), default=Decimal(0)),
        tokens_in=Sum("tokens_in", default=0), tokens_out=Sum("tokens_out", default=0))
    return Spent(sums["money"] or Decimal(0), (sums["tokens_in"] or 0) + (sums["tokens_out"] or 0))


def to_units(money: Decimal) -> int:
    return int((money / UNIT).to_integral_value())


class BudgetStore:
    """A process's budgets (a snapshot of the enabled ones, read every few seconds) and which
    of their periods it warned about; the subclasses keep the spend counters."""

    def __init__(self) -> None:
        self.table: Snapshot[dict[tuple[str, int], list[BudgetRef]]] = Snapshot(
            load_budgets, SNAPSHOT_TTL_SECONDS, version=config_version.read)
        self.warned: set[tuple[int, int]] = set()  # (budget, period start) logged as near

    async def budgets_for(self, instance_id: int, key_id: int | None) -> list[BudgetRef]:
        table = await self.table.get()
        return [*table.get(("key", key_id or 0), ()), *table.get(("instance", instance_id), ())]


class LocalBudgets(BudgetStore):
    """Counters of this process (no REDIS_URL)."""

    def __init__(self) -> None:
        super().__init__()
        self.counters: dict[tuple[int, int], list[int]] = {}  # (budget, period start) → [u, t]

    async def _counter(self, budget: BudgetRef, start: dt.datetime,
                       end: dt.datetime) -> list[int]:
        key = (budget.id, int(start.timestamp()))
        counter = self.counters.get(key)
        if counter is None:
            from asgiref.sync import sync_to_async

            spent = await sync_to_async(spent_in_log)(budget, start, end)
            counter = self.counters.setdefault(key, [to_units(spent.money), spent.tokens])
            for old in [k for k in self.counters if k[0] == budget.id and k != key]:
                del self.counters[old]  # past periods
        return counter

    async def read(self, budget: BudgetRef, start: dt.datetime, end: dt.datetime) -> Spent:
        units, tokens = await self._counter(budget, start, end)
        return Spent(units * UNIT, tokens)

    async def add(self, budget: BudgetRef, start: dt.datetime, end: dt.datetime, money: Decimal,
                  tokens: int) -> Spent:
        counter = await self._counter(budget, start, end)
        counter[0] += to_units(money)
        counter[1] += tokens
        return Spent(counter[0] * UNIT, counter[1])


class RedisBudgets(BudgetStore):
    """Counters in the shared Redis: a hash per budget and period, kept a day past its end."""

    def __init__(self, redis: SharedRedis) -> None:
        super().__init__()
        self.redis = redis

    def _key(self, budget: BudgetRef, start: dt.datetime) -> str:
        return self.redis.key("budget", budget.id, int(start.timestamp()))

    async def _ensure(self, budget: BudgetRef, start: dt.datetime, end: dt.datetime) -> str:
        client, key = self.redis.client(), self._key(budget, start)
        if not await client.exists(key):
            from asgiref.sync import sync_to_async

            spent = await sync_to_async(spent_in_log)(budget, start, end)
            await client.hsetnx(key, "u", to_units(spent.money))
            await client.hsetnx(key, "t", spent.tokens)
            await client.expireat(key, int(end.timestamp()) + 86400)
        return key

    async def read(self, budget: BudgetRef, start: dt.datetime, end: dt.datetime) -> Spent:
        key = await self._ensure(budget, start, end)
        units, tokens = await self.redis.client().hmget(key, "u", "t")
        return Spent(int(units or 0) * UNIT, int(tokens or 0))

    async def add(self, budget: BudgetRef, start: dt.datetime, end: dt.datetime, money: Decimal,
                  tokens: int) -> Spent:
        key = await self._ensure(budget, start, end)
        pipe = self.redis.client().pipeline(transaction=True)
        pipe.hincrby(key, "u", to_units(money))
        pipe.hincrby(key, "t", tokens)
        units, total = await pipe.execute()
        return Spent(int(units) * UNIT, int(total))


def build_budgets(redis: SharedRedis | None) -> LocalBudgets | RedisBudgets:
    return RedisBudgets(redis) if redis is not None else LocalBudgets()


def state_of(ref: BudgetRef, spent: Spent) -> str:
    """"exceeded", "warning" (at or past the warning share) or "ok"."""
    if spent.exceeded(ref):
        return "exceeded"
    return "warning" if spent.share(ref) * 100 >= ref.warn_percent else "ok"


def usage_text(ref: BudgetRef, spent: Spent) -> str:
    """"0.0012 of 0.003 USD; 1,200 of 10,000 tokens" (translated)."""
    from django.utils.translation import gettext as _

    parts = []
    if ref.spend_limit is not None:
        parts.append(_("%(spent)s of %(limit)s %(currency)s") % {
            "spent": f"{spent.money.quantize(Decimal('0.0001')):f}",
            "limit": f"{ref.spend_limit.normalize():f}", "currency": ref.currency})
    if ref.token_limit is not None:
        parts.append(_("%(spent)s of %(limit)s tokens") % {
            "spent": f"{spent.tokens:,}", "limit": f"{ref.token_limit:,}"})
    return "; ".join(parts)


def budget_status() -> list[dict[str, object]]:
    """The enabled budgets for the live status page, those nearest their limit first (sync
    ORM; JSON-ready)."""
    from instances.models import Budget

    rows = []
    for row in Budget.objects.filter(enabled=True).select_related("key", "instance",
                                                                  "key__instance"):
        found = spent_now(row)
        if found is None:
            continue
        ref, spent, reset = found
        rows.append({
            "owner": ref.owner, "period": ref.period, "period_display": str(
                row.get_period_display()),
            "usage": usage_text(ref, spent), "percent": round(spent.share(ref) * 100),
            "state": state_of(ref, spent), "resets": reset.isoformat()})
    rows.sort(key=lambda r: -int(r["percent"]))  # type: ignore[call-overload]
    return rows
