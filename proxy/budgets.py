"""Budgets on the request path (instances/budgets.py holds them and their counters):
refuse a request whose key or instance has used up its budget, before anything is sent
upstream, and add the request's cost and tokens to the budgets once it is over.

A refusal is a 402 `budget_exceeded` with `x-should-retry: false` in the client's own shape
(Anthropic: billing_error), saying when the budget resets. Crossing a budget's warning share
logs a warning once per period and process; the live status page shows it (instances/status)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from decimal import Decimal

from django.utils.translation import gettext

from instances.budgets import (
    BudgetRef,
    LocalBudgets,
    RedisBudgets,
    Spent,
    period_window,
)
from proxy.errors import ApiError

log = logging.getLogger(__name__)


def exceeded_error(budget: BudgetRef, reset_at: str) -> ApiError:
    if budget.spend_limit is not None:
        limit = f"{budget.spend_limit.normalize():f} {budget.currency}"
        if budget.token_limit is not None:
            limit += gettext(" or %(tokens)s tokens") % {"tokens": f"{budget.token_limit:,}"}
    else:
        limit = gettext("%(tokens)s tokens") % {"tokens": f"{budget.token_limit:,}"}
    message = gettext(
        "budget exceeded: the %(period)s budget of %(owner)s (%(limit)s) is used up; it resets "
        "at %(reset)s") % {"period": budget.period, "owner": budget.owner, "limit": limit,
                           "reset": reset_at}
    return ApiError(402, message, "budget_exceeded", should_retry=False)


@dataclass
class BudgetCheck:
    """One request's budgets: checked before it is sent, settled once it is over."""

    store: LocalBudgets | RedisBudgets
    budgets: list[BudgetRef] = field(default_factory=list)

    async def check(self) -> None:
        for budget in self.budgets:
            start, end = period_window(budget.period)
            try:
                spent = await self.store.read(budget, start, end)
            except Exception:  # fail closed: a budget that cannot be read is not waved through
                log.warning("budget %s: its spend cannot be read", budget.id, exc_info=True)
                raise ApiError(503, gettext("the budgets cannot be checked (their Redis cannot "
                                            "be reached); retry shortly"),
                               "budgets_unavailable", retry_after=5) from None
            if spent.exceeded(budget):
                raise exceeded_error(budget, end.isoformat(timespec="seconds"))

    async def settle(self, cost: Decimal | None, currency: str, tokens: int) -> None:
        for budget in self.budgets:
            money = cost if cost is not None and currency == budget.currency else Decimal(0)
            if not money and not tokens:
                continue
            start, end = period_window(budget.period)
            try:
                spent = await self.store.add(budget, start, end, money, tokens)
            except Exception:  # Redis away: the request is over, its answer whole
                log.warning("budget %s: could not count a request", budget.id, exc_info=True)
                continue
            self._warn(budget, spent, int(start.timestamp()))

    def _warn(self, budget: BudgetRef, spent: Spent, period: int) -> None:
        share = spent.share(budget)
        warned = self.store.warned
        if share * 100 >= budget.warn_percent and (budget.id, period) not in warned:
            warned.add((budget.id, period))
            log.warning("budget of %s (%s, %s): %.0f%% used", budget.owner, budget.period,
                        budget.currency, share * 100)


async def budget_check(store: LocalBudgets | RedisBudgets, instance_id: int,
                       key_id: int | None) -> BudgetCheck | None:
    budgets = await store.budgets_for(instance_id, key_id)
    return BudgetCheck(store, budgets) if budgets else None
