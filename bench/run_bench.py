"""One-command benchmark: our gateway against a fast fake upstream, the fake directly, and a
bare ASGI proxy under Daphne (the ceiling for our design), all in the same run.

  python bench/run_bench.py [--quick | --duration S] [--messages] [--responses] [--rss]
                            [--json FILE]

Starts bench/fake_upstream.py on CPU 0, `python -m iflow2api_site.cli serve` and the bare proxy
(bench/bare_proxy.py) on CPU 1 (taskset), measures with wrk (if installed; else the aiohttp
client) and the aiohttp client (TTFB) from CPU 0, then the c=1 tails with a sequential client
(seqclient.py) and connection bursts (burst.py); prints ours / direct / bare and ratios, and
stops everything it started. Only 127.0.0.1 is ever contacted. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import burst
import loadgen
import paired
import procs
import report
import seqclient
import wrkrun

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
LOAD_CPU, GATEWAY_CPU = 0, 1


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=10.0, help="seconds per run (default 10)")
    p.add_argument("--quick", action="store_true", help="3 s runs, 1 s warm-up")
    p.add_argument("--repeats", type=int, default=1, help="runs per case; medians are shown")
    p.add_argument("--messages", action="store_true", help="also Anthropic /v1/messages stream")
    p.add_argument("--responses", action="store_true",
                   help="also the OpenAI Responses stream (/v1/responses) beside the chat stream")
    p.add_argument("--rss", action="store_true", help="500 concurrent slow streams: peak RSS")
    p.add_argument("--streams", type=int, default=500, help="streams for --rss (default 500)")
    p.add_argument("--hold", type=float, default=5.0, help="seconds per slow stream (--rss)")
    p.add_argument("--no-wrk", action="store_true", help="use the aiohttp client even with wrk")
    p.add_argument("--no-bare", action="store_true", help="skip the bare Daphne+aiohttp proxy")
    p.add_argument("--seq", type=int, default=10_000,
                   help="requests of the sequential c=1 client per case (default 10000, "
                        "--quick 3000; 0 skips)")
    p.add_argument("--burst", default="500,2000", metavar="N,N",
                   help="streams opened at once per burst round (default 500,2000; '' skips)")
    p.add_argument("--rounds", type=int, default=3, help="burst rounds per size (--quick 2)")
    p.add_argument("--paired", type=int, default=5, metavar="N",
                   help="rounds of the paired share of the bare proxy: both loaded at the same "
                        "time on the same core (default 5, --quick 3; 0 skips)")
    p.add_argument("--json", metavar="FILE", help="write all results as JSON")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, database)")
    p.add_argument("--code", metavar="DIR", type=Path, default=REPO,
                   help="run the gateway from this checkout (e.g. a `git worktree` of an "
                        "earlier commit, for before/after runs with the same harness)")
    a = p.parse_args()
    if a.quick:
        a.duration = 3.0
        a.seq = min(a.seq, 3000)
        a.rounds = min(a.rounds, 2)
        a.paired = min(a.paired, 3)
    a.burst_sizes = [max(1, min(int(n), 5000)) for n in a.burst.split(",") if n.strip()]
    a.rounds = max(1, min(a.rounds, 10))
    a.paired = max(0, min(a.paired, 20))
    a.warmup = 1.0 if a.quick else 2.0
    a.repeats = max(1, min(a.repeats, 10))
    a.streams = max(1, min(a.streams, 5000))
    return a


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out = dict(runs[-1])
    for key, val in runs[0].items():
        if isinstance(val, int | float) and key not in ("ok", "errors"):
            vals = [r[key] for r in runs if r.get(key) is not None]
            out[key] = round(statistics.median(vals), 3) if vals else None
    out["ok"] = sum(r["ok"] for r in runs)
    out["errors"] = sum(r["errors"] for r in runs)
    kinds: dict[str, int] = {}
    for r in runs:
        for k, n in r["error_kinds"].items():
            kinds[k] = kinds.get(k, 0) + n
    out["error_kinds"], out["runs"] = kinds, len(runs)
    return out


def measure(base: str, kind: str, conc: int, duration: float, tool: str, meter: procs.CpuMeter,
            ) -> dict[str, Any]:
    meter.start()
    if tool == "wrk":
        result = wrkrun.run(base, kind, conc, duration, LOAD_CPU)
    else:
        result = loadgen.new_loop_run(lambda: loadgen.load(base, kind, conc, duration)).summary()
    result["cpu_pct"] = meter.stop()
    result["tool"] = tool
    return result


# The APIs only the gateway speaks (the fake and the bare proxy speak OpenAI chat).
OURS_ONLY = ("messages_stream", "responses_stream")


def kinds_of(extra: tuple[str, ...]) -> tuple[str, ...]:
    return ("chat", "chat_stream", *extra)


def run_cases(args: argparse.Namespace, targets: dict[str, tuple[str, procs.CpuMeter]],
              extra: tuple[str, ...]) -> dict[str, Any]:
    tool = "wrk" if wrkrun.available() and not args.no_wrk else "aiohttp"
    plan: list[tuple[str, int, str]] = [("chat", 1, tool), ("chat", 50, tool),
                                        ("chat_stream", 50, tool),
                                        ("chat_stream", 1, "aiohttp"),
                                        ("chat_stream", 50, "aiohttp")]
    for kind in extra:
        plan += [(kind, 50, tool), (kind, 1, "aiohttp"), (kind, 50, "aiohttp")]
    for kind in kinds_of(extra):
        for name, (base, _) in targets.items():
            if kind in OURS_ONLY and name != "ours":
                continue
            loadgen.new_loop_run(lambda b=base, k=kind: loadgen.load(b, k, 10, args.warmup))
    cases: dict[str, Any] = {}
    for kind, conc, how in plan:
        key = f"{kind}@{conc}" + ("/ttfb" if how == "aiohttp" and kind != "chat" else "")
        if key in cases:
            continue  # aiohttp already measured both req/s and TTFB for this case
        runs: dict[str, list[dict[str, Any]]] = {}
        for _ in range(args.repeats):
            for name, (base, meter) in targets.items():
                if kind in OURS_ONLY and name != "ours":
                    continue
                r = measure(base, kind, conc, args.duration, how, meter)
                runs.setdefault(name, []).append(r)
                print(f"  {time.strftime('%H:%M:%S')} {name:6} {kind:16} c={conc:<3} {how:7} "
                      f"{r['rps']:>9,.0f} req/s  "
                      f"p50 {r['p50_ms']} ms  ttfb p50 {r['ttfb_p50_ms']} ms  "
                      f"errors {r['errors']}  cpu {r['cpu_pct']}%", flush=True)
        cases[key] = {name: median_of(rs) for name, rs in runs.items()}
        if how == "aiohttp" and kind != "chat" and f"{kind}@{conc}" not in cases:
            cases[f"{kind}@{conc}"] = cases[key]
    return cases


def sequential(targets: dict[str, tuple[str, procs.CpuMeter]], n: int, extra: tuple[str, ...],
               ) -> dict[str, Any]:
    """c=1 tails: per kind and target, `n` requests one after another on one connection."""
    out: dict[str, Any] = {}
    for kind in kinds_of(extra):
        for name, (base, meter) in targets.items():
            if kind in OURS_ONLY and name != "ours":
                continue
            meter.start()
            r = seqclient.run(base, kind, n)
            r["cpu_pct"] = meter.stop()
            out.setdefault(kind, {})[name] = r
            what = "total" if kind == "chat" else "TTFB"
            key = "" if kind == "chat" else "ttfb_"
            print(f"  {time.strftime('%H:%M:%S')} {name:6} {kind:16} c=1 sequential "
                  f"{r['rps']:>7,.0f} req/s  {what} p50 {r[key + 'p50_ms']} p99 "
                  f"{r[key + 'p99_ms']} p99.9 {r[key + 'p999_ms']} ms  errors {r['errors']}",
                  flush=True)
    return out


def probe(gw: str, kind: str) -> str | None:
    """None when the gateway streams this kind properly, else why it is n/a."""
    path = loadgen.path_for(kind)
    body = json.dumps(loadgen.body_for(kind)).encode()
    try:
        status, data = procs.http_post(gw + path, body, timeout=15)
    except OSError as exc:
        return f"{path} n/a: {exc!r}"
    if status == 200 and loadgen.valid(kind, data):
        return None
    return f"{path} n/a: HTTP {status} {data[:120].decode('utf-8', 'replace')!r}"


def rss_test(args: argparse.Namespace, fake: str, targets: dict[str, tuple[str, int]],
             ) -> dict[str, Any]:
    gap_ms = args.hold * 1000 / 20
    procs.http_post(f"{fake}/__config?chunks=20&chunk_delay_ms={gap_ms}", b"")
    out: dict[str, Any] = {"n": args.streams, "gap_ms": gap_ms}
    try:
        for name, (base, pid) in targets.items():
            idle = procs.rss_kib(procs.tree(pid))
            peak = [idle]

            def sample(pid: int = pid, peak: list[int] = peak) -> None:
                peak[0] = max(peak[0], procs.rss_kib(procs.tree(pid)))

            limit = args.hold * 3 + 25
            run = loadgen.new_loop_run(lambda b=base, s=sample, t=limit: loadgen.hold(
                b, "chat_stream", args.streams, t, s))
            r = run.summary()
            r.update(idle_rss_mb=round(idle / 1024, 1), peak_rss_mb=round(peak[0] / 1024, 1))
            out[name] = r
            print(f"  {time.strftime('%H:%M:%S')} {name:6} {args.streams} slow streams: "
                  f"{r['ok']} OK, "
                  f"{r['streaming_peak']} at once, peak RSS {r['peak_rss_mb']} MB, "
                  f"errors {r['errors']}", flush=True)
    finally:
        procs.http_post(f"{fake}/__config?chunks=20&chunk_delay_ms=0", b"")
    return out


def gateway_env(home: str, fake_port: int, code: Path = REPO) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("IFLOW", "UPSTREAM_", "DJANGO_", "ANTHROPIC_", "OPENAI_"))}
    env.update(IFLOW2API_HOME=home, IMPORT_IFLOW_SETTINGS="0", PYTHONUNBUFFERED="1",
               UPSTREAM_BASE_URL=f"http://127.0.0.1:{fake_port}/v1", UPSTREAM_API_KEY="sk-bench",
               UPSTREAM_MODELS="bench-model", METRICS_ENABLED="1")
    if code != REPO:  # that checkout's packages, not the installed (editable) ones
        env["PYTHONPATH"] = str(code)
    return env


# Every feature on: besides the request log, live status and metrics (METRICS_ENABLED above),
# one rate rule on the default instance, generous enough never to refuse a bench request.
RATE_RULE = """
from django.conf import settings
from instances.models import RateRule
from instances.services import ensure_default_instance
conf = settings.IFLOW2API
instance = ensure_default_instance(conf["HOST"], conf["PORT"])
RateRule.objects.get_or_create(name="bench", defaults=dict(
    scope="instance", instance=instance, requests_per_minute=100_000_000,
    concurrent_streams=1_000_000))
