"""Start-up tuning of the serving process: `tune_for_serving()`, called once by `iflow2api serve`
when its listeners are up, before the first request. Each part was measured on the hot path
(py-spy, gc.callbacks timings; see bench/README.md):

- Python's cyclic garbage collector. After start-up the heap holds ~140k long-lived objects
  (Django, the apps, the URL resolver, translations). A generation-2 pass walks all of them:
  50-130 ms with the event loop stopped, every thousand or so requests, which was the p99.9 at
  c=1. `gc.freeze()` moves what start-up made to the permanent generation, which the collector
  never scans: a full pass then takes ~2 ms. What is frozen does not shrink what many open streams
  keep alive, though: in a burst of 2,000 streams (~1.5 million objects) Python ran a full pass
  after every 10 middle-generation passes, nine per burst, each 0.2-0.3 s with the loop stopped: a
  third of the burst's CPU. Full passes now come at most every 100 middle-generation passes
  (`FULL_PASS_AFTER`): the request path makes next to no cyclic garbage
  (tests/proxy/test_request_garbage.py through a real server, and
  tests/proxy/test_stream_garbage.py), so little waits for them. For the same reason a young pass
  finds nothing to free, yet at Python's threshold (700 more objects alive than after the last
  pass) the in-flight requests' own objects, rising and falling, set one off every ~6 requests at
  c=50, each walking them all: ~8 % of the CPU, with nothing collected. At `YOUNG_PASS_AFTER`
  (20,000) a young pass comes when the heap has really grown (a burst, or garbage piling up): a
  few in 30,000 requests, ~3 ms each. Paired, c=50: +9 % requests per CPU-second streaming or not;
  bursts of 2,000 streams 6 % less CPU; c=1 tails unchanged (docs/benchmarks.md, seventh sitting).
  Failed upstream calls made cycles too (~90 objects each: an exception kept in a frame its own
  traceback holds, with the request, the upstream response and body); those are broken where
  they were made (tests/proxy/test_error_garbage.py). What is left (asyncio's transport of a
  connection the upstream broke, ~7 objects) and whatever a path not yet traced makes must not
  wait hundreds of requests for a pass: once a second the young and middle generations are
  collected if Python's own threshold was passed meanwhile and the collector made no pass of
  its own in that second (`young_passes_each_second`; in a burst of 2,000 streams its own
  passes come several times a second, and the tick's middle pass over every open stream, up to
  ~100 ms with the loop stopped, was 3 % of the burst's CPU for nothing). Only
  on the fast path (the default): through Django's carrier (FAST_PATH=false) a refused big body
  is left in reference cycles (where exactly was not traced), which would stay until the next
  young pass (tests/proxy/test_bad_input.py's 600k-message body: 90 MiB kept instead of the 4x
  body allowed), so that carrier keeps Python's threshold.
- The GIL switch interval. Work in threads beside the event loop (the request log's writer,
  sync_to_async ORM calls) holds the GIL for up to the interval (5 ms by default) before the
  loop's thread gets it back; 1 ms bounds that wait at a negligible switching cost.
- Twisted's Content-Type parsing. For every request with a body, Twisted's HTTP request parses
  the header with `email.message.EmailMessage` (a few percent of the CPU per request) only to
  compare it with the two form encodings; Daphne never reads Twisted's form arguments. A plain
  split gives the same answer for those two.
- Python's logging records. Each record looks up its caller's frame, thread and process,
  which no format `serve` configures shows (plain or JSON: time, level, logger, request id,
  message, extra fields, exceptions); the access line took ~27 us of a ~400 us request, a
  third of it in that. The logging HOWTO's optimisation switches turn those look-ups off.
- Twisted's write path. Twisted buffers every write to a client and sends it a loop pass
  later, registering the socket for writability and unregistering it after the send: two
  epoll_ctl calls and a callback per write, ~13 % of the CPU of a 2,000-stream burst (a write
  per paced event) in cProfile. A write with nothing waiting before it now goes to the socket
  at once, as asyncio's transports do; the rest takes Twisted's buffered path
  (`write_through_tcp`). Client sockets get TCP_NODELAY (iflow2api_site/listener.py), since a
  head and a body could then be two sends. They are not: Twisted's Request writes a response's
  head, its body and a chunked response's terminator with a write each, and a reply that
  starts or ends a response is corked (`corked_replies`), so a JSON answer is one send and a
  stream's first and last chunks carry its head and its end (strace: 2 sends per JSON answer
  and 3 per one-read stream before, 1 after; paired, c=50, +2.6 % non-streaming and +2.5 %
  streaming requests per CPU-second).
- Daphne's finished requests. Daphne keeps each request's entry (the request, its scope, its
  application task) until a checker walks them once a second: ~1,000 finished requests alive
  at any moment at c=50, walked and promoted by the garbage collector's young passes. An entry
  whose request is over and whose application ended cleanly is now dropped at once
  (`reap_finished_requests`); the checker still handles the rest.
- Twisted's module proxy. Daphne reads `http.Request` from Twisted's HTTP module, which Twisted
  wraps in a deprecation-warning proxy, on every body it sends: ~2 % of the CPU of paced
  streams. Daphne's reference now is the module itself (`daphne_without_module_proxy`).
- Twisted's own access line. Twisted's HTTP factory formats a combined-log line for every
  request (~2 % of a request's CPU) and hands it to Twisted's log, which Daphne sends nowhere at
  the verbosity `serve` uses; our access log (`iflow2api.access`) is the one that is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sys
from functools import partial
from typing import Any

log = logging.getLogger(__name__)

SWITCH_INTERVAL_SECONDS = 0.001
# Middle-generation passes before the collector considers a full one (Python's default: 10).
FULL_PASS_AFTER = 100
YOUNG_PASS_AFTER = 20_000  # more container objects alive than after the last young pass
# ...and at most a second after Python's own trigger (700) was passed: garbage made on error
# paths (exception cycles holding a request's upstream body) is not kept longer than that.
YOUNG_PASS_TICK_SECONDS = 1.0
YOUNG_PASS_DUE = 700


def media_type(line: bytes) -> bytes:
    """The media type of a Content-Type value, lower-cased, without parameters: what Twisted
    compares with the two form encodings (~2 us instead of ~140 us)."""
    key = line.split(b";", 1)[0].strip().lower()
    return key if b"/" in key else b"text/plain"


def patch_twisted_content_type() -> None:
    from twisted.web import http

    if hasattr(http, "_parseContentType"):  # a private helper: skip if Twisted drops it
        http._parseContentType = media_type


def no_access_line(factory: object, request: object) -> None:
    """Twisted's HTTPFactory.log, for a server whose Twisted log goes nowhere."""


