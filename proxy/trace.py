"""What relay() records in the request log: the route of a request's last attempt, its
timings, usage and (for instances that keep them) bodies; and the requests refused before
relay()."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.utils import timezone

from proxy.cost import request_cost
from proxy.errors import ApiError, hide_secrets
from proxy.requestlog import RequestRecord, clean_error, log
from proxy.runtime import Runtime
from proxy.translate.tokens import TokenParts
from proxy.translate.usage import chunk_usage, read_usage
from proxy.wire import MessagesUsage
from upstream.sse import SSEEvent
from upstream.text_lane import TextRun
from upstream.types import UpstreamError

if TYPE_CHECKING:
    from accounts.pricing import Prices
    from proxy.http import ApiRequest
    from proxy.pipeline import Route
    from proxy.streaming import StreamSession


def _count(value: Any) -> int | None:
    if type(value) is int:  # the usual case, in one step
        return value if value >= 0 else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _has_token(chunk: dict) -> bool:
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if isinstance(delta, dict) and any(
                delta.get(k) for k in ("content", "reasoning_content", "reasoning", "tool_calls")):
            return True
    return False


BODY_MAX = 256 * 1024  # characters kept of each body, when an instance logs bodies


def _body_text(data: bytes) -> str:
    text = data[:BODY_MAX].decode("utf-8", "replace")
    return text + ("\n[… truncated]" if len(data) > BODY_MAX else "")


def log_refused(error: Exception, request: ApiRequest, *, api: str, started: float,
                requested_model: object = "", instance: str = "default",
                key_label: str = "") -> None:
    """A request refused before relay() (bad body, unknown model, wrong key). Errors that
    relay() already recorded are skipped."""
    if getattr(error, "logged", False):
        return
    status = getattr(error, "status", 500)
    elapsed = time.monotonic() - started
    request.runtime.requests.log(RequestRecord(
        started_at=timezone.now() - timedelta(seconds=elapsed), api=api,
        requested_model=requested_model if isinstance(requested_model, str) else "",
        status=status, latency_ms=round(elapsed * 1000), instance=instance,
        key_label=key_label, error=clean_error(getattr(error, "message", str(error))),
        request_id=request.request_id,
    ))


@dataclass
class RelayTrace:
    """The outcome of one relay() call: the route of its last attempt, timings, usage."""

    model: str
    api: str
    requested_model: str
    stream: bool
    runtime: Runtime  # its request log and status publisher
    request_id: str = ""
    instance: str = "default"
    key_label: str = ""
    keep_bodies: bool = False
    request_body: str = ""
    response_parts: list[bytes] = field(default_factory=list)
    response_size: int = 0
    started_at: datetime = field(default_factory=timezone.now)
    start: float = field(default_factory=time.monotonic)
    account_id: int | None = None
    secrets: tuple[str, ...] = ()
    first_token: float | None = None
    usage: dict | None = None
    prices: Prices | None = None  # the last attempt's model's (None: cost unknown)
    closed: bool = False
    logged: bool = False
    streaming: bool = False
    estimate: TokenParts | None = None  # our estimate of the prompt, for the calibration

    def attempt(self, route: Route) -> None:
        self.model = route.model.id
        self.account_id = route.account.id
        self.secrets = (route.account.api_key,)
        self.prices = route.model.prices

    def keep_request(self, body: bytes) -> None:
        self.request_body = _body_text(body)

    def keep_response(self, data: bytes) -> None:
        if self.keep_bodies and self.response_size <= BODY_MAX:
            self.response_parts.append(data)
            self.response_size += len(data)

    @property
    def tokens(self) -> int:
        usage = self.usage or {}
        return (_count(usage.get("prompt_tokens")) or 0) + (
            _count(usage.get("completion_tokens")) or 0)

    @property
    def cost(self) -> Decimal | None:
        return request_cost(read_usage(self.usage), self.prices)

    def observe(self, session: StreamSession) -> _ObservedSession:
        return _ObservedSession(session, self)

    def stream_started(self) -> None:
        self.streaming = True
        self.runtime.status.stream_started(self.instance)  # tells the status pages too

    def answered(self, completion: dict, body: bytes = b"") -> None:
        usage = completion.get("usage") if isinstance(completion, dict) else None
        self.usage = usage if isinstance(usage, dict) else None
        self.keep_response(body)
        self.finish(200)

    def stream_finished(self, error: ApiError | None) -> None:
        if self.streaming:
            self.streaming = False
            self.runtime.status.stream_finished(self.instance)
        if error is not None:
            self.finish(error.status, error.message)
        elif self.closed:
            self.finish(200)
        else:
            self.finish(499, "the client closed the connection before the end of the stream")

    @contextlib.contextmanager
    def failures(self) -> Iterator[None]:
        """Records an exception leaving relay() with the status the client gets."""
        try:
            yield
        except asyncio.CancelledError:
            self.finish(499, "the client closed the connection")
            raise
        except (ApiError, UpstreamError) as exc:
            self.finish(exc.status, exc.message)
            exc.logged = True  # type: ignore[attr-defined]  # the handler must not log it again
            raise
        except Exception as exc:
            from proxy.translate.types import UpstreamResponseError

            invalid = isinstance(exc, UpstreamResponseError)
            self.finish(502 if invalid else 500, str(exc) if invalid else type(exc).__name__)
            raise

    def finish(self, status: int, error: str = "") -> None:
        if self.logged:
            return
        self.logged = True
        prompt_tokens = _count((self.usage or {}).get("prompt_tokens"))
        if status == 200 and self.estimate is not None and prompt_tokens:
            self.runtime.calibration.observe(self.model, self.estimate, prompt_tokens)
        try:
            usage = self.usage or {}
            read = read_usage(self.usage) if self.usage else None
            cost = request_cost(read, self.prices) if read is not None else None
            ttft = None
            if self.stream and self.first_token is not None:
                ttft = round((self.first_token - self.start) * 1000)
            self.runtime.requests.log(RequestRecord(
                started_at=self.started_at, api=self.api, model=self.model,
                requested_model=self.requested_model, account_id=self.account_id,
                stream=self.stream, status=status,
                latency_ms=round((time.monotonic() - self.start) * 1000), ttft_ms=ttft,
                tokens_in=_count(usage.get("prompt_tokens")),
                tokens_out=_count(usage.get("completion_tokens")),
                tokens_cached=read.cached if read is not None else None,
                cost=cost, currency=self.prices.currency if cost is not None
                and self.prices else "",
                error=clean_error(error, self.secrets), instance=self.instance,
                key_label=self.key_label, request_body=self.request_body,
                response_body=_body_text(b"".join(self.response_parts))
                if self.response_parts else "", request_id=self.request_id,
            ))  # the writer tells the status pages once the row is in the database
        except Exception:
            log.exception("request log: record lost")


class _ObservedSession:
    """A StreamSession that notes the upstream usage and the first token for the trace."""

    def __init__(self, inner: StreamSession, trace: RelayTrace) -> None:
        self.inner = inner
        self.trace = trace
        self.keepalive = inner.keepalive
        self.messages_usage: MessagesUsage | None = None
        # A session with feed_text takes the upstream's TextRuns (upstream/text_lane.py).
        self._feed_text = getattr(inner, "feed_text", None)
        self.takes_text_runs = self._feed_text is not None

    def start(self) -> list[bytes]:
        start = getattr(self.inner, "start", None)  # sessions without an opening send none
        return self._kept(start()) if start is not None else []

    def feed(self, chunk: dict | TextRun | SSEEvent) -> list[bytes]:
        if type(chunk) is TextRun:
            # Neither usage nor the first token: its template's chunk came before it.
            return self._kept(self._feed_text(chunk))
        if isinstance(chunk, SSEEvent):  # an Anthropic upstream's event (proxy/wire.py)
            return self._kept(self.inner.feed(self._see_event(chunk)))
        usage = chunk_usage(chunk)
        if usage is not None:
            self.trace.usage = usage
        if self.trace.first_token is None and _has_token(chunk):
            self.trace.first_token = time.monotonic()
        return self._kept(self.inner.feed(chunk))

    def _see_event(self, event: SSEEvent) -> SSEEvent:
        if self.messages_usage is None:
            self.messages_usage = MessagesUsage()
        usage = self.messages_usage.see(event.data)
        if usage is not None:
            self.trace.usage = usage
        if self.trace.first_token is None and event.data.get("type") == "content_block_delta":
            self.trace.first_token = time.monotonic()
        return event

    def close(self) -> list[bytes]:
        out = self.inner.close()
        self.trace.closed = True
        return self._kept(out)

    def fail(self, error: ApiError) -> list[bytes]:
        hide_secrets(error, self.trace.secrets)
        return self._kept(self.inner.fail(error))

    def _kept(self, out: list[bytes]) -> list[bytes]:
        if self.trace.keep_bodies:
            for data in out:
                self.trace.keep_response(data)
        return out
