"""Instances start, stop and move while the server runs (issue 5).

First the supervisor's decisions, in process with fake listeners; then a real `iflow2api serve`
driven through real admin HTTP requests (add form, change form, changelist actions) while slow
streams run on it; then `serve --instance NAME`.
"""

from __future__ import annotations

import ast
import html
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from typing import Any

import httpx
import pytest
from asgiref.sync import async_to_sync

from instances.models import ClientKey, Instance
from instances.runtime import NO_INSTANCE, Listeners
from instances.services import directory_snapshot, invalidate_directory
from instances.supervisor import Supervisor
from tests.conftest import FAKE_KEY
from tests.fakes import scenarios as sc
from tests.fakes.upstream import FakeUpstream
from tests.servers import ROOT, GatewayServer, free_port
from tests.sse import openai_chunks

ADMIN, PASSWORD = "ops", "supervisor-Test-4e1b"  # a throw-away admin on a throw-away server
CHANGELIST = "/admin/instances/instance/"
# The supervisor looks every 2 s; the issue promises "within ~5 s". A little slack for a busy
# test machine, no more.
TAKES_EFFECT = 6.0


# --- the decisions, with fake listeners ---------------------------------------------------------


class FakeListeners:
    """open/close callables for the supervisor; refuses the ports in `busy` like a real bind."""

    def __init__(self) -> None:
        self.open: dict[int, tuple[str, int]] = {}  # token → address
        self.closed: list[tuple[str, int]] = []
        self.busy: set[int] = set()
        self.tokens = iter(range(1, 10_000))

    async def open_listener(self, host: str, port: int) -> int:
        if port in self.busy:
            raise OSError(98, "Address already in use")
        token = next(self.tokens)
        self.open[token] = (host, port)
        return token

    async def close_listener(self, token: int) -> None:
        self.closed.append(self.open.pop(token))

    @property
    def addresses(self) -> set[tuple[str, int]]:
        return set(self.open.values())


@pytest.fixture
def listeners() -> FakeListeners:
    return FakeListeners()


def supervise(fake: FakeListeners, **options: Any) -> tuple[Supervisor, Callable[[], None]]:
    supervisor = Supervisor(fake.open_listener, fake.close_listener, **options)
    return supervisor, async_to_sync(supervisor.reconcile)


def state(name: str) -> tuple[str, str]:
    return Instance.objects.values_list("state", "state_message").get(name=name)


def test_enabled_instances_listen_and_disabled_ones_stop(db, listeners):
    Instance.objects.create(name="one", port=41001)
    Instance.objects.create(name="two", port=41002)
    Instance.objects.create(name="off", port=41003, enabled=False)
    table, directory = Listeners(), directory_snapshot()  # a Runtime's
    directory.ttl_seconds = 3600.0  # stale only when marked so, never by the clock
    async_to_sync(directory.get)()
    supervisor, reconcile = supervise(listeners, listeners=table, directory=directory)
    reconcile()
    assert listeners.addresses == {("127.0.0.1", 41001), ("127.0.0.1", 41002)}
    assert state("one") == state("two") == ("running", "")
    assert state("off")[0] == "stopped"
    assert not directory.fresh()  # a new listener: its instance is read again at once
    two = Instance.objects.get(name="two").pk
    assert table.instance_for_port(41002) == two  # requests on that port are "two"'s
    Instance.objects.filter(name="two").update(enabled=False)
    reconcile()
    assert listeners.closed == [("127.0.0.1", 41002)]
    assert listeners.addresses == {("127.0.0.1", 41001)}
    # Connections the closed listener accepted carry on, still "two"'s: never another's policy.
    assert state("two")[0] == "stopped" and table.instance_for_port(41002) == two
    assert table.instance_for_port(41999) == NO_INSTANCE  # never ours: refused
    reconcile()  # nothing changed: nothing reopened or closed again
    assert listeners.closed == [("127.0.0.1", 41002)] and len(listeners.open) == 1
    async_to_sync(supervisor.stop)()
    assert listeners.addresses == set() and state("one")[0] == "stopped"


