"""Budget periods and counters (issue 18): where a day, week and month start and reset in the
server's time zone, the limit reached exactly, and a new period counting from zero."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from asgiref.sync import async_to_sync
from django.utils import timezone

from instances.budgets import BudgetRef, LocalBudgets, Spent, period_window

SHANGHAI = dt.timezone(dt.timedelta(hours=8))


def budget(**fields) -> BudgetRef:
    base = {"id": 1, "scope": "key", "owner_id": 1, "instance_name": "default",
            "key_label": "k (sk-i2a-ab…)", "period": "day", "spend_limit": Decimal("0.003"),
            "currency": "USD", "token_limit": None, "warn_percent": 80}
    return BudgetRef(**{**base, **fields})


@pytest.mark.parametrize(("period", "now", "start", "end"), [
    ("day", "2026-12-04T23:59:59.999999", "2026-12-04T00:00:00", "2026-12-05T00:00:00"),
    ("day", "2026-12-05T00:00:00", "2026-12-05T00:00:00", "2026-12-06T00:00:00"),
    ("week", "2026-12-06T23:59:59", "2026-11-30T00:00:00", "2026-12-07T00:00:00"),  # Sunday
    ("week", "2026-12-07T00:00:00", "2026-12-07T00:00:00", "2026-12-14T00:00:00"),  # Monday
    ("month", "2026-02-28T23:59:59", "2026-02-01T00:00:00", "2026-03-01T00:00:00"),
    ("month", "2028-02-29T12:00:00", "2028-02-01T00:00:00", "2028-03-01T00:00:00"),  # leap
    ("month", "2026-12-31T23:59:59", "2026-12-01T00:00:00", "2027-01-01T00:00:00"),
])
def test_periods_start_and_reset_at_local_midnight(settings, period, now, start, end):
    settings.TIME_ZONE = "Asia/Shanghai"
    with timezone.override("Asia/Shanghai"):
        moment = dt.datetime.fromisoformat(now).replace(tzinfo=SHANGHAI)
        got = period_window(period, moment)
    assert [t.astimezone(SHANGHAI).replace(tzinfo=None).isoformat(timespec="seconds")
            for t in got] == [start, end]


def test_the_limit_reached_exactly_is_exceeded_one_unit_below_is_not():
    ref = budget(token_limit=1000)
    assert not Spent(Decimal("0.0029999999"), 999).exceeded(ref)
    assert Spent(Decimal("0.003"), 0).exceeded(ref)
    assert Spent(Decimal(0), 1000).exceeded(ref)
    assert Spent(Decimal("0.0024"), 0).share(ref) == pytest.approx(0.8)  # the warning share


@pytest.mark.django_db
def test_a_new_period_counts_from_zero():
    store, ref = LocalBudgets(), budget()
    day1 = period_window("day", dt.datetime(2026, 12, 4, 23, 59, 59, tzinfo=dt.UTC))
    day2 = period_window("day", dt.datetime(2026, 12, 5, 0, 0, 0, tzinfo=dt.UTC))
    add, read = async_to_sync(store.add), async_to_sync(store.read)
    for _ in range(3):
        add(ref, *day1, Decimal("0.001"), 10)
    assert read(ref, *day1) == Spent(Decimal("0.003"), 30)
    assert read(ref, *day1).exceeded(ref)
    assert read(ref, *day2) == Spent(Decimal(0), 0)  # the reset boundary: a fresh counter
    assert not read(ref, *day2).exceeded(ref)
