#!/usr/bin/env python3
"""Screenshots of the admin for the README: a real `iflow2api serve` in front of the fake
upstream, a little traffic of both APIs (some of it failing), then headless Chromium.

    .venv/bin/python scripts/screenshots.py [--theme light|dark] [--lang en|zh-hans]

Writes 1366x768 PNGs (a common laptop screen) to docs/screenshots/: instances, usage,
requestlog, keys, status, add-upstream (the guided page) and connect (Connect a client). Names
get "-dark" / "-zh-hans" when not default.
Needs Debian's chromium (/usr/bin/chromium) and the playwright package; nothing is downloaded.
Everything runs on loopback with a throw-away home; no real provider is called.
"""

from __future__ import annotations

import argparse
import random
import socket
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.e2e.browser import CHROMIUM, CHROMIUM_ARGS, missing_reason  # noqa: E402
from tests.fakes import scenarios as sc  # noqa: E402
from tests.fakes.upstream import FakeUpstream, RecordedRequest  # noqa: E402
from tests.servers import GatewayServer, free_port  # noqa: E402

UPSTREAM_KEY = "sk-fake-iflow-key-screenshots"
ADMIN, PASSWORD = "admin", "screenshots-Only-7c2d"  # a throw-away admin on a throw-away server
SIZE = {"width": 1366, "height": 768}
PAGES = {  # file stem → admin path
    "instances": "/admin/instances/instance/",
    "usage": "/admin/usage/",
    "requestlog": "/admin/proxy/requestlog/",
    "keys": "/admin/instances/clientkey/",
    "status": "/admin/status/",
    "add-upstream": "/accounts/add/",
    "connect": "/admin/connect/",
}
ACCEPT_LANGUAGE = {"en": "en-US,en;q=0.9", "zh-hans": "zh-CN,zh-Hans;q=0.9,zh;q=0.8"}
LOCALE = {"en": "en-US", "zh-hans": "zh-CN"}

SETUP = """
from datetime import timedelta
from django.utils import timezone
from django.contrib.auth import get_user_model
from accounts.models import Account
from instances.models import ClientKey, Instance, RateRule

get_user_model().objects.create_superuser({admin!r}, "admin@example.com", {password!r})
Account.objects.update(max_concurrency=0)  # the fake takes any number at once
team = Instance.objects.create(name="team", host="127.0.0.1", port={team_port},
                               default_model="qwen3-coder-plus", log_bodies=True,
                               model_aliases={{"gpt-4o": "glm-5"}})
Instance.objects.create(name="lab", host="0.0.0.0", port={lab_port}, enabled=False,
                        vision_model="qwen-vl-max")
laptop, laptop_key = ClientKey.create(team, "alice-laptop")
ci, ci_key = ClientKey.create(team, "ci-runner", allowed_models="qwen3-coder-plus, glm-5")
ClientKey.create(team, "old-laptop", enabled=False)
ClientKey.create(team, "contractor", expires_at=timezone.now() + timedelta(days=30))
# On a port something else holds (this script): shows the error state and its reason.
Instance.objects.create(name="shared", port={busy_port})
RateRule.objects.create(name="ci: 6 requests a minute", scope="key", key=ci,
                        requests_per_minute=6, concurrent_streams=2)
RateRule.objects.create(name="team: fair share", scope="ip", instance=team,
                        requests_per_minute=120, tokens_per_minute=200000)
print("KEYS", laptop_key, ci_key)
"""

SUMMARY = """
from collections import Counter
from proxy.models import RequestLog
print("request log:", dict(Counter((r.status, r.error[:60]) for r in RequestLog.objects.all())))
"""


def port_or_free(preferred: int) -> int:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", preferred))
        except OSError:
            return free_port()
    return preferred