def skip_twisted_access_line() -> None:
    from twisted.web import http

    http.HTTPFactory.log = no_access_line  # type: ignore[assignment]


def _writes_idle(conn: Any) -> bool:
    """Whether a write on this Twisted TCP connection may go to the socket at once: nothing is
    waiting to be sent before it, no TLS layer of Twisted's own, no close or half-close under
    way, and no pull producer (it is asked for more only by the buffered path)."""
    return (conn.connected and not conn.TLS and not conn.disconnecting
            and not conn._writeDisconnecting and not conn._writeDisconnected
            and not conn._tempDataLen and conn.offset == len(conn.dataBuffer)
            and (conn.producer is None or conn.streamingProducer))


def _unsent(conn: Any, data: bytes) -> bytes:
    """What the socket did not take of `data` now: all of it on an error or a full buffer,
    so that the buffered path meets the error, or waits for the socket, as it always did."""
    sent = conn.writeSomeData(data)
    if not isinstance(sent, int) or sent <= 0:
        return data
    return data[sent:]


def write_through_tcp() -> None:
    """Twisted's TCP writes go to the socket at once when nothing is waiting before them.

    Twisted buffers every write and sends it a loop pass later, once the socket reports it is
    writable: each write registers the socket for writability and unregisters it after the
    send (two epoll_ctl calls, selector bookkeeping, a callback). asyncio's transports try
    the send at once, as this does; what the socket does not take goes the buffered way, so
    order, back-pressure (the producer is paused as before) and errors are Twisted's own."""
    from twisted.internet import tcp

    buffered_write = tcp.Connection.write
    buffered_write_sequence = tcp.Connection.writeSequence

    def write(self: Any, data: bytes) -> None:
        held = self.held_writes
        if held is not None:  # corked: sent with the rest when the cork comes off
            held.append(data)
            return
        if data and _writes_idle(self):
            data = _unsent(self, data)
            if not data:
                return
        buffered_write(self, data)

    def write_sequence(self: Any, iovec: Any) -> None:
        held = self.held_writes
        if held is not None:
            held.extend(iovec)
            return
        if iovec and _writes_idle(self):
            data = _unsent(self, b"".join(iovec))
            if data:
                buffered_write(self, data)
            return
        buffered_write_sequence(self, iovec)

    tcp.Connection.held_writes = None  # type: ignore[attr-defined]  # a list while corked
    tcp.Connection.write = write  # type: ignore[method-assign]
    tcp.Connection.writeSequence = write_sequence  # type: ignore[method-assign]


