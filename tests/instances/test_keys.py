"""Client API keys on a real `iflow2api serve`: made by `createkey` or the admin, stored only
as a prefix and a hash, sent as Bearer or x-api-key, refused (401/403 in the client's own
format) when missing, wrong, disabled, expired, for another instance or for a model the key
may not use; instances on a non-loopback address wait for a key before they listen."""

from __future__ import annotations

import contextlib
import hashlib
import html
import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from instances.models import PREFIX_LENGTH
from tests.conftest import FAKE_KEY
from tests.fakes.upstream import FakeUpstream
from tests.instances.helpers import (
    KEY_LINE,
    admin_session,
    csrf_token,
    db_path,
    hidden_fields,
    instance_row,
    last_line,
    query,
    wait_for_port,
    wait_for_state,
    wait_until,
)
from tests.servers import GatewayServer, free_port

pytestmark = pytest.mark.e2e

MESSAGES = [{"role": "user", "content": "hi"}]
CHAT = {"model": "glm-5", "messages": MESSAGES}
MESSAGE = {"model": "claude-sonnet-4-6", "max_tokens": 10, "messages": MESSAGES}
ADMIN_PASSWORD = "a-long-admin-pass-5521"
ENV_KEY_NAME = "from IFLOW2API_API_KEYS"


class Keyed:
    """The module's server and the keys made for it."""

    def __init__(self, server: GatewayServer, second_port: int) -> None:
        self.server = server
        self.second_port = second_port
        self.created_stdout = ""
        self.keys: dict[str, str] = {}

    @property
    def second_url(self) -> str:
        return f"http://127.0.0.1:{self.second_port}"


SETUP = """
import json
from django.contrib.auth import get_user_model
from instances.models import ClientKey, Instance
default = Instance.objects.get(name="default")
_, disabled = ClientKey.create(default, "switched-off", enabled=False)
second = Instance.objects.create(name="second", host="127.0.0.1", port={port})
_, second_key = ClientKey.create(second, "second-key")
get_user_model().objects.create_superuser("root", "root@example.test", {password!r})
print(json.dumps({{"disabled": disabled, "second": second_key}}))
"""


@pytest.fixture(scope="module")
def keyed(fake_iflow: FakeUpstream) -> Iterator[Keyed]:
    env = {"IFLOW_API_KEY": FAKE_KEY, "IFLOW_BASE_URL": fake_iflow.base_url}
    with GatewayServer(env) as server:
        setup = Keyed(server, free_port())
        # Independent set-up commands, run side by side (each is a process start).
        commands = {
            "alice": ("createkey", "--instance", "default", "--name", "alice"),
            "limited": ("createkey", "--name", "limited", "--models", "glm-5", "--no-migrate"),
            "expired": ("createkey", "--name", "old", "--expires", "2000-01-01T00:00:00",
                        "--no-migrate"),
            "month": ("createkey", "--name", "month", "--expires", "30d", "--no-migrate"),
            "shell": ("shell", "-c", SETUP.format(port=setup.second_port,
                                                  password=ADMIN_PASSWORD)),
        }
        with ThreadPoolExecutor(len(commands)) as pool:
            done = dict(zip(commands, pool.map(lambda args: server.cli(*args).stdout,
                                               commands.values()), strict=True))
        setup.created_stdout = done["alice"]
        setup.keys.update(json.loads(last_line(done.pop("shell"))))
        setup.keys.update({name: last_line(out) for name, out in done.items()})
        wait_for_port(setup.second_port)
        # The key directory is cached for up to 2 s: wait until it knows the new keys.
        assert wait_until(lambda: httpx.get(
            server.url + "/v1/models", headers={"x-api-key": setup.keys["limited"]}
        ).status_code == 200)
        yield setup


def post_chat(url: str, headers: dict[str, str] | None = None, **body: object) -> httpx.Response:
    return httpx.post(url + "/v1/chat/completions", json={**CHAT, **body}, headers=headers,
                      timeout=30)


# --- createkey and storage ----------------------------------------------------------------------


def test_createkey_prints_the_key_alone_on_the_last_line(keyed):
    lines = keyed.created_stdout.rstrip("\n").split("\n")
    key = lines[-1]
    assert KEY_LINE.fullmatch(key), lines
    assert "alice" in keyed.created_stdout and key not in "\n".join(lines[:-1])
    assert len(set(keyed.keys.values())) == len(keyed.keys)  # every key is new


