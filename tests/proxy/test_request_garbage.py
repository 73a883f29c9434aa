"""The request path leaves no reference cycles: what a request made is freed when it ends, by
reference counting, not by a pass of the cyclic garbage collector. `serve` counts on it: its
young-generation threshold is high (iflow2api_site/tuning.py, YOUNG_PASS_AFTER), so a cycle
per request would pile up thousands of requests' objects between passes.

A real gateway, with a probe loaded at its start (tests/fixtures/gc_probe) that keeps what the
collector finds between two signals, serves every API, streaming and not, and some refusals.
On the fast path only: Django's carrier (FAST_PATH=false) leaves ~100 objects of cyclic garbage
per request, and `serve` keeps Python's threshold for it.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import FAKE_KEY
from tests.fakes import scenarios as sc
from tests.fakes.upstream import FakeUpstream
from tests.servers import GatewayServer

PROBE = Path(__file__).resolve().parents[1] / "fixtures" / "gc_probe"
MESSAGES = [{"role": "user", "content": "hi"}]
CALLS = [
    ("/v1/chat/completions", {"model": "glm-5", "messages": MESSAGES}),
    ("/v1/chat/completions", {"model": "glm-5", "stream": True, "messages": MESSAGES}),
    ("/v1/messages", {"model": "glm-5", "max_tokens": 16, "messages": MESSAGES}),
    ("/v1/messages", {"model": "glm-5", "max_tokens": 16, "stream": True, "messages": MESSAGES}),
    ("/v1/responses", {"model": "glm-5", "input": "hi", "store": False}),
    ("/v1/responses", {"model": "glm-5", "input": "hi", "stream": True, "store": False}),
    ("/v1/chat/completions", {"model": "no-such-model", "messages": MESSAGES}),  # 404
    ("/v1/chat/completions", {"model": "glm-5"}),  # 400: no messages
]
ROUNDS = 25


def serve_all(client: httpx.Client, server: GatewayServer) -> int:
    served = 0
    for path, body in CALLS:
        answer = client.post(server.url + path, json=body)
        assert answer.status_code in (200, 400, 404), (path, answer.status_code, answer.text)
        served += 1
    return served


def garbage_of(fake_iflow: FakeUpstream, tmp_path: Path,
               calls: Callable[[httpx.Client, GatewayServer], int]) -> tuple[dict[str, Any], int]:
    """A gateway on `fake_iflow` with the probe: `calls` once (what is made once: snapshots,
    connections, caches), then ROUNDS times while the probe keeps what the collector finds.
    What it found, and the sum of what `calls` returned over those rounds."""
    out = tmp_path / "garbage.json"
    existing = os.environ.get("PYTHONPATH")
    env = {"IFLOW_API_KEY": FAKE_KEY, "IFLOW_BASE_URL": fake_iflow.base_url,
           "GC_PROBE_FILE": str(out), "FAST_PATH": "true",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(PROBE), existing]))}
    with GatewayServer(env) as server, httpx.Client(timeout=30) as client:
        assert server.process is not None
        calls(client, server)
        server.process.send_signal(signal.SIGUSR1)
        time.sleep(0.3)
        counted = sum(calls(client, server) for _ in range(ROUNDS))
        time.sleep(0.5)  # the request log's writer and the last stream cleanups
        server.process.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while not out.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
    return json.loads(out.read_text()), counted


def test_requests_leave_no_cyclic_garbage(fake_iflow, tmp_path):
    found, served = garbage_of(fake_iflow, tmp_path, serve_all)
    # A cycle in the request path would be at least one object per request of its kind.
    assert found["total"] < served // 10, found


def test_paced_streams_leave_no_cyclic_garbage(fake_iflow, tmp_path):
    # Events that come while the relay waits are written by the stream's reading task (the
    # direct writer, proxy/streaming.py): that path must free what it made too.
    streams = [(path, body) for path, body in CALLS if body.get("stream")]

    def serve_paced(client: httpx.Client, server: GatewayServer) -> int:
        fake_iflow.script(*(sc.slow(sc.text("one two three four", chunks=4), chunk_delay=0.01)
                            for _ in streams))
        for path, body in streams:
            answer = client.post(server.url + path, json=body)
            assert answer.status_code == 200, (path, answer.text)
            assert "four" in answer.text, (path, answer.text)
        return len(streams)

    found, served = garbage_of(fake_iflow, tmp_path, serve_paced)
    assert found["total"] < served // 10, found
