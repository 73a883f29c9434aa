"""Structured logs: a request id on every line, and no secret on any line.

- `with_request_id(app)` wraps the ASGI app: each HTTP request gets an id (the client's
  `x-request-id` when it is sane, else a new `req_<24 hex>`, time-ordered), kept in the `request_id`
  contextvar while the request runs (tasks it starts inherit it) and sent back in the
  `x-request-id` response header. It also writes one access line per request
  (logger `iflow2api.access`; no query string, which may carry credentials): with the
  set-up `serve` makes (the console handler alone, the plain format) the line is made and
  handed to that handler directly, the text logging would write, without a record.
- `RequestIdFilter` (on the console handler) stamps `request_id` on every record ("-" outside
  a request) and masks secrets in the message.
- `PlainFormatter` / `JsonFormatter`: LOG_FORMAT=plain (default) or json (one object a line).

No Django import at module level: the logging configuration imports this module while the
settings are still loading.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, MutableMapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import orjson

from iflow2api_lib.ids import random_hex
from iflow2api_lib.presence import ClientPresence
from iflow2api_lib.redact import redact

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

request_id: ContextVar[str] = ContextVar("request_id", default="-")

HEADER = b"x-request-id"
_SANE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
# Probes and scrapes: their access lines are DEBUG, not one INFO line every few seconds.
QUIET_PATHS = frozenset({"/health", "/metrics"})
access_log = logging.getLogger("iflow2api.access")

# --- request ids --------------------------------------------------------------------------------


def new_request_id() -> str:
    """`req_`, the time in milliseconds (11 hex digits), 13 random hex digits. Ids made later
    sort later: the request log's index on them grows at its end. With random ids every row
    of a batch landed on another page of that index, which cost the writer twice the CPU per
    row once the log held 500,000 rows, and more as it grows (docs/operations.md)."""
    return f"req_{int(time.time() * 1000):011x}{random_hex(13)}"


def accept_request_id(value: bytes | str | None) -> str:
    """The client's id when it is short, plain and not secret-looking; a new one otherwise."""
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if value and _SANE_ID.fullmatch(value) and redact(value) == value:
        return value
    return new_request_id()


def _printable(text: str) -> str:
    # A path is percent-decoded: keep a %0A from starting a forged log line.
    return re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\x{ord(m.group()):02x}", text)


