"""iflow2api_lib/presence.py: knowing that an HTTP client has gone, with no task per request
under Daphne (its `receive` is an asyncio.Queue's `get`) and with one under any other server."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest
from daphne.server import Server

from iflow2api_lib.presence import ClientPresence

DISCONNECT = {"type": "http.disconnect"}
BODY_PART = {"type": "http.request", "body": b"late", "more_body": False}


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


def test_daphne_hands_the_app_a_queue_get_which_is_watched_without_a_task():
    # If a Daphne or Python upgrade changes this, requests are still watched (by a task), only
    # slower: this test says so rather than a benchmark weeks later.
    seen: list[ClientPresence] = []

    async def app(scope, receive, send):
        seen.append(ClientPresence(receive))

    async def main() -> None:
        # Not run: nothing listens. Only the call that starts an application instance is used.
        server = Server(application=app, endpoints=["tcp:port=0:interface=127.0.0.1"])
        protocol = object()
        server.connections = {protocol: {}}
        server.create_application(protocol, {"type": "http"})
        await settle()

    asyncio.run(main())
    [presence] = seen
    assert presence.watched_without_task


def test_a_queue_watch_calls_back_once_when_the_client_goes_and_makes_no_task():
    async def main() -> None:
        queue: asyncio.Queue = asyncio.Queue()
        presence = ClientPresence(queue.get)
        calls: list[str] = []
        tasks_before = len(asyncio.all_tasks())
        watch = presence.watch(lambda: calls.append("left"))
        assert len(asyncio.all_tasks()) == tasks_before
        await settle()
        assert calls == []
        queue.put_nowait(BODY_PART)  # read and dropped, as a task awaiting receive would
        await settle()
        assert calls == [] and queue.empty()
        queue.put_nowait(DISCONNECT)
        await settle()
        assert calls == ["left"] and presence.left
        queue.put_nowait(DISCONNECT)
        await settle()
        assert calls == ["left"]  # once
        watch.close()

    asyncio.run(main())


def test_a_closed_queue_watch_leaves_later_messages_to_later_readers():
    async def main() -> None:
        queue: asyncio.Queue = asyncio.Queue()
        presence = ClientPresence(queue.get)
        calls: list[str] = []
        presence.watch(lambda: calls.append("left")).close()
        queue.put_nowait(DISCONNECT)
        await settle()
        assert calls == []
        assert await asyncio.wait_for(presence(), 1) == DISCONNECT  # still there to be read
        assert presence.left  # read before the answer was complete

    asyncio.run(main())


def test_a_disconnect_already_queued_when_the_watch_starts_is_seen():
    async def main() -> None:
        queue: asyncio.Queue = asyncio.Queue()
        queue.put_nowait(DISCONNECT)
        presence = ClientPresence(queue.get)
        calls: list[str] = []
        presence.watch(lambda: calls.append("left"))
        await settle()
        assert calls == ["left"]

    asyncio.run(main())


def test_the_watch_ends_with_the_answer_before_the_servers_own_disconnect():
    # Daphne puts an http.disconnect on the queue once the answer is sent: the watch is over by
    # then, so it neither calls back nor takes the message.
    async def main() -> None:
        queue: asyncio.Queue = asyncio.Queue()
        presence = ClientPresence(queue.get)
        calls: list[str] = []
        presence.watch(lambda: calls.append("left"))
        presence.answer_ends()
        queue.put_nowait(DISCONNECT)
        await settle()
        assert calls == [] and queue.qsize() == 1
        assert await presence() == DISCONNECT
        assert not presence.left  # it had its answer

    asyncio.run(main())


@pytest.mark.parametrize("goes", [True, False], ids=["client goes", "closed first"])
def test_any_other_receive_is_watched_by_a_task(goes):
    async def main() -> None:
        inbox: asyncio.Queue = asyncio.Queue()

        async def receive():  # not a Queue's own get: another server's receive
            return await inbox.get()

        presence = ClientPresence(receive)
        assert not presence.watched_without_task
        calls: list[str] = []
        watch = presence.watch(lambda: calls.append("left"))
        await settle()
        if goes:
            inbox.put_nowait(DISCONNECT)
            await settle()
            assert calls == ["left"] and presence.left
        watch.close()
        inbox.put_nowait(DISCONNECT)
        await settle()
        assert calls == (["left"] if goes else [])
        assert len(asyncio.all_tasks()) == 1  # the watching task is gone

    asyncio.run(main())


@pytest.mark.parametrize("how", ["answered", "closed", "client left"])
def test_a_finished_watch_leaves_no_reference_cycle(how):
    # A cycle would keep the request's presence (and what it reaches) until a pass of the
    # cyclic collector: every request would add to that collector's work.
    async def main() -> weakref.ref[asyncio.Queue]:
        queue: asyncio.Queue = asyncio.Queue()
        presence = ClientPresence(queue.get)
        watch = presence.watch(lambda: None)
        if how == "answered":
            presence.answer_ends()
        elif how == "client left":
            queue.put_nowait(DISCONNECT)
            await settle()
            assert presence.left
        watch.close()
        return weakref.ref(queue)  # what the presence reaches: the request's own queue

    gc.collect()
    gc.disable()
    try:
        ref = asyncio.run(main())
        assert ref() is None
    finally:
        gc.enable()
