"""The real Claude Code CLI through a real gateway to an Anthropic-compatible upstream (the
fake of tests/fakes/anthropic_upstream.py): its requests pass through (model rewritten, betas
dropped by the account's default policy, the key in the account's header) and a Write tool
round trip works. Driven like tests/e2e/test_claude_code.py; skipped without the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_claude_code import _SCRUB, _SCRUB_PREFIXES, CLI_TIMEOUT, _find_claude
from tests.fakes.anthropic_upstream import (
    FakeAnthropic,
    Reply,
    message,
    text_block,
    tool_use,
)
from tests.fakes.upstream import RecordedRequest
from tests.servers import GatewayServer

pytestmark = pytest.mark.e2e

KEY = "sk-ant-fake-cc-upstream-0123456789"
MODEL = "glm-cc"  # what every claude-* name maps to on this gateway
UPSTREAM_MODEL = "glm-4.6-upstream"


@pytest.fixture(scope="module")
def claude_bin() -> str:
    path = _find_claude()
    if path is None:
        pytest.skip("Claude Code CLI not installed: run `npm install --no-save "
                    "@anthropic-ai/claude-code` in the repo (or put `claude` on PATH)")
    return path


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeAnthropic]:
    # known_betas=(): any anthropic-beta reaching it is refused, as picky vendors do.
    with FakeAnthropic(KEY, auth="x-api-key", known_betas=(), models=[UPSTREAM_MODEL]) as up:
        yield up


@pytest.fixture(scope="module")
def gateway(fake: FakeAnthropic) -> Iterator[GatewayServer]:
    server = GatewayServer({"DEFAULT_MODEL": MODEL, "UPSTREAM_READ_TIMEOUT": "30"})
    server.cli("addaccount", "--provider", "anthropic", "--label", "fake vendor",
               "--base-url", fake.url, "--api-key", "-", "--models", MODEL, stdin=KEY + "\n")
    server.shell("from accounts.models import ModelInfo\n"
                 f"ModelInfo.objects.filter(model_id={MODEL!r})"
                 f".update(upstream_id={UPSTREAM_MODEL!r}, max_output_tokens=8192)")
    with server:
        yield server


def _tools(rec: RecordedRequest) -> set[str]:
    return {t.get("name") for t in (rec.json or {}).get("tools") or []}


def _run(claude_bin: str, gateway: GatewayServer, tmp_path: Path, prompt: str) -> tuple[
        subprocess.CompletedProcess[str], dict[str, Any] | None]:
    home, project = tmp_path / "home", tmp_path / "project"
    home.mkdir(exist_ok=True)
    project.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(_SCRUB_PREFIXES) and k.upper() not in _SCRUB}
    env.update({
        "HOME": str(home), "CLAUDE_CONFIG_DIR": str(home / ".claude"),
        "XDG_CONFIG_HOME": str(home / ".config"), "XDG_CACHE_HOME": str(home / ".cache"),
        "ANTHROPIC_BASE_URL": gateway.url, "ANTHROPIC_API_KEY": "sk-ant-dummy-e2e",
        "NO_PROXY": "127.0.0.1,localhost", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1", "DISABLE_TELEMETRY": "1", "DISABLE_ERROR_REPORTING": "1",
        "CI": "1",
    })
    cmd = [claude_bin, "-p", prompt, "--output-format", "json", "--permission-mode",
           "acceptEdits", "--allowedTools", "Write", "--no-session-persistence",
           "--model", "claude-sonnet-4-6"]
    proc = subprocess.run(cmd, cwd=project, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=CLI_TIMEOUT)
    try:
        result = json.loads(proc.stdout)
    except ValueError:
        result = None
    return proc, result


def test_claude_code_tool_round_trip_through_the_passthrough(claude_bin, gateway, fake,
                                                             tmp_path):
    fake.reset()
    target = tmp_path / "project" / "notes" / "hello.txt"
    content = "Hello through an Anthropic upstream.\nsecond line ✓\n"
    call_id = "toolu_cc_passthrough_01"
    final = "Wrote notes/hello.txt."

    def answer(rec: RecordedRequest) -> Reply:
        messages = (rec.json or {}).get("messages") or []
        answered = any(isinstance(m.get("content"), list) and any(
            b.get("type") == "tool_result" and b.get("tool_use_id") == call_id
            for b in m["content"] if isinstance(b, dict)) for m in messages)
        if answered:
            return message([text_block(final)], name="final")
        if "Write" in _tools(rec):
            return message([tool_use(call_id, "Write", {"file_path": str(target),
                                                         "content": content})],
                           stop_reason="tool_use", name="write_call")
        return message([text_block("ok")], name="auxiliary")

    fake.default = answer
    started = time.monotonic()
    proc, result = _run(claude_bin, gateway, tmp_path, "Create notes/hello.txt.")
    report = (f"exit {proc.returncode} after {time.monotonic() - started:.1f}s\n"
              f"stdout: {proc.stdout}\nstderr: {proc.stderr}\nupstream: "
              f"{[(r.path, r.status, r.scenario, r.auth_error) for r in fake.requests]}\n"
              f"gateway: {gateway.output()[-4000:]}")
    assert proc.returncode == 0 and result and result.get("is_error") is False, report
    assert result["result"] == final, report
    assert target.read_text(encoding="utf-8") == content, report
    calls = fake.messages_requests
    assert calls and all(r.status == 200 and r.auth_error is None for r in calls), report
    for rec in calls:
        assert rec.header("x-api-key") == KEY and rec.header("anthropic-beta") is None
        assert rec.json["model"] == UPSTREAM_MODEL
    # The follow-up carries the CLI's own tool_use / tool_result pair, ids untouched.
    last = next(r for r in calls if r.scenario == "final").json["messages"]
    uses = [b for m in last if isinstance(m["content"], list) for b in m["content"]
            if b.get("type") == "tool_use"]
    assert [u["id"] for u in uses] == [call_id] and uses[0]["input"]["content"] == content
    assert fake.errors == []
