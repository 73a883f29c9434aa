"""SIGTERM while streams run: they finish; past the grace period they end with an error event."""

from __future__ import annotations

import json
import signal
import threading
import time

import httpx

from tests.conftest import FAKE_KEY
from tests.fakes import scenarios as sc
from tests.servers import GatewayServer
from tests.sse import data_payloads

BODY = {"model": "glm-5", "stream": True, "messages": [{"role": "user", "content": "hi"}]}


def stream_in_thread(server: GatewayServer, results: list) -> threading.Thread:
    def run() -> None:
        with httpx.stream("POST", server.url + "/v1/chat/completions", json=BODY,
                          timeout=30) as response:
            results.append(response.read())

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_sigterm_lets_a_running_stream_finish(fake_iflow, upstream):
    upstream.script(sc.slow(sc.text("one two three four five six", chunks=6), chunk_delay=0.3))
    server = GatewayServer({"IFLOW_API_KEY": FAKE_KEY, "IFLOW_BASE_URL": fake_iflow.base_url})
    with server:
        results: list[bytes] = []
        thread = stream_in_thread(server, results)
        assert upstream.wait_for(lambda: len(upstream.chat_requests) == 1, timeout=10)
        time.sleep(0.4)
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        # no new connections once draining
        try:
            refused = httpx.get(server.url + "/health", timeout=2).status_code != 200
        except httpx.HTTPError:
            refused = True
        thread.join(15)
        assert server.process.wait(15) == 0
    assert refused
    payloads = data_payloads(results[0])
    assert payloads[-1] == "[DONE]"
    text = "".join(json.loads(p)["choices"][0]["delta"].get("content", "")
                   for p in payloads[:-1] if json.loads(p).get("choices"))
    assert text == "one two three four five six"


def test_past_the_grace_period_streams_end_with_an_error_event(fake_iflow, upstream):
    upstream.script(sc.slow(sc.text(" ".join(["word"] * 50), chunks=50), chunk_delay=0.3))
    env = {"IFLOW_API_KEY": FAKE_KEY, "IFLOW_BASE_URL": fake_iflow.base_url,
           "SHUTDOWN_GRACE_SECONDS": "1"}
    with GatewayServer(env) as server:
        results: list[bytes] = []
        thread = stream_in_thread(server, results)
        assert upstream.wait_for(lambda: len(upstream.chat_requests) == 1, timeout=10)
        time.sleep(0.4)
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        thread.join(15)
        assert server.process.wait(15) == 0
        assert time.monotonic() - started < 8
    payloads = data_payloads(results[0])
    assert payloads[-1] == "[DONE]"
    assert json.loads(payloads[-2])["error"]["code"] == "server_shutting_down"