def test_the_database_holds_only_a_prefix_and_a_hash(keyed):
    rows = query(keyed.server, "SELECT * FROM instances_clientkey")
    by_hash = {row["key_hash"]: row for row in rows}
    for label, key in keyed.keys.items():
        row = by_hash[hashlib.sha256(key.encode()).hexdigest()]
        assert row["prefix"] == key[:PREFIX_LENGTH], label
        for column, value in row.items():
            assert key not in str(value), (label, column)
    # Nowhere in the file either (nor in a journal beside it), nor in the server's log.
    files = [p for p in Path(db_path(keyed.server)).parent.glob("db.sqlite3*") if p.is_file()]
    data = b"".join(p.read_bytes() for p in files)
    for key in keyed.keys.values():
        assert key[PREFIX_LENGTH:].encode() not in data
        assert key[PREFIX_LENGTH:] not in keyed.server.output()


# --- how keys are sent --------------------------------------------------------------------------


def test_bearer_and_x_api_key_are_both_accepted(keyed, upstream):
    key = keyed.keys["alice"]
    url = keyed.server.url
    client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)  # Bearer
    assert client.chat.completions.create(**CHAT).choices[0].message.content
    assert post_chat(url, {"x-api-key": key}).status_code == 200
    with_key = anthropic.Anthropic(base_url=url, api_key=key, max_retries=0)  # x-api-key
    assert with_key.messages.create(**MESSAGE).content[0].type == "text"
    with_token = anthropic.Anthropic(base_url=url, auth_token=key, api_key=None, max_retries=0)
    assert with_token.messages.create(**MESSAGE).content[0].type == "text"
    assert len(upstream.chat_requests) == 4


def test_a_valid_key_counts_when_both_headers_are_sent(keyed, upstream):
    """Claude Code with ANTHROPIC_AUTH_TOKEN=<key> and a leftover ANTHROPIC_API_KEY=any-value
    sends both headers; the valid one must count, whichever header it is in."""
    key = keyed.keys["alice"]
    both = httpx.post(keyed.server.url + "/v1/messages", json=MESSAGE, timeout=30, headers={
        "x-api-key": "any-value", "authorization": f"Bearer {key}"})
    assert both.status_code == 200, both.text
    swapped = post_chat(keyed.server.url, {"x-api-key": key,
                                           "authorization": "Bearer any-value"})
    assert swapped.status_code == 200
    neither = post_chat(keyed.server.url, {"x-api-key": "sk-i2a-wrong",
                                           "authorization": "Bearer any-value"})
    assert neither.status_code == 401


