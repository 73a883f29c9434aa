"""The README's quick start, run as written (issue 17): its numbered steps (run → add an upstream
→ call it → open the admin), their shell commands and Python in order, in a fresh home, against
a fake upstream standing in for the provider. Only the address is adapted (a free loopback port
instead of 28000, the fake's URL instead of the provider's); the installation is the one this
suite already runs from (`./scripts/serve` finds it done), and `./scripts/test` is this suite."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from tests.fakes.upstream import FakeUpstream
from tests.servers import ROOT, free_port

PROVIDER_URL = "https://api.deepseek.com/v1"


def quick_start(readme: str) -> str:
    return readme.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]


def blocks(section: str) -> list[tuple[str, str]]:
    """The section's ```sh commands (continuation lines joined, comments dropped) and ```python
    snippets (dedented), in the order a reader meets them, as ("sh" | "python", text)."""
    found: list[tuple[str, str]] = []
    for kind, block in re.findall(r"```(sh|python)\n(.*?)```", section, re.S):
        if kind == "python":
            found.append((kind, textwrap.dedent(block)))
            continue
        for command in re.sub(r"\\\n\s*", "", block).splitlines():
            command = command.strip()
            if command and not command.startswith("#"):
                found.append((kind, command))
    return found


def inline_commands(section: str) -> list[str]:
    """Whole `.venv/bin/iflow2api …` commands written inline in the prose (a line break in
    one is a space once pasted)."""
    return [" ".join(found.split())
            for found in re.findall(r"`(\.venv/bin/iflow2api(?: [^`]*)?)`", section, re.S)]


def shell_commands(section: str) -> list[str]:
    return [text for kind, text in blocks(section) if kind == "sh"]


def numbered_steps(section: str) -> list[str]:
    return re.findall(r"^(?:\d+)\. \*\*(.+?)\*\*", section, re.M)


def bare_iflow2api_calls(commands: list[str]) -> list[str]:
    """Commands calling `iflow2api` without the virtualenv's path (not on PATH in a clone)."""
    return [c for c in commands
            if any(word == "iflow2api" for word in shlex.split(c, comments=True))]


def test_quick_start_is_four_numbered_steps():
    section = quick_start((ROOT / "README.md").read_text())
    assert numbered_steps(section) == ["Run", "Add an upstream", "Call it", "Open the admin"]
    first = shlex.split(shell_commands(section)[0], comments=True)
    assert first[0] == "./scripts/serve"  # step 1 runs, installing on first use
    assert [kind for kind, _text in blocks(section)].count("python") == 1  # step 3's SDK call


def test_quick_start_uses_the_virtualenv_everywhere():
    commands = shell_commands(quick_start((ROOT / "README.md").read_text()))
    assert commands, "no commands found in the README's quick start"
    assert not bare_iflow2api_calls(commands)
    assert "./scripts/test" in commands  # the command .ci/run runs
    assert (ROOT / ".ci" / "run").read_text().rstrip().endswith("./scripts/test")


