"""English and Simplified Chinese: the catalogues are complete and compiled, nothing we show is
left untranslated, pages follow Accept-Language and the admin's switcher, the API answers in
the language a request asks for (English otherwise), and the CLI follows --lang and LANG."""

from __future__ import annotations

import gettext
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest
from django.test import Client

from instances.models import AdminPreference, ClientKey, Instance
from tests import i18n_checks as checks
from tests.instances.helpers import hidden_fields
from tests.servers import GatewayServer, free_port

ROOT = checks.ROOT
ZH = {"HTTP_ACCEPT_LANGUAGE": "zh-Hans"}
KEY_LINE = re.compile(r"^sk-i2a-[A-Za-z0-9_-]{20,}$")


def needs_gettext() -> None:
    if shutil.which("msgfmt") is None or shutil.which("xgettext") is None:
        pytest.skip("GNU gettext (msgfmt, xgettext) is not installed: apt-get install gettext")


# ------------------------------------------------------------------------------ catalogues


def test_every_message_has_a_chinese_translation(tmp_path: Path):
    """makemessages over a copy of the code: a new or changed string without a translation
    shows up empty or fuzzy, and fails here."""
    needs_gettext()
    for app in checks.APPS + checks.LIBRARIES:
        shutil.copytree(ROOT / app, tmp_path / app,
                        ignore=shutil.ignore_patterns("__pycache__", "migrations", "*.mo"))
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "IFLOW2API_HOME": str(tmp_path / "home"),
           "DJANGO_SETTINGS_MODULE": "iflow2api_site.settings", "IMPORT_IFLOW_SETTINGS": "0"}
    ignore = [f"--ignore={pattern}" for pattern in checks.MAKEMESSAGES_IGNORE]
    subprocess.run([sys.executable, "-m", "django", "makemessages", "-l", checks.LANGUAGE,
                    "--no-obsolete", *ignore], cwd=tmp_path, env=env, check=True,
                   capture_output=True, timeout=120)
    missing = {po.relative_to(tmp_path).as_posix(): checks.untranslated(po)
               for po in checks.catalogues(tmp_path)}
    assert not any(missing.values()), f"untranslated (run makemessages, translate): {missing}"
    for po in checks.catalogues(tmp_path):  # no message only in the copy's catalogue
        fresh = {e.msgid for e in checks.read_po(po.read_text(encoding="utf-8"))}
        kept = {e.msgid for e in checks.read_po(
            (ROOT / po.relative_to(tmp_path)).read_text(encoding="utf-8")) if not e.obsolete}
        assert fresh == kept, f"{po.relative_to(tmp_path)} is stale: run makemessages"


def test_compiled_catalogues_match_their_sources(tmp_path: Path):
    needs_gettext()
    for po in checks.catalogues():
        mo = po.with_suffix(".mo")
        assert mo.exists(), f"{mo} is missing: run `iflow2api compilemessages`"
        fresh = tmp_path / "fresh.mo"
        subprocess.run(["msgfmt", "--check-format", "-o", str(fresh), str(po)], check=True)
        with mo.open("rb") as shipped, fresh.open("rb") as compiled:
            assert gettext.GNUTranslations(shipped)._catalog == \
                gettext.GNUTranslations(compiled)._catalog, \
                f"{mo} is older than {po.name}: run `iflow2api compilemessages`"


def test_templates_have_no_text_outside_translate_tags():
    bad = {p.relative_to(ROOT).as_posix(): words for p in checks.our_templates()
           if (words := checks.bare_template_text(p.read_text(encoding="utf-8")))}
    assert not bad, f"wrap these in {{% translate %}} / {{% blocktranslate %}}: {bad}"


def test_python_shows_no_literal_english():
    bad = {rel: found for p in checks.our_python()
           if (found := checks.untranslated_python(p.read_text(encoding="utf-8"),
                                                   rel := p.relative_to(ROOT).as_posix()))}
    assert not bad, f"wrap these in gettext / gettext_lazy: {bad}"


