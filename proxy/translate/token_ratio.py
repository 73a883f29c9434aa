"""Per-model calibration of the local token estimate from the upstream's own counts.

The estimate (proxy/translate/tokens.py) is off by -49 % to +43 % against a real tokenizer, and
differently for prose and for tool definitions (measured with Gemma 3: English x1.40, Chinese
x1.40, code x0.86, a system prompt with tools x0.51). Every real request shows the gateway both
its estimate and the prompt_tokens the upstream counted, so a model's ratios are learnt from
them: an exponentially weighted least-squares fit of

    upstream tokens ~= text_ratio * estimated text + tools_ratio * estimated tool definitions

(media — images, documents — are a fixed guess and stay out of it). When the traffic does not
tell the two apart (every request with the same share of tools), a small ridge term pulls both
towards the one overall ratio, so the fit stays stable and the total still converges. Ratios
are clamped to [MIN_RATIO, MAX_RATIO]; without any request with tools seen yet, tool
definitions are never counted below the raw estimate (an under-count would let a client
overfill the context). Pure: stdlib only, plain numbers in and out.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from proxy.translate.tokens import TokenParts

DECAY = 0.8  # weight of the past at each new request: ~5 requests of memory
RIDGE = 0.001  # pull towards the overall ratio, relative to the weight of the data
MIN_RATIO, MAX_RATIO = 0.25, 4.0
MIN_TOKENS = 16  # tiny requests say more about the chat template than about the text


def _clamp(value: float) -> float:
    return min(max(value, MIN_RATIO), MAX_RATIO)


@dataclass
class RatioFit:
    """The decayed sums of one model's observations (t: text, x: tools, a: actual)."""

    tt: float = 0.0
    xx: float = 0.0
    tx: float = 0.0
    ta: float = 0.0
    xa: float = 0.0
    seen: int = 0
    seen_tools: int = 0

    def observe(self, parts: TokenParts, actual: int) -> bool:
        """Learns from one request; False (ignored) when it cannot tell anything."""
        t, x = float(parts.text), float(parts.tools)
        a = float(actual) - parts.media  # the media guess is not calibrated
        if actual <= 0 or t + x < MIN_TOKENS or a <= 0:
            return False
        ratio = a / (t + x)
        if not MIN_RATIO / 2 <= ratio <= MAX_RATIO * 2:
            return False  # a server counting something else (cached tokens only, …)
        for name in ("tt", "xx", "tx", "ta", "xa"):
            setattr(self, name, getattr(self, name) * DECAY)
        self.tt += t * t
        self.xx += x * x
        self.tx += t * x
        self.ta += t * a
        self.xa += x * a
        self.seen += 1
        self.seen_tools += x > 0
        return True

    def ratios(self) -> tuple[float, float] | None:
        """(text ratio, tools ratio), None before the first observation."""
        if not self.seen:
            return None
        ee = self.tt + 2 * self.tx + self.xx
        if ee <= 0:
            return None
        overall = (self.ta + self.xa) / ee
        ridge = RIDGE * ee
        a11, a12, a22 = self.tt + ridge, self.tx, self.xx + ridge
        b1, b2 = self.ta + ridge * overall, self.xa + ridge * overall
        det = a11 * a22 - a12 * a12
        if det <= 0:
            return _clamp(overall), _clamp(overall)
        text = (b1 * a22 - a12 * b2) / det
        tools = (a11 * b2 - a12 * b1) / det
        return _clamp(text), _clamp(tools)

    def estimate(self, parts: TokenParts) -> int:
        """The calibrated count for a request (the raw estimate before any observation)."""
        ratios = self.ratios()
        if ratios is None:
            return parts.total
        text_ratio, tools_ratio = ratios
        if not self.seen_tools:
            tools_ratio = max(1.0, text_ratio)  # no evidence about tools: never under-count
        return max(round(parts.text * text_ratio + parts.tools * tools_ratio) + parts.media, 1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> RatioFit:
        """A stored fit; a fresh one when `data` is not a fit (a stale or foreign value)."""
        if not isinstance(data, dict):
            return cls()
        fit = cls()
        for name, value in data.items():
            if name in fit.__dataclass_fields__ and isinstance(value, int | float) and \
                    not isinstance(value, bool) and value == value:
                setattr(fit, name, type(getattr(fit, name))(value))
        return fit
