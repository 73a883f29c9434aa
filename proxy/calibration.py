"""The Runtime's token calibration: each model's RatioFit (proxy/translate/token_ratio.py),
learnt from the prompt_tokens upstreams report and used by count_tokens and the estimates the
gateway reports before an upstream's usage arrives.

In the process, a dict; with REDIS_URL, each model's fit is also kept in Redis so every web
process shares what any of them learnt: written after each observation, read again when the
local copy is older than REFRESH_SECONDS. Both happen in the background (never on a request's
path), and a Redis failure only means the local fit is used. Concurrent writers may lose an
observation now and then: a fit learns again from the next request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING

from proxy.translate.token_ratio import RatioFit
from proxy.translate.tokens import TokenParts

if TYPE_CHECKING:
    from iflow2api_lib.redis_client import SharedRedis

log = logging.getLogger(__name__)

REFRESH_SECONDS = 10.0
KEEP_SECONDS = 30 * 24 * 3600  # a model unused for a month starts afresh
MAX_MODELS = 2000  # the catalogue's models; a bound against a flood of names


class TokenCalibration:
    def __init__(self, redis: SharedRedis | None = None, *, enabled: bool = True) -> None:
        self.redis = redis
        self.enabled = enabled
        self.fits: dict[str, RatioFit] = {}
        self.read_at: dict[str, float] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    def estimate(self, model_id: str, parts: TokenParts) -> int:
        """The calibrated count of a request for `model_id` (the raw estimate when nothing is
        learnt yet or calibration is off)."""
        if not self.enabled:
            return parts.total
        self._refresh_soon(model_id)
        fit = self.fits.get(model_id)
        return fit.estimate(parts) if fit is not None else parts.total

    def observe(self, model_id: str, parts: TokenParts, prompt_tokens: int) -> None:
        """One real request: its estimate by kind and the upstream's count of its prompt."""
        if not self.enabled or (model_id not in self.fits and len(self.fits) >= MAX_MODELS):
            return
        fit = self.fits.setdefault(model_id, RatioFit())
        if fit.observe(parts, prompt_tokens) and self.redis is not None:
            self._spawn(self._write(model_id, fit.to_dict()))

    # ---- Redis, in the background ----------------------------------------------------------

    def _key(self, model_id: str) -> str:
        assert self.redis is not None
        return self.redis.key("token-calibration", model_id)

    def _refresh_soon(self, model_id: str) -> None:
        if self.redis is None:
            return
        now = time.monotonic()
        if now - self.read_at.get(model_id, -REFRESH_SECONDS) < REFRESH_SECONDS:
            return
        self.read_at[model_id] = now
        self._spawn(self._read(model_id))

    def _spawn(self, work: asyncio.Future[None] | asyncio.Task[None] | object) -> None:
        try:
            task = asyncio.get_running_loop().create_task(work)  # type: ignore[arg-type]
        except RuntimeError:  # no loop (a sync caller): the local fit is enough
            work.close()  # type: ignore[attr-defined]
            return
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _read(self, model_id: str) -> None:
        try:
            raw = await self.redis.client().get(self._key(model_id))  # type: ignore[union-attr]
        except Exception as exc:  # Redis away: keep the local fit
            log.debug("token calibration: read failed: %s", exc)
            return
        if raw is not None:
            try:
                self.fits[model_id] = RatioFit.from_dict(json.loads(raw))
            except ValueError:
                return

    async def _write(self, model_id: str, data: dict) -> None:
        try:
            await self.redis.client().set(  # type: ignore[union-attr]
                self._key(model_id), json.dumps(data), ex=KEEP_SECONDS)
        except Exception as exc:
            log.debug("token calibration: write failed: %s", exc)
