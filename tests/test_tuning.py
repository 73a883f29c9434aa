"""Start-up tuning of `iflow2api serve` (iflow2api_site/tuning.py): what it changes, and that the
cheap Content-Type parser answers like Twisted's for what Twisted compares it with."""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import types
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
from daphne import http_protocol
from daphne.server import Server
from twisted.internet import tcp
from twisted.web import http

from iflow2api_site import tuning

TWISTED_PARSER = http._parseContentType
TWISTED_ACCESS_LINE = http.HTTPFactory.log
TWISTED_WRITES = (tcp.Connection.write, tcp.Connection.writeSequence)
DAPHNES_HTTP = http_protocol.http
DAPHNES_SERVER = (Server.create_application, Server.protocol_disconnected)


@pytest.mark.parametrize("value", [
    b"application/json", b"Application/JSON; charset=utf-8", b"text/event-stream",
    b"application/x-www-form-urlencoded", b"application/x-www-form-urlencoded; charset=UTF-8",
    b"multipart/form-data; boundary=----x", b"  MULTIPART/form-data ;boundary=y", b"",
    b"garbage", b"text/plain;",
])
def test_media_type_matches_twisted(value: bytes) -> None:
    assert tuning.media_type(value) == TWISTED_PARSER(value)


def test_tune_for_serving_freezes_start_up_objects_and_patches_twisted(settings) -> None:
    interval = sys.getswitchinterval()
    thresholds = gc.get_threshold()
    log_switches = (logging._srcfile, logging.logThreads, logging.logProcesses,  # type: ignore[attr-defined]
                    logging.logMultiprocessing)
    settings.IFLOW2API = {**settings.IFLOW2API, "FAST_PATH": True}
    try:
        tuning.tune_for_serving()
        record = logging.getLogger("iflow2api.test").makeRecord(
            "iflow2api.test", logging.INFO, __file__, 1, "m", None, None)
        assert (record.thread, record.process, record.processName) == (None, None, None)
        assert logging._srcfile is None  # type: ignore[attr-defined]
        assert gc.get_freeze_count() > 0
        # Young and full passes are rarer; the middle generation keeps Python's threshold.
        assert gc.get_threshold() == (tuning.YOUNG_PASS_AFTER, thresholds[1],
                                      tuning.FULL_PASS_AFTER)
        gc.set_threshold(*thresholds)
        # Django's carrier leaves a refused big body in reference cycles: there young passes
        # keep Python's threshold.
        settings.IFLOW2API = {**settings.IFLOW2API, "FAST_PATH": False}
        tuning.tune_for_serving()
        assert gc.get_threshold() == (thresholds[0], thresholds[1], tuning.FULL_PASS_AFTER)
        assert sys.getswitchinterval() == tuning.SWITCH_INTERVAL_SECONDS
        assert http._parseContentType is tuning.media_type
        assert http.HTTPFactory.log is tuning.no_access_line
        assert (tcp.Connection.write, tcp.Connection.writeSequence) != TWISTED_WRITES
        # Daphne reads Twisted's HTTP module itself, not its deprecation proxy.
        assert type(DAPHNES_HTTP) is not types.ModuleType
        assert type(http_protocol.http) is types.ModuleType
        assert http_protocol.http.Request is http.Request
        assert http_protocol.http.HTTPFactory is http.HTTPFactory
        assert (Server.create_application, Server.protocol_disconnected) != DAPHNES_SERVER
        # Requests hash and compare by identity, as Daphne's own methods did, in C.
        one, two = (object.__new__(http_protocol.WebRequest) for _ in range(2))
        assert http_protocol.WebRequest.__hash__ is object.__hash__
        assert one == one and one != two and {one: 1, two: 2}[one] == 1
        assert hash(one) == hash(one) and len({one, two, one}) == 2
    finally:
        (Server.create_application,  # type: ignore[method-assign]
         Server.protocol_disconnected) = DAPHNES_SERVER
        http_protocol.http = DAPHNES_HTTP
        tcp.Connection.write, tcp.Connection.writeSequence = TWISTED_WRITES  # type: ignore[method-assign]
        http.HTTPFactory.log = TWISTED_ACCESS_LINE  # type: ignore[method-assign]
        gc.unfreeze()
        gc.set_threshold(*thresholds)
        (logging._srcfile, logging.logThreads, logging.logProcesses,  # type: ignore[attr-defined]
         logging.logMultiprocessing) = log_switches
        sys.setswitchinterval(interval)
        http._parseContentType = TWISTED_PARSER


@pytest.fixture
def reaping() -> Iterator[None]:
    tuning.reap_finished_requests()
    try:
        yield
    finally:
        (Server.create_application,  # type: ignore[method-assign]
         Server.protocol_disconnected) = DAPHNES_SERVER


