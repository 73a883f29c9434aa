"""The share of the bare proxy, measured with both servers loaded at the same time.

The back-to-back runs of run_bench.py give the gateway a few seconds and the bare proxy the next
few: on a machine whose speed moves from second to second (a virtual machine with noisy
neighbours) their ratio moves by tens of percent between runs. Here both servers, pinned to the
same core, each get their own wrk (c=50) at the same moment; the kernel shares the core between
them, and each one's requests per CPU-second of its own use is its cost per request, under the
same conditions as the other's. The ratio of the two is the share, one per round; the median of
the rounds is reported beside the lowest and highest.
"""

from __future__ import annotations

import statistics
import threading
import time
from typing import Any

import procs
import wrkrun

KINDS = ("chat", "chat_stream")


def one_round(targets: dict[str, tuple[str, procs.CpuMeter]], kind: str,
              duration: float) -> dict[str, dict[str, Any]]:
    """wrk c=50 against every target at once; per target its req/s, CPU % and req per
    CPU-second."""
    results: dict[str, dict[str, Any]] = {}

    def load(name: str, base: str) -> None:
        results[name] = wrkrun.run(base, kind, 50, duration, 0)

    threads = [threading.Thread(target=load, args=(name, base))
               for name, (base, _) in targets.items()]
    for _, meter in targets.values():
        meter.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    out = {}
    for name, (_, meter) in targets.items():
        cpu = meter.stop()
        r = results[name]
        out[name] = {"rps": r["rps"], "cpu_pct": cpu, "errors": r["errors"],
                     "rps_per_cpu": round(100 * r["rps"] / cpu, 1) if cpu else None}
    return out


def alternating(targets: dict[str, Any], n: int) -> dict[str, Any]:
    """The targets in the order round `n` starts them: it alternates, as the order alone moved
    a comparison of the same code on both sides by ~2 % (against the one started first)."""
    return dict(sorted(targets.items(), reverse=n % 2 == 1))


def run(targets: dict[str, tuple[str, procs.CpuMeter]], rounds: int,
        duration: float) -> dict[str, Any]:
    """{kind: {"rounds": [...], "shares": [...], "median", "min", "max"}} for ours/bare."""
    out: dict[str, Any] = {}
    for kind in KINDS:
        per: list[dict[str, Any]] = []
        for n in range(rounds):
            r = one_round(alternating(targets, n), kind, duration)
            per.append(r)
            o, b = r["ours"], r["bare"]
            print(f"  {time.strftime('%H:%M:%S')} paired {kind:12} round {n + 1}: ours "
                  f"{o['rps']:,.0f} req/s at {o['cpu_pct']}% CPU, bare {b['rps']:,.0f} req/s at "
                  f"{b['cpu_pct']}% CPU; errors {o['errors']}/{b['errors']}", flush=True)
        shares = [r["ours"]["rps_per_cpu"] / r["bare"]["rps_per_cpu"] for r in per
                  if r["ours"]["rps_per_cpu"] and r["bare"]["rps_per_cpu"]]
        out[kind] = {"rounds": per, "shares": [round(s, 3) for s in shares],
                     "median": round(statistics.median(shares), 3) if shares else None,
                     "min": round(min(shares), 3) if shares else None,
                     "max": round(max(shares), 3) if shares else None,
                     "errors": sum(r[t]["errors"] for r in per for t in r)}
    return out