def corked(conn: Any) -> contextlib.AbstractContextManager[None]:
    """`with corked(connection):` the writes made inside go to the socket as one, at the end
    (write_through_tcp's writes; Twisted's own, unpatched, are not held). A response's head
    and body, or its last chunk and the chunked terminator, are then one send instead of two
    or three: a system call each, and a segment each for the client to wake up for."""
    return _Cork(conn)


class _Cork:
    __slots__ = ("_conn", "_held")

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self._held: list[bytes] | None = None

    def __enter__(self) -> None:
        if getattr(self._conn, "held_writes", True) is None:  # TCP, not corked already
            self._held = self._conn.held_writes = []

    def __exit__(self, *exc_info: object) -> None:
        held = self._held
        if held is None:
            return
        self._conn.held_writes = None
        if held:  # after an error too: what was written is sent, as it would have been
            self._conn.write(b"".join(held))


def corked_replies() -> None:
    """Daphne writes a response's head, its body and, for a chunked one, the terminator with
    a write each (Twisted's Request.write and finish). A body message that starts or ends the
    response is corked (`corked`): a JSON answer is one send, a stream's head goes with its
    first chunk and its last chunk with the terminator. Chunks in between are one write
    already and are not touched."""
    from daphne.http_protocol import WebRequest

    reply = WebRequest.handle_reply

    def handle_reply(self: Any, message: dict[str, Any]) -> None:
        channel = self.channel
        if (message.get("type") == "http.response.body" and channel is not None
                and (not self.startedWriting or not message.get("more_body"))):
            with corked(channel.transport):
                reply(self, message)
            return
        reply(self, message)

    WebRequest.handle_reply = handle_reply  # type: ignore[method-assign]


def daphne_without_module_proxy() -> None:
    """Daphne reaches Twisted's HTTP module through its module global `http` (`http.Request.
    write` for every body it sends). Twisted wraps that module in a proxy that warns about its
    deprecated names: every attribute read is a Python-level look-up through three helpers,
    ~2 % of the CPU of paced streams (cProfile). Daphne's global is pointed at the module
    itself; Daphne reads none of the deprecated names."""
    from daphne import http_protocol

    try:
        from twisted.python.deprecate import _ModuleProxy  # private: skip if Twisted drops it
    except ImportError:
        return
    proxy = http_protocol.http
    if isinstance(proxy, _ModuleProxy):
        http_protocol.http = object.__getattribute__(proxy, "_module")


def identity_hashed_requests() -> None:
    """Daphne's WebRequest hashes and compares by identity in Python (`hash(id(self))`,
    `id(self) == id(other)`), and the server looks a request up in its `connections` by it
    some sixteen times per request: a Python call each. object's own slots give the same
    identity semantics in C."""
    from daphne.http_protocol import WebRequest

    WebRequest.__hash__ = object.__hash__  # type: ignore[method-assign,assignment]
    WebRequest.__eq__ = object.__eq__  # type: ignore[method-assign,assignment]


