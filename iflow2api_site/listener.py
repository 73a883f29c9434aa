"""The HTTP/1.1 connection of our listeners: Daphne's, with limits enforced while the request
is read, before any of it reaches the application (issue 13).

- A body over MAX_BODY_BYTES is refused with 413 as soon as that is known: at once from its
  Content-Length (before `100 Continue`, before a byte of the body is read), or, for a chunked
  body, when the received part passes the limit. What follows is read and dropped for a moment
  (so that a client still sending can see the answer), then the connection is closed. Nothing
  over the limit is kept, in memory or on disk.
- Slow clients: the request line and headers must arrive within HEADER_TIMEOUT of their first
  byte and the body within BODY_TIMEOUT of the end of the headers, else 408 and closed;
  a connection without a request in progress is closed after KEEPALIVE_TIMEOUT. Responses
  (streams of many minutes) are not timed.
"""

from __future__ import annotations

import io
import logging
import tempfile
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from daphne.http_protocol import WebRequest
from daphne.utils import HEADER_NAME_RE, INVALID_HEADER_VALUE_BYTES
from django.utils import translation
from django.utils.translation import gettext
from twisted.web.http import HTTPChannel

from iflow2api_lib.conf import gateway
from iflow2api_lib.i18n import api_language
from iflow2api_lib.logs import accept_request_id, log_answered_by_listener, request_id
from proxy import chat, routes
from proxy.errors import ApiError
from proxy.http import JsonResult, body_too_large

log = logging.getLogger(__name__)

# Bodies up to this size stay in memory; larger ones (within the limit) are spooled to a
# temporary file, as Twisted does.
IN_MEMORY_BODY_BYTES = 1024 * 1024
# After a refusal, what a client still sends is read and dropped for up to this long, and up
# to twice the body limit; then the connection is closed (reset if the client is still sending).
LINGER_SECONDS = 5.0


def request_timeout() -> ApiError:
    return ApiError(408, gettext("the request was not received in time"), "request_timeout")


class GuardedRequest(WebRequest):
    """Daphne's request, keeping its body only while it is within the limit."""

    def __init__(self, channel: GuardedChannel, *args: Any, **kwargs: Any) -> None:
        # Daphne never reads Twisted's parsed form arguments: do not parse uploads into them.
        kwargs["parsePOSTFormSubmission"] = False
        super().__init__(channel, *args, **kwargs)
        self.body_size = 0
        self.refused = False

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > gateway()["MAX_BODY_BYTES"]:
            self.refused = True
            self.requestHeaders.removeHeader(b"Expect")  # no `100 Continue` after our 413
            self.content = io.BytesIO()  # stays empty
            self.channel.refuse_too_large()
            return
        if length is not None and length <= IN_MEMORY_BODY_BYTES:
            self.content = io.BytesIO()
        else:  # larger, or chunked: in memory until it passes IN_MEMORY_BODY_BYTES
            # Closed by Twisted's Request when it is done.
            self.content = tempfile.SpooledTemporaryFile(IN_MEMORY_BODY_BYTES)  # noqa: SIM115

    def handleContentChunk(self, data: bytes) -> None:
        if self.refused:
            return
        self.body_size += len(data)
        if self.body_size > gateway()["MAX_BODY_BYTES"]:
            self.refused = True
            self.content.truncate(0)
            self.channel.refuse_too_large()
            return
        super().handleContentChunk(data)

    def process(self) -> Any:
        if self.refused:  # answered already; the connection is closing
            return None
        if self.requestHeaders.hasHeader(b"upgrade") or self.server.proxy_forwarded_address_header:
            return super().process()  # WebSockets (the live status), Daphne's proxy headers
        self._start_application()
        return None

    def _start_application(self) -> None:
        """Daphne's WebRequest.process for a plain HTTP request: the same checks (400 for a bad
        header, path or query string), the same scope and body messages, without the Deferred
        machinery Daphne wraps around them (inlineCallbacks, and maybeDeferred around
        create_application, which returns at once) and with one pass over the headers."""
        try:
            self.request_start = time.time()
            clean, root_path = [], None
            for name, values in self.requestHeaders.getAllRawHeaders():
                if not HEADER_NAME_RE.fullmatch(name):
                    self.basic_error(400, b"Bad Request", "Invalid header name")
                    return
                lower, kept = name.lower(), b"_" not in name  # Daphne drops those (CVE-2015-0219)
                for value in values:
                    if INVALID_HEADER_VALUE_BYTES.intersection(value):
                        self.basic_error(400, b"Bad Request", "Invalid header value")
                        return
                    if not kept:
                        continue
                    if lower == b"daphne-root-path":
                        root_path = value
                    else:
                        clean.append((lower, value))
            if hasattr(self.client, "host") and hasattr(self.client, "port"):
                self.client_addr = [str(self.client.host), self.client.port]
                self.server_addr = [str(self.host.host), self.host.port]
            self.client_scheme = "https" if self.isSecure() else "http"
            try:
                path = self.path.decode("ascii")
            except UnicodeDecodeError:
                self.path = b"/"
                self.basic_error(400, b"Bad Request", "Invalid characters in path")
                return
            self.query_string = b""
            if b"?" in self.uri:
                self.query_string = self.uri.split(b"?", 1)[1]
                try:
                    self.query_string.decode("ascii")
                except UnicodeDecodeError:
                    self.basic_error(400, b"Bad Request", "Invalid query string")
                    return
            self.clean_headers = clean
            self.root_path = (self.server.root_path if root_path is None
                              else unquote(root_path.decode("ascii")))
            self.content.seek(0, 0)
            self.application_queue = queue = self.server.create_application(self, {
                "type": "http", "http_version": self.clientproto.split(b"/")[-1].decode("ascii"),
                "method": self.method.decode("ascii"), "path": unquote(path),
                "raw_path": self.path, "root_path": self.root_path, "scheme": self.client_scheme,
                "query_string": self.query_string, "headers": clean, "client": self.client_addr,
                "server": self.server_addr,
            })
            if queue is None or self.content.closed:  # abandoned meanwhile
                return
            size = self.server.request_buffer_size
            while True:
                chunk = self.content.read(size)
                more = len(chunk) >= size
                queue.put_nowait({"type": "http.request", "body": chunk, "more_body": more})
                if not more:
                    break
        except Exception:
            log.exception("HTTP processing error")
            self.basic_error(500, b"Internal Server Error", "Daphne HTTP processing error")