def test_a_new_address_reopens_the_listener(db, listeners):
    Instance.objects.create(name="one", port=41011)
    _supervisor, reconcile = supervise(listeners)
    reconcile()
    Instance.objects.filter(name="one").update(port=41012, host="::1")
    reconcile()
    assert listeners.closed == [("127.0.0.1", 41011)]
    assert listeners.addresses == {("::1", 41012)} and state("one") == ("running", "")


def test_a_network_address_without_a_client_key_is_refused(db, listeners):
    one = Instance.objects.create(name="one", port=41021)
    _supervisor, reconcile = supervise(listeners)
    reconcile()
    Instance.objects.filter(name="one").update(host="0.0.0.0")
    reconcile()  # the running listener closes: it would now be an open relay
    assert listeners.addresses == set()
    status, message = state("one")
    assert status == "error" and "0.0.0.0" in message and "createkey --instance one" in message
    ClientKey.create(one, "laptop")
    reconcile()
    assert listeners.addresses == {("0.0.0.0", 41021)} and state("one") == ("running", "")


def test_a_port_in_use_is_an_error_state_and_retried(db, listeners):
    Instance.objects.create(name="one", port=41031)
    Instance.objects.create(name="two", port=41032)
    listeners.busy.add(41032)
    _supervisor, reconcile = supervise(listeners)
    reconcile()  # "one" does not suffer from "two"'s trouble
    assert listeners.addresses == {("127.0.0.1", 41031)}
    status, message = state("two")
    assert status == "error"
    assert message == "cannot listen on 127.0.0.1:41032: Address already in use"
    listeners.busy.clear()
    reconcile()  # every round tries again
    assert ("127.0.0.1", 41032) in listeners.addresses and state("two") == ("running", "")


def test_only_serves_the_named_instances_and_leaves_the_others_alone(db, listeners):
    Instance.objects.create(name="one", port=41041)
    Instance.objects.create(name="two", port=41042, state="running")  # another server's
    _supervisor, reconcile = supervise(listeners, only=frozenset({"one"}))
    reconcile()
    assert listeners.addresses == {("127.0.0.1", 41041)}
    assert state("two")[0] == "running"  # not this server's to mark stopped


def test_overrides_move_an_instance_without_touching_its_row(db, listeners):
    Instance.objects.create(name="default", port=41051)
    _supervisor, reconcile = supervise(listeners, overrides={"default": ("127.0.0.1", 41052)})
    reconcile()
    assert listeners.addresses == {("127.0.0.1", 41052)}
    row = Instance.objects.get(name="default")
    assert row.port == 41051 and row.state == "running"
    assert "listening on 127.0.0.1:41052" in row.state_message  # where it really is
    reconcile()  # the override is stable: no reopening every round
    assert listeners.closed == []


# --- a real server, driven through the admin ----------------------------------------------------


class FormFields(HTMLParser):
    """The values a browser would submit from the form with id `form_id`."""

    def __init__(self, form_id: str) -> None:
        super().__init__()
        self.form_id, self.inside = form_id, False
        self.fields: list[tuple[str, str]] = []
        self.select: tuple[str, bool, list[str], list[str]] | None = None  # name, multiple,
        # options, selected
        self.textarea: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.inside = a.get("id") == self.form_id
        elif not self.inside or "name" not in a:
            if tag == "option" and self.select is not None:
                self.select[2].append(a.get("value", ""))
                if "selected" in a:
                    self.select[3].append(a.get("value", ""))
        elif tag == "input" and a.get("type") not in {"submit", "button", "image", "file"}:
            ticked = a.get("type") in {"checkbox", "radio"}
            if not ticked or "checked" in a:
                self.fields.append((a["name"], a.get("value", "on" if ticked else "")))
        elif tag == "select":
            self.select = (a["name"], "multiple" in a, [], [])
        elif tag == "textarea":
            self.textarea = a["name"]
            self.fields.append((a["name"], ""))

    def handle_data(self, data: str) -> None:
        if self.textarea is not None:
            name, value = self.fields.pop()
            self.fields.append((name, value + data))

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self.inside = False
        elif tag == "textarea" and self.textarea is not None:
            name, value = self.fields.pop()  # the browser drops the first newline
            self.fields.append((name, value.removeprefix("\n")))
            self.textarea = None
        elif tag == "select" and self.select is not None:
            name, multiple, options, selected = self.select
            if not selected and options and not multiple:
                selected = options[:1]
            self.fields += [(name, value) for value in selected]
            self.select = None


