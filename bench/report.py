"""The printed table and summary of run_bench.py (plain text)."""

from __future__ import annotations

from typing import Any

# (label, case key, field); a case key is "<kind>@<concurrency>[/ttfb]"
ROWS: list[tuple[str, str, str]] = [
    ("non-stream c=1 req/s", "chat@1", "rps"),
    ("non-stream c=1 p50 ms", "chat@1", "p50_ms"),
    ("non-stream c=50 req/s", "chat@50", "rps"),
    ("non-stream c=50 p50 ms", "chat@50", "p50_ms"),
    ("stream c=50 req/s", "chat_stream@50", "rps"),
    ("stream c=50 p50 ms (whole stream)", "chat_stream@50", "p50_ms"),
    ("stream TTFB c=1 p50 ms", "chat_stream@1/ttfb", "ttfb_p50_ms"),
    ("stream TTFB c=1 p99 ms", "chat_stream@1/ttfb", "ttfb_p99_ms"),
    ("stream TTFB c=50 p50 ms", "chat_stream@50/ttfb", "ttfb_p50_ms"),
    ("stream TTFB c=50 p99 ms", "chat_stream@50/ttfb", "ttfb_p99_ms"),
]
MESSAGE_ROWS: list[tuple[str, str, str]] = [
    ("messages stream c=50 req/s", "messages_stream@50", "rps"),
    ("messages TTFB c=1 p50 ms", "messages_stream@1/ttfb", "ttfb_p50_ms"),
    ("messages TTFB c=1 p99 ms", "messages_stream@1/ttfb", "ttfb_p99_ms"),
    ("messages TTFB c=50 p50 ms", "messages_stream@50/ttfb", "ttfb_p50_ms"),
    ("messages TTFB c=50 p99 ms", "messages_stream@50/ttfb", "ttfb_p99_ms"),
]
# direct counterpart of the Anthropic rows: the same OpenAI stream straight at the fake
MESSAGE_DIRECT = {"messages_stream@50": "chat_stream@50",
                  "messages_stream@1/ttfb": "chat_stream@1/ttfb",
                  "messages_stream@50/ttfb": "chat_stream@50/ttfb"}


def fmt(v: float | None, digits: int = 2) -> str:
    if v is None:
        return "n/a"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.{digits}f}"


def ratio(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or not b else f"{a / b:.2f}x"


def get(cases: dict[str, Any], key: str, target: str, field: str) -> float | None:
    case = cases.get(key, {}).get(target)
    return None if not case else case.get(field)


def added(cases: dict[str, Any], key: str, field: str) -> float | None:
    ours, direct = get(cases, key, "ours", field), get(cases, key, "direct", field)
    return None if ours is None or direct is None else round(ours - direct, 3)


def table(cases: dict[str, Any], messages: bool, messages_na: str | None,
          rss: dict[str, Any] | None) -> str:
    head = f"{'metric':36} {'ours':>9} {'direct':>9} {'ours/dir':>9} {'errors o/d':>11} " \
           f"{'CPU% gw/fake':>13}"
    lines = [head, "-" * len(head)]
    for label, key, field in ROWS + (MESSAGE_ROWS if messages else []):
        dkey = MESSAGE_DIRECT.get(key, key)
        o, d = get(cases, key, "ours", field), get(cases, dkey, "direct", field)
        eo, ed = get(cases, key, "ours", "errors"), get(cases, dkey, "direct", "errors")
        co, cd = get(cases, key, "ours", "cpu_pct"), get(cases, dkey, "direct", "cpu_pct")
        errs = f"{fmt(eo, 0)}/{fmt(ed, 0)}"
        cpu = f"{fmt(co, 0)}/{fmt(cd, 0)}"
        if key.startswith("messages") and messages_na:
            o, d, errs, cpu = None, None, "-", "-"
        lines.append(f"{label:36} {fmt(o):>9} {fmt(d):>9} {ratio(o, d):>9} {errs:>11} {cpu:>13}")
    lines.append(f"{'added p50 at c=1 ms (non-stream)':36} "
                 f"{fmt(added(cases, 'chat@1', 'p50_ms'), 3):>9}")
    lines.append(f"{'added TTFB p50 at c=1 ms (stream)':36} "
                 f"{fmt(added(cases, 'chat_stream@1/ttfb', 'ttfb_p50_ms'), 3):>9}")
    if messages:
        note = f"  ({messages_na})" if messages_na else \
            "  (direct column for messages = the OpenAI stream straight at the fake)"
        lines.append(note)
    if rss:
        for label, field in (("slow streams: streaming at once", "streaming_peak"),
                             ("slow streams: completed OK", "ok"),
                             ("slow streams: peak RSS MB", "peak_rss_mb"),
                             ("slow streams: idle RSS MB", "idle_rss_mb")):
            o, d = rss["ours"].get(field), rss["direct"].get(field)
            errs = f"{rss['ours']['errors']}/{rss['direct']['errors']}"
            lines.append(f"{label:36} {fmt(o, 1):>9} {fmt(d, 1):>9} {ratio(o, d):>9} {errs:>11}")
        lines.append(f"  ({rss['n']} streams, {rss['gap_ms']:.0f} ms between events; "
                     "RSS of gateway tree / of the fake upstream)")
    return "\n".join(lines)


def error_lines(cases: dict[str, Any]) -> list[str]:
    out = []
    for key, per in cases.items():
        for target, r in per.items():
            for kind, n in (r.get("error_kinds") or {}).items():
                sample = (r.get("error_samples") or {}).get(kind, "")
                out.append(f"  {target:6} {key:24} {kind}: {n}  e.g. {sample[:160]!r}")
    return out


def summary(cases: dict[str, Any], messages: bool, messages_na: str | None,
            rss: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    def check(name: str, value: float | None, target: float, higher: bool, unit: str) -> str:
        if value is None:
            return f"  {name:34} n/a (target {'>=' if higher else '<='} {target:g} {unit})"
        good = value >= target if higher else value <= target
        return (f"  {name:34} {fmt(value)} {unit}  (target {'>=' if higher else '<='} "
                f"{target:g}: {'met' if good else 'NOT met'})")

    nonstream = get(cases, "chat@50", "ours", "rps")
    stream = get(cases, "chat_stream@50", "ours", "rps")
    msgs = None if messages_na else get(cases, "messages_stream@50", "ours", "rps")
    add = added(cases, "chat@1", "p50_ms")
    lines = ["SUMMARY (gateway on one core; ratios are against the fake upstream directly)",
             check("non-stream c=50", nonstream, 1000, True, "req/s"),
             check("OpenAI stream c=50", stream, 600, True, "req/s")]
    if messages:
        lines.append(check("Anthropic stream c=50", msgs, 500, True, "req/s"))
    lines.append(check("added p50 at c=1", add, 1.0, False, "ms"))
    data: dict[str, Any] = {"nonstream_c50_rps": nonstream, "stream_c50_rps": stream,
                            "messages_stream_c50_rps": msgs, "added_p50_c1_ms": add}
    if rss:
        peak, at_once = rss["ours"]["peak_rss_mb"], rss["ours"]["streaming_peak"]
        lines.append(check("slow streams peak RSS", peak, 150, False, "MB"))
        lines.append(f"  {'slow streams streaming at once':34} {at_once} of {rss['n']}")
        data.update(rss_peak_mb=peak, streams_at_once=at_once)
    total = sum(r.get("errors", 0) for per in cases.values() for r in per.values())
    lines.append(f"  {'errors (all runs)':34} {total}")
    data["errors"] = total
    return "\n".join(lines), data
