"""The request log: one RequestLog row per API request, written off the hot path.

Where it is called:
- `proxy/relay.py` records every request that reaches `relay()` through `RelayTrace`
  (below): non-streaming answers after `answer()`, streams in the `finish` callback of
  `stream_body` (in-band error or None), errors before the stream with their status (a
  rate-limit refusal included). Errors it recorded are marked, so the handlers do not log
  them twice.
- Requests refused before `relay()` (bad JSON, unknown model, wrong client key) are logged by
  the handlers through `log_refused()`.

`log_request()` only puts the record on an asyncio queue (bounded: when full the record is
dropped and counted). A task on the server's loop hands batches (100 rows, or whatever arrived
within 0.5 s) to one writer thread that bulk-creates them. What is still queued at exit is
written by an atexit hook, best effort.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import contextvars
import logging
import re
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING, Any

from django.db import close_old_connections
from django.utils import timezone

from instances import status as live_status
from proxy import metrics
from proxy.errors import ApiError
from proxy.upstream.types import UpstreamError

if TYPE_CHECKING:
    from proxy.pipeline import Route
    from proxy.streaming import StreamSession

log = logging.getLogger(__name__)

QUEUE_MAX = 10_000
BATCH_SIZE = 100
FLUSH_SECONDS = 0.5
ERROR_MAX = 500


@dataclass
class RequestRecord:
    started_at: datetime
    api: str  # "openai" | "anthropic"
    model: str = ""  # the model actually used (after tier mapping and vision routing)
    requested_model: str = ""
    account_id: int | None = None
    stream: bool = False
    status: int = 200
    latency_ms: int = 0
    ttft_ms: int | None = None  # streams: until the first content, reasoning or tool call
    tokens_in: int | None = None
    tokens_out: int | None = None
    error: str = ""  # pass it through clean_error()
    instance: str = "default"
    key_label: str = ""
    request_body: str = ""  # only for instances with log_bodies
    response_body: str = ""


@dataclass
class Stats:
    written: int = 0
    dropped: int = 0  # queue full
    failed: int = 0  # the database refused a batch


stats = Stats()

# --- secrets never reach the log ----------------------------------------------------------------

SECRET_PATTERNS = [
    re.compile(r"(?i)\b(bearer|basic)\s+[\w.~+/=-]+"),
    re.compile(r"\bsk-[\w-]{4,}"),
    re.compile(r"(?i)\b(api[_-]?key|access[_-]?token|token|secret|password|cookie)"
               r"(\"?\s*[:=]\s*\"?)[^\s\"',;}]+"),
    re.compile(r"[\w+=-]{40,}"),  # long opaque strings: keys, tokens
]


def clean_error(text: str | None, secrets: Iterable[str] = ()) -> str:
    """One line, at most 500 characters, with keys and tokens masked."""
    text = " ".join(str(text or "").split())
    for secret in secrets:
        if secret and len(secret) >= 6:
            text = text.replace(secret, "[redacted]")
    text = SECRET_PATTERNS[0].sub(r"\1 [redacted]", text)
    text = SECRET_PATTERNS[1].sub("sk-[redacted]", text)
    text = SECRET_PATTERNS[2].sub(r"\1\2[redacted]", text)
    text = SECRET_PATTERNS[3].sub("[redacted]", text)
    return text if len(text) <= ERROR_MAX else text[: ERROR_MAX - 1] + "…"


# --- the queue and its writer -------------------------------------------------------------------


@cache
def _executor() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="requestlog")


def write_rows(records: list[RequestRecord]) -> None:
    """Bulk-creates rows (in the writer thread, or at exit). Accounts deleted in the meantime
    are logged as none."""
    from accounts.models import Account
    from proxy.models import RequestLog

    close_old_connections()
    try:
        ids = {r.account_id for r in records if r.account_id is not None}
        known = set(Account.objects.filter(pk__in=ids).values_list("pk", flat=True))
        RequestLog.objects.bulk_create([
            RequestLog(
                started_at=r.started_at, instance=r.instance[:64], key_label=r.key_label[:100],
                account_id=r.account_id if r.account_id in known else None,
                model=r.model[:200], requested_model=r.requested_model[:200], api=r.api,
                stream=r.stream, status=r.status, latency_ms=max(0, r.latency_ms),
                ttft_ms=r.ttft_ms, tokens_in=r.tokens_in, tokens_out=r.tokens_out,
                error=r.error[:ERROR_MAX], request_body=r.request_body,
                response_body=r.response_body,
            )
            for r in records
        ])
        stats.written += len(records)
    except Exception:
        stats.failed += len(records)
        log.exception("request log: could not write %d rows", len(records))
    finally:
        close_old_connections()


class _Writer:
    """The queue of one event loop and the task that drains it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[RequestRecord] = asyncio.Queue(QUEUE_MAX)
        self.wake = asyncio.Event()
        self.collecting: list[RequestRecord] = []  # taken off the queue, not yet handed over
        # A fresh context: the writer must not carry the request id of the request that
        # happened to start it.
        self.task = loop.create_task(self.run(), name="requestlog-writer",
                                     context=contextvars.Context())

    def put(self, record: RequestRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except asyncio.QueueFull:
            stats.dropped += 1
            if stats.dropped % 1000 == 1:
                log.warning("request log queue full: %d records dropped so far", stats.dropped)
            return
        if self.queue.qsize() >= BATCH_SIZE:
            self.wake.set()

    async def run(self) -> None:
        while True:
            self.collecting = [await self.queue.get()]
            if self.queue.qsize() < BATCH_SIZE - 1:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), FLUSH_SECONDS)
            self.wake.clear()
            while len(self.collecting) < BATCH_SIZE and not self.queue.empty():
                self.collecting.append(self.queue.get_nowait())
            batch, self.collecting = self.collecting, []
            try:
                await self.loop.run_in_executor(_executor(), write_rows, batch)
            finally:
                for _ in batch:
                    self.queue.task_done()
            live_status.notify_changed()  # the rows are in the database: status pages re-read

    def take_all(self) -> list[RequestRecord]:
        records, self.collecting = self.collecting, []
        while not self.queue.empty():
            records.append(self.queue.get_nowait())
        return records