class Admin:
    """A logged-in admin session on a real server: it posts what the admin pages offer."""

    def __init__(self, server: GatewayServer) -> None:
        self.http = httpx.Client(base_url=server.url, timeout=10)
        page = self.http.get("/admin/login/")
        answer = self.http.post("/admin/login/", data={
            "csrfmiddlewaretoken": self.token(page.text), "username": ADMIN,
            "password": PASSWORD, "next": "/admin/"})
        assert answer.status_code == 302 and "sessionid" in self.http.cookies, answer.text[:300]

    @staticmethod
    def token(page: str) -> str:
        found = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        assert found, page[:300]
        return found.group(1)

    def submit_form(self, path: str, **changes: str | None) -> None:
        """The instance form at `path`, as loaded, with `changes` (None: unchecked)."""
        parser = FormFields("instance_form")
        parser.feed(self.http.get(path).text)
        data: dict[str, list[str]] = {}
        for name, value in parser.fields:
            data.setdefault(name, []).append(value)
        for name, value in changes.items():
            data.pop(name, None) if value is None else data.__setitem__(name, [value])
        answer = self.http.post(path, data=data)
        errors = re.findall(r'<ul class="errorlist[^"]*"[^>]*>(.*?)</ul>', answer.text, re.S)
        assert answer.status_code == 302, errors or answer.text[:500]

    def add(self, name: str, port: int) -> int:
        self.submit_form(CHANGELIST + "add/", name=name, port=str(port))
        found = re.search(r'href="/admin/instances/instance/(\d+)/change/[^"]*">'
                          + re.escape(name) + "<", self.http.get(CHANGELIST).text)
        assert found
        return int(found.group(1))

    def action(self, action: str, pk: int) -> None:
        page = self.http.get(CHANGELIST)
        answer = self.http.post(CHANGELIST, data={
            "csrfmiddlewaretoken": self.token(page.text), "action": action, "index": "0",
            "select_across": "0", "_selected_action": str(pk)})
        assert answer.status_code == 302, answer.text[:500]

    def row(self, pk: int) -> str:
        """The instance's changelist row as text: name, address, state, state message…"""
        page = self.http.get(CHANGELIST).text
        found = re.search(rf'<tr>(?:(?!</tr>).)*?/instance/{pk}/change/.*?</tr>', page, re.S)
        assert found, page[:300]
        return html.unescape(re.sub(r"<[^>]+>", " ", found.group(0)))


def answers(port: int) -> bool:
    """A new connection to the port gets an answer (pooled connections would outlive a listener
    and prove nothing)."""
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def eventually(check: Callable[[], bool], timeout: float = TAKES_EFFECT) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


WORDS = [f"w{i} " for i in range(40)]


