"""The admin in headless Chromium at 1366×768, as a user meets it (issue 17): the guided "add
an upstream" flow against a fake provider (success, a wrong key, an address where nothing
listens), the request log's columns inside the viewport, a client key made and the page
reloaded (no second key), the "Connect a client" page, and no console error on any admin page
in English and Chinese, light and dark.

Needs /usr/bin/chromium (Debian `chromium`) and the `playwright` pip package; skipped otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.admin_pages import admin_pages
from tests.e2e.browser import chromium, missing_reason
from tests.fakes.upstream import FakeUpstream
from tests.instances.helpers import query
from tests.servers import GatewayServer, free_port
from tests.test_theme import LIGHT_SPOTS

_reason = missing_reason()
if _reason:
    pytest.skip(_reason, allow_module_level=True)

pytestmark = pytest.mark.e2e

ADMIN, PASSWORD = "browser-admin", "browser-Test-only-3f9a"
PROVIDER_KEY = "sk-browser-provider-77c1"
VIEWPORT = {"width": 1366, "height": 768}
LANGUAGES = {"en": "en-US,en;q=0.9", "zh-hans": "zh-CN,zh-Hans;q=0.9,zh;q=0.8"}

SETUP = """
from datetime import timedelta
from django.utils import timezone
from accounts.models import Account, ModelInfo
from instances.models import ClientKey, Instance
from proxy.models import RequestLog
team = Instance.objects.create(name="team", host="127.0.0.1", port={port})
ClientKey.create(team, "ci-runner")
now = timezone.now()
for i in range(30):
    RequestLog.objects.create(
        started_at=now - timedelta(seconds=i), instance="default" if i % 2 else "team",
        key_label="" if i % 2 else "ci-runner (sk-i2a-abcde…)",
        api="anthropic" if i % 3 else "openai",
        model="qwen3-coder-plus-2025-09-23-long-name" if i % 4 else "glm-5",
        requested_model="claude-sonnet-4-5", stream=bool(i % 2), status=200 if i % 5 else 502,
        latency_ms=1234 + i, ttft_ms=321, tokens_in=12345, tokens_out=6789,
        error="" if i % 5 else "upstream exploded: the provider said something very long " * 4)