def run_request(app: Any, *, disconnect_first: bool) -> tuple[Server, object]:
    """One request through Daphne's own bookkeeping (not listening): connected, application
    started and run to its end, disconnected before or after it ends."""
    server = Server(application=app, endpoints=["tcp:port=0:interface=127.0.0.1"])
    server.connections = {}
    protocol = object()

    async def main() -> None:
        server.protocol_connected(protocol)
        server.create_application(protocol, {"type": "http"})
        if disconnect_first:
            server.protocol_disconnected(protocol)
        for _ in range(3):
            await asyncio.sleep(0)
        if not disconnect_first:
            server.protocol_disconnected(protocol)

    asyncio.run(main())
    return server, protocol


async def answers(scope: Any, receive: Any, send: Any) -> None:
    return None


async def fails(scope: Any, receive: Any, send: Any) -> None:
    raise RuntimeError("a bug")


@pytest.mark.parametrize("disconnect_first", [True, False],
                         ids=["answer, then app ends", "app ends, then close"])
def test_a_finished_request_leaves_daphnes_connections_at_once(reaping, disconnect_first):
    server, protocol = run_request(answers, disconnect_first=disconnect_first)
    assert protocol not in server.connections  # not kept until the checker's next round
    server.protocol_disconnected(protocol)  # told again (a lost connection): nothing to do


def test_a_failed_application_is_left_to_daphnes_checker(reaping):
    server, protocol = run_request(fails, disconnect_first=True)
    # Kept, with its failure still there for the checker to log ("Exception inside
    # application") as without the tuning.
    instance = server.connections[protocol]["application_instance"]
    assert isinstance(instance.exception(), RuntimeError)


def test_an_open_connection_is_left_to_daphnes_checker(reaping):
    server = Server(application=answers, endpoints=["tcp:port=0:interface=127.0.0.1"])
    server.connections = {}
    protocol = object()

    async def main() -> None:
        server.protocol_connected(protocol)
        server.create_application(protocol, {"type": "http"})
        for _ in range(3):
            await asyncio.sleep(0)

    asyncio.run(main())
    assert protocol in server.connections


class Cycle:
    """Two objects that hold each other: freed only by the cyclic collector."""

    def __init__(self) -> None:
        self.other = [self]


def test_young_garbage_is_collected_within_about_a_second_of_being_due() -> None:
    # The young threshold is high on the fast path; the tick keeps garbage (an upstream
    # error's exception cycle, holding the upstream body) from waiting for it.
    thresholds = gc.get_threshold()
    gc.set_threshold(10**9, thresholds[1], thresholds[2])  # no automatic pass in this test
    try:
        async def main() -> list[weakref.ref[Cycle]]:
            tuning.young_passes_each_second(asyncio.get_running_loop())
            refs = [weakref.ref(Cycle()) for _ in range(tuning.YOUNG_PASS_DUE)]
            assert all(ref() is not None for ref in refs)  # garbage, not yet collected
            await asyncio.sleep(tuning.YOUNG_PASS_TICK_SECONDS * 1.5)
            return refs

        refs = asyncio.run(main())
        assert all(ref() is None for ref in refs)
    finally:
        gc.set_threshold(*thresholds)


def test_the_tick_leaves_a_second_alone_in_which_the_collector_ran_by_itself() -> None:
    # In a burst of streams the collector's own young passes come many times a second; a
    # middle pass from the tick on top walked every open stream (~100 ms with the loop
    # stopped) for nothing. A second with no pass of its own gets the tick's as before.
    thresholds = gc.get_threshold()
    gc.set_threshold(10**9, thresholds[1], thresholds[2])  # passes only where this test says
    try:
        async def main() -> tuple[int, list[weakref.ref[Cycle]], int]:
            loop = asyncio.get_running_loop()
            start = loop.time()
            tuning.young_passes_each_second(loop)
            gc.collect(0)  # the collector's own pass, within the tick's first second
            refs = [weakref.ref(Cycle()) for _ in range(tuning.YOUNG_PASS_DUE)]
            middle = gc.get_stats()[1]["collections"]
            await asyncio.sleep(start + tuning.YOUNG_PASS_TICK_SECONDS * 1.5 - loop.time())
            after_busy_second = gc.get_stats()[1]["collections"] - middle
            alive = sum(ref() is not None for ref in refs)
            await asyncio.sleep(tuning.YOUNG_PASS_TICK_SECONDS)  # a second with no pass
            return after_busy_second, refs, alive

        after_busy_second, refs, alive = asyncio.run(main())
        assert after_busy_second == 0  # no middle pass from the tick in the busy second
        assert alive == tuning.YOUNG_PASS_DUE
        assert all(ref() is None for ref in refs)  # the quiet second after it collected them
    finally:
        gc.set_threshold(*thresholds)