class Stream(threading.Thread):
    """A streamed chat completion on one port, read to the end in the background."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port, self.raw, self.error = port, b"", ""

    def run(self) -> None:
        body = {"model": "glm-5", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        try:
            with httpx.stream("POST", f"http://127.0.0.1:{self.port}/v1/chat/completions",
                              json=body, timeout=10) as answer:
                self.raw = b"".join(answer.iter_bytes())
        except httpx.HTTPError as exc:
            self.error = repr(exc)

    def text(self) -> str:
        self.join(30)
        assert not self.is_alive() and not self.error, self.error
        chunks = openai_chunks(self.raw)  # ends with exactly one [DONE]
        return "".join(c["choices"][0]["delta"].get("content") or ""
                       for c in chunks if c["choices"])


@pytest.fixture(scope="module")
def server(fake_iflow: FakeUpstream) -> Iterator[GatewayServer]:
    env = {"IFLOW_API_KEY": FAKE_KEY, "IFLOW_BASE_URL": fake_iflow.base_url}
    with GatewayServer(env) as gateway:
        # The iFlow account takes one request at a time (iFlow's own limit); the streams here
        # run side by side on one fake account.
        gateway.shell(
            "from django.contrib.auth import get_user_model\n"
            "from accounts.models import Account\n"
            f"get_user_model().objects.create_superuser({ADMIN!r}, 'ops@example.com', "
            f"{PASSWORD!r})\n"
            "Account.objects.update(max_concurrency=0)\n")
        yield gateway


@pytest.mark.e2e
def test_instances_start_stop_and_move_from_the_admin_while_streams_run(server, upstream):
    admin = Admin(server)
    first, second = free_port(), free_port()
    pk = admin.add("second", first)
    assert eventually(lambda: answers(first)), server.output()[-2000:]
    assert eventually(lambda: "Running" in admin.row(pk))

    upstream.script(*[sc.slow(sc.text("".join(WORDS), chunks=len(WORDS)), chunk_delay=0.3)] * 2)
    on_default, on_second = Stream(server.port), Stream(first)
    on_default.start()
    on_second.start()
    upstream.wait_for_requests(2)
    kept = httpx.Client(base_url=f"http://127.0.0.1:{first}", timeout=2)  # keep-alive
    assert kept.get("/health").status_code == 200
    admin.action("stop_instances", pk)
    assert eventually(lambda: not answers(first)), "a stopped instance still accepts"
    # An idle keep-alive connection does not outlive the listener (a request on it would no
    # longer know its instance); the stream's connection does, until the stream is done.
    with pytest.raises(httpx.TransportError):
        kept.get("/health")
    assert eventually(lambda: "Stopped" in admin.row(pk))
    admin.submit_form(f"{CHANGELIST}{pk}/change/", port=str(second))
    admin.action("start_instances", pk)
    assert eventually(lambda: answers(second)), server.output()[-2000:]
    assert not answers(first) and "Running" in admin.row(pk)
    assert on_default.is_alive() and on_second.is_alive(), "the streams ended too soon to tell"
    # Both streams outlived all of it: the one on the other instance, and the one whose
    # listener was closed under it.
    assert on_default.text() == on_second.text() == "".join(WORDS)
    assert answers(server.port)


@pytest.mark.e2e
def test_a_port_in_use_is_an_error_on_that_instance_only(server):
    admin = Admin(server)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        busy = squatter.getsockname()[1]
        pk = admin.add("squeezed", busy)
        assert eventually(lambda: "cannot listen" in admin.row(pk))
        row = admin.row(pk)
        assert "Error" in row, row
        assert f"cannot listen on 127.0.0.1:{busy}: Address already in use" in row, row
        assert answers(server.port) and server.process.poll() is None
    # Freed: the next round opens it, no edit needed.
    assert eventually(lambda: answers(busy)), server.output()[-2000:]
    assert eventually(lambda: "Running" in admin.row(pk))
    assert "cannot listen" not in admin.row(pk)
    # Reconfigured while running: it moves.
    moved = free_port()
    admin.submit_form(f"{CHANGELIST}{pk}/change/", port=str(moved))
    assert eventually(lambda: answers(moved) and not answers(busy))
    assert "Running" in admin.row(pk)


@pytest.mark.e2e
def test_serve_instance_serves_only_that_one(fake_iflow):
    gateway = GatewayServer({"IFLOW_API_KEY": FAKE_KEY, "IFLOW_BASE_URL": fake_iflow.base_url})
    default_port, solo_port = free_port(), free_port()
    gateway.shell(
        "from django.core.management import call_command\n"
        "call_command('migrate', verbosity=0)\n"
        "from instances.models import Instance\n"
        f"Instance.objects.create(name='default', port={default_port})\n"
        f"Instance.objects.create(name='solo', port={solo_port})\n")
    with gateway.log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "iflow2api_site.cli", "serve", "--no-migrate",
             "--instance", "solo"], cwd=ROOT, env=gateway.env, stdout=log,
            stderr=subprocess.STDOUT)
    gateway.process = process  # stop() ends it
    try:
        assert eventually(lambda: answers(solo_port), timeout=40), gateway.output()
        assert not answers(default_port)
        states = gateway.shell(
            "from instances.models import Instance\n"
            "print(dict(Instance.objects.values_list('name', 'state')))")
        assert ast.literal_eval(states.strip().splitlines()[-1]) == {
            "default": "stopped", "solo": "running"}
        assert "(instance solo)" in gateway.output()
    finally:
        gateway.stop()


# --- a rename never serves the instance with another instance's policy (issue 13, item 5) -------

KEYED_SETUP = """
from instances.models import ClientKey, Instance
keyed = Instance.objects.create(name="keyed", host="127.0.0.1", port={port})
print(keyed.pk, ClientKey.create(keyed, "k")[1])
"""


class KeylessLoop(threading.Thread):
    """Key-less requests on one port, one after another, until told to stop: their statuses."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port, self.statuses = port, []
        self.done = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=5) as client:
            while not self.done.is_set():
                try:
                    self.statuses.append(client.get("/v1/models").status_code)
                except httpx.TransportError:
                    self.statuses.append(0)
                    time.sleep(0.01)


