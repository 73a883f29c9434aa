"""The request log: one RequestLog row per API request, written off the hot path.

Where it is called:
- `proxy/relay.py` records every request that reaches `relay()` through `RelayTrace`
  (proxy/trace.py): non-streaming answers after `answer()`, streams in the `finish` callback of
  `stream_body` (in-band error or None), errors before the stream with their status (a
  rate-limit refusal included). Errors it recorded are marked, so the handlers do not log
  them twice.
- Requests refused before `relay()` (bad JSON, unknown model, wrong client key) are logged by
  the handlers through `log_refused()` (proxy/trace.py).

The process's `RequestLogWriter` (owned by the Runtime, proxy/runtime.py) only puts the record
on an asyncio queue (bounded: when full the record is dropped and counted). A task on the
server's loop hands batches (100 rows, or whatever arrived within 0.5 s) to one writer thread
that bulk-creates them. What is still queued at exit is written by an atexit hook the Runtime
registers, best effort.

The writer thread runs at the lowest CPU priority (iflow2api_lib/threads.py): at normal
priority its batches were most of the c=1 p99 (4.0 -> 2.8 ms without). A low-priority thread
can fall behind on a saturated core, so once BACKLOG_ROWS or more wait, batches go to a second
thread at normal priority until the queue is short again: nothing is dropped for latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import cache, partial
from typing import Any

from django.db import (
    InterfaceError,
    OperationalError,
    close_old_connections,
    connection,
    transaction,
)

from iflow2api_lib.redact import redact
from iflow2api_lib.threads import low_priority_executor

log = logging.getLogger(__name__)

QUEUE_MAX = 10_000
BATCH_SIZE = 100
FLUSH_SECONDS = 0.5
ERROR_MAX = 500
BACKLOG_ROWS = 10 * BATCH_SIZE  # waiting rows past which the normal-priority thread writes


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
    tokens_cached: int | None = None  # of tokens_in, read from the upstream's prompt cache
    cost: Decimal | None = None  # None: unknown (no prices or no usage), proxy/cost.py
    currency: str = ""
    error: str = ""  # pass it through clean_error()
    instance: str = "default"
    key_label: str = ""
    request_body: str = ""  # only for instances with log_bodies
    response_body: str = ""
    request_id: str = ""  # the one the client sees (x-request-id, request-id, error bodies)


@dataclass
class Stats:
    written: int = 0
    dropped: int = 0  # queue full
    failed: int = 0  # the database refused a batch
    catch_up_batches: int = 0  # written by the normal-priority thread (a backlog)

# --- secrets never reach the log ----------------------------------------------------------------

def clean_error(text: str | None, secrets: Iterable[str] = ()) -> str:
    """One line, at most 500 characters, with keys and tokens masked."""
    if text is None or text == "":  # the usual case, once per request: no regex passes
        return ""
    text = redact(" ".join(str(text).split()), secrets)
    return text if len(text) <= ERROR_MAX else text[: ERROR_MAX - 1] + "…"


# --- the queue and its writer -------------------------------------------------------------------


# The columns write_rows() fills, in the order of row_values().
ROW_FIELDS = ("started_at", "instance", "key_label", "account", "model", "requested_model", "api",
              "stream", "status", "latency_ms", "ttft_ms", "tokens_in", "tokens_out", "error",
              "request_body", "response_body", "request_id", "tokens_cached", "cost",
              "cost_currency")


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


def row_values(records: list[RequestRecord], known_accounts: set[int]) -> list[tuple[object, ...]]:
    """The rows of a batch, in ROW_FIELDS order. The database's adapters are looked up once
    per batch: `connection` finds the thread's connection on every attribute read, which
    per row was a third of building it."""
    ops = connection.ops
    adapt_time, adapt_decimal = ops.adapt_datetimefield_value, ops.adapt_decimalfield_value
    return [(adapt_time(r.started_at), r.instance[:64], r.key_label[:100],
             r.account_id if r.account_id in known_accounts else None,
             r.model[:200], r.requested_model[:200], r.api, r.stream, r.status,
             max(0, r.latency_ms), r.ttft_ms, r.tokens_in, r.tokens_out, r.error[:ERROR_MAX],
             r.request_body, r.response_body, r.request_id[:64], r.tokens_cached,
             adapt_decimal(r.cost, 20, 10), r.currency[:3]) for r in records]


def write_rows(records: list[RequestRecord], stats: Stats, *, keep_connection: bool = False
               ) -> None:
    """Inserts rows in one transaction (in the writer thread, or at exit). Accounts deleted in
    the meantime are logged as none. The writer thread keeps its connection between batches
    (`keep_connection`: opening one per batch was a tenth of its work) and opens a new one
    when the kept one fails, trying the batch once more."""
    if not keep_connection:
        close_old_connections()
    try:
        try:
            _insert(records)
        except (OperationalError, InterfaceError):
            if not keep_connection:
                raise
            connection.close()  # gone (a restarted database, say): once more on a new one
            _insert(records)
        stats.written += len(records)
    except Exception:
        stats.failed += len(records)
        log.exception("request log: could not write %d rows", len(records))
        if keep_connection:
            connection.close()
    finally:
        if not keep_connection:
            close_old_connections()


def _insert(records: list[RequestRecord]) -> None:
    ids = sorted({r.account_id for r in records if r.account_id is not None})
    with transaction.atomic(), connection.cursor() as cursor:
        known = _existing_accounts(cursor, ids) if ids else set()
        cursor.executemany(insert_sql(connection.vendor), row_values(records, known))


def _existing_accounts(cursor: Any, ids: list[int]) -> set[int]:
    """Which of these accounts still exist (a deleted one is logged as none). Plain SQL in
    the batch's transaction: the ORM query compiled per batch cost more than its rows."""
    from accounts.models import Account

    quote = connection.ops.quote_name
    pk = quote(Account._meta.pk.column)
    marks = ", ".join(["%s"] * len(ids))
    cursor.execute(f"SELECT {pk} FROM {quote(Account._meta.db_table)} WHERE {pk} IN ({marks})",
                   ids)
    return {row[0] for row in cursor.fetchall()}


