"""The connection burst: N streaming requests opened at once, several rounds, same server.

The fake upstream paces 20 SSE events `hold`/20 s apart, so every stream lasts `hold` seconds
and all N must be open together. Per round: time to first byte (TTFB, from opening the
connection to the first `data:` bytes) p50/p99, the largest number of streams receiving data
at the same moment ("streaming at once"), completed streams, errors and the peak RSS of the
target's process tree. A server that accepts connections slowly (a small listen backlog: SYNs
dropped, retransmitted after 1 s, 3 s, 7 s) shows a TTFB p99 of seconds and fewer at once.
"""

from __future__ import annotations

import resource
import time
from typing import Any

import loadgen
import procs


def raise_fd_limit(wanted: int) -> int:
    """This process opens `wanted` sockets at once; children started later inherit the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def one_round(base: str, pid: int, n: int, hold: float) -> dict[str, Any]:
    idle = procs.rss_kib(procs.tree(pid))
    peak = [idle]

    def sample() -> None:
        peak[0] = max(peak[0], procs.rss_kib(procs.tree(pid)))

    limit = hold * 3 + 25
    run = loadgen.new_loop_run(lambda: loadgen.hold(base, "chat_stream", n, limit, sample))
    r = run.summary()
    r.update(idle_rss_mb=round(idle / 1024, 1), peak_rss_mb=round(peak[0] / 1024, 1))
    return r


def run(fake: str, targets: dict[str, tuple[str, int]], sizes: list[int], rounds: int,
        hold: float) -> dict[str, Any]:
    """Rounds alternate between the targets, so both see the same machine."""
    gap_ms = hold * 1000 / 20
    procs.http_post(f"{fake}/__config?chunks=20&chunk_delay_ms={gap_ms}", b"")
    out: dict[str, Any] = {"gap_ms": gap_ms, "hold_s": hold, "sizes": {}}
    try:
        for n in sizes:
            per: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
            for i in range(rounds):
                for name, (base, pid) in targets.items():
                    r = one_round(base, pid, n, hold)
                    per[name].append(r)
                    print(f"  {time.strftime('%H:%M:%S')} {name:6} burst {n:>5} round {i + 1}: "
                          f"{r['streaming_peak']:>5} streaming at once, {r['ok']} OK, "
                          f"TTFB p50 {r['ttfb_p50_ms']} ms p99 {r['ttfb_p99_ms']} ms, "
                          f"peak RSS {r['peak_rss_mb']} MB, errors {r['errors']}", flush=True)
            out["sizes"][str(n)] = per
    finally:
        procs.http_post(f"{fake}/__config?chunks=20&chunk_delay_ms=0", b"")
    return out
