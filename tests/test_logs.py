"""Structured logs (iflow2api_lib/logs.py): request ids, the JSON and plain formats, secrets
masked; then for real: `iflow2api serve` and a Celery worker with LOG_FORMAT=json."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from iflow2api_lib import logs
from iflow2api_lib.logs import (
    JsonFormatter,
    LoopBatchedStreamHandler,
    PlainFormatter,
    RequestIdFilter,
    accept_request_id,
    redact,
    request_id,
    with_request_id,
)
from tests.conftest import FAKE_KEY
from tests.fakes import scenarios as sc
from tests.servers import ROOT, GatewayServer
from tests.services import REDIS_URL, require_redis

GENERATED = re.compile(r"req_[0-9a-f]{24}")
CLIENT_KEY = "sk-client-key-for-the-log-test-7f3a9c"
MESSAGES = [{"role": "user", "content": "hi"}]


# --- redaction ----------------------------------------------------------------------------------


@pytest.mark.parametrize("text, secret", [
    ("Authorization: Bearer abc.DEF-123_xyz", "abc.DEF-123_xyz"),
    ("upstream said: invalid key sk-live-0123456789abcdef", "0123456789abcdef"),
    ("GET /x?api_key=hunter2hunter2&page=2", "hunter2hunter2"),
    ('{"access_token": "tok-9988776655"}', "tok-9988776655"),
    ("refresh_token=r3fr3sh-value;", "r3fr3sh-value"),
    ("x-api-key: plainsecretvalue", "plainsecretvalue"),
    ("Cookie: BXAuth=abc123; other=def456", "abc123"),
    ("Cookie: BXAuth=abc123; other=def456", "def456"),
    ("postgresql://user:pa55word@db:5432/x", "pa55word"),
    ("opaque " + "Ab3" * 14 + " end", "Ab3" * 14),
])
def test_redact_masks_secrets(text, secret):
    assert secret not in redact(text)
    assert "[redacted]" in redact(text)


@pytest.mark.parametrize("text", [
    "POST /v1/chat/completions 200 12ms",
    "request req_0123456789abcdef01234567 done",
    "account 3 (iFlow (environment)) needs a new login: expired",
    "/work/main/.venv/lib/python3.11/site-packages/django/core/handlers/exception.py",
    "test_an_upstream_error_is_logged_with_its_status_and_no_secret",  # long, but no digit
    "3f2a3c1e-9b7d-4a51-8c0e-1d2e3f4a5b6c",  # task ids (UUIDs)
    "prompt_tokens=11 completion_tokens=3",
])
def test_redact_leaves_ordinary_text_alone(text):
    assert redact(text) == text


# --- request ids --------------------------------------------------------------------------------


def test_a_sane_client_request_id_is_kept_and_anything_else_replaced():
    assert accept_request_id(b"trace.abc-1_2") == "trace.abc-1_2"
    longest = "span." * 12 + "span"  # 64 characters (one unbroken 40+ run reads as a secret)
    assert accept_request_id(longest) == longest
    for bad in (None, b"", "x" * 65, "has space", "semi;colon", "é", "sk-secret-client-key",
                "a1" * 25):  # the last two look like secrets: never echoed into the logs
        assert GENERATED.fullmatch(accept_request_id(bad)), bad
    assert accept_request_id(None) != accept_request_id(None)


def capture(formatter: logging.Formatter,
            stream: io.StringIO | None = None) -> tuple[logging.Logger, io.StringIO]:
    stream = stream or io.StringIO()
    handler = LoopBatchedStreamHandler(stream)  # the console handler of the settings
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(formatter)
    logger = logging.getLogger(f"tests.logs.{uuid.uuid4().hex}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    return logger, stream


def test_json_lines_carry_the_request_id_extras_and_masked_exceptions():
    logger, stream = capture(JsonFormatter())
    logger.info("outside a request")
    token = request_id.set("req_test")
    try:
        logger.warning("calling %s with %s", "upstream", f"Bearer {FAKE_KEY}",
                       extra={"status": 502, "path": "/v1/x"})
        try:
            raise RuntimeError(f"upstream refused key {FAKE_KEY}")
        except RuntimeError:
            logger.exception("failed")
    finally:
        request_id.reset(token)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 3
    first, second, third = lines
    assert first["request_id"] == "-" and first["message"] == "outside a request"
    assert set(first) == {"time", "level", "logger", "message", "request_id"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
    assert second["request_id"] == "req_test" and second["level"] == "WARNING"
    assert second["message"] == "calling upstream with Bearer [redacted]"
    assert (second["status"], second["path"]) == (502, "/v1/x")
    assert third["request_id"] == "req_test" and third["level"] == "ERROR"
    assert "Traceback" in third["exc_info"] and "RuntimeError" in third["exc_info"]
    assert FAKE_KEY not in stream.getvalue()
    assert "fake-iflow-key" not in stream.getvalue()


def test_plain_lines_show_the_request_id():
    logger, stream = capture(PlainFormatter())
    token = request_id.set("trace-7")
    try:
        logger.error("key=%s", FAKE_KEY)
    finally:
        request_id.reset(token)
    logger.info("idle")
    first, second = stream.getvalue().splitlines()
    assert re.fullmatch(r"\S+ \S+ ERROR tests\.logs\.\w+ \[trace-7\] key=\[redacted\]", first)
    assert second.endswith("[-] idle")


def test_plain_lines_mask_exceptions_and_records_no_filter_saw():
    # The filter masks the message; the formatter skips a second pass over such a line only
    # when nothing else (a traceback, a stack) was added to it.
    logger, stream = capture(PlainFormatter())
    try:
        raise RuntimeError(f"upstream refused key {FAKE_KEY}")
    except RuntimeError:
        logger.exception("failed")
    logger.info("stack", stack_info=True)
    unfiltered = logging.makeLogRecord({"msg": "key=%s", "args": (FAKE_KEY,), "name": "x",
                                        "levelno": logging.INFO, "levelname": "INFO"})
    text = stream.getvalue() + PlainFormatter().format(unfiltered)
    assert "Traceback" in text and "RuntimeError: upstream refused key" in text
    assert "key=[redacted]" in text
    assert FAKE_KEY not in text



def test_plain_times_match_the_standard_formatter_across_seconds():
    """PlainFormatter makes the second's text once a second; the text is Formatter's."""
    ours, standard = PlainFormatter(), logging.Formatter()
    start = 1_700_000_000.0
    for created in [start + step * 0.0997 for step in range(40)] + [start - 86_400 * 200.5]:
        record = logging.makeLogRecord({"created": created,
                                        "msecs": (created - int(created)) * 1000})
        assert ours.formatTime(record) == standard.formatTime(record)
        assert ours.formatTime(record, "%H:%M:%S") == standard.formatTime(record, "%H:%M:%S")


@pytest.mark.parametrize("method", ["GET", "POST", "BEARER", "KEY"])
def test_the_access_line_masks_a_secret_in_the_path_and_remembers_no_secret(caplog, method):
    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    caplog.set_level(logging.INFO, logger="iflow2api.access")
    caplog.handler.addFilter(RequestIdFilter())
    handler = logging.StreamHandler(stream := io.StringIO())
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(PlainFormatter())
    logs.access_log.addHandler(handler)
    try:
        for path in (f"/v1/keys/{CLIENT_KEY}", "/v1/models?x", f"/v1/x/token={FAKE_KEY}"):
            scope = {"type": "http", "method": method, "path": path, "headers": []}
            asyncio.run(with_request_id(app)(scope, None, lambda m: asyncio.sleep(0)))
    finally:
        logs.access_log.removeHandler(handler)
    text = stream.getvalue() + "".join(r.getMessage() + str(r.path) for r in caplog.records)
    assert CLIENT_KEY not in text and FAKE_KEY not in text
    assert text.count("[redacted]") >= 4
    assert not any(CLIENT_KEY in p or FAKE_KEY in p for p in logs._clean_paths)
    if method in ("GET", "POST"):  # the path is masked alone, and a clean one remembered
        assert " /v1/models?x 404 " in stream.getvalue()
        assert "/v1/models?x" in logs._clean_paths
    else:  # any other method: the whole line is masked, as ever ("Bearer <path>")
        expected = redact(f"{method} /v1/models?x 404 ")  # BEARER: "BEARER [redacted]?x"
        assert f"] {expected}" in stream.getvalue()


class WriteCounter(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def test_lines_logged_on_a_loop_are_written_together_at_the_end_of_its_pass_in_order():
    stream = WriteCounter()
    logger, _ = capture(PlainFormatter(fmt="%(message)s"), stream)
    logger.info("before the loop")  # no loop running: written at once
    assert (stream.getvalue(), stream.writes) == ("before the loop\n", 1)

    async def burst() -> list[str]:
        for n in range(3):
            logger.info("on the loop %d", n)
        seen = [stream.getvalue()]  # nothing written yet: the lines wait for the pass to end
        # A thread's line goes out at once, after the waiting ones.
        await asyncio.to_thread(logger.warning, "from a thread")
        seen.append(stream.getvalue())
        logger.info("after")
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        seen.append(stream.getvalue())
        return seen

    waiting, after_thread, at_end = asyncio.run(burst())
    assert waiting == "before the loop\n"
    assert after_thread == "before the loop\non the loop 0\non the loop 1\non the loop 2\n" \
        "from a thread\n"
    assert at_end == after_thread + "after\n"
    assert stream.writes == 3  # the three loop lines and the thread's went out in one write


def test_a_line_left_by_a_loop_that_closed_goes_out_with_the_next_loops_lines():
    stream = WriteCounter()
    logger, _ = capture(PlainFormatter(fmt="%(message)s"), stream)

    loop = asyncio.new_event_loop()

    def log_then_stop() -> None:
        logger.info("left behind")
        loop.stop()  # at the end of this pass: before the write the line queued

    loop.call_soon(log_then_stop)
    loop.run_forever()
    loop.close()
    assert stream.getvalue() == ""

    async def log_then_pass() -> None:
        logger.info("next")
        await asyncio.sleep(0)

    asyncio.run(log_then_pass())
    assert stream.getvalue() == "left behind\nnext\n"


def test_waiting_lines_are_written_by_flush_and_past_the_cap():
    stream = WriteCounter()
    logger, _ = capture(PlainFormatter(fmt="%(message)s"), stream)
    (handler,) = logger.handlers

    async def log_then_flush() -> tuple[str, str]:
        logger.info("one")
        before = stream.getvalue()
        handler.flush()  # logging.shutdown at exit does this
        return before, stream.getvalue()

    assert asyncio.run(log_then_flush()) == ("", "one\n")

    async def many() -> int:
        for n in range(LoopBatchedStreamHandler.max_waiting):
            logger.info("%d", n)
        return len(stream.getvalue().splitlines())

    assert asyncio.run(many()) == 1 + LoopBatchedStreamHandler.max_waiting


def test_a_bad_format_string_is_left_to_the_handler():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%d", ("nope",), None)
    assert RequestIdFilter().filter(record) is True
    assert record.request_id == "-"


def test_an_invalid_log_format_stops_the_settings(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", "import iflow2api_site.settings"], cwd=ROOT, capture_output=True,
        text=True, env={"PATH": "/usr/bin:/bin", "IFLOW2API_HOME": str(tmp_path),
                        "LOG_FORMAT": "xml"})
    assert result.returncode != 0 and "LOG_FORMAT must be plain or json" in result.stderr


# --- the ASGI wrapper ---------------------------------------------------------------------------


def run_app(app, headers=(), path="/v1/x"):  # type: ignore[no-untyped-def]
    """Runs an ASGI app for one request: (response start message, ids the app saw)."""
    sent: list[dict] = []

    async def receive():  # type: ignore[no-untyped-def]
        return {"type": "http.request", "body": b""}

    async def send(message):  # type: ignore[no-untyped-def]
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "headers": list(headers)}
    asyncio.run(with_request_id(app)(scope, receive, send))
    return sent[0]


def test_the_wrapper_sets_the_id_for_the_request_and_its_tasks(caplog):
    seen: list[str] = []

    async def read() -> str:
        return request_id.get()

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        seen.append(request_id.get())
        seen.append(await asyncio.create_task(read()))  # a task started by the request
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    caplog.set_level(logging.INFO, logger="iflow2api.access")
    caplog.handler.addFilter(RequestIdFilter())
    start = run_app(app, [(b"x-request-id", b"abc-1")], path="/v1/x\nFORGED")
    assert seen == ["abc-1", "abc-1"] and request_id.get() == "-"
    assert (b"x-request-id", b"abc-1") in start["headers"]
    [record] = caplog.records
    assert record.request_id == "abc-1" and record.status == 201
    assert record.getMessage().startswith("GET /v1/x\\x0aFORGED 201 ")

    start = run_app(app)
    [(name, value)] = start["headers"]
    assert name == b"x-request-id" and GENERATED.fullmatch(value.decode())


def test_the_wrapper_keeps_an_id_the_app_set_and_logs_failures(caplog):
    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"X-Request-Id", b"own")]})
        await send({"type": "http.response.body", "body": b""})

    assert run_app(app)["headers"] == [(b"X-Request-Id", b"own")]

    async def broken(scope, receive, send):  # type: ignore[no-untyped-def]
        raise RuntimeError("bug")

    caplog.set_level(logging.INFO, logger="iflow2api.access")
    with pytest.raises(RuntimeError):
        run_app(broken)
    assert [(r.levelname, r.status) for r in caplog.records][-1] == ("WARNING", 500)
    assert logs.access_log.name == "iflow2api.access"


# --- for real: `iflow2api serve` ----------------------------------------------------------------


class SplitOutputServer(GatewayServer):
    """A gateway whose stderr (the log) is kept apart from stdout (the serve banner)."""

    def stderr_target(self) -> Any:
        self.err_path = Path(self.home) / "stderr.log"
        return self.err_path.open("wb")

    def everything_written(self) -> str:
        return self.output() + self.log()

    def log(self) -> str:
        return self.read(self.err_path)


def unparsable_stream() -> sc.Scenario:
    """A stream whose first event carries a line that is not JSON (the client logs a warning
    deep inside the request)."""
    chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "glm-5",
             "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}]}
    end = {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    return sc.raw(headers={"content-type": "text/event-stream"}, body_chunks=[
        f"data:{json.dumps(chunk)}\ndata:this is not json\n\n".encode(),
        f"data:{json.dumps(end)}\n\n".encode(), b"data:[DONE]\n\n"])


def test_a_server_with_json_logs_tags_every_line_and_leaks_no_secret(fake_iflow, upstream):
    env = {"IFLOW_API_KEY": FAKE_KEY, "IFLOW_BASE_URL": fake_iflow.base_url,
           "IFLOW2API_API_KEYS": CLIENT_KEY, "LOG_FORMAT": "json", "LOG_LEVEL": "DEBUG"}
    auth = {"Authorization": f"Bearer {CLIENT_KEY}"}
    server = SplitOutputServer(env)
    with server, httpx.Client(base_url=server.url, timeout=30) as client:
        upstream.script(sc.text("Hello", usage={"prompt_tokens": 5, "completion_tokens": 1,
                                                "total_tokens": 6}))
        ok = client.post("/v1/chat/completions", json={"model": "glm-5", "messages": MESSAGES},
                         headers={**auth, "x-request-id": "trace.ok-1"})
        assert ok.status_code == 200 and ok.headers["x-request-id"] == "trace.ok-1"

        upstream.script(unparsable_stream())
        stream = client.post("/v1/chat/completions", headers=auth, json={
            "model": "glm-5", "messages": MESSAGES, "stream": True})
        assert stream.status_code == 200 and "[DONE]" in stream.text
        stream_id = stream.headers["x-request-id"]
        assert GENERATED.fullmatch(stream_id)

        upstream.script(sc.http_error(500, {"error": {"message": f"boom for key {FAKE_KEY}"}}))
        failed = client.post("/v1/chat/completions", headers=auth,
                             json={"model": "glm-5", "messages": MESSAGES})
        assert failed.status_code == 502
        failed_id = failed.headers["x-request-id"]

        refused = client.post("/v1/chat/completions", json={"model": "glm-5", "messages": []},
                              headers={"Authorization": f"Bearer {CLIENT_KEY}-wrong",
                                       "x-request-id": CLIENT_KEY})
        assert refused.status_code == 401
        refused_id = refused.headers["x-request-id"]
        assert GENERATED.fullmatch(refused_id)  # a secret-looking id is not echoed

        missing = client.get("/no-such-page")  # Django's handler, sync middleware threads
        assert missing.status_code == 404
        missing_id = missing.headers["x-request-id"]
    log, banner = server.log(), server.output()

    entries = [json.loads(line) for line in log.splitlines()]  # every line is JSON
    assert entries
    for entry in entries:
        assert {"time", "level", "logger", "message", "request_id"} <= set(entry), entry
    by_id: dict[str, list[dict]] = {}
    for entry in entries:
        by_id.setdefault(entry["request_id"], []).append(entry)
    assert [e["status"] for e in by_id["trace.ok-1"] if e["logger"] == "iflow2api.access"] == [200]
    assert any("unparsable upstream event" in e["message"] for e in by_id[stream_id])
    assert [(e["level"], e["status"]) for e in by_id[failed_id]
            if e["logger"] == "iflow2api.access"] == [("WARNING", 502)]
    assert [e["status"] for e in by_id[refused_id] if e["logger"] == "iflow2api.access"] == [401]
    assert any(e["logger"] == "django.request" and "Not Found" in e["message"]
               for e in by_id[missing_id])
    # Lines outside requests (startup, shutdown) have no id; health probes are DEBUG lines.
    assert any(e["request_id"] == "-" for e in entries)
    assert any(e.get("path") == "/health" and e["level"] == "DEBUG" for e in entries)
    for secret in (FAKE_KEY, CLIENT_KEY):
        assert secret not in log and secret not in banner


def test_plain_logs_of_the_shared_server_show_the_request_id(gateway, upstream):
    upstream.script(sc.text("Hi"))
    response = httpx.post(gateway.url + "/v1/chat/completions", timeout=30,
                          json={"model": "glm-5", "messages": MESSAGES},
                          headers={"x-request-id": "plain-check-1"})
    assert response.headers["x-request-id"] == "plain-check-1"
    deadline = time.monotonic() + 5
    while "iflow2api.access [plain-check-1]" not in gateway.output():
        assert time.monotonic() < deadline, gateway.output()[-2000:]
        time.sleep(0.05)
    [line] = [x for x in gateway.output().splitlines()
              if "[plain-check-1]" in x and " iflow2api.access " in x]
    assert re.search(r" INFO iflow2api\.access \[plain-check-1\] POST /v1/chat/completions 200 "
                     r"\d+ms$", line)


# --- for real: a Celery worker ------------------------------------------------------------------


def test_a_celery_worker_logs_json_with_the_task_id(tmp_path):
    require_redis()
    from celery import Celery

    redis_url = REDIS_URL.rsplit("/", 1)[0] + "/12"  # a database of its own
    import redis

    redis.Redis.from_url(redis_url).delete("celery")
    env = {k: v for k, v in os.environ.items()
           if k not in {"DATABASE_URL", "DJANGO_SETTINGS_MODULE", "LOG_LEVEL", "LOG_FORMAT"}}
    env.update({"IFLOW2API_HOME": str(tmp_path), "REDIS_URL": redis_url, "LOG_FORMAT": "json",
                "IMPORT_IFLOW_SETTINGS": "0"})
    err_path = tmp_path / "worker.err"
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "iflow2api_site", "worker", "-l", "info",
         "--pool", "solo", "--without-gossip", "--without-mingle", "--without-heartbeat"],
        cwd=ROOT, env=env, stdout=(tmp_path / "worker.out").open("wb"),
        stderr=err_path.open("wb"))
    try:
        # The worker's database is not migrated: the task fails with a traceback, logged.
        # An app of its own, not made the current one: the tasks of later tests in this
        # process must still find the configured app (eager without Redis).
        task_id = Celery(broker=redis_url, set_as_current=False).send_task(
            "accounts.tasks.refresh_account_task", args=[999999]).id
        deadline = time.monotonic() + 20
        while "raised unexpected" not in err_path.read_text():
            assert worker.poll() is None and time.monotonic() < deadline, err_path.read_text()
            time.sleep(0.1)
    finally:
        worker.terminate()
        worker.wait(15)
    entries = [json.loads(line) for line in err_path.read_text().splitlines()]
    assert any(e["message"].endswith(" ready.") and e["request_id"] == "-" for e in entries)
    [failure] = [e for e in entries if "raised unexpected" in e["message"]]
    assert failure["request_id"] == task_id and failure["level"] == "ERROR"
    assert "Traceback" in failure["exc_info"]


_SOLE_CONSOLE_HANDLER = logs._sole_console_handler


class _Clock:
    """time.time() for both ways of writing an access line: the same instants in turn."""

    def __init__(self, instants: list[float]) -> None:
        self.instants = instants
        self.at = 0

    def __call__(self) -> float:
        value = self.instants[self.at % len(self.instants)]
        self.at += 1
        return value


def _access_lines(monkeypatch: pytest.MonkeyPatch, *, direct: bool,
                  cases: list[tuple[str, str, int | None, float]]) -> tuple[str, int]:
    """The console lines `serve`'s set-up writes for these access lines (method, path,
    status, seconds), and how many went the direct way."""
    stream = io.StringIO()
    handler = LoopBatchedStreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(PlainFormatter())
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [handler])  # pytest's own handlers out of the way
    monkeypatch.setattr(logs.access_log, "level", logging.NOTSET)
    monkeypatch.setattr(root, "level", logging.DEBUG)  # the /health line is DEBUG
    monkeypatch.setattr(logging.getLogger("asyncio"), "level", logging.WARNING)
    logging.Logger.manager._clear_cache()  # type: ignore[attr-defined]
    monkeypatch.setattr(time, "time", _Clock([1765000000.0, 1765000000.9994, 1765000001.0501]))
    taken = [0]
    sole = _SOLE_CONSOLE_HANDLER  # not a patched one left by an earlier call in the test

    def counted(level: int) -> LoopBatchedStreamHandler | None:
        found = sole(level) if direct else None
        taken[0] += found is not None
        return found

    monkeypatch.setattr(logs, "_sole_console_handler", counted)

    async def main() -> None:
        for n, (method, path, status, seconds) in enumerate(cases):
            token = request_id.set(f"req_{n:024x}")
            try:
                logs._log_access({"method": method, "path": path}, status, seconds)
            finally:
                request_id.reset(token)
        await asyncio.sleep(0)

    try:
        asyncio.run(main())
    finally:
        logging.Logger.manager._clear_cache()  # type: ignore[attr-defined]
    return stream.getvalue(), taken[0]


ACCESS_CASES = [
    ("POST", "/v1/chat/completions", 200, 0.0123),
    ("GET", "/health", 200, 0.0004),  # DEBUG
    ("POST", "/v1/messages", 502, 1.5),  # WARNING
    ("POST", "/v1/responses", None, 0.0),  # no answer started
    ("DELETE", "/v1/x/token=" + FAKE_KEY, 404, 0.002),  # masked path
    ("GET", "/v1/caf\u00e9\n", 404, 0.002),  # escaped control character
    ("BREW", "/v1/models", 405, 0.001),  # another method: logging's way, masked whole
]


def test_the_access_line_written_directly_is_the_line_logging_writes(monkeypatch):
    through_logging, none = _access_lines(monkeypatch, direct=False, cases=ACCESS_CASES)
    direct, taken = _access_lines(monkeypatch, direct=True, cases=ACCESS_CASES)
    assert none == 0 and taken == len(ACCESS_CASES) - 1  # all but BREW went the direct way
    assert direct == through_logging
    lines = direct.splitlines()
    assert len(lines) == len(ACCESS_CASES) and FAKE_KEY not in direct
    second = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(1765000000))
    assert lines[0] == (f"{second},000 INFO iflow2api.access [req_{'0' * 24}] "
                        "POST /v1/chat/completions 200 12ms")
    assert lines[1].startswith(f"{second},999 DEBUG iflow2api.access ")
    assert " WARNING iflow2api.access " in lines[2]
    assert lines[3].endswith("POST /v1/responses - 0ms")


def test_the_access_line_goes_through_logging_under_any_other_logging_set_up(monkeypatch):
    handler = LoopBatchedStreamHandler(io.StringIO())
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(PlainFormatter())
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [handler])
    assert logs._sole_console_handler(logging.INFO) is handler
    assert logs._sole_console_handler(logging.DEBUG) is handler
    monkeypatch.setattr(handler, "level", logging.WARNING)
    assert logs._sole_console_handler(logging.INFO) is None  # the handler would drop it
    monkeypatch.setattr(handler, "level", logging.NOTSET)
    for change in (lambda: root.handlers.append(logging.NullHandler()),  # caplog, a file...
                   lambda: logs.access_log.addHandler(logging.NullHandler()),
                   lambda: logs.access_log.addFilter(logging.Filter("x")),
                   lambda: handler.addFilter(logging.Filter("x")),
                   lambda: handler.setFormatter(JsonFormatter()),
                   lambda: handler.setFormatter(PlainFormatter("%(message)s")),
                   lambda: handler.setFormatter(PlainFormatter(datefmt="%H:%M")),
                   lambda: handler.setFormatter(logging.Formatter())):
        saved = (list(root.handlers), list(logs.access_log.handlers),
                 list(logs.access_log.filters), list(handler.filters), handler.formatter)
        change()
        try:
            assert logs._sole_console_handler(logging.INFO) is None
        finally:
            root.handlers[:] = saved[0]
            logs.access_log.handlers[:] = saved[1]
            logs.access_log.filters[:] = saved[2]
            handler.filters[:] = saved[3]
            handler.setFormatter(saved[4])
    monkeypatch.setattr(logs.access_log, "propagate", False)  # reaches no handler at all
    assert logs._sole_console_handler(logging.INFO) is None