_writer: _Writer | None = None


def _writer_for(loop: asyncio.AbstractEventLoop) -> _Writer:
    global _writer
    if _writer is None or _writer.loop is not loop:
        old, _writer = _writer, _Writer(loop)
        if old is not None:  # another loop (tests): carry its leftovers over
            old.task.cancel()
            for record in old.take_all():
                _writer.put(record)
    return _writer


def log_request(record: RequestRecord) -> None:
    """Queues a row. Never blocks the loop, never raises. Off the loop (sync code) it writes
    at once."""
    metrics.observe(record)  # Prometheus counters (a no-op unless enabled); never raises
    try:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None:
            _writer_for(loop).put(record)
        elif _writer is not None and _writer.loop.is_running():
            _writer.loop.call_soon_threadsafe(_writer.put, record)
        else:
            write_rows([record])
    except Exception:
        log.exception("request log: record lost")


async def flush() -> None:
    """Waits until everything queued on this loop is written (tests, shutdown hooks)."""
    if _writer is not None and _writer.loop is asyncio.get_running_loop():
        _writer.wake.set()
        await _writer.queue.join()


@atexit.register
def _flush_at_exit() -> None:
    if _writer is not None:
        records = _writer.take_all()
        if records:
            write_rows(records)


# --- what relay() records -----------------------------------------------------------------------


def _count(value: Any) -> int | None:
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


def log_refused(error: Exception, *, api: str, started: float, requested_model: object = "",
                instance: str = "default", key_label: str = "") -> None:
    """A request refused before relay() (bad body, unknown model, wrong key). Errors that
    relay() already recorded are skipped."""
    if getattr(error, "logged", False):
        return
    status = getattr(error, "status", 500)
    elapsed = time.monotonic() - started
    log_request(RequestRecord(
        started_at=timezone.now() - timedelta(seconds=elapsed), api=api,
        requested_model=requested_model if isinstance(requested_model, str) else "",
        status=status, latency_ms=round(elapsed * 1000), instance=instance,
        key_label=key_label, error=clean_error(getattr(error, "message", str(error))),
    ))
    live_status.notify_changed()


@dataclass
class RelayTrace:
    """The outcome of one relay() call: the route of its last attempt, timings, usage."""

    model: str
    api: str
    requested_model: str
    stream: bool
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
    closed: bool = False
    logged: bool = False
    streaming: bool = False

    def attempt(self, route: Route) -> None:
        self.model = route.model.id
        self.account_id = route.account.id
        self.secrets = (route.account.api_key,)

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

    def observe(self, session: StreamSession) -> StreamSession:
        return _ObservedSession(session, self)

    def stream_started(self) -> None:
        self.streaming = True
        live_status.stream_started(self.instance)
        live_status.notify_changed()

    def answered(self, completion: dict, body: bytes = b"") -> None:
        usage = completion.get("usage") if isinstance(completion, dict) else None
        self.usage = usage if isinstance(usage, dict) else None
        self.keep_response(body)
        self.finish(200)

    def stream_finished(self, error: ApiError | None) -> None:
        if self.streaming:
            self.streaming = False
            live_status.stream_finished(self.instance)
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
        try:
            usage = self.usage or {}
            ttft = None
            if self.stream and self.first_token is not None:
                ttft = round((self.first_token - self.start) * 1000)
            log_request(RequestRecord(
                started_at=self.started_at, api=self.api, model=self.model,
                requested_model=self.requested_model, account_id=self.account_id,
                stream=self.stream, status=status,
                latency_ms=round((time.monotonic() - self.start) * 1000), ttft_ms=ttft,
                tokens_in=_count(usage.get("prompt_tokens")),
                tokens_out=_count(usage.get("completion_tokens")),
                error=clean_error(error, self.secrets), instance=self.instance,
                key_label=self.key_label, request_body=self.request_body,
                response_body=_body_text(b"".join(self.response_parts))
                if self.response_parts else "",
            ))
            live_status.notify_changed()  # the admin's live status page
        except Exception:
            log.exception("request log: record lost")


class _ObservedSession:
    """A StreamSession that notes the upstream usage and the first token for the trace."""

    def __init__(self, inner: StreamSession, trace: RelayTrace) -> None:
        self.inner = inner
        self.trace = trace
        self.keepalive = inner.keepalive

    def feed(self, chunk: dict) -> list[bytes]:
        if isinstance(chunk.get("usage"), dict):
            self.trace.usage = chunk["usage"]
        if self.trace.first_token is None and _has_token(chunk):
            self.trace.first_token = time.monotonic()
        return self._kept(self.inner.feed(chunk))

    def close(self) -> list[bytes]:
        out = self.inner.close()
        self.trace.closed = True
        return self._kept(out)

    def fail(self, error: ApiError) -> list[bytes]:
        for secret in self.trace.secrets:  # an upstream may quote the account's key
            if secret and len(secret) >= 6:
                error.message = error.message.replace(secret, "[redacted]")
        return self._kept(self.inner.fail(error))

    def _kept(self, out: list[bytes]) -> list[bytes]:
        if self.trace.keep_bodies:
            for data in out:
                self.trace.keep_response(data)
        return out
