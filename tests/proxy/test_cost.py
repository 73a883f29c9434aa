"""Cost arithmetic (issue 18): usage × prices, cached tokens priced as cached, Decimal exact,
unknown (None) rather than 0 without prices or usage. Golden cases, worked out by hand."""

from __future__ import annotations

from decimal import Decimal

import pytest

from accounts.pricing import Prices
from proxy.cost import request_cost
from proxy.translate.usage import read_usage

D = Decimal
DEEPSEEK = Prices("USD", input=D("0.27"), cached_input=D("0.07"), output=D("1.10"))
NO_CACHE_PRICE = Prices("USD", input=D("0.27"), output=D("1.10"))
ANTHROPIC = Prices("USD", input=D("3"), cached_input=D("0.30"), cache_write=D("3.75"),
                   output=D("15"))
CNY = Prices("CNY", input=D("2"), cached_input=D("0.5"), output=D("8"))


@pytest.mark.parametrize(("usage", "prices", "expected"), [
    # 176 × 0.27 + 1024 × 0.07 + 50 × 1.10 = 47.52 + 71.68 + 55 = 174.20 per million
    ({"prompt_tokens": 1200, "completion_tokens": 50,
      "prompt_cache_hit_tokens": 1024}, DEEPSEEK, "0.0001742000"),
    # the same in OpenAI's field
    ({"prompt_tokens": 1200, "completion_tokens": 50,
      "prompt_tokens_details": {"cached_tokens": 1024}}, DEEPSEEK, "0.0001742000"),
    # no cached price: cache reads cost the input price: 1200 × 0.27 + 55 = 379 per million
    ({"prompt_tokens": 1200, "completion_tokens": 50,
      "prompt_tokens_details": {"cached_tokens": 1024}}, NO_CACHE_PRICE, "0.0003790000"),
    # an Anthropic upstream: 200 × 3 + 700 × 0.30 + 100 × 3.75 + 30 × 15 = 1635 per million
    ({"prompt_tokens": 1000, "completion_tokens": 30,
      "prompt_tokens_details": {"cached_tokens": 700, "cache_write_tokens": 100}},
     ANTHROPIC, "0.0016350000"),
    # no cache at all: 1 000 000 × 2 + 500 000 × 8 = 6 CNY
    ({"prompt_tokens": 1_000_000, "completion_tokens": 500_000}, CNY, "6.0000000000"),
    # rounding to 10 places, half up: 1 × 0.00005 per million = 5e-11 → 1e-10
    ({"prompt_tokens": 1, "completion_tokens": 0},
     Prices("USD", input=D("0.00005"), output=D("0")), "1E-10"),
    # a usage of zero tokens is a real zero
    ({"prompt_tokens": 0, "completion_tokens": 0}, DEEPSEEK, "0E-10"),
    # unknown, never zero: no prices, or no usage reported
    ({"prompt_tokens": 1200, "completion_tokens": 50}, None, None),
    (None, DEEPSEEK, None),
], ids=["deepseek-own-field", "openai-field", "no-cached-price", "anthropic-read-write",
        "cny-no-cache", "rounding", "zero-usage", "unpriced", "no-usage"])
def test_cost_of_one_request(usage, prices, expected) -> None:
    cost = request_cost(read_usage(usage), prices)
    assert (None if cost is None else str(cost)) == expected


def test_many_small_costs_add_up_exactly() -> None:
    one = request_cost(read_usage({"prompt_tokens": 1, "completion_tokens": 0}),
                       Prices("USD", input=D("0.1"), output=D("0")))
    assert sum([one] * 1000, D(0)) == D("0.0001")
    assert sum([0.1 / 1_000_000] * 1000) != 0.0001  # what floats would have recorded