"""


def prepare_gateway(env: dict[str, str], log: Path, code: Path = REPO) -> str:
    """Migrates and adds the rate rule before `serve`; returns a note when that failed."""
    cli = [sys.executable, "-m", "iflow2api_site.cli"]
    for argv in ([*cli, "migrate", "--verbosity", "0"], [*cli, "shell", "-c", RATE_RULE]):
        with open(log, "ab") as out:
            done = subprocess.run(argv, env=env, cwd=str(code), stdout=out,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  timeout=180, check=False)
        if done.returncode:
            return f"note: {argv[3]} failed ({log}): running without the rate rule"
    return ""


def log_problems(log: Path, limit: int = 60) -> list[str]:
    """Distinct WARNING/ERROR/traceback records of the gateway log, each with its count."""
    if not log.exists():
        return []
    stamp = re.compile(r"^\d{4}-\d\d-\d\d[ T][\d:,.]+ ")
    records: list[list[str]] = []
    for line in log.read_text("utf-8", "replace").splitlines()[:500_000]:
        if stamp.match(line) or not records:
            records.append([line])
        else:
            records[-1].append(line)
    seen: dict[str, list[str]] = {}
    counts: dict[str, int] = {}
    bad = re.compile(r"\b(WARNING|ERROR|CRITICAL)\b|Traceback")
    for rec in records:
        if not any(bad.search(ln) for ln in rec) or "shutting down:" in rec[0]:
            continue  # the drain at the end of the run is expected
        key = stamp.sub("", rec[0]) + " | " + rec[-1]
        seen.setdefault(key, rec[:16])
        counts[key] = counts.get(key, 0) + 1
    out: list[str] = []
    for key, rec in seen.items():
        out.append(f"[{counts[key]}x] " + rec[0])
        out.extend("      " + ln for ln in rec[1:])
    return out[:limit]


def start_bare(fake: str, home: str, pinned: bool) -> tuple[str, procs.CpuMeter]:
    """bench/bare_proxy.py under Daphne (its defaults), pinned like the gateway."""
    port = procs.free_port()
    env = dict(os.environ, BARE_UPSTREAM=f"{fake}/v1", PYTHONUNBUFFERED="1")
    proc = procs.start([sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                        "bare_proxy:app"], GATEWAY_CPU if pinned else None,
                       Path(home) / "bare.log", env=env, cwd=str(BENCH))
    base = f"http://127.0.0.1:{port}"
    procs.wait_http(f"{base}/v1/models", proc, 30)
    return base, procs.CpuMeter(proc.pid)


def on_signal(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # so that the finally block stops every child


def main() -> int:
    args = parse_args()
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):  # SIGINT: even if inherited
        signal.signal(sig, on_signal)                             # as ignored (background job)
    fds = burst.raise_fd_limit(2 * max(args.burst_sizes, default=0) + 1024)
    if args.burst_sizes and fds < max(args.burst_sizes) + 100:
        print(f"note: only {fds} file descriptors allowed: bursts will fail", flush=True)
    pinned = procs.TASKSET is not None and (os.cpu_count() or 1) >= 2
    if pinned:
        os.sched_setaffinity(0, {LOAD_CPU})  # the aiohttp client runs in this process
    else:
        print("note: taskset missing or fewer than 2 CPUs: running unpinned", flush=True)
    home = tempfile.mkdtemp(prefix="iflow2api-bench-")
    gw_log = Path(home) / "gateway.log"
    results: dict[str, Any] = {"meta": {"duration_s": args.duration, "repeats": args.repeats,
                                        "pinned": pinned, "wrk": bool(wrkrun.available()
                                                                      and not args.no_wrk)}}
    code, gw_proc = 1, None
    try:
        fake_port, gw_port = procs.free_port(), procs.free_port()
        fake, gw = f"http://127.0.0.1:{fake_port}", f"http://127.0.0.1:{gw_port}"
        fake_proc = procs.start([sys.executable, str(BENCH / "fake_upstream.py"), "--port",
                                 str(fake_port)], LOAD_CPU if pinned else None,
                                Path(home) / "fake.log")
        procs.wait_http(f"{fake}/v1/models", fake_proc, 15)
        note = prepare_gateway(gateway_env(home, fake_port, args.code), gw_log, args.code)
        if note:
            print(note, flush=True)
        gw_proc = procs.start([sys.executable, "-m", "iflow2api_site.cli", "serve", "--port",
                               str(gw_port)], GATEWAY_CPU if pinned else None, gw_log,
                              env=gateway_env(home, fake_port, args.code),
                              cwd=str(args.code))
        took = procs.wait_http(f"{gw}/health", gw_proc, 90)
        print(f"fake upstream {fake} (pid {fake_proc.pid}), gateway {gw} (pid {gw_proc.pid}, "
              f"healthy after {took:.1f} s), temp dir {home}", flush=True)
        messages_na = probe(gw, "messages_stream") if args.messages else None
        responses_na = probe(gw, "responses_stream") if args.responses else None
        for note in (messages_na, responses_na):
            if note:
                print(f"  {note}", flush=True)
        targets = {"ours": (gw, procs.CpuMeter(gw_proc.pid)),
                   "direct": (fake, procs.CpuMeter(fake_proc.pid))}
        if not args.no_bare:
            targets["bare"] = start_bare(fake, home, pinned)
        extra = tuple(kind for kind, on in (("messages_stream", args.messages and not messages_na),
                                            ("responses_stream", args.responses and not
                                             responses_na)) if on)
        cases = run_cases(args, targets, extra)
        seq = sequential(targets, args.seq, extra) if args.seq > 0 else {}
        shares = paired.run({"ours": targets["ours"], "bare": targets["bare"]}, args.paired,
                            args.duration) if args.paired and "bare" in targets else None
        bursts = burst.run(fake, {"ours": (gw, gw_proc.pid), "direct": (fake, fake_proc.pid)},
                           args.burst_sizes, args.rounds, args.hold) if args.burst_sizes else None
        rss = rss_test(args, fake, {"ours": (gw, gw_proc.pid), "direct": (fake, fake_proc.pid)}
                       ) if args.rss else None
        if gw_proc.poll() is not None:
            print(f"!! the gateway exited with {gw_proc.returncode} during the run")
        apis = report.Apis(args.messages, messages_na, args.responses, responses_na)
        text, data = report.summary(cases, apis, rss, seq, bursts, shares)
        print("\n" + report.table(cases, apis, rss) + "\n")
        for extra in (report.seq_table(seq, cases), report.burst_table(bursts)):
            if extra:
                print(extra + "\n")
        errs = report.error_lines(cases)
        if errs:
            print("errors:\n" + "\n".join(errs) + "\n")
        print(text)
        results.update(cases=cases, seq=seq, bursts=bursts, rss=rss, paired=shares, summary=data,
                       messages_na=messages_na, responses_na=responses_na)
        code = 0
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        code = 130
    except Exception as exc:
        print(f"\nbench failed: {exc!r}", file=sys.stderr)
    finally:
        procs.stop_all()
        problems = log_problems(gw_log)
        if problems:
            print(f"\ngateway log ({gw_log}): distinct warnings/errors, with counts:")
            print("\n".join("  " + ln for ln in problems))
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2, default=str))
            print(f"results written to {args.json}")
        if args.keep or problems or code:
            print(f"temp dir kept: {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