def answer_for(request: RecordedRequest) -> sc.Scenario:
    """The fake's reply: longer for some models, so token counts differ on the usage page."""
    model = request.model or ""
    size = {"glm-5": 60, "qwen3-coder-plus": 120, "kimi-k2": 30}.get(model, 40)
    words = " ".join(random.choice(["alpha", "beta", "gamma", "delta", "omega"])
                     for _ in range(random.randint(size // 2, size)))
    if model.startswith("kimi"):
        return sc.reasoning("Let me think about it. " * 8, words)
    return sc.text(words)


def traffic(base: str, team: str, keys: list[str], fake: FakeUpstream) -> None:
    """A few dozen requests of both APIs, on both instances; some fail on purpose."""
    random.seed(7)
    fake.default = answer_for
    chat = "/v1/chat/completions"
    calls: list[tuple[str, str, dict[str, Any], dict[str, str]]] = []
    for i in range(14):
        model = ["glm-5", "qwen3-coder-plus", "kimi-k2", "glm-4.7"][i % 4]
        calls.append((base, chat, {"model": model, "stream": i % 3 == 0, "messages": [
            {"role": "user", "content": f"Question {i}: explain the code."}]}, {}))
    for i in range(10):
        calls.append((base, "/v1/messages", {
            "model": ["claude-sonnet-4-5", "claude-opus-4-1", "claude-haiku-4-5"][i % 3],
            "max_tokens": 512, "stream": i % 2 == 0,
            "messages": [{"role": "user", "content": f"Refactor step {i}"}]}, {}))
    alice = {"Authorization": f"Bearer {keys[0]}"}
    for i in range(8):
        calls.append((team, chat, {"model": "gpt-4o" if i % 2 else "qwen3-coder-plus",
                                   "messages": [{"role": "user", "content": "hi"}]}, alice))
    ci = {"x-api-key": keys[1]}
    for i in range(8):  # the last two over the key's 6 a minute
        calls.append((team, "/v1/messages", {"model": "claude-sonnet-4-5", "max_tokens": 256,
                      "messages": [{"role": "user", "content": f"CI job {i}"}]}, ci))
    random.shuffle(calls)  # the log's first page: both APIs, both instances, mixed
    with httpx.Client(timeout=30) as http:
        # Failures first (further down the log): upstream trouble, a missing key, an unknown
        # model, a bad request.
        fake.script(sc.http_error(500, {"error": {"message": "upstream exploded"}}),
                    sc.envelope_error("429", "too many requests, try later"),
                    sc.http_error(401, {"error": {"message": "invalid api key"}}))
        for model in ("glm-5", "glm-5", "qwen3-coder-plus"):
            http.post(base + chat, json={"model": model, "messages": [
                {"role": "user", "content": "fail please"}]})
        http.post(team + chat, json={"model": "glm-5", "messages": [
            {"role": "user", "content": "no key"}]})
        http.post(base + chat, json={"model": "no-such-model", "messages": [
            {"role": "user", "content": "hi"}]})
        http.post(base + "/v1/messages", json={"model": "claude-sonnet-4-5", "messages": []})
        for url, path, body, headers in calls:
            http.post(url + path, json=body, headers=headers)


def shoot(base: str, out: Path, theme: str, lang: str, suffix: str) -> list[Path]:
    from playwright.sync_api import sync_playwright

    written = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=CHROMIUM_ARGS)
        context = browser.new_context(
            viewport=SIZE, device_scale_factor=1, color_scheme=theme, locale=LOCALE[lang],
            extra_http_headers={"Accept-Language": ACCEPT_LANGUAGE[lang]})
        context.add_cookies([{"name": "django_language", "value": lang, "url": base}])
        # The admin keeps its theme and whether the side bar is open in localStorage; closed,
        # the tables get the width.
        context.add_init_script(f"localStorage.setItem('theme', '{theme}');"
                                "localStorage.setItem('django.admin.navSidebarIsOpen', 'false');")
        page = context.new_page()
        page.goto(base + "/admin/login/?next=/admin/")
        page.fill("#id_username", ADMIN)
        page.fill("#id_password", PASSWORD)
        page.click("input[type=submit], button[type=submit]")
        page.wait_for_url(base + "/admin/")
        for stem, path in PAGES.items():
            response = page.goto(base + path)
            if response is None or response.status != 200:
                print(f"skipped {path}: HTTP {response.status if response else '?'}")
                continue
            page.wait_for_load_state("networkidle")
            if stem == "status":
                page.wait_for_timeout(1500)  # the first live snapshot
            target = out / f"{stem}{suffix}.png"
            page.screenshot(path=str(target))
            written.append(target)
        browser.close()
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--theme", choices=["light", "dark"], default="light")
    parser.add_argument("--lang", choices=["en", "zh-hans"], default="en")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = parser.parse_args()
    if reason := missing_reason():
        sys.exit(reason)
    suffix = ("" if args.theme == "light" else f"-{args.theme}") + (
        "" if args.lang == "en" else f"-{args.lang}")
    args.out.mkdir(parents=True, exist_ok=True)
    port = port_or_free(28000)  # the default instance's own port, when free here
    team_port, lab_port = port_or_free(28001), port_or_free(28002)
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", port_or_free(28003)))
    squatter.listen()
    with FakeUpstream(api_key=UPSTREAM_KEY, flavor="iflow") as fake:
        env = {"IFLOW_API_KEY": UPSTREAM_KEY, "IFLOW_BASE_URL": fake.base_url,
               "IFLOW2API_PORT": str(port)}  # the row says the port it really listens on
        with GatewayServer(env, port=port) as server:
            out = server.shell(SETUP.format(admin=ADMIN, password=PASSWORD, team_port=team_port,
                                            lab_port=lab_port,
                                            busy_port=squatter.getsockname()[1]))
            keys = next(line.split()[1:] for line in out.splitlines()
                        if line.startswith("KEYS "))
            team = f"http://127.0.0.1:{team_port}"
            for _ in range(100):  # the supervisor starts "team" within a few seconds
                try:
                    httpx.get(team + "/health", timeout=1)
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            traffic(server.url, team, keys, fake)
            print(server.shell(SUMMARY).strip().splitlines()[-1])
            for path in shoot(server.url, args.out, args.theme, args.lang, suffix):
                print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
    squatter.close()


if __name__ == "__main__":
    main()