def with_request_id(app: ASGIApp) -> ASGIApp:
    """Gives every HTTP request an id (contextvar + response header) and an access line."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        incoming = next((v for k, v in scope.get("headers") or () if k.lower() == HEADER), None)
        rid = accept_request_id(incoming)
        token = request_id.set(rid)
        started = time.monotonic()
        status: int | None = None
        # Reads pass through it; it notes a client gone before the end of the answer, and the
        # fast path watches it for that (iflow2api_lib/presence.py).
        presence = ClientPresence(receive)

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.body" and not message.get("more_body"):
                presence.answer_ends()
            elif message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers") or ())
                if not any(name.lower() == HEADER for name, _ in headers):
                    headers.append((HEADER, rid.encode()))
                    message = {**message, "headers": headers}
            await send(message)

        try:
            await app(scope, presence, send_with_id)
        except BaseException:
            status = status or 500
            raise
        finally:
            if presence.left:  # before the end of the answer: as the request log says
                status = 499
            _log_access(scope, status, time.monotonic() - started)
            request_id.reset(token)

    return wrapped


def log_answered_by_listener(method: str, path: str, status: int, seconds: float) -> None:
    """The access line of a request the listener answered itself (413, 408: listener.py)."""
    _log_access({"method": method, "path": path}, status, seconds)


# Methods that cannot join a path into anything the redaction rules look for ("Bearer /x…"):
# with one of these, the access line's only text from the client is its path.
_PLAIN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_CLEAN_PATHS_MAX = 512
_clean_paths: dict[str, str] = {}


def _loggable_path(path: str) -> str:
    """A path as the access line shows it: control characters escaped, secrets masked. The
    same few routes come again and again; those the masking leaves alone (no secret, so none
    is kept in memory) are remembered."""
    clean = _clean_paths.get(path)
    if clean is not None:
        return clean
    clean = redact(_printable(path))
    if clean == path and len(path) <= 256:
        if len(_clean_paths) >= _CLEAN_PATHS_MAX:
            _clean_paths.clear()
        _clean_paths[path] = path
    return clean


def _log_access(scope: Scope, status: int | None, seconds: float) -> None:
    path = scope.get("path", "")
    if path in QUIET_PATHS:
        level = logging.DEBUG
    elif status is not None and status >= 500:
        level = logging.WARNING
    else:
        level = logging.INFO
    if not access_log.isEnabledFor(level):
        return
    method = scope.get("method", "")
    duration_ms = round(seconds * 1000)
    path = _loggable_path(path)
    if method in _PLAIN_METHODS:
        console = _sole_console_handler(level)
        if console is not None:
            # The line logging would write, made without its record, filters and format:
            # half the line's cost in one process, which was ~7 % of a request's at c=50.
            console.write_line(console.formatter.plain_line(  # type: ignore[union-attr]
                time.time(), level, access_log.name, request_id.get(),
                f"{method} {path} {status or '-'} {duration_ms}ms"))
            return
    extra = {"method": method, "path": path, "status": status, "duration_ms": duration_ms}
    if method in _PLAIN_METHODS:
        # The path is masked, the rest is ours (a method, numbers): RequestIdFilter need not
        # mask the whole message again (a fifth of the access line's cost in cProfile).
        extra["_redacted"] = True
    # status None: no answer was started (and the client did not leave: that is 499).
    access_log.log(level, "%s %s %s %dms", method, path, status or "-", duration_ms,
                   extra=extra)


def _sole_console_handler(level: int) -> LoopBatchedStreamHandler | None:
    """The console handler, when it is the only handler an access record of `level` would
    reach and is set up as `serve` sets it up (RequestIdFilter alone, the plain format): the
    line can then be written to it directly. None for anything else (another handler such as
    pytest's caplog, another filter or format, LOG_FORMAT=json): the record goes through
    logging. Checked on every line, so a change to the logging set-up counts at once."""
    if access_log.filters:
        return None
    found: logging.Handler | None = None
    logger: logging.Logger | None = access_log
    while logger is not None:
        for handler in logger.handlers:
            if found is not None:
                return None
            found = handler
        if not logger.propagate:
            break
        logger = logger.parent
    if (type(found) is not LoopBatchedStreamHandler or found.level > level
            or len(found.filters) != 1 or type(found.filters[0]) is not RequestIdFilter
            or type(found.formatter) is not PlainFormatter
            or not found.formatter.default_layout):
        return None
    return found


# --- the filter and the formatters --------------------------------------------------------------


class RequestIdFilter(logging.Filter):
    """Stamps the request id on every record and masks secrets in its message. Put it on the
    handler: a logger's filters do not see records from its children."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id.get()
        if getattr(record, "_redacted", False):
            return True
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: the handler reports it
            return True
        record.msg, record.args = redact(message), None
        record._redacted = True
        return True


class PlainFormatter(logging.Formatter):
    """`time LEVEL logger [request id] message`, exceptions masked like messages."""

    LAYOUT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"

    def __init__(self, fmt: str | None = None, datefmt: str | None = None) -> None:
        super().__init__(fmt or self.LAYOUT, datefmt)
        self._second: tuple[int, str | None, str] = (-1, None, "")  # (second, datefmt, text)
        self.default_layout = (self._fmt == self.LAYOUT and datefmt is None
                               and type(self._style) is logging.PercentStyle)

    def plain_line(self, created: float, level: int, logger: str, rid: str, message: str
                   ) -> str:
        """What format() makes of a record with these fields in the default layout, for a
        message that needs no masking (`default_layout` must be true)."""
        msecs = int((created - int(created)) * 1000)  # as logging.LogRecord computes them
        return (f"{self._second_text(int(created), None)},{msecs:03d} "
                f"{logging.getLevelName(level)} {logger} [{rid}] {message}")

    def _second_text(self, second: int, datefmt: str | None) -> str:
        cached_second, cached_fmt, text = self._second
        if second != cached_second or datefmt != cached_fmt:
            text = time.strftime(datefmt or self.default_time_format, self.converter(second))
            self._second = (second, datefmt, text)
        return text

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """Formatter.formatTime's text, the second's part made once a second: localtime and
        strftime on every line were half of formatting one."""
        text = self._second_text(int(record.created), datefmt)
        if datefmt or not self.default_msec_format:
            return text
        return self.default_msec_format % (text, record.msecs)

    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "request_id"):
            record.request_id = request_id.get()
        line = super().format(record)
        if (getattr(record, "_redacted", False) and not record.exc_text
                and not record.stack_info):
            # RequestIdFilter masked the message; the time, level, logger and request id
            # (a sane one: accept_request_id) hold no secret: no second pass over the line.
            return line
        return redact(line)