def test_the_checks_catch_what_they_are_for(tmp_path: Path):
    template = '{% load i18n %}<p title="Hover text">Hello {{ name }}</p>{% translate "Ok" %}'
    assert checks.bare_template_text(template) == ["Hover text", "Hello"]
    translated = "<code>sk-…</code> {% blocktranslate %}Hi{% endblocktranslate %}"
    assert checks.bare_template_text(translated) == []
    code = ('raise CommandError(f"no instance {name}")\n'
            'self.stdout.write(_("Done %(n)s") % {"n": 1})\n'
            'messages.error(request, "Failed")\nlog.error("not shown %s", 1)\n')
    assert [text for _, text in checks.untranslated_python(code)] == ["no instance ", "Failed"]
    po = ('msgid ""\nmsgstr ""\n\n#, fuzzy\nmsgid "a"\nmsgstr "甲"\n\n'
          'msgid "b"\nmsgstr ""\n')
    (tmp_path / "x.po").write_text(po, encoding="utf-8")
    assert checks.untranslated(tmp_path / "x.po") == ["a", "b"]


# ------------------------------------------------------------------------------ admin pages


def test_admin_pages_follow_accept_language(admin_client: Client):
    index = admin_client.get("/admin/", **ZH).content.decode()
    assert '<html lang="zh-hans"' in index
    assert "实时状态" in index and "用量" in index and "请求日志" in index
    assert "实例" in index and "上游账号" in index  # our app and model names
    status = admin_client.get("/admin/status/", **ZH).content.decode()
    assert "最近的错误" in status and "进行中的流式请求" in status
    usage = admin_client.get("/admin/usage/", **ZH).content.decode()
    assert "按模型" in usage and "此时间范围内没有请求。" in usage
    cookie = admin_client.get("/accounts/cookie/", **ZH).content.decode()
    assert "使用 BXAuth Cookie 添加 iFlow 账号" in cookie
    english = admin_client.get("/admin/status/").content.decode()
    assert "Recent errors" in english and "最近" not in english


def test_the_new_key_page_in_chinese(admin_client: Client):
    instance = Instance.objects.create(name="zh", port=free_port())
    form = admin_client.get("/admin/instances/clientkey/add/").content.decode()
    page = admin_client.post("/admin/instances/clientkey/add/", {
        **hidden_fields(form), "instance": instance.pk, "name": "laptop", "enabled": "on",
        "allowed_models": ""}, follow=True, **ZH)
    html = page.content.decode()
    assert page.status_code == 200 and "请立即复制" in html and "新的客户端 API 密钥" in html
    assert "复制" in html and "用此密钥连接客户端" in html
    assert ClientKey.objects.filter(name="laptop").exists()


def test_the_switcher_sets_and_remembers_the_language(admin_client: Client, admin_user):
    page = admin_client.get("/admin/").content.decode()
    form = re.search(r'<form class="language-switcher" action="([^"]+)"', page)
    assert form and 'value="zh-hans"' in page and "简体中文" in page
    answer = admin_client.post(form[1], {"language": "zh-hans", "next": "/admin/usage/"})
    assert answer.status_code == 302 and answer["Location"] == "/admin/usage/"
    assert "按模型" in admin_client.get("/admin/usage/").content.decode()
    assert AdminPreference.objects.get(user=admin_user).language == "zh-hans"

    other = Client()  # another browser: English until the login applies the saved choice
    assert 'lang="en"' in other.get("/admin/login/").content.decode()
    other.force_login(admin_user)
    first = other.get("/admin/").content.decode()
    assert 'data-apply-language="zh-hans"' in first  # preferences.js: cookie, then reload
    assert 'data-apply-language=""' in other.get("/admin/").content.decode()  # once


# ------------------------------------------------------------------------------ the API and the CLI


@pytest.fixture(scope="module")
def chinese_server():
    """A server started in a Chinese locale: its own lines are Chinese, its API English unless
    a request asks otherwise."""
    with GatewayServer({"LANG": "zh_CN.UTF-8", "LC_ALL": "", "LC_MESSAGES": "",
                        "IFLOW2API_LANG": ""}) as server:
        yield server


