"""Throughput runs with wrk (when installed): one thread, C connections, fixed duration.

The Lua script (wrk_post.lua) validates every response (status 200 and the expected marker in
the body) and prints one `BENCH_RESULT {json}` line. wrk's latency of a stream is the time until
the whole chunked body was read.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from loadgen import body_for, path_for

WRK = shutil.which("wrk")
SCRIPT = Path(__file__).with_name("wrk_post.lua")
EXPECT = {"chat": '"choices"', "chat_stream": "data: [DONE]",
          "messages_stream": "event: message_stop",
          "responses_stream": "event: response.completed"}


def available() -> bool:
    return WRK is not None


def run(base: str, kind: str, concurrency: int, duration: float, cpu: int | None) -> dict[str, Any]:
    """One wrk run; returns the same keys as loadgen.Run.summary() (no TTFB)."""
    assert WRK and base.startswith("http://127.0.0.1:"), base
    argv = [WRK, "-t1", f"-c{concurrency}", f"-d{max(1, round(duration))}s", "--latency",
            "--timeout", "30s", "-s", str(SCRIPT), base + path_for(kind)]
    if cpu is not None and shutil.which("taskset"):
        argv = ["taskset", "-c", str(cpu), *argv]
    env = dict(os.environ, WRK_BODY=json.dumps(body_for(kind)), WRK_EXPECT=EXPECT[kind])
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=duration + 60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = out.decode("utf-8", "replace")
    line = next((ln for ln in text.splitlines() if ln.startswith("BENCH_RESULT ")), None)
    if line is None:
        return {"ok": 0, "errors": 1, "error_kinds": {"wrk failed": 1},
                "error_samples": {"wrk failed": text[-300:]}, "rps": 0.0,
                "p50_ms": None, "p99_ms": None, "ttfb_p50_ms": None, "ttfb_p99_ms": None}
    r = json.loads(line.split(" ", 1)[1])
    ok = max(0, r["requests"] - r["bad"])
    kinds = {k: r[k] for k in ("connect", "read", "write", "timeout") if r[k]}
    if r["bad"]:
        kinds["bad response"] = r["bad"]
    samples = {"bad response": r["sample"]} if r["bad"] else {}
    return {
        "ok": ok, "errors": sum(kinds.values()), "error_kinds": kinds, "error_samples": samples,
        "rps": round(ok / (r["duration_us"] / 1e6), 1) if r["duration_us"] else 0.0,
        "p50_ms": round(r["p50_us"] / 1000, 3), "p99_ms": round(r["p99_us"] / 1000, 3),
        "ttfb_p50_ms": None, "ttfb_p99_ms": None,
    }