"""


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeUpstream]:
    with FakeUpstream(PROVIDER_KEY, "openai", models=["browser-chat", "browser-coder"]) as fake:
        yield fake


@pytest.fixture(scope="module")
def server(fake_iflow) -> Iterator[GatewayServer]:
    from tests.conftest import FAKE_KEY

    env = {"IFLOW_API_KEY": FAKE_KEY, "IFLOW_BASE_URL": fake_iflow.base_url,
           "IFLOW2API_LANG": "en"}
    with GatewayServer(env) as running:
        running.env.update({"DJANGO_SUPERUSER_USERNAME": ADMIN,
                            "DJANGO_SUPERUSER_PASSWORD": PASSWORD,
                            "DJANGO_SUPERUSER_EMAIL": "browser@example.com"})
        running.cli("createsuperuser", "--noinput")
        running.shell(SETUP.format(port=free_port()))
        yield running


@pytest.fixture(scope="module")
def browser():
    with chromium() as launched:
        yield launched


def open_admin(browser: Any, server: GatewayServer, *, lang: str = "en", theme: str = "light",
               path: str = "/admin/") -> tuple[Any, Any, list[str]]:
    """A fresh context at 1366×768, logged in; the page and the console errors it collects."""
    context = browser.new_context(viewport=VIEWPORT, locale="zh-CN" if lang != "en" else "en-US",
                                  color_scheme=theme,
                                  extra_http_headers={"Accept-Language": LANGUAGES[lang]})
    context.set_default_timeout(15_000)
    context.add_cookies([{"name": "django_language", "value": lang, "url": server.url}])
    context.add_init_script(f"localStorage.setItem('theme', '{theme}');")
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(f"{m.type}: {m.text}") if m.type == "error"
            else None)
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    page.goto(f"{server.url}/admin/login/?next={path}")
    page.fill("#id_username", ADMIN)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"**{path}")
    return context, page, errors


# --------------------------------------------------------------------------- add an upstream


def add_upstream(page: Any, server: GatewayServer, label: str, url: str, key: str) -> None:
    page.goto(server.url + "/admin/accounts/account/add/")
    page.wait_for_url("**/accounts/add/")
    page.click("#preset-openai-compatible")
    page.fill("#id_label", label)
    page.fill("#id_base_url", url)
    page.fill("#id_api_key", key)
    page.click("#test-and-save")
    page.wait_for_load_state("load")


def test_the_guided_flow(browser, server, provider):
    context, page, errors = open_admin(browser, server)
    try:
        add_upstream(page, server, "Wrong key", provider.base_url, "sk-not-it")
        assert "The provider refused the key" in page.text_content("#guided-error")
        assert page.input_value("#id_api_key") == ""  # never rendered back

        add_upstream(page, server, "Nowhere", f"http://127.0.0.1:{free_port()}/v1", "sk-x")
        assert "Nothing answers at" in page.text_content("#guided-error")

        add_upstream(page, server, "Browser provider", provider.base_url, PROVIDER_KEY)
        page.wait_for_url("**/models/")
        assert page.is_checked("input[value=browser-chat]")
        page.click("#untick-all")
        page.fill("#model-filter", "CHAT")  # the filter for long lists
        assert page.is_hidden("input[value=browser-coder]")
        page.click("#tick-shown")
        page.fill("#model-filter", "")
        assert page.is_checked("input[value=browser-chat]")
        assert not page.is_checked("input[value=browser-coder]")
        page.click("#save-models")
        page.wait_for_url("**/admin/accounts/account/")
        assert "tested and saved" in page.text_content(".messagelist")
        assert errors == [], errors
    finally:
        context.close()
    [account] = query(server, "SELECT * FROM accounts_account WHERE label = 'Browser provider'")
    assert account["enabled"] and account["provider"] == "openai"
    assert not query(server, "SELECT id FROM accounts_account WHERE label IN "
                             "('Wrong key', 'Nowhere')")
    served = httpx.get(server.url + "/v1/models", timeout=10).json()["data"]
    ids = {m["id"] for m in served}
    assert "browser-chat" in ids and "browser-coder" not in ids


def test_errors_in_chinese_and_dark(browser, server, provider):
    context, page, errors = open_admin(browser, server, lang="zh-hans", theme="dark")
    try:
        add_upstream(page, server, "错误", provider.base_url, "sk-not-it")
        assert "服务商拒绝了该密钥" in page.text_content("#guided-error")
        assert page.evaluate("document.documentElement.dataset.theme") == "dark"
        assert page.evaluate(LIGHT_SPOTS) == []
        add_upstream(page, server, "好的", provider.base_url, PROVIDER_KEY)
        page.wait_for_url("**/models/")
        page.fill("#model-filter", "chat")
        assert page.evaluate(LIGHT_SPOTS) == []  # the filter box too
        assert errors == [], errors
    finally:
        context.close()


# --------------------------------------------------------------------------- the request log


def test_the_request_log_fits_a_laptop_screen(browser, server):
    context, page, errors = open_admin(browser, server, path="/admin/proxy/requestlog/")
    try:
        for column in ("status", "short_error", "tokens", "latency_ms", "model"):
            box = page.locator(f"#result_list th.column-{column}").bounding_box()
            assert box is not None, column
            assert box["x"] >= 0 and box["x"] + box["width"] <= VIEWPORT["width"], (column, box)
        rows = page.locator("#result_list tbody tr")
        assert rows.count() >= 30
        heights = [rows.nth(i).bounding_box()["height"] for i in range(5)]
        assert max(heights) < 40, heights  # one line a row
        assert "request log entries" in page.text_content("#content")
        assert errors == [], errors
    finally:
        context.close()


# --------------------------------------------------------------------------- keys and connect


def test_a_key_made_and_reloaded_then_connected(browser, server):
    before = query(server, "SELECT COUNT(*) AS n FROM instances_clientkey")[0]["n"]
    context, page, errors = open_admin(browser, server, path="/admin/instances/clientkey/add/")
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    try:
        page.select_option("#id_instance", label=next(
            o for o in page.locator("#id_instance option").all_text_contents() if "team" in o))
        page.fill("#id_name", "browser-laptop")
        page.click("input[name=_save]")
        page.wait_for_url("**/created/")
        key = page.input_value("#new-client-key")
        assert key.startswith("sk-i2a-")
        page.click("[data-copy='#new-client-key']")
        page.wait_for_function("document.querySelector('.copy-status').textContent !== ''")
        assert page.text_content(".copy-status") == "Copied"
        assert page.evaluate("navigator.clipboard.readText()") == key

        page.reload()
        assert page.locator("#new-client-key").count() == 0
        assert "already shown once" in page.text_content("#content")
        after = query(server, "SELECT COUNT(*) AS n FROM instances_clientkey")[0]["n"]
        assert after == before + 1  # the reload made no second key

        page.go_back()  # the key page once more from the history: still not shown
        page.go_forward()
        assert key not in page.content()
        assert errors == [], errors
    finally:
        context.close()


def test_the_connect_page(browser, server):
    context, page, errors = open_admin(browser, server, path="/admin/instances/clientkey/add/")
    try:
        page.select_option("#id_instance", index=1)
        page.fill("#id_name", "browser-connect")
        page.click("input[name=_save]")
        page.wait_for_url("**/created/")
        key = page.input_value("#new-client-key")
        page.click("#connect-with-key")
        page.wait_for_url("**/admin/connect/**")
        assert "#" not in page.url  # the key left the address bar at once
        claude = page.text_content("#snippet-claude-code")
        assert f"ANTHROPIC_AUTH_TOKEN={key}" in claude
        assert "ANTHROPIC_BASE_URL=http://127.0.0.1:" in claude
        assert 'wire_api = "responses"' in page.text_content("#snippet-codex")
        for slug in ("openai-python", "anthropic-python", "curl", "lobechat", "open-webui",
                     "nextchat", "cherry-studio"):
            assert key in page.text_content(f"#snippet-{slug}"), slug
        page.fill("#connect-paste", "")
        assert "YOUR_KEY" in page.text_content("#snippet-curl")
        page.reload()  # nothing of the key survives a reload
        assert key not in page.content()
        assert errors == [], errors
    finally:
        context.close()


# --------------------------------------------------------------------------- every page


@pytest.fixture(scope="module")
def every_admin_page(server) -> list[str]:
    """Every admin page, listed from the URLconf (tests/e2e/admin_pages.py), with a row of
    each model for its object pages."""
    server.shell("from tests.e2e.admin_pages import make_rows\nmake_rows()")
    out = server.shell("import json\nfrom tests.e2e.admin_pages import rows_of\n"
                       f"print(json.dumps(rows_of({ADMIN!r})))")
    pages = admin_pages(json.loads(out.strip().splitlines()[-1]))
    assert len(pages) > 60 and "/admin/connect/" in pages, pages
    return pages


# Pages of issue 17: in the dark theme nothing of theirs may be drawn light (a fixed colour).
OUR_PAGES = ("/accounts/add/", "/accounts/add/?preset=deepseek", "/admin/connect/",
             "/admin/proxy/requestlog/", "/admin/")


# Each language and each theme once (every page takes ~0.25 s; the four combinations took 70 s).
@pytest.mark.parametrize(("lang", "theme"), [("en", "light"), ("zh-hans", "dark")])
def test_no_console_errors_on_any_admin_page(browser, server, every_admin_page, lang, theme):
    context, page, errors = open_admin(browser, server, lang=lang, theme=theme)
    try:
        failed = [f"/admin/login/: {errors}"] if errors else []
        for path in every_admin_page:
            errors.clear()
            response = page.goto(server.url + path)
            page.wait_for_load_state("load")
            if response is None or response.status != 200:
                failed.append(f"{path}: HTTP {response.status if response else '?'}")
            if page.evaluate("document.documentElement.dataset.theme") != theme:
                failed.append(f"{path}: not in the {theme} theme")
            if page.evaluate("document.documentElement.lang") != lang:
                failed.append(f"{path}: not in {lang}")
            if errors:
                failed.append(f"{path}: {errors}")
            if theme == "dark" and path in OUR_PAGES and (spots := page.evaluate(LIGHT_SPOTS)):
                failed.append(f"{path}: drawn light on the dark theme: {spots}")
        assert failed == []
    finally:
        context.close()