@pytest.mark.e2e
def test_translator_errors_follow_accept_language(chinese_server: GatewayServer):
    """Errors from the pure translators (proxy/translate) are translated where they are
    answered, with their field name and values kept."""
    body = {"model": "claude-sonnet-4-6", "max_tokens": 10,
            "messages": [{"role": "robot", "content": "hi"}]}

    def message(language: str | None) -> str:
        headers = {"accept-language": language} if language else {}
        answer = httpx.post(chinese_server.url + "/v1/messages", json=body, headers=headers,
                            timeout=10)
        assert answer.status_code == 400, answer.text
        return answer.json()["error"]["message"]

    assert message(None) == "messages.0.role: expected 'user', 'assistant' or 'system'"
    assert message("zh-CN") == "messages.0.role: 应为 'user'、'assistant' 或 'system'"
    body["tool_choice"] = {"type": "sometimes"}
    body["messages"] = [{"role": "user", "content": "hi"}]
    assert message("zh-CN") == "tool_choice.type: 不支持的值 'sometimes'"


@pytest.mark.e2e
def test_api_errors_follow_accept_language(chinese_server: GatewayServer):
    url = chinese_server.url
    assert "正在" in chinese_server.output() and "提供服务" in chinese_server.output()

    def error(path: str, language: str | None) -> str:
        headers = {"accept-language": language} if language else {}
        answer = httpx.post(url + path, json={}, headers=headers, timeout=10)
        assert answer.status_code in {400, 404}, answer.text
        return answer.json()["error"]["message"]

    assert error("/v1/chat/completions", None).startswith("you must provide a model")
    assert error("/v1/chat/completions", "zh-CN,zh;q=0.9,en;q=0.8") == \
        "必须提供 model 参数（非空字符串）"
    assert error("/v1/chat/completions", "fr-FR,en;q=0.5").startswith("you must provide")
    assert error("/v1/messages", "zh-Hans").startswith("messages：缺少必填字段")
    assert error("/v1/messages", None).startswith("messages: Field required")
    assert error("/v1/no-such-route", "zh") == "未知路径 /v1/no-such-route"
    login = httpx.get(url + "/admin/login/", headers={"accept-language": "zh-CN"}, timeout=10)
    assert 'lang="zh-hans"' in login.text and "用户名" in login.text


def run_cli(home: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if k not in {"LANG", "LC_ALL", "LC_MESSAGES", "IFLOW2API_LANG", "DATABASE_URL",
                          "REDIS_URL", "DJANGO_SETTINGS_MODULE"}}
    return subprocess.run([sys.executable, "-m", "iflow2api_site.cli", *args], cwd=ROOT,
                          env={**clean, "IFLOW2API_HOME": home, "IMPORT_IFLOW_SETTINGS": "0",
                               **env},
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_the_cli_speaks_the_chosen_language():
    home = tempfile.mkdtemp(prefix="iflow2api-i18n-")
    try:
        made = run_cli(home, "--lang", "zh-hans", "createkey", "--name", "ci")
        assert made.returncode == 0, made.stderr
        lines = made.stdout.strip().splitlines()
        assert lines[0].startswith("已为实例 default 创建密钥 ci") and KEY_LINE.match(lines[-1])

        by_locale = run_cli(home, "createkey", "--no-migrate", "--name", "two",
                            LANG="zh_CN.UTF-8")
        assert "请妥善保存" in by_locale.stdout and KEY_LINE.match(by_locale.stdout.split()[-1])
        english = run_cli(home, "createkey", "--no-migrate", "--name", "three", LANG="C.UTF-8")
        assert english.stdout.startswith("Created the key three")

        helped = run_cli(home, "--lang=zh-hans", "createkey", "--help")
        assert "为实例创建一个客户端 API 密钥" in helped.stdout
        wrong = run_cli(home, "--lang", "fr", "createkey")
        assert wrong.returncode == 2 and "unknown language 'fr'" in wrong.stderr
    finally:
        shutil.rmtree(home, ignore_errors=True)