class GuardedChannel(HTTPChannel):
    """One client connection: Twisted's HTTP/1.1 parser with read deadlines and refusals."""

    requestFactory = GuardedRequest

    def __init__(self) -> None:
        super().__init__()
        self._read_deadline: Any = None  # the pending header or body deadline (DelayedCall)
        # When the head or the body being read must be complete (monotonic), or None. Armed as
        # a timer only if a read ends with the request still incomplete: most requests come in
        # one read, and two timers set and cancelled per request were ~3 % of its CPU.
        self._read_due: float | None = None
        self._linger: Any = None
        self._drop_left = 0
        self._request_began = 0.0
        # The idle timeout between requests (KEEPALIVE_TIMEOUT, Twisted's `timeOut`): since
        # when the connection is idle, and the one timer that checks it (see setTimeout).
        self._idle_since = 0.0
        self._idle_check: Any = None
        # The connection's addresses and whether it is TLS do not change: Twisted asked the
        # socket (getsockname, a system call) and made new address objects for every request.
        self._host: Any = None
        self._peer: Any = None
        self._secure: bool | None = None

    def getHost(self) -> Any:
        if self._host is None:
            self._host = super().getHost()
        return self._host

    def getPeer(self) -> Any:
        if self._peer is None:
            self._peer = super().getPeer()
        return self._peer

    def isSecure(self) -> bool:
        if self._secure is None:
            self._secure = bool(super().isSecure())
        return self._secure

    def connectionMade(self) -> None:
        super().connectionMade()
        # Writes go out as soon as they are made (iflow2api_site/tuning.py): the head and the
        # body of an answer can be two sends, which Nagle's algorithm would hold apart until
        # the client acknowledges the first (up to its delayed-ACK time, 40 ms on Linux).
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)

    # --- the idle timeout -------------------------------------------------------------------
    # Twisted's TimeoutMixin cancels its timer when a request begins and makes a new one when
    # it ends: a reactor timer made and cancelled for every request (~2 % of a request's CPU
    # in cProfile). Here the connection only notes when it became idle; one timer per
    # connection checks that when it fires and, if the connection was busy meanwhile, is set
    # again for the new end of the idle time (or left unset while a request runs).

    def setTimeout(self, period: float | None) -> float | None:
        previous, self.timeOut = self.timeOut, period
        if period is not None:
            self._idle_since = time.monotonic()
            if self._idle_check is None:
                self._idle_check = self.callLater(period, self._check_idle)
        return previous

    def resetTimeout(self) -> None:
        if self.timeOut is not None:
            self._idle_since = time.monotonic()

    def _check_idle(self) -> None:
        self._idle_check = None
        if self.timeOut is None:  # a request is in progress: set again once it is done
            return
        left = self._idle_since + self.timeOut - time.monotonic()
        if left > 0:
            self._idle_check = self.callLater(left, self._check_idle)
        else:
            self.timeoutConnection()

    # --- read deadlines ---------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._read_due is None and not self._handlingRequest and data.strip():
            # The first byte of a request: its head must be complete in time.
            self._request_began = time.monotonic()
            self._due_in(gateway()["HEADER_TIMEOUT"])
        super().dataReceived(data)
        if self._read_due is not None and self._read_deadline is None:
            # The read ended with the head or the body incomplete: now the deadline is a timer.
            self._read_deadline = self.callLater(max(self._read_due - time.monotonic(), 0.0),
                                                 self._too_slow)

    def allHeadersReceived(self) -> None:
        self._due_in(gateway()["BODY_TIMEOUT"])
        super().allHeadersReceived()

    def allContentReceived(self) -> None:
        self._cancel_deadline()
        super().allContentReceived()

    def connectionLost(self, reason: Any) -> None:
        self._cancel_deadline()
        if self._idle_check is not None and self._idle_check.active():
            self._idle_check.cancel()
        self._idle_check = None
        if self._linger is not None and self._linger.active():
            self._linger.cancel()
        super().connectionLost(reason)

    def _due_in(self, seconds: float) -> None:
        self._cancel_deadline()
        if seconds > 0:
            self._read_due = time.monotonic() + seconds

    def _cancel_deadline(self) -> None:
        if self._read_deadline is not None and self._read_deadline.active():
            self._read_deadline.cancel()
        self._read_deadline = None
        self._read_due = None

    def _too_slow(self) -> None:
        self._read_deadline = None
        self._read_due = None
        self._answer_and_close(request_timeout)

    # --- refusals ---------------------------------------------------------------------------

    def refuse_too_large(self) -> None:
        self._answer_and_close(body_too_large)

    def _route(self) -> tuple[str, str]:
        """Method and path, once the request line has come."""
        method = getattr(self, "_command", b"").decode("latin-1")
        target = getattr(self, "_path", b"").decode("latin-1")
        return method, unquote(target.split("?", 1)[0])

    def _render(self, error: Callable[[], ApiError]) -> JsonResult:
        """The error in the shape of the API asked (Anthropic's for /v1/messages), else
        OpenAI's, in the language the request asks for."""
        route = routes.find(*self._route())
        render = route.render_error if route is not None else chat.openai_error
        headers = self.requests[-1].requestHeaders if self.requests else None
        accept = b", ".join(headers.getRawHeaders(b"Accept-Language", [])) if headers else b""
        with translation.override(api_language({"accept-language": accept.decode("latin-1")})):
            return render(error())

    def _answer_and_close(self, error: Callable[[], ApiError]) -> None:
        """Answers in the client's error shape, then reads and drops what the client still
        sends for a moment (closing at once could reset the connection before the answer is
        read) and closes."""
        self._cancel_deadline()
        self.setTimeout(None)
        self.persistent = False
        # The request's one id, as iflow2api_lib/logs.py gives it to the requests that reach
        # the application: in the error body (Anthropic's), the headers and the access line.
        headers = self.requests[-1].requestHeaders if self.requests else None
        given = headers.getRawHeaders(b"x-request-id", [None])[0] if headers else None
        token = request_id.set(accept_request_id(given))
        try:
            self._answer(error)
        finally:
            request_id.reset(token)

    def _answer(self, error: Callable[[], ApiError]) -> None:
        result = self._render(error)
        reason = {408: b"Request Timeout", 413: b"Content Too Large"}.get(result.status, b"")
        extra = b"".join(b"%s: %s\r\n" % (k.encode("latin-1"), v.encode("latin-1"))
                         for k, v in [*result.headers, ("x-request-id", request_id.get())])
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"%sconnection: close\r\n\r\n%s" % (result.status, reason, len(result.body),
                                                 extra, result.body))
        self._drop_left = 2 * gateway()["MAX_BODY_BYTES"]
        self.dataReceived = self._drop  # type: ignore[method-assign]
        self.rawDataReceived = self._drop  # type: ignore[method-assign]  # rest of this read
        self.transport.loseWriteConnection()  # the client sees the end of our answer
        self._linger = self.callLater(LINGER_SECONDS, self._close)
        log_answered_by_listener(*self._route(), result.status,
                                 time.monotonic() - self._request_began)

    def _drop(self, data: bytes) -> None:
        self._drop_left -= len(data)
        if self._drop_left < 0:
            self._close()

    def _close(self) -> None:
        if self._linger is not None and self._linger.active():
            self._linger.cancel()
        self._linger = None
        self.transport.abortConnection()