class QuickStart:
    """A clone-like directory whose `.venv/bin/iflow2api` is this suite's interpreter."""

    def __init__(self, port: int, provider_url: str, api_key: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="iflow2api-readme-"))
        self.home = self.dir / "home"
        self.home.mkdir()
        venv_bin = self.dir / ".venv" / "bin"
        venv_bin.mkdir(parents=True)
        wrapper = venv_bin / "iflow2api"
        wrapper.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} '
                           f'-m iflow2api_site.cli "$@"\n')
        wrapper.chmod(0o755)
        (venv_bin / "python").symlink_to(sys.executable)
        (self.dir / ".venv" / ".iflow2api-installed").touch()  # scripts/serve: installed
        (self.dir / "scripts").mkdir()
        shutil.copy2(ROOT / "scripts" / "serve", self.dir / "scripts" / "serve")
        self.port = port
        self.provider_url = provider_url
        self.env = {k: v for k, v in os.environ.items()
                    if k not in {"DATABASE_URL", "REDIS_URL", "IFLOW2API_HOME", "IFLOW_API_KEY",
                                 "UPSTREAM_BASE_URL", "IFLOW2API_API_KEYS",
                                 "DJANGO_SETTINGS_MODULE"}}
        self.env.update({"HOME": str(self.home), "IFLOW2API_PORT": str(port),
                         "PYTHONPATH": str(ROOT), "DEEPSEEK_API_KEY": api_key})

    def adapt(self, command: str) -> str:
        return (command.replace("127.0.0.1:28000", f"127.0.0.1:{self.port}")
                .replace(PROVIDER_URL, self.provider_url))

    def run(self, command: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["bash", "-c", self.adapt(command)], cwd=self.dir, env=self.env,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
        return result

    def python(self, code: str) -> str:
        result = subprocess.run([sys.executable, "-c", self.adapt(code)], cwd=self.dir,
                                env=self.env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"{code}\n{result.stderr}"
        return result.stdout

    def log(self) -> str:
        return (self.dir / "serve.log").read_text(errors="replace")

    def start(self, command: str) -> subprocess.Popen[bytes]:
        log = (self.dir / "serve.log").open("wb")
        return subprocess.Popen(["bash", "-c", "exec " + self.adapt(command)], cwd=self.dir,
                                env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def wait_for(self, ready, what: str, timeout: float = 40.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if ready(httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1).json()):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        log = (self.dir / "serve.log").read_text(errors="replace")
        pytest.fail(f"{what} within {timeout} s:\n{log}")


def admin_login(base: str, username: str, password: str) -> httpx.Response:
    with httpx.Client(base_url=base) as browser:
        page = browser.get("/admin/login/").text
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        assert token
        sent = browser.post("/admin/login/", data={
            "csrfmiddlewaretoken": token.group(1), "username": username, "password": password,
            "next": "/admin/"})
        assert sent.status_code == 302, sent.text[:500]
        return browser.get("/admin/")


def test_quick_start_runs_as_written():
    section = quick_start((ROOT / "README.md").read_text())
    commands = shell_commands(section)
    with FakeUpstream(flavor="openai", models=["deepseek-chat", "deepseek-reasoner"]) as fake:
        clone = QuickStart(free_port(), fake.base_url, fake.api_key)
        server = None
        answers = []
        try:
            for kind, command in blocks(section):
                if kind == "python":  # step 3's SDK call
                    answers.append(clone.python(command))
                    continue
                words = shlex.split(command, comments=True)
                if "pip" in command or command == "./scripts/test":
                    continue  # the installation this suite runs from; this suite
                if "serve" in words and "0.0.0.0" in words:
                    continue  # tests stay on loopback
                if words[-1] in ("serve", "./scripts/serve"):
                    server = clone.start(command)
                    clone.wait_for(lambda health: True, "the server did not answer")
                    deadline = time.monotonic() + 10  # the banner: no upstream yet, and how
                    while "iflow2api addaccount" not in clone.log() and \
                            time.monotonic() < deadline:
                        time.sleep(0.2)
                    assert "No upstream account is configured" in clone.log(), clone.log()
                elif "createsuperuser" in words and "--noinput" not in words:
                    continue  # interactive
                elif "addaccount" in words:
                    clone.run(command)
                    clone.wait_for(lambda health: health["upstream_configured"],
                                   "the server did not pick up the new account")
                elif words[0] == "curl":
                    out = clone.run(command).stdout
                    assert '"error"' not in out, f"{command}\n{out}"
                    assert '"choices"' in out or '"data"' in out, f"{command}\n{out}"
                else:
                    clone.run(command)
            assert server is not None, "the quick start starts no server"
            inline = [c for c in inline_commands(section) if "serve" not in c.split()]
            assert any("addaccount" in c for c in inline), inline  # the local server's
            for command in inline:  # pasted into the second terminal as well
                clone.run(command)
            assert answers and all(answer.strip() for answer in answers), answers
            assert (clone.home / ".iflow2api" / "db.sqlite3").exists()
            assert fake.requests, "no request reached the upstream"
            superuser = next(c for c in commands if "--noinput" in c)
            env = dict(re.findall(r"(DJANGO_SUPERUSER_\w+)=(\S+)", superuser))
            username = env["DJANGO_SUPERUSER_USERNAME"]
            password = shlex.split(env["DJANGO_SUPERUSER_PASSWORD"])[0]
            admin = admin_login(f"http://127.0.0.1:{clone.port}", username, password)
            assert admin.status_code == 200 and "/admin/logout/" in admin.text
        finally:
            if server is not None:
                server.terminate()
                server.wait(20)
