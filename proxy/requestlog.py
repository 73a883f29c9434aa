"""The request log: one RequestLog row per API request, written off the hot path.

Where it is called:
- `proxy/relay.py` records every request that reaches `relay()` through `RelayTrace`
  (proxy/trace.py): non-streaming answers after `answer()`, streams in the `finish` callback of
  `stream_body` (in-band error or None), errors before the stream with their status (a
  rate-limit refusal included). Errors it recorded are marked, so the handlers do not log
  them twice.
- Requests refused before `relay()` (bad JSON, unknown model, wrong client key) are logged by
  the handlers through `log_refused()` (proxy/trace.py).

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
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from functools import cache

from django.db import close_old_connections, connection, transaction

from instances import status as live_status
from proxy import metrics

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
    if text is None or text == "":  # the usual case, once per request: no regex passes
        return ""
    text = " ".join(str(text).split())
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


# The columns write_rows() fills, in the order of row_values().
ROW_FIELDS = ("started_at", "instance", "key_label", "account", "model", "requested_model", "api",
              "stream", "status", "latency_ms", "ttft_ms", "tokens_in", "tokens_out", "error",
              "request_body", "response_body")


@cache
def insert_sql(vendor: str) -> str:
    """One INSERT for executemany. The ORM's bulk_create compiled every value of every row
    (~12 ms of CPU per 100 rows, holding the GIL beside the event loop); the statement is the
    same each time, so it is built once per database vendor."""
    from proxy.models import RequestLog

    meta, quote = RequestLog._meta, connection.ops.quote_name
    columns = ", ".join(quote(meta.get_field(name).column) for name in ROW_FIELDS)
    marks = ", ".join(["%s"] * len(ROW_FIELDS))
    return f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES ({marks})"


def row_values(r: RequestRecord, known_accounts: set[int]) -> tuple[object, ...]:
    return (connection.ops.adapt_datetimefield_value(r.started_at), r.instance[:64],
            r.key_label[:100], r.account_id if r.account_id in known_accounts else None,
            r.model[:200], r.requested_model[:200], r.api, r.stream, r.status,
            max(0, r.latency_ms), r.ttft_ms, r.tokens_in, r.tokens_out, r.error[:ERROR_MAX],
            r.request_body, r.response_body)


def write_rows(records: list[RequestRecord]) -> None:
    """Inserts rows in one transaction (in the writer thread, or at exit). Accounts deleted in
    the meantime are logged as none."""
    from accounts.models import Account

    close_old_connections()
    try:
        ids = {r.account_id for r in records if r.account_id is not None}
        known = set(Account.objects.filter(pk__in=ids).values_list("pk", flat=True))
        rows = [row_values(r, known) for r in records]
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.executemany(insert_sql(connection.vendor), rows)
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
