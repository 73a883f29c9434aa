"""The real Claude Code CLI (`claude -p`) against a real gateway and the fake iFlow upstream.

The CLI is installed by the test script with ``npm install --no-save @anthropic-ai/claude-code``
(binary ``<repo>/node_modules/.bin/claude``); without it these tests skip.

Claude Code runs with a fresh HOME, a dummy API key and no internet: everything non-essential
(telemetry, auto-update, error reporting, bootstrap/model discovery) is switched off by env, so
the only traffic is ``HEAD /`` (a connection warm-up) and ``POST /v1/messages?beta=true``
(streamed) to ANTHROPIC_BASE_URL. The upstream answers are chosen by inspecting each request,
not by their order, so extra requests from a newer CLI do not break the tests.

The CLI refuses ``--dangerously-skip-permissions`` as root, so the Write tool is allowed with
``--permission-mode acceptEdits --allowedTools Write`` instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FAKE_KEY
from tests.fakes import scenarios as sc
from tests.fakes.upstream import FakeUpstream, RecordedRequest
from tests.servers import ROOT, GatewayServer

pytestmark = pytest.mark.e2e

CLI_TIMEOUT = 120
# Models up to claude-sonnet-4-6 get no mid-conversation `system` messages (see the xfail below).
MODEL = "claude-sonnet-4-6"
# Env vars of the caller that would change what the CLI does or where it connects.
_SCRUB_PREFIXES = ("ANTHROPIC_", "CLAUDE", "OTEL_", "AWS_", "GOOGLE_", "VERTEX_")
_SCRUB = {
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "NODE_OPTIONS",
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "XDG_CACHE_HOME",
    "XDG_STATE_HOME",
    "IS_SANDBOX",
}


def _find_claude() -> str | None:
    local = ROOT / "node_modules" / ".bin" / "claude"
    if local.exists() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which("claude")


@pytest.fixture(scope="module")
def claude_bin() -> str:
    path = _find_claude()
    if path is None:
        pytest.skip(
            "Claude Code CLI not installed: run `npm install --no-save "
            "@anthropic-ai/claude-code` in the repo (or put `claude` on PATH)"
        )
    return path


@pytest.fixture(scope="module")
def cc_gateway(fake_iflow: FakeUpstream) -> Iterator[GatewayServer]:
    """A gateway of its own, so nothing here leaks into the session-wide one."""
    env = {
        "IFLOW_API_KEY": FAKE_KEY,
        "IFLOW_BASE_URL": fake_iflow.base_url,
        # Claude Code's requests are ~100 KB of prompt; leave the fake time to answer.
        "UPSTREAM_READ_TIMEOUT": "30",
    }
    with GatewayServer(env) as server:
        yield server


@pytest.fixture
def cc_upstream(fake_iflow: FakeUpstream) -> Iterator[FakeUpstream]:
    saved = fake_iflow.default
    fake_iflow.reset()
    try:
        yield fake_iflow
    finally:
        fake_iflow.default = saved
        fake_iflow.reset()


@dataclass
class Run:
    proc: subprocess.CompletedProcess[str]
    result: dict[str, Any] | None
    elapsed: float
    gateway: GatewayServer
    upstream: FakeUpstream

    def report(self) -> str:
        lines = [
            f"claude exit code {self.proc.returncode} after {self.elapsed:.1f}s",
            f"--- stdout ---\n{self.proc.stdout}",
            f"--- stderr ---\n{self.proc.stderr}",
            "--- upstream requests ---",
        ]
        for r in self.upstream.requests:
            doc = r.json or {}
            roles = [m.get("role") for m in doc.get("messages", [])]
            lines.append(
                f"{r.method} {r.path} model={r.model} stream={r.is_stream} "
                f"status={r.status} scenario={r.scenario} roles={roles}"
            )
        lines.append(f"--- upstream errors --- {self.upstream.errors}")
        lines.append(f"--- gateway log ---\n{self.gateway.output()[-8000:]}")
        return "\n".join(lines)


@pytest.fixture
def run_claude(
    claude_bin: str, cc_gateway: GatewayServer, cc_upstream: FakeUpstream, tmp_path: Path
):
    home = tmp_path / "home"
    project = tmp_path / "project"
    home.mkdir()
    project.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(_SCRUB_PREFIXES) and k.upper() not in _SCRUB
    }
    env.update(
        {
            "HOME": str(home),
            "CLAUDE_CONFIG_DIR": str(home / ".claude"),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_CACHE_HOME": str(home / ".cache"),
            "ANTHROPIC_BASE_URL": cc_gateway.url,
            "ANTHROPIC_API_KEY": "sk-ant-dummy-e2e",
            "NO_PROXY": "127.0.0.1,localhost",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_AUTOUPDATER": "1",
            "DISABLE_TELEMETRY": "1",
            "DISABLE_ERROR_REPORTING": "1",
            "CI": "1",
        }
    )

    def run(prompt: str, *extra: str, model: str | None = MODEL) -> Run:
        cmd = [
            claude_bin,
            "-p",
            prompt,
            "--output-format",
            "json",
            "--permission-mode",
            "acceptEdits",
            "--allowedTools",
            "Write",
            "--no-session-persistence",
            *extra,
        ]
        if model:
            cmd += ["--model", model]
        start = time.monotonic()
        try:
            proc = subprocess.run(
                cmd,
                cwd=project,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=CLI_TIMEOUT,
            )
        except subprocess.TimeoutExpired as exc:
            pytest.fail(
                f"claude did not finish in {CLI_TIMEOUT}s\nstdout: {exc.stdout!r}\n"
                f"stderr: {exc.stderr!r}\ngateway log:\n{cc_gateway.output()[-8000:]}"
            )
        elapsed = time.monotonic() - start
        try:
            result = json.loads(proc.stdout)
        except ValueError:
            result = None
        return Run(proc, result, elapsed, cc_gateway, cc_upstream)

    run.project = project  # type: ignore[attr-defined]
    return run


def _succeeded(run: Run) -> bool:
    r = run.result
    return (
        run.proc.returncode == 0
        and isinstance(r, dict)
        and r.get("type") == "result"
        and r.get("is_error") is False
    )


def _tool_names(rec: RecordedRequest) -> set[str]:
    return {t.get("function", {}).get("name") for t in (rec.json or {}).get("tools") or []}


def test_simple_answer(run_claude, cc_upstream):
    answer = "Pong from iFlow via the gateway."
    cc_upstream.default = sc.text(answer, name="answer")
    run = run_claude("Reply with pong.")
    assert _succeeded(run), run.report()
    assert run.result["result"] == answer, run.report()
    chats = cc_upstream.chat_requests
    assert chats and all(r.status == 200 for r in chats), run.report()
    main = [r for r in chats if "Write" in _tool_names(r)]
    assert main and main[-1].is_stream, run.report()
    assert cc_upstream.errors == [], run.report()


def test_write_tool_round_trip(run_claude, cc_upstream):
    project: Path = run_claude.project
    target = project / "notes" / "hello.txt"
    content = "Hello from the gateway e2e test.\nSecond line: ümlaut ✓\n"
    call_id = "call_write_e2e_1"
    final = "I wrote notes/hello.txt for you."

    def answer(rec: RecordedRequest) -> sc.Scenario:
        messages = (rec.json or {}).get("messages") or []
        if any(m.get("role") == "tool" and m.get("tool_call_id") == call_id for m in messages):
            return sc.text(final, name="final")
        if "Write" in _tool_names(rec):
            return sc.tool_calls(
                [("Write", {"file_path": str(target), "content": content})],
                ids=[call_id],
                name="write_call",
            )
        return sc.text("ok", name="auxiliary")  # title/topic/quota side requests, if any

    cc_upstream.default = answer
    run = run_claude("Create notes/hello.txt with a greeting.")
    assert _succeeded(run), run.report()
    assert run.result["result"] == final, run.report()
    assert target.is_file(), run.report()
    assert target.read_text(encoding="utf-8") == content, run.report()
    assert run.result.get("permission_denials") == [], run.report()

    chats = cc_upstream.chat_requests
    first = next((r for r in chats if r.scenario == "write_call"), None)
    assert first is not None, run.report()
    write = next(
        t["function"] for t in first.json["tools"] if t.get("function", {}).get("name") == "Write"
    )
    props = write["parameters"]["properties"]
    assert {"file_path", "content"} <= set(props), write
    assert set(write["parameters"].get("required", [])) >= {"file_path", "content"}, write

    answered = [r for r in chats if r.scenario == "final"]
    assert answered, run.report()
    messages = answered[-1].json["messages"]
    tool_msgs = [m for m in messages if m.get("role") == "tool"]
    assert [m["tool_call_id"] for m in tool_msgs] == [call_id], messages[-3:]
    calls = [c for m in messages if m.get("role") == "assistant" for c in m.get("tool_calls") or []]
    assert [c["id"] for c in calls] == [call_id], messages[-3:]
    assert json.loads(calls[0]["function"]["arguments"]) == {
        "file_path": str(target),
        "content": content,
    }
    assert all(r.status == 200 for r in chats), run.report()
    assert cc_upstream.errors == [], run.report()


def test_default_model_with_mid_conversation_system_messages(run_claude, cc_upstream):
    answer = "Default model answer."
    cc_upstream.default = sc.text(answer, name="answer")
    run = run_claude("Reply with anything.", model=None)
    assert _succeeded(run), run.report()
    assert run.result["result"] == answer, run.report()
    # Claude Code's default model sends `role: "system"` messages mid-conversation; they reach
    # the upstream as user text, never as a 400.
    sent = cc_upstream.chat_requests[-1].json["messages"]
    assert sent[0]["role"] == "system"
    assert all(m["role"] in {"user", "assistant", "tool"} for m in sent[1:]), run.report()