@pytest.mark.e2e
def test_renaming_an_instance_never_serves_it_without_its_key(server):
    port = free_port()
    pk, key = server.shell(KEYED_SETUP.format(port=port)).split()[-2:]
    assert eventually(lambda: answers(port)), server.output()[-2000:]
    admin = Admin(server)
    loop = KeylessLoop(port)
    loop.start()
    try:
        time.sleep(0.3)
        admin.submit_form(f"{CHANGELIST}{pk}/change/", name="keyed-renamed")
        # Long enough for the supervisor's round and the directory's refresh to both pass.
        assert eventually(lambda: "Running" in admin.row(int(pk))
                          and "keyed-renamed" in admin.row(int(pk)))
        time.sleep(5)
    finally:
        loop.done.set()
        loop.join(10)
    assert loop.statuses.count(401) > 10, loop.statuses  # it did ask, before and after
    assert 200 not in loop.statuses, f"{loop.statuses.count(200)} key-less requests served"
    mine = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5,
                     headers={"authorization": f"Bearer {key}"})
    assert mine.status_code == 200


def test_a_listener_whose_instance_is_gone_refuses_with_503(db):
    from proxy.errors import ApiError
    from proxy.http import ApiRequest
    from proxy.pipeline import admit
    from proxy.runtime import Runtime

    runtime = Runtime.build()
    gone = Instance.objects.create(name="gone", port=41061)
    runtime.listeners.register(41061, gone.pk)
    async_to_sync(runtime.directory.get)()  # it knew the instance
    gone.delete()
    invalidate_directory(runtime.directory)  # read again at once (else within 2 s)
    request = ApiRequest("GET", "/v1/models", {}, b"", runtime,
                         instance_id=runtime.listeners.instance_for_port(41061))
    with pytest.raises(ApiError) as refused:
        async_to_sync(admit)(request)
    assert refused.value.status == 503 and refused.value.code == "instance_unavailable"
    assert refused.value.openai_body()["error"]["type"] != "invalid_request_error"
