"""A catalogue model's prices, as the hot path and the cost arithmetic (proxy/cost.py) read
them: Decimal per million tokens, never a float, never a guess."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from accounts.models import ModelInfo


@dataclass(frozen=True)
class Prices:
    """Per million tokens, in `currency`. Cache reads and writes fall back to the input price
    when the vendor has no separate price for them."""

    currency: str
    input: Decimal
    output: Decimal
    cached_input: Decimal | None = None
    cache_write: Decimal | None = None

    @property
    def cached(self) -> Decimal:
        return self.input if self.cached_input is None else self.cached_input

    @property
    def write(self) -> Decimal:
        return self.input if self.cache_write is None else self.cache_write


def prices_of(info: ModelInfo) -> Prices | None:
    """The model's prices; None unless both the input and the output price are set."""
    if info.price_input is None or info.price_output is None:
        return None
    return Prices(currency=(info.price_currency or "USD").upper(), input=info.price_input,
                  output=info.price_output, cached_input=info.price_cached_input,
                  cache_write=info.price_cache_write)
