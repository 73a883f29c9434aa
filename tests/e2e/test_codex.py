"""The real Codex CLI (`codex exec`) against a real gateway and the fake iFlow upstream.

The CLI is installed by the test script with ``npm install --no-save @openai/codex`` (binary
``<repo>/node_modules/.bin/codex``); without it these tests skip.

Each run has its own CODEX_HOME holding a config.toml like the one docs/clients.md gives
(a custom provider, ``wire_api = "responses"``, the key from an env var), so the user's
~/.codex is never read or written. Codex then sends only ``POST /v1/responses`` (streamed) to
the gateway. The upstream answers are chosen by inspecting each chat request, not by their
order, so extra requests from a newer CLI do not break the tests.

The model's command runs with ``--dangerously-bypass-approvals-and-sandbox``: it is one the
fake model chose (``cat`` of a file in the test's temp dir), and Codex's sandbox (bubblewrap)
needs user namespaces that CI containers often lack.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.translate.responses_compaction import SUMMARY_HEADING, SUMMARY_REQUEST
from tests.conftest import FAKE_KEY
from tests.fakes import scenarios as sc
from tests.fakes.upstream import FakeUpstream, RecordedRequest
from tests.servers import ROOT, GatewayServer

pytestmark = pytest.mark.e2e

CLI_TIMEOUT = 120
MODEL = "glm-4.6"
KEY_ENV = "IFLOW2API_KEY"
# Env vars of the caller that would change what the CLI does or where it connects.
_SCRUB_PREFIXES = ("OPENAI_", "CODEX_", "AZURE_", "OTEL_", "RUST_LOG")
_SCRUB = {"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "NODE_OPTIONS",
          "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME"}


def _find_codex() -> str | None:
    local = ROOT / "node_modules" / ".bin" / "codex"
    if local.exists() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which("codex")


@pytest.fixture(scope="module")
def codex_bin() -> str:
    path = _find_codex()
    if path is None:
        pytest.skip("Codex CLI not installed: run `npm install --no-save @openai/codex` in the "
                    "repo (scripts/test does), or put `codex` on PATH")
    return path


@pytest.fixture(scope="module")
def codex_gateway(fake_iflow: FakeUpstream) -> Iterator[GatewayServer]:
    """A gateway of its own, so nothing here leaks into the session-wide one."""
    env = {
        "IFLOW_API_KEY": FAKE_KEY,
        "IFLOW_BASE_URL": fake_iflow.base_url,
        # Codex's requests are ~40 KB of prompt and tools; leave the fake time to answer.
        "UPSTREAM_READ_TIMEOUT": "30",
    }
    with GatewayServer(env) as server:
        yield server


@pytest.fixture
def codex_upstream(fake_iflow: FakeUpstream) -> Iterator[FakeUpstream]:
    saved = fake_iflow.default
    fake_iflow.reset()
    try:
        yield fake_iflow
    finally:
        fake_iflow.default = saved
        fake_iflow.reset()


def config_toml(base_url: str, *, provider_name: str = "iflow2api", **settings: Any) -> str:
    """The config.toml of docs/clients.md, with extra top-level settings."""
    lines = [f'model = "{MODEL}"', 'model_provider = "iflow2api"']
    lines += [f"{key} = {json.dumps(value)}" for key, value in settings.items()]
    lines += [
        "",
        "[model_providers.iflow2api]",
        f'name = "{provider_name}"',
        f'base_url = "{base_url}/v1"',
        f'env_key = "{KEY_ENV}"',
        'wire_api = "responses"',
        # Fail fast in tests: a broken answer shows at once instead of after five retries.
        "request_max_retries = 0",
        "stream_max_retries = 0",
    ]
    return "\n".join(lines) + "\n"


@dataclass
class Run:
    proc: subprocess.CompletedProcess[str]
    elapsed: float
    gateway: GatewayServer
    upstream: FakeUpstream

    @property
    def answer(self) -> str:
        """What `codex exec` printed on stdout: the final message."""
        return self.proc.stdout.strip()

    def report(self) -> str:
        lines = [
            f"codex exit code {self.proc.returncode} after {self.elapsed:.1f}s",
            f"--- stdout ---\n{self.proc.stdout}",
            f"--- stderr ---\n{self.proc.stderr[-6000:]}",
            "--- upstream requests ---",
        ]
        for r in self.upstream.requests:
            doc = r.json or {}
            roles = [m.get("role") for m in doc.get("messages", [])]
            lines.append(f"{r.method} {r.path} stream={r.is_stream} status={r.status} "
                         f"scenario={r.scenario} tools={len(doc.get('tools') or [])} "
                         f"roles={roles}")
        lines.append(f"--- upstream errors --- {self.upstream.errors}")
        lines.append(f"--- gateway log ---\n{self.gateway.output()[-8000:]}")
        return "\n".join(lines)


RunCodex = Callable[..., Run]


@pytest.fixture
def run_codex(codex_bin: str, codex_gateway: GatewayServer, codex_upstream: FakeUpstream,
              tmp_path: Path) -> RunCodex:
    home = tmp_path / "home"
    codex_home = home / ".codex"
    project = tmp_path / "project"
    codex_home.mkdir(parents=True)
    project.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(_SCRUB_PREFIXES) and k.upper() not in _SCRUB}
    env.update({"HOME": str(home), "CODEX_HOME": str(codex_home), KEY_ENV: "sk-codex-e2e",
                "NO_PROXY": "127.0.0.1,localhost"})

    def run(prompt: str, *extra: str, config: str | None = None) -> Run:
        (codex_home / "config.toml").write_text(
            config or config_toml(codex_gateway.url), encoding="utf-8")
        cmd = [codex_bin, "exec", "--skip-git-repo-check",
               "--dangerously-bypass-approvals-and-sandbox", "-C", str(project), *extra,
               prompt]
        start = time.monotonic()
        try:
            proc = subprocess.run(cmd, cwd=project, env=env, stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True, timeout=CLI_TIMEOUT)
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"codex did not finish in {CLI_TIMEOUT}s\nstdout: {exc.stdout!r}\n"
                        f"stderr: {exc.stderr!r}\ngateway log:\n"
                        f"{codex_gateway.output()[-8000:]}")
        return Run(proc, time.monotonic() - start, codex_gateway, codex_upstream)

    run.project = project  # type: ignore[attr-defined]
    return run


def tool_names(rec: RecordedRequest) -> set[str]:
    return {t.get("function", {}).get("name") for t in (rec.json or {}).get("tools") or []}


def messages(rec: RecordedRequest) -> list[dict[str, Any]]:
    return (rec.json or {}).get("messages") or []


def tool_message(rec: RecordedRequest, call_id: str) -> dict[str, Any] | None:
    return next((m for m in messages(rec)
                 if m.get("role") == "tool" and m.get("tool_call_id") == call_id), None)


def test_text_turn(run_codex: RunCodex, codex_upstream: FakeUpstream) -> None:
    answer = "Pong from iFlow via the gateway's Responses API."
    codex_upstream.default = sc.text(answer, name="answer")
    run = run_codex("Reply with pong.")
    assert run.proc.returncode == 0, run.report()
    assert run.answer == answer, run.report()
    chats = codex_upstream.chat_requests
    assert chats and all(r.status == 200 and r.is_stream for r in chats), run.report()
    first = chats[0]
    assert "exec_command" in tool_names(first), run.report()
    sent = messages(first)
    assert sent[0]["role"] == "system" and "Codex" in sent[0]["content"], run.report()
    assert sent[-1] == {"role": "user", "content": "Reply with pong."}, run.report()
    assert codex_upstream.errors == [], run.report()


def test_exec_command_round_trip(run_codex: RunCodex, codex_upstream: FakeUpstream) -> None:
    project: Path = run_codex.project  # type: ignore[attr-defined]
    (project / "hello.txt").write_text("file content 42 ✓\n", encoding="utf-8")
    call_id = "call_exec_e2e_1"
    final = "hello.txt says: file content 42 ✓"

    def answer(rec: RecordedRequest) -> sc.Scenario:
        if tool_message(rec, call_id) is not None:
            return sc.text(final, name="final")
        if "exec_command" in tool_names(rec):
            return sc.tool_calls([("exec_command", {"cmd": "cat hello.txt"})], ids=[call_id],
                                 name="exec_call")
        return sc.text("ok", name="auxiliary")

    codex_upstream.default = answer
    run = run_codex("Show me what hello.txt says.")
    assert run.proc.returncode == 0, run.report()
    assert run.answer == final, run.report()
    chats = codex_upstream.chat_requests
    assert [r.scenario for r in chats if r.scenario != "auxiliary"] == [
        "exec_call", "final"], run.report()
    second = next(r for r in chats if r.scenario == "final")
    output = tool_message(second, call_id)
    assert output is not None and "file content 42 ✓" in output["content"], run.report()
    calls = [c for m in messages(second) if m.get("role") == "assistant"
             for c in m.get("tool_calls") or []]
    assert [c["id"] for c in calls] == [call_id], run.report()
    assert calls[0]["function"]["name"] == "exec_command"
    assert json.loads(calls[0]["function"]["arguments"]) == {"cmd": "cat hello.txt"}
    assert all(r.status == 200 for r in chats), run.report()
    assert codex_upstream.errors == [], run.report()


ALIAS = "gpt-5.5"  # one of Codex's own models: its full tool set, freeform apply_patch included
SET_ALIAS = f"""
from instances.models import Instance
instance = Instance.objects.get(name="default")
instance.model_aliases = {{"{ALIAS}": "{MODEL}"}}
instance.save()
"""


def test_apply_patch_round_trip_through_an_alias(run_codex: RunCodex,
                                                 codex_gateway: GatewayServer,
                                                 codex_upstream: FakeUpstream) -> None:
    """docs/clients.md: an alias named like a Codex model gives Codex its own tool set; its
    freeform apply_patch tool goes up as a one-argument function and comes back as a custom
    tool call that Codex applies."""
    codex_gateway.shell(SET_ALIAS)
    deadline = time.monotonic() + 10  # settings reach the server within its 2 s cache
    while ALIAS not in httpx.get(codex_gateway.url + "/v1/models").text:
        assert time.monotonic() < deadline, "the alias never reached the gateway"
        time.sleep(0.2)
    project: Path = run_codex.project  # type: ignore[attr-defined]
    patch = "*** Begin Patch\n*** Add File: notes.txt\n+patched through the gateway ✓\n" \
            "*** End Patch\n"
    call_id = "call_patch_e2e_1"
    final = "I added notes.txt."

    def answer(rec: RecordedRequest) -> sc.Scenario:
        if tool_message(rec, call_id) is not None:
            return sc.text(final, name="final")
        if "apply_patch" in tool_names(rec):
            return sc.tool_calls([("apply_patch", {"input": patch})], ids=[call_id],
                                 name="patch_call")
        return sc.text("ok", name="auxiliary")

    codex_upstream.default = answer
    config = config_toml(codex_gateway.url, model_context_window=128000).replace(
        f'model = "{MODEL}"', f'model = "{ALIAS}"')
    run = run_codex("Add a notes.txt file.", config=config)
    assert run.proc.returncode == 0, run.report()
    assert run.answer == final, run.report()
    assert (project / "notes.txt").read_text(encoding="utf-8") == (
        "patched through the gateway ✓\n"), run.report()
    chats = codex_upstream.chat_requests
    first = next(r for r in chats if r.scenario == "patch_call")
    tool = next(t["function"] for t in first.json["tools"]
                if t["function"]["name"] == "apply_patch")
    assert list(tool["parameters"]["properties"]) == ["input"], tool
    assert first.model == chats[-1].model  # the alias led to the same upstream model
    second = next(r for r in chats if r.scenario == "final")
    output = tool_message(second, call_id)
    assert output is not None and "notes.txt" in output["content"], run.report()
    assert codex_upstream.errors == [], run.report()


SUMMARY = "SUMMARY-42: the user wants hello.txt; `cat hello.txt` printed file content 42."
# A small window, and usage figures above it, so that Codex compacts in the middle of the turn.
SMALL_WINDOW = {"model_context_window": 16000, "model_auto_compact_token_limit": 4000}
BIG_USAGE = {"prompt_tokens": 9000, "completion_tokens": 30, "total_tokens": 9030}


def compaction_script(call_id: str, final: str, is_summary_request: Callable[
        [RecordedRequest], bool]) -> Callable[[RecordedRequest], sc.Scenario]:
    """exec_command (reporting a big usage), then the summary when asked, then the answer
    once the summary is in the conversation."""
    def answer(rec: RecordedRequest) -> sc.Scenario:
        if is_summary_request(rec):
            return sc.text(SUMMARY, name="summary")
        if any(SUMMARY in str(m.get("content")) for m in messages(rec)):
            return sc.text(final, name="final")
        if "exec_command" in tool_names(rec) and tool_message(rec, call_id) is None:
            return sc.tool_calls([("exec_command", {"cmd": "cat hello.txt"})], ids=[call_id],
                                 usage=BIG_USAGE, name="exec_call")
        return sc.text("unexpected request", name="unexpected")
    return answer


def last_user_text(rec: RecordedRequest) -> str:
    users = [m for m in messages(rec) if m.get("role") == "user"]
    return str(users[-1].get("content")) if users else ""


def test_long_conversation_compacts_through_the_gateway(run_codex: RunCodex,
                                                        codex_gateway: GatewayServer,
                                                        codex_upstream: FakeUpstream) -> None:
    """With its own provider Codex compacts locally: a summary turn without tools, then the
    turn goes on with the summary instead of the history."""
    project: Path = run_codex.project  # type: ignore[attr-defined]
    (project / "hello.txt").write_text("file content 42\n", encoding="utf-8")
    final = "Done: hello.txt says file content 42."
    codex_upstream.default = compaction_script(
        "call_compact_local", final, lambda rec: not tool_names(rec)
        and "summary" in last_user_text(rec).lower())
    config = config_toml(codex_gateway.url, **SMALL_WINDOW)
    run = run_codex("Show me hello.txt.", config=config)
    assert run.proc.returncode == 0, run.report()
    assert run.answer == final, run.report()
    assert "context compacted" in run.proc.stderr, run.report()
    scenarios = [r.scenario for r in codex_upstream.chat_requests]
    assert scenarios == ["exec_call", "summary", "final"], run.report()
    assert all(r.status == 200 for r in codex_upstream.chat_requests), run.report()


def test_remote_compaction_is_answered_by_the_upstream_model(
        run_codex: RunCodex, codex_gateway: GatewayServer,
        codex_upstream: FakeUpstream) -> None:
    """A provider Codex takes for Azure's asks the server to compact (`compaction_trigger`):
    the gateway has the model write the summary, answers the one `compaction` item Codex
    requires, and expands it when Codex replays it."""
    project: Path = run_codex.project  # type: ignore[attr-defined]
    (project / "hello.txt").write_text("file content 42\n", encoding="utf-8")
    final = "Done after a remote compaction."
    codex_upstream.default = compaction_script(
        "call_compact_remote", final,
        lambda rec: last_user_text(rec) == SUMMARY_REQUEST and not tool_names(rec))
    config = config_toml(codex_gateway.url, provider_name="azure", **SMALL_WINDOW)
    run = run_codex("Show me hello.txt.", config=config)
    assert run.proc.returncode == 0, run.report()
    assert run.answer == final, run.report()
    assert "Error running remote compact task" not in run.proc.stderr, run.report()
    chats = codex_upstream.chat_requests
    assert [r.scenario for r in chats] == ["exec_call", "summary", "final"], run.report()
    # The summary request carried the history being summarised (the call and its output).
    summary_request = chats[1]
    assert tool_message(summary_request, "call_compact_remote") is not None, run.report()
    # Codex replayed the compaction item: the summary is a user message now, the call is gone.
    replayed = messages(chats[2])
    assert any(m["role"] == "user" and str(m["content"]).startswith(SUMMARY_HEADING)
               and SUMMARY in str(m["content"]) for m in replayed), run.report()
    assert tool_message(chats[2], "call_compact_remote") is None, run.report()