def test_missing_or_wrong_keys_are_401_in_the_openai_format(keyed, upstream):
    missing = post_chat(keyed.server.url)
    assert missing.status_code == 401
    assert missing.json()["error"]["type"] == "authentication_error"
    assert missing.json()["error"]["code"] == "missing_api_key"
    client = openai.OpenAI(base_url=keyed.server.url + "/v1", api_key="sk-i2a-wrong",
                           max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        client.chat.completions.create(**CHAT)
    assert caught.value.code == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        client.models.list()
    assert upstream.chat_requests == []


def test_missing_or_wrong_keys_are_401_in_the_anthropic_format(keyed, upstream):
    missing = httpx.post(keyed.server.url + "/v1/messages", json=MESSAGE, timeout=30)
    assert missing.status_code == 401
    body = missing.json()
    assert body["type"] == "error" and body["error"]["type"] == "authentication_error"
    assert missing.headers["request-id"] == body["request_id"]
    client = anthropic.Anthropic(base_url=keyed.server.url, api_key="sk-i2a-wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as caught:
        client.messages.create(**MESSAGE)
    assert caught.value.body["error"]["type"] == "authentication_error"
    assert upstream.chat_requests == []


def test_a_disabled_key_is_401(keyed, upstream):
    answer = post_chat(keyed.server.url, {"authorization": f"Bearer {keyed.keys['disabled']}"})
    assert answer.status_code == 401
    assert "disabled" in answer.json()["error"]["message"]
    client = anthropic.Anthropic(base_url=keyed.server.url, api_key=keyed.keys["disabled"],
                                 max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        client.messages.create(**MESSAGE)
    assert upstream.chat_requests == []


def test_an_expired_key_is_401(keyed, upstream):
    [row] = query(keyed.server, "SELECT expires_at FROM instances_clientkey WHERE name = 'old'")
    assert row["expires_at"].startswith("2000-01-01")
    answer = post_chat(keyed.server.url, {"x-api-key": keyed.keys["expired"]})
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "expired_api_key"
    assert upstream.chat_requests == []


def test_a_key_that_expires_later_works(keyed, upstream):
    [row] = query(keyed.server, "SELECT expires_at FROM instances_clientkey WHERE name = 'month'")
    assert row["expires_at"] > datetime.now(UTC).isoformat(" ")
    assert post_chat(keyed.server.url, {"x-api-key": keyed.keys["month"]}).status_code == 200


# --- the model allow-list -----------------------------------------------------------------------


def test_the_model_allow_list(keyed, upstream):
    key = keyed.keys["limited"]
    client = openai.OpenAI(base_url=keyed.server.url + "/v1", api_key=key, max_retries=0)
    assert client.chat.completions.create(**CHAT).choices[0].message.content
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client.chat.completions.create(model="kimi-k2", messages=MESSAGES)
    assert caught.value.code == "model_not_allowed"
    claude = anthropic.Anthropic(base_url=keyed.server.url, api_key=key, max_retries=0)
    with pytest.raises(anthropic.PermissionDeniedError) as refused:
        claude.messages.create(**{**MESSAGE, "model": "kimi-k2"})
    assert refused.value.body["error"]["type"] == "permission_error"
    assert [r.model for r in upstream.chat_requests] == ["glm-5"]


def test_models_lists_only_what_the_key_may_use(keyed):
    limited = openai.OpenAI(base_url=keyed.server.url + "/v1", api_key=keyed.keys["limited"],
                            max_retries=0)
    listed = {m.id: m for m in limited.models.list().data}
    # glm-5, and the claude-* names that stand for it (the default tiers map to glm-5).
    assert {name for name in listed if not name.startswith("claude")} == {"glm-5"}
    for name, model in listed.items():
        if name != "glm-5":
            assert model.display_name.endswith("→ GLM-5"), name  # type: ignore[attr-defined]
    everything = httpx.get(keyed.server.url + "/v1/models",
                           headers={"x-api-key": keyed.keys["alice"]}).json()["data"]
    assert {"glm-5", "kimi-k2", "qwen-vl-max"} <= {m["id"] for m in everything}


# --- keys belong to one instance ----------------------------------------------------------------


def test_a_key_of_one_instance_is_refused_on_another(keyed, upstream):
    mine, theirs = keyed.keys["alice"], keyed.keys["second"]
    assert post_chat(keyed.second_url, {"x-api-key": mine}).status_code == 401
    assert post_chat(keyed.server.url, {"x-api-key": theirs}).status_code == 401
    assert post_chat(keyed.second_url, {"x-api-key": theirs}).status_code == 200
    assert post_chat(keyed.second_url).status_code == 401
    assert len(upstream.chat_requests) == 1


# --- the admin shows a new key once -------------------------------------------------------------


def test_the_admin_shows_a_new_key_once(keyed, upstream):
    server = keyed.server
    default_id = instance_row(server, "default")["id"]
    with contextlib.closing(admin_session(server, "root", ADMIN_PASSWORD)) as admin:
        form = admin.get("/admin/instances/clientkey/add/")
        assert form.status_code == 200
        page = admin.post("/admin/instances/clientkey/add/", data={
            **hidden_fields(form.text), "csrfmiddlewaretoken": csrf_token(form),
            "instance": str(default_id),
            "name": "from-admin", "enabled": "on", "expires_at_0": "", "expires_at_1": "",
            "allowed_models": "", "_save": "Save"})
        assert page.status_code == 302, page.text  # post/redirect/get: a reload makes nothing
        page = admin.get(page.headers["location"])
        assert page.status_code == 200, page.text
        found = re.search(r'value="(sk-i2a-[^"]+)"', page.text)
        assert found, page.text
        key = found.group(1)
        assert "no-store" in page.headers["cache-control"]
        [row] = query(server, "SELECT * FROM instances_clientkey WHERE name = 'from-admin'")
        assert row["key_hash"] == hashlib.sha256(key.encode()).hexdigest()
        assert row["prefix"] == key[:PREFIX_LENGTH]
        for path in ("/admin/instances/clientkey/",
                     f"/admin/instances/clientkey/{row['id']}/change/",
                     f"/admin/instances/instance/{default_id}/change/", "/admin/"):
            later = admin.get(path)
            assert later.status_code == 200, path
            assert key[PREFIX_LENGTH:] not in later.text, path
        assert row["prefix"] in admin.get("/admin/instances/clientkey/").text

        # From the "+" next to a key field (a rate rule's): the key is shown, then "Done"
        # hands the new row to the opener like Django's popup response.
        form = admin.get("/admin/instances/clientkey/add/?_popup=1&_to_field=id")
        popup = admin.post("/admin/instances/clientkey/add/?_popup=1&_to_field=id", data={
            **hidden_fields(form.text), "csrfmiddlewaretoken": csrf_token(form),
            "instance": str(default_id),
            "name": "from-popup", "enabled": "on", "expires_at_0": "", "expires_at_1": "",
            "allowed_models": "", "_popup": "1", "_to_field": "id", "_save": "Save"})
        assert popup.status_code == 302, popup.text
        popup = admin.get(popup.headers["location"])
        assert popup.status_code == 200, popup.text
        assert re.search(r'value="sk-i2a-[^"]+"', popup.text)
        [made] = query(server, "SELECT * FROM instances_clientkey WHERE name = 'from-popup'")
        response = re.search(r'data-popup-response="([^"]+)"', popup.text)
        assert response and json.loads(html.unescape(response.group(1))) == {
            "value": str(made["id"]), "obj": f"from-popup ({made['prefix']}…)"}
        assert "instances/new_key.js" in popup.text
    assert post_chat(server.url, {"authorization": f"Bearer {key}"}).status_code == 200


# --- a non-loopback instance needs a key --------------------------------------------------------


def test_a_network_instance_waits_for_a_key(keyed, upstream):
    server, port = keyed.server, free_port()
    server.shell("from instances.models import Instance\n"
                 f"Instance.objects.create(name='public', host='0.0.0.0', port={port})")
    row = wait_for_state(server, "public", "error")
    assert "refusing to listen on 0.0.0.0" in row["state_message"]
    assert "iflow2api createkey --instance public" in row["state_message"]
    # The console says it too (written right after the state).
    assert wait_until(lambda: "instance public: refusing to listen" in server.output(), 3)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
    # The default instance keeps serving meanwhile.
    assert post_chat(server.url, {"x-api-key": keyed.keys["alice"]}).status_code == 200

    key = last_line(server.cli("createkey", "--instance", "public", "--no-migrate").stdout)
    wait_for_state(server, "public", "running", timeout=6)
    public = f"http://127.0.0.1:{port}"
    assert post_chat(public).status_code == 401
    assert post_chat(public, {"x-api-key": key}).status_code == 200


# --- IFLOW2API_API_KEYS -------------------------------------------------------------------------


ENV_ONE = "sk-env-one-" + "a1b2c3d4e5f6" * 3
ENV_TWO = "sk-env-two-" + "f6e5d4c3b2a1" * 3


def test_environment_keys_are_stored_hashed_and_dropped_with_the_variable(fake_iflow, upstream,
                                                                          tmp_path):
    home = str(tmp_path / "home")  # one for both starts: a server's own goes when it stops
    env = {"IFLOW_API_KEY": FAKE_KEY, "IFLOW_BASE_URL": fake_iflow.base_url,
           "IFLOW2API_API_KEYS": f"{ENV_ONE},{ENV_TWO}", "IFLOW2API_HOME": home}
    with GatewayServer(env) as first:
        rows = query(first, "SELECT i.name AS instance, k.* FROM instances_clientkey k "
                            "JOIN instances_instance i ON i.id = k.instance_id")
        assert {r["key_hash"] for r in rows} == {
            hashlib.sha256(k.encode()).hexdigest() for k in (ENV_ONE, ENV_TWO)}
        assert {(r["instance"], r["name"]) for r in rows} == {("default", ENV_KEY_NAME)}
        assert ENV_ONE[PREFIX_LENGTH:].encode() not in db_path(first).read_bytes()
        assert post_chat(first.url, {"x-api-key": ENV_ONE}).status_code == 200
    # The next start with one key fewer: that key is gone, the other still works.
    with GatewayServer({**env, "IFLOW2API_API_KEYS": ENV_TWO}) as second:
        rows = query(second, "SELECT key_hash FROM instances_clientkey")
        assert [r["key_hash"] for r in rows] == [hashlib.sha256(ENV_TWO.encode()).hexdigest()]
        assert post_chat(second.url, {"x-api-key": ENV_ONE}).status_code == 401
        assert post_chat(second.url, {"x-api-key": ENV_TWO}).status_code == 200
