"""The request log: rows written off the hot path by a real `iflow2api serve`, and the queue
behind it (batches, bound, flush, shutdown)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import threading
from datetime import datetime

import anthropic
import httpx
import pytest
from django.utils import timezone

from iflow2api_lib.threads import LOW_PRIORITY_NICE
from proxy import requestlog
from proxy.models import RequestLog
from proxy.requestlog import RequestLogWriter, RequestRecord, clean_error
from tests.conftest import FAKE_KEY
from tests.fakes import scenarios as sc
from tests.servers import GatewayServer
from tests.services import fresh_postgres_database

MESSAGES = [{"role": "user", "content": "hi"}]
FIELDS = ("id", "api", "model", "requested_model", "account__provider", "stream", "status",
          "latency_ms", "ttft_ms", "tokens_in", "tokens_out", "error", "instance",
          "tokens_cached")


def rows_since(server: GatewayServer, since: datetime, count: int = 1) -> list[dict]:
    """The rows of requests started after `since`, waiting (in one shell) for `count`."""
    code = f"""
import datetime, json, time
from proxy.models import RequestLog
since = datetime.datetime.fromisoformat({since.isoformat()!r})
for _ in range(100):
    rows = list(RequestLog.objects.filter(started_at__gte=since).order_by("id")
                .values(*{FIELDS!r}))
    if len(rows) >= {count}:
        break
    time.sleep(0.1)
