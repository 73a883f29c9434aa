"""An instance's state message in the reader's language (issue 17): the server writes it in
English for everyone; the admin's instance list and page, the status page and its websocket
say it in the language of whoever reads it (instances/state_messages.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from django.test import Client
from django.utils import translation

from instances.models import Instance
from instances.routing import WS_PATH, websocket_app
from instances.state_messages import (
    ADDRESS_OVERRIDDEN,
    CANNOT_LISTEN,
    OPEN_RELAY,
    shown,
    written,
)
from instances.supervisor import open_relay_refusal
from tests.instances.test_status import make_user, session_of

REFUSED = open_relay_refusal("public", "0.0.0.0")
REFUSED_ZH = "拒绝监听 0.0.0.0：非本机回环地址至少需要一个客户端密钥"
ZH = {"HTTP_ACCEPT_LANGUAGE": "zh-hans"}


@pytest.fixture(autouse=True)
def english_after() -> Iterator[None]:
    yield
    translation.deactivate()  # the middleware leaves the last page's language active


def test_the_server_writes_english_and_each_reader_gets_their_language():
    with translation.override("zh-hans"):  # whatever the writer's language
        stored = open_relay_refusal("public", "0.0.0.0")
        assert stored.startswith("refusing to listen on 0.0.0.0") and stored == REFUSED
        assert shown(stored).startswith(REFUSED_ZH)
        assert "iflow2api createkey --instance public" in shown(stored)
        moved = written(ADDRESS_OVERRIDDEN, host="::1", port=28001)
        assert shown(moved).startswith("正在监听 ::1:28001，")
        busy = written(CANNOT_LISTEN, host="::1", port=41032, reason="Address already in use")
        assert shown(busy) == "无法监听 ::1:41032：Address already in use"
        assert shown("port in use") == "port in use"  # not ours: as it is
        assert shown("") == ""
    with translation.override("en"):
        assert shown(REFUSED) == REFUSED
        assert shown(written(CANNOT_LISTEN, host="h", port=1, reason="r")) == \
            "cannot listen on h:1: r"
    assert OPEN_RELAY % {"host": "0.0.0.0", "name": "public"} == REFUSED


@pytest.mark.django_db
def test_the_admin_says_it_in_the_readers_language(admin_client: Client):
    public = Instance.objects.create(name="public", host="0.0.0.0", port=28111, state="error",
                                     state_message=REFUSED)
    listing = admin_client.get("/admin/instances/instance/", **ZH).content.decode()
    assert REFUSED_ZH in listing and "refusing to listen" not in listing
    page = admin_client.get(f"/admin/instances/instance/{public.pk}/change/", **ZH)
    assert REFUSED_ZH in page.content.decode()
    english = admin_client.get("/admin/instances/instance/").content.decode()
    assert "refusing to listen on 0.0.0.0" in english
    status_page = admin_client.get("/admin/status/", **ZH).content.decode()
    assert REFUSED_ZH in status_page


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("header", "expected"), [
    ((b"cookie", b"django_language=zh-hans"), REFUSED_ZH),
    ((b"accept-language", b"zh-CN,zh;q=0.9"), REFUSED_ZH),
    ((b"accept-language", b"en-US,en;q=0.9"), "refusing to listen on 0.0.0.0"),
], ids=["language cookie", "accept-language zh", "accept-language en"])
def test_the_websocket_snapshot_speaks_the_pages_language(header, expected):
    channel_layers.backends.clear()
    Instance.objects.create(name="public", host="0.0.0.0", port=28112, state="error",
                            state_message=REFUSED)
    session = session_of(make_user())
    name, value = header
    cookie = f"sessionid={session}".encode()
    headers = [(b"host", b"testserver"), (b"origin", b"http://testserver")]
    headers += ([(b"cookie", cookie + b"; " + value)] if name == b"cookie" else
                [(b"cookie", cookie), header])

    async def go() -> dict:
        ws = WebsocketCommunicator(websocket_app(), WS_PATH, headers=headers)
        assert (await ws.connect(timeout=5))[0]
        message = await ws.receive_json_from(timeout=3)
        await ws.disconnect()
        return message["data"]

    try:
        [instance] = asyncio.run(go())["instances"]
    finally:
        channel_layers.backends.clear()
    assert instance["state_message"].startswith(expected), instance["state_message"]
