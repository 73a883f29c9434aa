"""Client keys made in the admin with post/redirect/get and shown once, and the "Connect a
client" page (instances/connect.py), with Django's test client."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from instances.admin import NEW_KEY_SESSION
from instances.models import ClientKey, Instance, hash_key
from tests.instances.helpers import hidden_fields

KEY_RE = re.compile(r'value="(sk-i2a-[^"]+)"')

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fast_passwords(settings) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def team() -> Instance:
    return Instance.objects.create(name="team", host="127.0.0.1", port=28101)


def make_key(admin_client: Client, instance: Instance, name: str, **extra: str):
    form = admin_client.get("/admin/instances/clientkey/add/").content.decode()
    return admin_client.post("/admin/instances/clientkey/add/", {**hidden_fields(form),
        "instance": str(instance.pk), "name": name, "enabled": "on", "expires_at_0": "",
        "expires_at_1": "", "allowed_models": "", "_save": "Save", **extra})


def test_a_new_key_is_shown_once_after_a_redirect(admin_client: Client, team: Instance):
    answer = make_key(admin_client, team, "laptop")
    row = ClientKey.objects.get(name="laptop")
    assert answer.status_code == 302
    assert answer["Location"] == f"/admin/instances/clientkey/{row.pk}/created/"
    assert "sk-i2a-" not in answer.content.decode()
    waiting = admin_client.session[NEW_KEY_SESSION]["key"]
    assert waiting.startswith("fernet:") and "sk-i2a-" not in waiting  # never in clear

    page = admin_client.get(answer["Location"])
    assert page.status_code == 200 and "no-store" in page["Cache-Control"]
    key = KEY_RE.search(page.content.decode()).group(1)
    assert hash_key(key) == row.key_hash
    html = page.content.decode()
    assert 'data-copy="#new-client-key"' in html and "instances/copy.js" in html
    assert f"/admin/connect/?instance={team.pk}&amp;key={row.pk}#key=" in html
    assert NEW_KEY_SESSION not in admin_client.session  # gone once shown

    again = admin_client.get(answer["Location"]).content.decode()
    assert key not in again and "already shown once" in again
    assert ClientKey.objects.filter(name="laptop").count() == 1  # a reload made nothing


def test_a_key_whose_page_was_never_opened_is_not_shown_later(admin_client: Client,
                                                              team: Instance, monkeypatch):
    answer = make_key(admin_client, team, "forgotten")
    import instances.admin

    monkeypatch.setattr(instances.admin, "NEW_KEY_TTL", -1)  # as if ten minutes had passed
    html = admin_client.get(answer["Location"]).content.decode()
    assert not KEY_RE.search(html) and "already shown once" in html
    assert NEW_KEY_SESSION not in admin_client.session


def test_the_popup_still_hands_the_key_to_its_opener(admin_client: Client, team: Instance):
    form = admin_client.get("/admin/instances/clientkey/add/?_popup=1&_to_field=id")
    answer = admin_client.post("/admin/instances/clientkey/add/?_popup=1&_to_field=id", {
        **hidden_fields(form.content.decode()), "instance": str(team.pk), "name": "popup",
        "enabled": "on", "expires_at_0": "", "expires_at_1": "", "allowed_models": "",
        "_popup": "1", "_to_field": "id"})
    assert answer.status_code == 302 and answer["Location"].endswith("/created/?_popup=1")
    html = admin_client.get(answer["Location"]).content.decode()
    assert KEY_RE.search(html) and 'id="new-key-done"' in html and "data-popup-response" in html


def test_another_users_key_is_not_shown(admin_client: Client, team: Instance,
                                        django_user_model):
    answer = make_key(admin_client, team, "mine")
    other = django_user_model.objects.create_superuser("other", "o@example.com", "pw-other-1")
    stranger = Client()
    stranger.force_login(other)
    html = stranger.get(answer["Location"]).content.decode()
    assert not KEY_RE.search(html) and "already shown once" in html


def test_the_connect_page(admin_client: Client, team: Instance, settings):
    row, key = ClientKey.create(team, "ci")
    page = admin_client.get(f"/admin/connect/?instance={team.pk}&key={row.pk}")
    html = page.content.decode()
    assert page.status_code == 200
    assert "http://127.0.0.1:28101" in html and "YOUR_KEY" in html
    assert key not in html and row.key_hash not in html  # never a key
    for needle in ("ANTHROPIC_BASE_URL=http://127.0.0.1:28101", "ANTHROPIC_AUTH_TOKEN=YOUR_KEY",
                   'wire_api = &quot;responses&quot;', 'base_url = &quot;http://127.0.0.1:28101/v1',
                   "OpenAI(base_url=&quot;http://127.0.0.1:28101/v1&quot;",
                   "anthropic.Anthropic(base_url=&quot;http://127.0.0.1:28101&quot;",
                   "curl http://127.0.0.1:28101/v1/chat/completions", "LobeChat", "Open WebUI",
                   "ChatGPT-Next-Web", "Cherry Studio", "instances/connect.js"):
        assert needle in html, needle

    # Every address: the name the admin was reached by; the default instance: PUBLIC_BASE_URL.
    lan = Instance.objects.create(name="lan", host="0.0.0.0", port=28102)
    html = admin_client.get(f"/admin/connect/?instance={lan.pk}",
                            HTTP_HOST="localhost:28000").content.decode()
    assert "http://localhost:28102" in html
    Instance.objects.filter(pk=lan.pk).update(state="running", listening_on="0.0.0.0:28199")
    html = admin_client.get(f"/admin/connect/?instance={lan.pk}",
                            HTTP_HOST="localhost:28000").content.decode()
    assert "http://localhost:28199" in html  # as bound (serve --port), not the row's port
    default = Instance.objects.create(name="default", host="127.0.0.1", port=28000)
    settings.IFLOW2API = {**settings.IFLOW2API, "PUBLIC_BASE_URL": "https://gw.example.com/"}
    html = admin_client.get(f"/admin/connect/?instance={default.pk}").content.decode()
    assert "https://gw.example.com/v1" in html


def test_an_instance_without_keys_takes_any_value(admin_client: Client, team: Instance):
    html = admin_client.get(f"/admin/connect/?instance={team.pk}").content.decode()
    assert "ANTHROPIC_AUTH_TOKEN=any-value" in html and "YOUR_KEY" not in html
