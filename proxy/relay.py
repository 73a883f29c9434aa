"""One request's way upstream, shared by both APIs, read top to bottom:

1. the instance's rate rules admit it (429 when over a limit), before anything else is spent;
2. URL images are inlined for upstreams that take only data URLs (before any account slot is
   taken: a slow image host must not hold one);
3. the account loop: a slot on the least busy usable account (accounts/pool.py), the call on
   it, and on an upstream failure that another account may not share (pipeline.
   worth_another_account) the account's consequence (cooldown, block, refresh) and the next
   account, up to MAX_ATTEMPTS; a stream keeps its account's slot until it ends;
4. the outcome goes to the request log (proxy/trace.py) and the rate limiter gets the stream
   slot back and the tokens counted.

Everything the process holds (upstream client, pool, limiter, request log, status) comes from
the request's Runtime (`opts.runtime`, proxy/runtime.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from accounts.pool import Lease
from accounts.services import AccountRef, ModelRef
from iflow2api_lib.conf import gateway
from instances.ratelimit import Admission, Bucket
from proxy.affinity import Affinity
from proxy.budgets import BudgetCheck, budget_check
from proxy.errors import ApiError, hide_secrets
from proxy.http import JsonResult, StreamResult
from proxy.pipeline import (
    MAX_ATTEMPTS,
    GatewayOptions,
    Route,
    account_failed,
    accounts_for,
    route_for,
    take_account,
    worth_another_account,
)
from proxy.streaming import StreamSession, open_stream, stream_body
from proxy.trace import RelayTrace
from proxy.translate.tokens import TokenParts
from proxy.vision import inline_remote_images
from proxy.wire import CHAT, Exchange, answer_usage, chat_exchange, pick
from upstream.types import UpstreamError

Session = Callable[[Route], StreamSession]
Answer = Callable[[Route, dict[str, Any]], JsonResult]


async def relay(
    model: ModelRef,
    body: dict[str, Any] | None,
    opts: GatewayOptions,
    *,
    stream: bool,
    session: Session,
    answer: Answer,
    api: str,
    requested_model: str,
    client_body: bytes = b"",
    estimate: TokenParts | None = None,
    native: dict[str, Exchange] | None = None,
    conversation: str | None = None,
) -> JsonResult | StreamResult:
    """Sends `body` (an OpenAI chat body for `model`) upstream. Streams: `session(route)`
    translates the chunks. Non-streaming: `answer(route, completion)` renders the result.
    `native`: the request in other wire protocols, by protocol (proxy/wire.py); an account
    whose protocol has none gets the chat body through a bridge (None: no chat body).
    `conversation` (proxy/affinity.conversation_of) pins the conversation to an account."""
    trace = RelayTrace(model.id, api, requested_model, stream, opts.runtime, opts.request_id,
                       instance=opts.instance.name, key_label=opts.key_label,
                       keep_bodies=opts.instance.log_bodies)
    if opts.instance.log_bodies:
        trace.keep_request(client_body)
    trace.estimate = estimate  # the upstream's prompt_tokens calibrate it (runtime.calibration)
    chat = chat_exchange(body, session, answer) if body is not None else None
    relayed = _Relay(model, body, opts, trace, stream, chat, native or {})
    relayed.conversation = conversation
    return await relayed.run()


class _Relay:
    """The state of one relay() call; its methods are the steps, in the order they run."""

    def __init__(self, model: ModelRef, body: dict[str, Any] | None, opts: GatewayOptions,
                 trace: RelayTrace, stream: bool, chat: Exchange | None,
                 native: dict[str, Exchange]) -> None:
        self.model, self.body, self.opts, self.trace = model, body, opts, trace
        self.stream, self.chat, self.native = stream, chat, native
        self.runtime = opts.runtime
        self.buckets: tuple[Bucket, ...] = opts.rules.buckets(
            instance_id=opts.instance.id or 0,
            key_id=opts.key.id if opts.key else None, client_ip=opts.client_ip)
        self.admission: Admission | None = None
        self.conversation: str | None = None
        self.budget: BudgetCheck | None = None

    async def run(self) -> JsonResult | StreamResult:
        with self.trace.failures():
            await self.check_budgets()
            await self.check_rate_rules()
        try:
            with self.trace.failures():
                accounts = await accounts_for(self.model, self.opts)
                if self.body is not None:
                    await inline_remote_images(accounts, self.body, self.runtime.upstream)
                return await self.on_some_account(accounts)
        except BaseException:
            await self.settle()
            raise

    async def check_budgets(self) -> None:
        """402 budget_exceeded when the key's or the instance's budget is used up."""
        self.budget = await budget_check(self.runtime.budgets, self.opts.instance.id or 0,
                                         self.opts.key.id if self.opts.key else None)
        if self.budget is not None:
            await self.budget.check()

    async def check_rate_rules(self) -> None:
        if not self.buckets:
            return
        self.admission = await self.runtime.limiter.admit(self.buckets, stream=self.stream)
        if not self.admission.allowed:
            raise ApiError(429, self.admission.reason, "rate_limit_exceeded",
                           retry_after=self.admission.retry_after)

    async def on_some_account(self, accounts: list[AccountRef]) -> JsonResult | StreamResult:
        """The call on a pooled account, failing over to another account when it fails
        before anything reached the client."""
        pool = self.runtime.pool
        failed: UpstreamError | None = None
        tried: set[int] = set()
        affinity = Affinity.of(pool.affinity, self.conversation,
                               instance_id=self.opts.instance.id or 0,
                               key_id=self.opts.key.id if self.opts.key else None,
                               model=self.model.id, accounts=accounts) \
            if gateway()["AFFINITY_TTL_SECONDS"] > 0 else None
        for _ in range(min(len(accounts), MAX_ATTEMPTS)):
            candidates = [a for a in accounts if a.id not in tried]
            lease = await take_account(pool, candidates, self.model, self.opts, failed,
                                       affinity)
            try:
                result = await self.call(lease)
            except UpstreamError as err:
                await pool.release(lease)
                await self.account_failed(lease.account, err)
                if not worth_another_account(err):
                    raise
                failed = err
                tried.add(lease.account.id)
            except BaseException:
                await pool.release(lease)
                raise
            else:
                if (lease.account.cooldown_until or 0.0) > time.time():
                    await pool.recovered(lease.account)  # served while cooling: limit is over
                return result
        assert failed is not None
        try:
            raise failed
        finally:
            del failed  # this frame is in the error's traceback: no cycle through it

    async def call(self, lease: Lease) -> JsonResult | StreamResult:
        """One upstream call on `lease`'s account. A stream owns the lease from here (released
        when it ends); a JSON answer gives it back at once."""
        route = route_for(self.model, lease.account, self.opts.instance.upstream_proxy)
        self.trace.attempt(route)
        exchange = pick(route, self.chat, self.native)
        prepared = exchange.prepare(route, stream=self.stream)
        client, proxy = self.runtime.upstream, route.target.proxy_url
        if not self.stream:
            completion, raw = await client.request_raw(route.provider, prepared, proxy=proxy)
            await self.runtime.pool.release(lease)
            result = exchange.answer(route, completion, raw)
            self.trace.answered(completion if exchange.wire == CHAT else
                                answer_usage(completion), result.body)
            await self.settle()
            return result
        session = self.trace.observe(exchange.session(route))
        batches = exchange.open(client, route, prepared, proxy,
                                text_runs=session.takes_text_runs)
        reads = await open_stream(batches, prelude_seconds=self.opts.prelude_seconds)

        async def finish(error: ApiError | None) -> None:
            await self.runtime.pool.release(lease)
            self.trace.stream_finished(error)
            await self.settle()

        self.trace.stream_started()
        return stream_body(reads, session, lifecycle=self.runtime.lifecycle,
                           keepalive_seconds=self.opts.keepalive_seconds, on_finish=finish)

    async def account_failed(self, account: AccountRef, err: UpstreamError) -> None:
        hide_secrets(err, (account.api_key,))  # never pass an account's key on to the client
        await account_failed(self.runtime, account, err)

    async def settle(self) -> None:
        """The request is over: give back its stream slot, count its tokens and its cost."""
        budget, self.budget = self.budget, None
        if budget is not None:
            prices = self.trace.prices
            await budget.settle(self.trace.cost, prices.currency if prices else "",
                                self.trace.tokens)
        admission, self.admission = self.admission, None
        if admission is None:
            return
        await self.runtime.limiter.release(admission)
        if self.trace.tokens:
            await self.runtime.limiter.add_tokens(self.buckets, self.trace.tokens)