# Attributes every LogRecord has; anything else was passed as `extra` and becomes a field.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message", "asctime", "request_id", "_redacted", "taskName"}


def _field(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact(value if isinstance(value, str) else str(value))


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (ISO 8601, UTC), level, logger, message, request_id, the
    record's extra fields, and exc_info / stack_info as strings when present."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage() if getattr(record, "_redacted", False)
            else redact(record.getMessage()),
            "request_id": getattr(record, "request_id", None) or request_id.get(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_") and key not in entry:
                entry[key] = _field(value)
        if record.exc_info:
            record.exc_text = record.exc_text or self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc_info"] = redact(record.exc_text)
        if record.stack_info:
            entry["stack_info"] = redact(self.formatStack(record.stack_info))
        return orjson.dumps(entry, default=str).decode()


# --- the console handler ------------------------------------------------------------------------


class LoopBatchedStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler whose lines logged on a running event loop are written together, once
    per pass of the loop (`call_soon`): one write and flush instead of one per line. At proxy
    rates the per-line write of the access log took ~7 % of a streaming request's CPU. A line
    waits at most for the callbacks already queued; lines logged elsewhere (other threads, no
    loop running) are written at once, after the waiting ones, so the order is kept. The
    handler's lock (held around `emit` by `Handler.handle`) guards the waiting lines."""

    max_waiting = 256  # a burst of lines in one pass is written without waiting further

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self._waiting: list[str] = []
        # The loop whose queue holds a `_write_soon`. Another loop's line queues one there too:
        # a loop may stop, or be closed, before it runs what it queued.
        self._queued_on: asyncio.AbstractEventLoop | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        try:
            self._queue(line)
        except Exception:
            self.handleError(record)

    def write_line(self, line: str) -> None:
        """Writes a line made without a record (the access line, logs._log_access) as emit()
        writes a record's: after the lines waiting, in this pass of the loop."""
        with self.lock:  # type: ignore[union-attr]
            try:
                self._queue(line + self.terminator)
            except Exception:
                _report_write_failure()

    def _queue(self, line: str) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        self._waiting.append(line)
        if loop is None or len(self._waiting) >= self.max_waiting:
            self._write_waiting()
        elif self._queued_on is not loop:
            self._queued_on = loop
            loop.call_soon(self._write_soon)

    def flush(self) -> None:  # raises like StreamHandler's (logging.shutdown expects that)
        with self.lock:  # type: ignore[union-attr]
            self._write_waiting()

    def _write_soon(self) -> None:
        # Reported like Handler.handleError, not raised: the loop would log the failure
        # through this handler again, once per pass.
        with self.lock:  # type: ignore[union-attr]
            self._queued_on = None
            try:
                self._write_waiting()
            except Exception:
                _report_write_failure()

    def _write_waiting(self) -> None:
        text, self._waiting = "".join(self._waiting), []
        if text:
            self.stream.write(text)
        if self.stream and hasattr(self.stream, "flush"):
            self.stream.flush()


def _report_write_failure() -> None:
    """As Handler.handleError reports, for a failure with no record at hand."""
    if logging.raiseExceptions:
        with contextlib.suppress(Exception):
            traceback.print_exc(file=sys.stderr)
