"""What one request cost: the upstream's usage times the model's prices (docs/costs.md).

Decimal throughout (a float sum of many small costs drifts). Cache reads are priced as cached
input, cache writes as cache writes, the rest of the input at the input price. No prices or no
usage: None ("cost unknown"), never 0."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from accounts.pricing import Prices
from proxy.translate.usage import TokenUsage

MILLION = Decimal(1_000_000)
# The request log keeps 10 decimal places: a token at 0.01 per million is 1e-8.
COST_PLACES = Decimal("0.0000000001")


def request_cost(usage: TokenUsage, prices: Prices | None) -> Decimal | None:
    if prices is None or not usage.reported:
        return None
    total = (usage.uncached * prices.input + usage.cached * prices.cached
             + usage.cache_write * prices.write + usage.completion * prices.output)
    return (total / MILLION).quantize(COST_PLACES, rounding=ROUND_HALF_UP)