print(json.dumps(rows))
"""
    return json.loads(server.shell(code).strip().splitlines()[-1])


def post_chat(server: GatewayServer, **body) -> httpx.Response:
    return httpx.post(server.url + "/v1/chat/completions", timeout=30,
                      json={"model": "glm-5", "messages": MESSAGES, **body})


# --- through a real server ----------------------------------------------------------------------


def test_a_chat_completion_writes_one_row(gateway, upstream):
    start = timezone.now()
    upstream.script(sc.text("Hello there", usage={"prompt_tokens": 11, "completion_tokens": 3,
                                                  "total_tokens": 14}))
    assert post_chat(gateway).status_code == 200
    [row] = rows_since(gateway, start)
    assert row["api"] == "openai" and row["stream"] is False
    assert row["status"] == 200 and row["error"] == ""
    assert row["model"] == "glm-5" and row["requested_model"] == "glm-5"
    assert row["account__provider"] == "iflow"
    assert row["latency_ms"] >= 0 and row["ttft_ms"] is None
    assert (row["tokens_in"], row["tokens_out"]) == (11, 3)
    assert row["instance"] == "default"


def test_a_stream_row_has_time_to_first_token_and_usage(gateway, upstream):
    start = timezone.now()
    upstream.script(sc.slow(sc.text("one two three", chunks=3, usage={
        "prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25}), first_delay=0.4))
    response = post_chat(gateway, stream=True)
    assert response.status_code == 200 and "[DONE]" in response.text
    [row] = rows_since(gateway, start)
    assert row["stream"] is True and row["status"] == 200
    assert row["ttft_ms"] is not None and 300 <= row["ttft_ms"] <= row["latency_ms"]
    assert (row["tokens_in"], row["tokens_out"]) == (20, 5)


def test_an_anthropic_stream_is_logged_as_anthropic(gateway, upstream):
    start = timezone.now()
    upstream.script(sc.text("Bonjour", usage={"prompt_tokens": 7, "completion_tokens": 2,
                                              "total_tokens": 9}))
    client = anthropic.Anthropic(base_url=gateway.url, api_key="x", max_retries=0)
    with client.messages.stream(model="claude-sonnet-4-6", max_tokens=64,
                                messages=MESSAGES) as stream:
        assert stream.get_final_text() == "Bonjour"
    [row] = rows_since(gateway, start)
    assert row["api"] == "anthropic" and row["stream"] is True and row["status"] == 200
    assert row["model"] == "glm-5"  # the tier mapping: the model actually used
    assert row["ttft_ms"] is not None
    assert (row["tokens_in"], row["tokens_out"]) == (7, 2)


def test_an_upstream_error_is_logged_with_its_status_and_no_secret(gateway, upstream):
    start = timezone.now()
    upstream.script(sc.envelope_error("511", f"context too long (key {FAKE_KEY})"))
    assert post_chat(gateway).status_code == 400
    [row] = rows_since(gateway, start)
    assert row["status"] == 400
    assert "context too long" in row["error"]
    assert FAKE_KEY not in row["error"]
    assert row["account__provider"] == "iflow"


def test_a_mid_stream_drop_is_logged_with_the_in_band_error(gateway, upstream):
    start = timezone.now()
    upstream.script(sc.drop_after(3, sc.text("a b c d e f g h i j", chunks=10)))
    assert post_chat(gateway, stream=True).status_code == 200
    [row] = rows_since(gateway, start)
    assert row["stream"] is True and row["status"] == 502
    assert row["error"]


def test_an_error_before_the_stream_is_logged_with_its_status(gateway, upstream):
    start = timezone.now()
    upstream.script(sc.empty_stream())
    assert post_chat(gateway, stream=True).status_code == 502
    [row] = rows_since(gateway, start)
    assert row["stream"] is True and row["status"] == 502 and "empty" in row["error"]


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_queued_rows_are_written_at_shutdown(fake_iflow, upstream, database):
    with contextlib.ExitStack() as stack:
        env = {"IFLOW_API_KEY": FAKE_KEY, "IFLOW_BASE_URL": fake_iflow.base_url}
        if database == "postgres":  # the writer thread with Django's connection pool
            env["DATABASE_URL"] = stack.enter_context(fresh_postgres_database())
        server = stack.enter_context(GatewayServer(env))
        start = timezone.now()
        for stream in (False, True, False):
            assert post_chat(server, stream=stream).status_code == 200
        assert server.process is not None
        server.process.send_signal(signal.SIGTERM)  # at once: rows may still be queued
        server.process.wait(15)
        rows = rows_since(server, start, 3)
        assert [row["stream"] for row in rows] == [False, True, False]
        assert "request log" not in server.output()  # no write failed


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_rows_keep_existing_accounts_and_drop_deleted_ones(fake_iflow, upstream, database):
    # The writer checks a batch's accounts with its own SQL in the batch's transaction: the
    # account of a served request is kept, one deleted meanwhile is logged as none.
    with contextlib.ExitStack() as stack:
        env = {"IFLOW_API_KEY": FAKE_KEY, "IFLOW_BASE_URL": fake_iflow.base_url}
        if database == "postgres":
            env["DATABASE_URL"] = stack.enter_context(fresh_postgres_database())
        server = stack.enter_context(GatewayServer(env))
        start = timezone.now()
        assert post_chat(server).status_code == 200
        [row] = rows_since(server, start)
        assert row["account__provider"] == "iflow"
        code = """
from django.utils import timezone
from accounts.models import Account
from proxy.models import RequestLog
from proxy.requestlog import RequestRecord, Stats, write_rows
kept = Account.objects.get().pk
stats = Stats()
write_rows([RequestRecord(started_at=timezone.now(), api="openai", account_id=kept,
                          request_id="kept-1"),
            RequestRecord(started_at=timezone.now(), api="openai", account_id=987654,
                          request_id="gone-1")], stats)
print(stats.written, stats.failed, kept,
      *RequestLog.objects.filter(request_id__in=["kept-1", "gone-1"])
      .order_by("request_id").values_list("account_id", flat=True))
