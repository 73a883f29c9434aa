"""The start-up banner (issue 17): it warns when no upstream account can serve anything and
says how to add one, and prints the address actually bound (every interface said as such,
with URLs that reach it); the admin's instance list shows that address too."""

from __future__ import annotations

import json
from types import SimpleNamespace

import httpx

from iflow2api_site.management.commands.serve import Command
from tests.conftest import FAKE_KEY
from tests.servers import GatewayServer


def banner(listening: dict, problem: str = "") -> str:
    command = Command()
    command.upstream_problem = problem
    supervisor = SimpleNamespace(listening=listening, names={1: "default", 2: "lan"})
    return command._banner_text(supervisor)  # type: ignore[arg-type]


def test_no_upstream_is_a_warning_with_the_ways_to_add_one():
    with GatewayServer() as server:
        out = server.output()
        assert "No upstream account is configured" in out
        assert "iflow2api addaccount --label" in out
        assert f"{server.url}/admin/accounts/account/add/" in out
        assert httpx.get(server.url + "/admin/accounts/account/add/").status_code == 302


def test_accounts_out_of_rotation_are_counted(fake_iflow):
    with GatewayServer({"IFLOW_API_KEY": FAKE_KEY, "IFLOW_BASE_URL": fake_iflow.base_url}
                       ) as server:
        assert "upstream account" not in server.output()  # one usable account: no warning
    server = GatewayServer()
    server.cli("migrate", "--noinput")
    server.shell("from accounts.models import Account\n"
                 "Account.objects.create(label='a', provider='openai', state='blocked', "
                 "base_url='http://127.0.0.1:9/v1')\n"
                 "Account.objects.create(label='b', provider='openai', enabled=False, "
                 "base_url='http://127.0.0.1:9/v1')")
    with server:
        assert "No usable upstream account: all 2 are disabled, blocked" in server.output()


def test_every_interface_is_said_and_reachable_urls_given():
    text = banner({1: (("0.0.0.0", 28000), None)})
    first = text.splitlines()[0]
    assert "0.0.0.0:28000" in first and "every interface" in first
    assert "this machine: http://127.0.0.1:28000" in text
    assert "http://127.0.0.1:28000/admin/" in text  # pages answer loopback names


def test_a_loopback_address_is_printed_as_bound():
    text = banner({1: (("127.0.0.1", 28001), None), 2: (("::1", 28002), None)}, "nothing!")
    assert text.startswith("iflow2api serving on http://127.0.0.1:28001\n")
    assert "http://[::1]:28002  (instance lan)" in text
    assert "!! nothing!" in text and "http://127.0.0.1:28001/admin/accounts/account/add/" in text


def test_the_admin_shows_the_address_the_server_bound():
    with GatewayServer() as server:  # --port overrides the instance's own 28000
        out = server.shell(
            "import json\nfrom instances.models import Instance\n"
            "from instances.admin import InstanceAdmin\nfrom django.contrib import admin\n"
            "i = Instance.objects.get(name='default')\n"
            "print(json.dumps([i.port, i.listening_on, "
            "InstanceAdmin(Instance, admin.site).address(i)]))")
        row_port, listening_on, column = json.loads(out.strip().splitlines()[-1])
        assert row_port != server.port
        assert listening_on == column == f"127.0.0.1:{server.port}"
        server.stop(keep_home=True)  # its database, read once it has stopped
        stopped = server.shell("from instances.models import Instance\n"
                               "print(repr(Instance.objects.get(name='default').listening_on))")
        assert stopped.strip().splitlines()[-1] in ("''", f"'127.0.0.1:{server.port}'")
