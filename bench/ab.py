"""Paired A/B of two servers on one core: the gateway from two checkouts (before and after a
change), or the gateway and the bare proxy. Both are pinned to CPU 1 and loaded at the same
moment, each by its own client; the kernel shares the core between them, and each one's CPU per
request under the same conditions as the other's is compared, round by round. On a machine whose
speed moves from second to second this is the figure that holds still (bench/paired.py).

  python bench/ab.py A B [--kind chat|chat_stream|responses_stream|messages_stream]
                         [--rounds 6] [--duration 4]
  python bench/ab.py A B --burst 500 [--hold 5] [--rounds 5]

A and B are checkouts (e.g. `git worktree add /tmp/before <commit>`; `.` for this one),
optionally with environment settings for that gateway (`/tmp/before?ACCESS_LOG=0`), or `bare`.
Without --burst: wrk at c=50 against each at once, requests per CPU-second compared. With
--burst N: N paced streams (20 events, `hold` seconds each) opened at once against each at once,
the CPU each used for its round compared (lower is better). Prints each round and the median,
lowest and highest ratio of A to B. Only 127.0.0.1 is contacted; everything it starts is stopped.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import burst
import paired
import procs
import run_bench

GATEWAY_ONLY = ("responses_stream", "messages_stream")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", help="a checkout (DIR or DIR?VAR=value,...) or `bare`")
    p.add_argument("b", help="the same for B")
    p.add_argument("--kind", default="chat", choices=(*paired.KINDS, *GATEWAY_ONLY),
                   help="wrk case (default chat; responses_stream and messages_stream: two "
                        "gateways, the bare proxy has no such API)")
    p.add_argument("--burst", type=int, default=0, metavar="N",
                   help="paced bursts of N streams instead of wrk rounds")
    p.add_argument("--hold", type=float, default=5.0, help="seconds per paced stream (--burst)")
    p.add_argument("--rounds", type=int, default=6, help="rounds (default 6)")
    p.add_argument("--duration", type=float, default=4.0, help="seconds per wrk round")
    a = p.parse_args()
    if a.kind in GATEWAY_ONLY and "bare" in (a.a, a.b):
        p.error(f"--kind {a.kind} compares two gateways: the bare proxy has no such API")
    a.rounds = max(1, min(a.rounds, 30))
    a.burst = max(0, min(a.burst, 5000))
    return a


def start_gateway(spec: str, name: str, home: Path, fake_port: int) -> tuple[str, int]:
    """`iflow2api serve` from the checkout in `spec` (with its extra settings), as run_bench
    starts it, pinned to CPU 1; (base URL, pid)."""
    directory, _, extra = spec.partition("?")
    code = Path(directory).resolve()
    own = home / name
    own.mkdir()
    env = run_bench.gateway_env(str(own), fake_port, code)
    env.update(dict(item.split("=", 1) for item in extra.split(",") if "=" in item))
    note = run_bench.prepare_gateway(env, own / "gateway.log", code)
    if note:
        print(note, flush=True)
    port = procs.free_port()
    proc = procs.start([sys.executable, "-m", "iflow2api_site.cli", "serve", "--port", str(port)],
                       run_bench.GATEWAY_CPU, own / "gateway.log", env=env, cwd=str(code))
    base = f"http://127.0.0.1:{port}"
    procs.wait_http(f"{base}/health", proc, 90)
    return base, proc.pid


def burst_round(targets: dict[str, tuple[str, int]], n: int, hold: float) -> dict[str, Any]:
    """One burst of n streams against every target at once; per target its CPU seconds and
    the burst's figures."""
    out: dict[str, Any] = {}
    before = {name: procs.cpu_seconds(procs.tree(pid)) for name, (_, pid) in targets.items()}

    def load(name: str, base: str, pid: int) -> None:
        out[name] = burst.one_round(base, pid, n, hold)

    threads = [threading.Thread(target=load, args=(name, base, pid))
               for name, (base, pid) in targets.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for name, (_, pid) in targets.items():
        out[name]["cpu_s"] = round(procs.cpu_seconds(procs.tree(pid)) - before[name], 3)
    return out


def main() -> int:
    args = parse_args()
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, run_bench.on_signal)
    if procs.TASKSET is None or (os.cpu_count() or 1) < 2:
        print("needs taskset and 2 CPUs: both servers share CPU 1, the load runs on CPU 0")
        return 2
    os.sched_setaffinity(0, {run_bench.LOAD_CPU})
    burst.raise_fd_limit(4 * args.burst + 1024)
    home = Path(tempfile.mkdtemp(prefix="iflow2api-ab-"))
    ratios: list[float] = []
    try:
        fake_port = procs.free_port()
        fake = f"http://127.0.0.1:{fake_port}"
        fake_proc = procs.start([sys.executable, str(run_bench.BENCH / "fake_upstream.py"),
                                 "--port", str(fake_port)], run_bench.LOAD_CPU,
                                home / "fake.log")
        procs.wait_http(f"{fake}/v1/models", fake_proc, 15)
        servers: dict[str, tuple[str, int]] = {}
        for name, spec in (("A", args.a), ("B", args.b)):
            if spec == "bare":
                base, meter = run_bench.start_bare(fake, str(home), True)
                servers[name] = (base, meter.pid)
            else:
                servers[name] = start_gateway(spec, name, home, fake_port)
            print(f"{name}: {spec} at {servers[name][0]}", flush=True)
        if args.burst:
            procs.http_post(f"{fake}/__config?chunks=20&chunk_delay_ms={args.hold * 50}", b"")

            def play(order: dict[str, Any]) -> dict[str, Any]:
                return burst_round(order, args.burst, args.hold)

            def ratio(r: dict[str, Any]) -> float:
                return float(r["A"]["cpu_s"] / r["B"]["cpu_s"])

            def describe(one: dict[str, Any]) -> str:
                return (f"{one['cpu_s']:.2f} s CPU, {one['streaming_peak']} at once, "
                        f"TTFB p99 {one['ttfb_p99_ms']} ms, errors {one['errors']}")

            what = f"CPU per burst of {args.burst}, A/B (lower: A is cheaper)"
            targets: dict[str, Any] = servers
        else:
            def play(order: dict[str, Any]) -> dict[str, Any]:
                return paired.one_round(order, args.kind, args.duration)

            def ratio(r: dict[str, Any]) -> float:
                return float(r["A"]["rps_per_cpu"] / r["B"]["rps_per_cpu"])

            def describe(one: dict[str, Any]) -> str:
                return (f"{one['rps']:,.0f} req/s at {one['cpu_pct']}% CPU, "
                        f"{one['rps_per_cpu']} per CPU-second, errors {one['errors']}")

            what = f"{args.kind} requests per CPU-second, A/B (higher: A is cheaper)"
            targets = {name: (base, procs.CpuMeter(pid)) for name, (base, pid) in servers.items()}
            paired.one_round(targets, args.kind, 2)  # warm-up
        for n in range(args.rounds):
            r = play(paired.alternating(targets, n))
            ratios.append(ratio(r))
            print(f"round {n + 1}: " + "; ".join(f"{name} {describe(r[name])}" for name in servers)
                  + f"; A/B {ratios[-1]:.3f}", flush=True)
        print(f"{what}: median {statistics.median(ratios):.3f}, lowest {min(ratios):.3f}, "
              f"highest {max(ratios):.3f}")
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        procs.stop_all()


if __name__ == "__main__":
    sys.exit(main())
