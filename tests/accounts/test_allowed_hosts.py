"""The Django pages answer only to the names this server is reached by (issue 13, item 9): a
forged `Host: evil.example` gets a 400 that says what to do, never an OAuth redirect whose
callback points at evil.example. Loopback names, the instances' own addresses, PUBLIC_BASE_URL's
host and ALLOWED_HOSTS are answered."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from iflow2api_site.hosts import ServedHosts
from instances.runtime import Listeners
from tests.instances.helpers import admin_session, wait_until
from tests.servers import GatewayServer, free_port

ADMIN, PASSWORD = "hosts-admin", "hosts-Admin-pass-8812"
SETUP = f"""
from django.contrib.auth import get_user_model
from instances.models import Instance
get_user_model().objects.create_superuser({ADMIN!r}, "h@example.test", {PASSWORD!r})
Instance.objects.create(name="other-address", host="127.0.0.2", port={{port}})
"""


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[GatewayServer, int]]:
    with GatewayServer() as gateway:  # no ALLOWED_HOSTS, no PUBLIC_BASE_URL: the defaults
        port = free_port()
        gateway.shell(SETUP.format(port=port))

        def listens() -> bool:
            try:
                return httpx.get(f"http://127.0.0.2:{port}/health", timeout=1).is_success
            except httpx.HTTPError:
                return False

        assert wait_until(listens), gateway.output()[-2000:]
        yield gateway, port


def page(server: GatewayServer, path: str, host: str, **options: object) -> httpx.Response:
    return httpx.get(server.url + path, headers={"host": host}, timeout=10, **options)


@pytest.mark.e2e
def test_a_forged_host_gets_a_helpful_400_and_no_oauth_redirect(server):
    gateway, _port = server
    refused = page(gateway, "/admin/login/", "evil.example")
    assert refused.status_code == 400
    assert "ALLOWED_HOSTS" in refused.text and "evil.example" not in refused.text
    admin = admin_session(gateway, ADMIN, PASSWORD)
    try:
        start = admin.get("/accounts/oauth/start/", headers={"host": "evil.example"})
        assert start.status_code == 400, start.headers
        assert "evil.example" not in start.headers.get("location", "")
        # Reached by a name it answers to: the callback is built from that name.
        ok = admin.get("/accounts/oauth/start/", headers={"host": f"localhost:{gateway.port}"})
        assert ok.status_code == 302
        redirect = parse_qs(urlsplit(ok.headers["location"]).query)["redirect"][0]
        assert redirect == f"http://localhost:{gateway.port}/accounts/oauth/callback/"
    finally:
        admin.close()
    assert "Invalid HTTP_HOST header: 'evil.example'" in gateway.output()  # the log names it


@pytest.mark.e2e
@pytest.mark.parametrize("name", ["127.0.0.1", "localhost", "[::1]", "127.0.0.2"])
def test_loopback_names_and_the_instances_addresses_are_answered(server, name):
    gateway, port = server
    assert page(gateway, "/admin/login/", f"{name}:{gateway.port}").status_code == 200
    if name == "127.0.0.2":  # the other instance's own address, on its own port
        assert httpx.get(f"http://127.0.0.2:{port}/admin/login/", timeout=10).status_code == 200


def test_the_names_are_worked_out_as_listeners_open():
    hosts = ServedHosts(["gw.example.test", ".corp.example"], "https://public.example:8443/x")
    assert list(hosts)[:3] == ["localhost", "127.0.0.1", "[::1]"]
    assert {"public.example", "gw.example.test", ".corp.example"} <= set(hosts)
    assert hosts.configured == ["public.example", "gw.example.test", ".corp.example"]
    assert ServedHosts([]).configured == []
    listeners = Listeners()  # a Runtime's, which the ASGI application has the hosts follow
    hosts.follow(listeners)
    for port, host in ((41071, "10.1.2.3"), (41072, "0.0.0.0"), (41073, "fd00::5")):
        listeners.register(port, 1, host)
    assert "10.1.2.3" in hosts and "[fd00::5]" in hosts
    assert "0.0.0.0" not in hosts  # a wildcard names nothing
    assert [*hosts, "testserver"][-1] == "testserver"  # how Django's test set-up copies it
    listeners.unregister(41071)
    assert "10.1.2.3" not in hosts
