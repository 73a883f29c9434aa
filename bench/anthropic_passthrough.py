"""Anthropic passthrough benchmark: `POST /v1/messages` streams through the gateway to an
Anthropic-compatible account (events relayed byte for byte), beside the same streams straight
at the fake and through an OpenAI-compatible account (translated Messages ↔ chat).

  python bench/anthropic_passthrough.py [--quick | --duration S] [--json FILE]

Starts bench/fake_upstream.py (its Anthropic mode: 20 text deltas per stream) on CPU 0 and, one
after the other, two gateways on CPU 1 (taskset), each with its own IFLOW2API_HOME: one whose
account is `addaccount --provider anthropic`, one whose account is OpenAI-compatible
(UPSTREAM_BASE_URL). Measures with the aiohttp client of bench/loadgen.py from CPU 0: req/s
and whole-stream p50/p99 at c=50, TTFB p50/p99 at c=1. Request log, live status and metrics are
on (defaults + METRICS_ENABLED). Only 127.0.0.1 is ever contacted; every child is stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import loadgen
import procs

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
LOAD_CPU, GATEWAY_CPU = 0, 1
KIND = "messages_stream"


def base_env(home: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("IFLOW", "UPSTREAM_", "DJANGO_", "ANTHROPIC_", "OPENAI_"))}
    env.update(IFLOW2API_HOME=home, IMPORT_IFLOW_SETTINGS="0", PYTHONUNBUFFERED="1",
               METRICS_ENABLED="1")
    return env


def start_gateway(kind: str, fake_port: int, home: str, pinned: bool) -> tuple[
        str, procs.CpuMeter, subprocess.Popen[bytes]]:
    env = base_env(home)
    log = Path(home) / "gateway.log"
    fake = f"http://127.0.0.1:{fake_port}"
    if kind == "anthropic":
        subprocess.run([sys.executable, "-m", "iflow2api_site.cli", "addaccount", "--provider",
                        "anthropic", "--label", "bench", "--base-url", fake, "--api-key",
                        "sk-bench", "--models", "bench-model"], env=env, cwd=str(REPO),
                       check=True, capture_output=True, timeout=180)
    else:
        env.update(UPSTREAM_BASE_URL=f"{fake}/v1", UPSTREAM_API_KEY="sk-bench",
                   UPSTREAM_MODELS="bench-model")
    port = procs.free_port()
    proc = procs.start([sys.executable, "-m", "iflow2api_site.cli", "serve", "--port",
                        str(port)], GATEWAY_CPU if pinned else None, log, env=env,
                       cwd=str(REPO))
    base = f"http://127.0.0.1:{port}"
    procs.wait_http(f"{base}/health", proc, 60)
    return base, procs.CpuMeter(proc.pid), proc


def measure(base: str, meter: procs.CpuMeter | None, duration: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if meter:
        meter.start()
    c50 = loadgen.new_loop_run(lambda: loadgen.load(base, KIND, 50, duration)).summary()
    c50["cpu_pct"] = meter.stop() if meter else None
    c1 = loadgen.new_loop_run(lambda: loadgen.load(base, KIND, 1, duration)).summary()
    out.update(rps_c50=c50["rps"], p50_c50_ms=c50["p50_ms"], p99_c50_ms=c50["p99_ms"],
               cpu_pct_c50=c50["cpu_pct"], errors=c50["errors"] + c1["errors"],
               error_samples={**c50["error_samples"], **c1["error_samples"]},
               rps_c1=c1["rps"], ttfb_p50_c1_ms=c1["ttfb_p50_ms"],
               ttfb_p99_c1_ms=c1["ttfb_p99_ms"])
    if out["cpu_pct_c50"]:
        out["rps_per_cpu_s"] = round(100 * out["rps_c50"] / out["cpu_pct_c50"], 1)
    return out


def table(results: dict[str, dict[str, Any]]) -> str:
    rows = [("stream c=50 req/s", "rps_c50"), ("stream c=50 p50 ms (whole)", "p50_c50_ms"),
            ("stream c=50 p99 ms (whole)", "p99_c50_ms"), ("CPU % of one core, c=50",
                                                           "cpu_pct_c50"),
            ("req per CPU-second, c=50", "rps_per_cpu_s"), ("stream c=1 req/s", "rps_c1"),
            ("TTFB c=1 p50 ms", "ttfb_p50_c1_ms"), ("TTFB c=1 p99 ms", "ttfb_p99_c1_ms"),
            ("errors", "errors")]
    names = list(results)
    lines = [f"{'/v1/messages stream':30}" + "".join(f"{n:>16}" for n in names)]
    lines.append("-" * len(lines[0]))
    for label, key in rows:
        cells = []
        for name in names:
            value = results[name].get(key)
            cells.append(f"{'-' if value is None else value:>16}")
        lines.append(f"{label:30}" + "".join(cells))
    return "\n".join(lines)


def on_signal(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--quick", action="store_true", help="3 s runs")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    duration = 3.0 if args.quick else args.duration
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, on_signal)
    pinned = procs.TASKSET is not None and (os.cpu_count() or 1) >= 2
    if pinned:
        os.sched_setaffinity(0, {LOAD_CPU})
    work = tempfile.mkdtemp(prefix="iflow2api-bench-anthropic-")
    results: dict[str, dict[str, Any]] = {}
    try:
        fake_port = procs.free_port()
        fake = procs.start([sys.executable, str(BENCH / "fake_upstream.py"), "--port",
                            str(fake_port)], LOAD_CPU if pinned else None,
                           Path(work) / "fake.log")
        fake_base = f"http://127.0.0.1:{fake_port}"
        procs.wait_http(f"{fake_base}/v1/models", fake, 30)
        for name, kind in (("passthrough", "anthropic"), ("translated", "openai")):
            home = tempfile.mkdtemp(dir=work, prefix=f"{name}-")
            base, meter, proc = start_gateway(kind, fake_port, home, pinned)
            loadgen.new_loop_run(lambda b=base: loadgen.load(b, KIND, 10, 1.0))  # warm-up
            results[name] = measure(base, meter, duration)
            procs.stop(proc)
            print(f"{name}: done", flush=True)
        results["direct"] = measure(fake_base, procs.CpuMeter(fake.pid), duration)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        return 130
    finally:
        procs.stop_all()
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