class _Writer:
    """The queue of one event loop and the task that drains it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, owner: RequestLogWriter) -> None:
        self.loop = loop
        self.owner = owner
        self.stats = owner.stats
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
            self.stats.dropped += 1
            if self.stats.dropped % 1000 == 1:
                log.warning("request log queue full: %d records dropped so far",
                            self.stats.dropped)
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
            executor = self.owner.executor
            if self.queue.qsize() >= BACKLOG_ROWS:
                executor = self.owner.catch_up_executor()
                self.stats.catch_up_batches += 1
            try:
                await self.loop.run_in_executor(executor, partial(
                    write_rows, batch, self.stats, keep_connection=True))
            finally:
                for _ in batch:
                    self.queue.task_done()
            self.owner.on_written()  # the rows are in the database: status pages re-read

    def take_all(self) -> list[RequestRecord]:
        records, self.collecting = self.collecting, []
        while not self.queue.empty():
            records.append(self.queue.get_nowait())
        return records


class RequestLogWriter:
    """The request log of one process. `log()` never blocks the loop and never raises; a
    queue per event loop (a server has one; tests and async_to_sync callers run others)."""

    def __init__(self, on_written: Callable[[], None] = lambda: None,
                 on_record: Callable[[RequestRecord], None] = lambda record: None) -> None:
        self.stats = Stats()
        self.on_written = on_written  # told after each batch (the status pages re-read)
        # told of each record as it is logged (the Runtime passes the Prometheus counters'
        # metrics.observe, which never raises)
        self.on_record = on_record
        self.executor = low_priority_executor("requestlog")
        self._catch_up: ThreadPoolExecutor | None = None
        self._writer: _Writer | None = None

    def catch_up_executor(self) -> ThreadPoolExecutor:
        if self._catch_up is None:
            self._catch_up = ThreadPoolExecutor(max_workers=1,
                                                thread_name_prefix="requestlog-catch-up")
        return self._catch_up

    def _writer_for(self, loop: asyncio.AbstractEventLoop) -> _Writer:
        writer = self._writer
        if writer is None or writer.loop is not loop:
            old, writer = writer, _Writer(loop, self)
            self._writer = writer
            if old is not None:  # another loop (tests): carry its leftovers over
                old.task.cancel()
                for record in old.take_all():
                    writer.put(record)
        return writer

    def log(self, record: RequestRecord) -> None:
        """Queues a row. Off the loop (sync code) it writes at once."""
        self.on_record(record)
        try:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            writer = self._writer
            if loop is not None:
                self._writer_for(loop).put(record)
            elif writer is not None and writer.loop.is_running():
                writer.loop.call_soon_threadsafe(writer.put, record)
            else:
                write_rows([record], self.stats)
        except Exception:
            log.exception("request log: record lost")

    async def flush(self) -> None:
        """Waits until everything queued on this loop is written (tests, shutdown hooks)."""
        writer = self._writer
        if writer is not None and writer.loop is asyncio.get_running_loop():
            writer.wake.set()
            await writer.queue.join()

    def write_leftovers(self) -> None:
        """At exit: what is still queued, written at once."""
        if self._writer is not None:
            records = self._writer.take_all()
            if records:
                write_rows(records, self.stats)
