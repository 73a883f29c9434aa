"""The real Claude Code CLI when the gateway's only account is out of rotation: it must give up
at once with the reason, not retry a 5xx for minutes. Reuses test_claude_code's CLI runner
with a gateway of its own."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import FAKE_KEY
from tests.e2e.test_claude_code import (  # noqa: F401  (fixtures)
    cc_upstream,
    claude_bin,
    run_claude,
)
from tests.fakes import scenarios as sc
from tests.fakes.upstream import FakeUpstream
from tests.servers import GatewayServer

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cc_gateway(fake_iflow: FakeUpstream) -> Iterator[GatewayServer]:
    """A gateway whose only account iFlow has just blocked (434), as a user meets it."""
    with GatewayServer({"IFLOW_API_KEY": FAKE_KEY, "IFLOW_BASE_URL": fake_iflow.base_url}) \
            as server:
        fake_iflow.reset()
        fake_iflow.script(sc.envelope_error("434", "Access to the current AK has been blocked"))
        blocked = httpx.post(server.url + "/v1/chat/completions", timeout=30, json={
            "model": "glm-5", "messages": [{"role": "user", "content": "hi"}]})
        assert blocked.status_code == 401, blocked.text
        yield server


def test_a_blocked_only_account_ends_claude_at_once_with_the_reason(request):
    run = request.getfixturevalue("run_claude")("Reply with pong.")
    upstream = request.getfixturevalue("cc_upstream")
    assert run.elapsed < 60, run.report()
    assert run.proc.returncode != 0 or (run.result or {}).get("is_error"), run.report()
    shown = run.proc.stdout + run.proc.stderr
    assert "blocked" in shown and "AK has been blocked" in shown, run.report()
    assert "403" in shown, run.report()
    assert upstream.chat_requests == [], run.report()  # nothing reached the upstream
