"""Light / dark / follow-the-system: Django admin's own toggle, remembered per user on the
server (so it follows the user to another browser), and our pages drawn with the admin's
colour variables so that they follow it. The browser test drives the system Chromium."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.test import Client

from instances.models import AdminPreference
from tests.e2e.browser import chromium, missing_reason
from tests.i18n_checks import ROOT, our_templates
from tests.servers import GatewayServer

ADMIN, PASSWORD = "theme-admin", "theme-Test-only-5b1e"  # a throw-away admin
HARD_COLOUR = re.compile(r"#[0-9a-fA-F]{3,8}\b|\brgba?\(|(?<![-\w])(?:white|black)(?![-\w])")


def test_the_toggle_is_saved_for_the_user(admin_client: Client, admin_user):
    answer = admin_client.post("/admin/theme/", {"theme": "dark"})
    assert answer.status_code == 200 and answer.json() == {"theme": "dark"}
    assert AdminPreference.objects.get(user=admin_user).theme == "dark"
    page = admin_client.get("/admin/").content.decode()
    assert re.search(r'<script src="[^"]*instances/preferences\.js"[^>]*data-theme="dark"', page)
    # before the admin's theme.js, which reads localStorage
    assert page.index("instances/preferences.js") < page.index("admin/js/theme.js")
    assert admin_client.post("/admin/theme/", {"theme": "purple"}).status_code == 400
    assert admin_client.get("/admin/theme/").status_code == 405
    assert AdminPreference.objects.get(user=admin_user).theme == "dark"


def test_strangers_cannot_save_a_theme(client: Client, db):
    answer = client.post("/admin/theme/", {"theme": "dark"})
    assert answer.status_code == 302 and "/admin/login/" in answer["Location"]
    assert not AdminPreference.objects.exists()
    login = client.get("/admin/login/").content.decode()
    assert 'class="theme-toggle"' in login and 'class="language-switcher"' in login
    assert 'data-save-url=""' in login


def test_our_pages_have_the_toggle_and_the_switcher(admin_client: Client):
    for path in ("/admin/", "/admin/status/", "/admin/usage/", "/accounts/cookie/",
                 "/accounts/oauth/paste/", "/admin/instances/instance/"):
        page = admin_client.get(path).content.decode()
        assert 'class="theme-toggle"' in page and 'class="language-switcher"' in page, path
        assert "instances/preferences.js" in page, path


def test_our_templates_use_the_admin_colour_variables():
    """No fixed colours in our styles: they would stay light on a dark page."""
    for path in our_templates():
        source = path.read_text(encoding="utf-8")
        styles = re.findall(r"<style\b.*?</style>|style=\"[^\"]*\"", source, flags=re.DOTALL)
        found = [m for style in styles for m in HARD_COLOUR.findall(style)]
        assert not found, f"{path.relative_to(ROOT)}: {found} (use var(--…) instead)"


# ------------------------------------------------------------------------------ in a browser

# Elements of the page drawn light on a dark page (or dark text on it): a fixed colour.
LIGHT_SPOTS = """() => {
  const parse = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
  const light = ([r, g, b]) => (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255;
  const found = [];
  for (const el of document.querySelectorAll("#content *")) {
    const style = getComputedStyle(el);
    if (style.display === "none" || style.visibility === "hidden") continue;
    const bg = parse(style.backgroundColor);
    if (bg.length >= 3 && (bg.length < 4 || bg[3] > 0.5) && light(bg) > 0.75)
      found.push(`background ${style.backgroundColor}: ${el.tagName}.${el.className}`);
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (own && light(parse(style.color)) < 0.3)
      found.push(`text ${style.color}: ${el.tagName}.${el.className}`);
  }
  return found;
}"""


@pytest.fixture(scope="module")
def server() -> Iterator[GatewayServer]:
    if reason := missing_reason():
        pytest.skip(reason)
    with GatewayServer({"IFLOW2API_LANG": "en"}) as running:
        running.env.update({"DJANGO_SUPERUSER_USERNAME": ADMIN,
                            "DJANGO_SUPERUSER_PASSWORD": PASSWORD,
                            "DJANGO_SUPERUSER_EMAIL": "theme@example.com"})
        running.cli("createsuperuser", "--noinput")
        yield running


def log_in(browser, server: GatewayServer, path: str = "/admin/"):  # type: ignore[no-untyped-def]
    """A fresh browser profile (context), logged in through the form."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.goto(f"{server.url}/admin/login/?next={path}")
    page.fill("#id_username", ADMIN)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"**{path}")
    page.wait_for_load_state("load")
    return context, page


def theme_of(page) -> str:  # type: ignore[no-untyped-def]
    return page.evaluate("document.documentElement.dataset.theme")


@pytest.mark.e2e
def test_the_theme_and_language_follow_the_user_to_another_browser(server: GatewayServer,
                                                                    tmp_path: Path):
    with chromium() as browser:
        first, page = log_in(browser, server)
        assert theme_of(page) == "auto"
        with page.expect_response(lambda r: r.url.endswith("/admin/theme/")) as saved:
            page.click("#user-tools .theme-toggle")  # auto (light system) → dark
        assert saved.value.status == 200 and theme_of(page) == "dark"
        with page.expect_navigation():
            page.select_option("#language-switcher-select", "zh-hans")
        assert page.evaluate("document.documentElement.lang") == "zh-hans"
        first.close()

        second, page = log_in(browser, server)  # no localStorage, no language cookie
        page.wait_for_function("document.documentElement.lang === 'zh-hans'")
        assert theme_of(page) == "dark"
        assert page.evaluate("localStorage.getItem('theme')") == "dark"
        assert "实时状态" in page.text_content("#content")

        # Our own pages in the dark theme: nothing drawn light on it.
        pages = {"status": "/admin/status/", "usage": "/admin/usage/",
                 "cookie login": "/accounts/cookie/", "paste login": "/accounts/oauth/paste/"}
        for name, path in pages.items():
            page.goto(server.url + path)
            assert theme_of(page) == "dark", name
            assert page.evaluate(LIGHT_SPOTS) == [], name
        page.goto(server.url + "/admin/instances/clientkey/add/")
        page.select_option("#id_instance", index=1)
        page.fill("#id_name", "dark-laptop")
        page.click("input[name=_save]")
        page.wait_for_selector("#new-client-key")
        assert page.evaluate(LIGHT_SPOTS) == [], "new key"
        second.close()