"""
        written, failed, kept, gone_account, kept_account = \
            server.shell(code).strip().splitlines()[-1].split()
        assert (written, failed) == ("2", "0")
        assert gone_account == "None" and kept_account == kept


# --- the queue ----------------------------------------------------------------------------------


def record(**fields) -> RequestRecord:
    return RequestRecord(**{"started_at": timezone.now(), "api": "openai", "model": "glm-5",
                            "latency_ms": 5, **fields})


@pytest.mark.django_db(transaction=True)
def test_batches_are_written_by_the_writer_thread():
    writer = RequestLogWriter()

    async def go() -> None:
        for i in range(250):
            writer.log(record(tokens_in=i))
        await writer.flush()

    asyncio.run(go())
    assert RequestLog.objects.count() == 250
    assert writer.stats.written == 250


def thread_nice(executor) -> int:
    return executor.submit(lambda: os.getpriority(os.PRIO_PROCESS,
                                                  threading.get_native_id())).result()


@pytest.mark.skipif(sys.platform != "linux", reason="threads are niced one by one on Linux only")
def test_the_writer_thread_runs_at_the_lowest_priority_and_nothing_else_does():
    own = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    writer = RequestLogWriter()
    try:
        assert thread_nice(writer.executor) == LOW_PRIORITY_NICE == 19
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == own
        assert os.getpriority(os.PRIO_PROCESS, os.getpid()) == own  # not the whole process
    finally:
        writer.executor.shutdown()


@pytest.mark.skipif(sys.platform != "linux", reason="threads are niced one by one on Linux only")
@pytest.mark.django_db(transaction=True)
def test_a_backlog_is_written_by_a_normal_priority_thread_until_it_is_short():
    writer = RequestLogWriter()
    count = requestlog.BACKLOG_ROWS + 5 * requestlog.BATCH_SIZE

    async def go() -> None:
        for i in range(count):  # all queued before the writer task runs at all
            writer.log(record(tokens_in=i))
        await writer.flush()

    asyncio.run(go())
    assert RequestLog.objects.count() == count == writer.stats.written
    # Batches taken while BACKLOG_ROWS or more still waited: 1,400 … 1,000 left after each.
    assert writer.stats.catch_up_batches == 5
    assert thread_nice(writer.catch_up_executor()) == os.getpriority(os.PRIO_PROCESS, 0)
    assert thread_nice(writer.executor) == 19


@pytest.mark.django_db(transaction=True)
def test_a_full_queue_drops_and_counts(monkeypatch):
    monkeypatch.setattr(requestlog, "QUEUE_MAX", 10)
    writer = RequestLogWriter()

    async def go() -> None:
        for _ in range(25):
            writer.log(record())
        await writer.flush()

    asyncio.run(go())
    assert writer.stats.dropped == 15
    assert RequestLog.objects.count() == 10


@pytest.mark.django_db(transaction=True)
def test_unknown_accounts_become_null_and_sync_callers_write_at_once():
    RequestLogWriter().log(record(account_id=987654, error="boom"))  # no loop: written at once
    row = RequestLog.objects.get()
    assert row.account_id is None and row.error == "boom"


def test_log_request_never_raises(monkeypatch):
    def broken(records, stats):
        raise RuntimeError("database gone")

    monkeypatch.setattr(requestlog, "write_rows", broken)
    RequestLogWriter().log(record())  # logged, not raised


def test_errors_are_cleaned():
    text = ("Incorrect API key provided: sk-abcdef123456 (Authorization: Bearer tok.en-1) "
            'api_key="xyz" ' + "k" * 45 + " for model qwen3-coder-plus")
    cleaned = clean_error(text + " secret-of-the-account", ["secret-of-the-account"])
    for secret in ("sk-abcdef123456", "tok.en-1", "xyz", "k" * 45, "secret-of-the-account"):
        assert secret not in cleaned
    assert "Incorrect API key provided" in cleaned and "qwen3-coder-plus" in cleaned
    assert clean_error("max_tokens is too large") == "max_tokens is too large"
    assert len(clean_error("word " * 300)) == 500
    assert clean_error("two\nlines") == "two lines"