def _reap(server: Any, protocol: object, _instance: object = None) -> None:
    """Drops the entry of a request that is over (disconnected, its application finished
    without error or cancellation); anything else stays for Daphne's checker."""
    details = server.connections.get(protocol)
    if details is None or "disconnected" not in details:
        return
    instance = details.get("application_instance")
    if instance is None or not instance.done() or instance.cancelled():
        return
    if instance.exception() is None:  # a failure is the checker's to log and answer
        del server.connections[protocol]


def reap_finished_requests() -> None:
    """Daphne keeps every request's entry in `Server.connections` (the request, its scope, its
    finished application task and all they reach) until its checker walks them, once a second:
    at 1,000 requests a second that is a thousand finished requests kept alive, which the
    garbage collector's young passes walk and promote to the older generations. An entry is
    dropped as soon as the request is over and its application ended cleanly; an application
    that failed or was cancelled, or a connection still open, is left to the checker, which
    logs, answers and kills as before."""
    from daphne.server import Server

    create = Server.create_application
    disconnected = Server.protocol_disconnected

    def create_application(self: Any, protocol: Any, scope: Any) -> Any:
        queue = create(self, protocol, scope)
        instance = self.connections.get(protocol, {}).get("application_instance")
        if instance is not None:
            instance.add_done_callback(partial(_reap, self, protocol))
        return queue

    def protocol_disconnected(self: Any, protocol: Any) -> None:
        if protocol not in self.connections:  # reaped already: Daphne's own would KeyError
            return
        disconnected(self, protocol)
        _reap(self, protocol)

    Server.create_application = create_application  # type: ignore[method-assign]
    Server.protocol_disconnected = protocol_disconnected  # type: ignore[method-assign]


def collector_passes() -> int:
    """How many passes the cyclic collector has made in this process, of any generation."""
    return sum(generation["collections"] for generation in gc.get_stats())


def young_passes_each_second(loop: asyncio.AbstractEventLoop) -> None:
    """With young passes left to YOUNG_PASS_AFTER, cyclic garbage (the request path makes
    none that it knows of; a cycle on a path not yet traced could hold a request's body) could
    wait hundreds of requests for one. Once a second the young and middle generations are
    collected if Python's own threshold was passed meanwhile (and everything, after
    FULL_PASS_AFTER such passes, as Python would): at most one pass a second (~1-2 ms at c=50),
    and young garbage lives about a second at most. A second in which the collector ran by
    itself is skipped: the heap is growing fast (a burst of streams), its own passes are
    collecting the young garbage already, and a middle pass over thousands of open streams
    stopped the loop for up to ~100 ms, every second of the burst, for nothing."""
    seen = [collector_passes()]

    def tick() -> None:
        if collector_passes() == seen[0]:
            young, _middle, middle_passes = gc.get_count()
            if middle_passes >= FULL_PASS_AFTER:  # as Python would, on its own young passes
                gc.collect()
            elif young >= YOUNG_PASS_DUE:
                gc.collect(1)
        seen[0] = collector_passes()
        loop.call_later(YOUNG_PASS_TICK_SECONDS, tick)

    loop.call_later(YOUNG_PASS_TICK_SECONDS, tick)


def lean_log_records() -> None:
    logging._srcfile = None  # type: ignore[attr-defined]  # no caller look-up (HOWTO, optimisation)
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def tune_for_serving() -> None:
    """Once, from the serve command, after start-up and before the first request."""
    from django.conf import settings

    patch_twisted_content_type()
    skip_twisted_access_line()
    write_through_tcp()
    corked_replies()
    daphne_without_module_proxy()
    identity_hashed_requests()
    reap_finished_requests()
    lean_log_records()
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
    gc.collect()
    gc.freeze()
    young, middle, _full = gc.get_threshold()
    if settings.IFLOW2API["FAST_PATH"]:  # Django's carrier leaves cycles: Python's threshold
        young = YOUNG_PASS_AFTER
        with contextlib.suppress(RuntimeError):  # no loop running: a test calling this
            young_passes_each_second(asyncio.get_running_loop())
    gc.set_threshold(young, middle, FULL_PASS_AFTER)
    log.info("serving tuned: %d start-up objects frozen for the garbage collector",
             gc.get_freeze_count())
