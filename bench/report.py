"""The printed table and summary of run_bench.py (plain text)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# (label, case key, field); a case key is "<kind>@<concurrency>[/ttfb]"
ROWS: list[tuple[str, str, str]] = [
    ("non-stream c=1 req/s", "chat@1", "rps"),
    ("non-stream c=1 p50 ms", "chat@1", "p50_ms"),
    ("non-stream c=50 req/s", "chat@50", "rps"),
    ("non-stream c=50 p50 ms", "chat@50", "p50_ms"),
    ("non-stream c=50 req per CPU-second", "chat@50", "rps_per_cpu"),
    ("stream c=50 req/s", "chat_stream@50", "rps"),
    ("stream c=50 p50 ms (whole stream)", "chat_stream@50", "p50_ms"),
    ("stream c=50 req per CPU-second", "chat_stream@50", "rps_per_cpu"),
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
RESPONSE_ROWS: list[tuple[str, str, str]] = [
    ("responses stream c=50 req/s", "responses_stream@50", "rps"),
    ("responses stream c=50 p50 ms (whole)", "responses_stream@50", "p50_ms"),
    ("responses stream c=50 p99 ms (whole)", "responses_stream@50", "p99_ms"),
    ("responses stream c=50 req per CPU-s", "responses_stream@50", "rps_per_cpu"),
    ("responses stream c=1 req/s", "responses_stream@1/ttfb", "rps"),
    ("responses TTFB c=1 p50 ms", "responses_stream@1/ttfb", "ttfb_p50_ms"),
    ("responses TTFB c=1 p99 ms", "responses_stream@1/ttfb", "ttfb_p99_ms"),
    ("responses TTFB c=50 p50 ms", "responses_stream@50/ttfb", "ttfb_p50_ms"),
    ("responses TTFB c=50 p99 ms", "responses_stream@50/ttfb", "ttfb_p99_ms"),
]
# direct counterpart of the Anthropic and Responses rows: the OpenAI stream straight at the fake
OTHER_API_DIRECT = {f"{api}_stream{case}": f"chat_stream{case}"
                    for api in ("messages", "responses")
                    for case in ("@50", "@1/ttfb", "@50/ttfb")}
# Responses beside chat (ours, same run): the goal is >= 90 % of the chat stream's throughput.
RESPONSES_VS_CHAT = [("c=50 req/s", "@50", "rps"), ("c=1 req/s", "@1/ttfb", "rps"),
                     ("c=50 per CPU-s", "@50", "rps_per_cpu")]


@dataclass(frozen=True)
class Apis:
    """Which other APIs were asked for, and why each is n/a (None: measured)."""

    messages: bool = False
    messages_na: str | None = None
    responses: bool = False
    responses_na: str | None = None


def fmt(v: float | None, digits: int = 2) -> str:
    if v is None:
        return "n/a"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.{digits}f}"


def ratio(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or not b else f"{a / b:.2f}x"


def get(cases: dict[str, Any], key: str, target: str, field: str) -> float | None:
    case = cases.get(key, {}).get(target)
    if case and field == "rps_per_cpu":  # cost per request, whatever else shared the core
        rps, cpu = case.get("rps"), case.get("cpu_pct")
        return round(rps / (cpu / 100), 1) if rps and cpu else None
    return None if not case else case.get(field)


def added(cases: dict[str, Any], key: str, field: str) -> float | None:
    ours, direct = get(cases, key, "ours", field), get(cases, key, "direct", field)
    return None if ours is None or direct is None else round(ours - direct, 3)


def table(cases: dict[str, Any], apis: Apis, rss: dict[str, Any] | None) -> str:
    has_bare = any("bare" in per for per in cases.values())
    head = f"{'metric':36} {'ours':>9} {'direct':>9} {'ours/dir':>9} {'errors o/d':>11} " \
           f"{'CPU% gw/fake':>13}" + (f" {'bare':>9} {'ours/bare':>9}" if has_bare else "")
    lines = [head, "-" * len(head)]
    rows = ROWS + (MESSAGE_ROWS if apis.messages else []) + (
        RESPONSE_ROWS if apis.responses else [])
    for label, key, field in rows:
        dkey = OTHER_API_DIRECT.get(key, key)
        o, d = get(cases, key, "ours", field), get(cases, dkey, "direct", field)
        b = get(cases, dkey, "bare", field)
        eo, ed = get(cases, key, "ours", "errors"), get(cases, dkey, "direct", "errors")
        co, cd = get(cases, key, "ours", "cpu_pct"), get(cases, dkey, "direct", "cpu_pct")
        errs = f"{fmt(eo, 0)}/{fmt(ed, 0)}"
        cpu = f"{fmt(co, 0)}/{fmt(cd, 0)}"
        if (key.startswith("messages") and apis.messages_na) or (
                key.startswith("responses") and apis.responses_na):
            o, d, errs, cpu = None, None, "-", "-"
        line = f"{label:36} {fmt(o):>9} {fmt(d):>9} {ratio(o, d):>9} {errs:>11} {cpu:>13}"
        if has_bare:
            line += f" {fmt(b):>9} {ratio(o, b):>9}"
        lines.append(line)
    lines.append(f"{'added p50 at c=1 ms (non-stream)':36} "
                 f"{fmt(added(cases, 'chat@1', 'p50_ms'), 3):>9}")
    lines.append(f"{'added TTFB p50 at c=1 ms (stream)':36} "
                 f"{fmt(added(cases, 'chat_stream@1/ttfb', 'ttfb_p50_ms'), 3):>9}")
    for asked, na in ((apis.messages, apis.messages_na), (apis.responses, apis.responses_na)):
        if asked and na:
            lines.append(f"  ({na})")
    if (apis.messages and not apis.messages_na) or (apis.responses and not apis.responses_na):
        lines.append("  (direct column for messages / responses = the OpenAI chat stream "
                     "straight at the fake)")
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


def summary(cases: dict[str, Any], apis: Apis,
            rss: dict[str, Any] | None, seq: dict[str, Any] | None = None,
            bursts: dict[str, Any] | None = None,
            shares: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    def check(name: str, value: float | None, target: float, higher: bool, unit: str) -> str:
        if value is None:
            return f"  {name:34} n/a (target {'>=' if higher else '<='} {target:g} {unit})"
        good = value >= target if higher else value <= target
        return (f"  {name:34} {fmt(value)} {unit}  (target {'>=' if higher else '<='} "
                f"{target:g}: {'met' if good else 'NOT met'})")

    nonstream = get(cases, "chat@50", "ours", "rps")
    stream = get(cases, "chat_stream@50", "ours", "rps")
    msgs = None if apis.messages_na else get(cases, "messages_stream@50", "ours", "rps")
    add = added(cases, "chat@1", "p50_ms")
    lines = ["SUMMARY (gateway on one core; ratios are against the fake upstream directly)",
             check("non-stream c=50", nonstream, 1000, True, "req/s"),
             check("OpenAI stream c=50", stream, 600, True, "req/s")]
    if apis.messages:
        lines.append(check("Anthropic stream c=50", msgs, 500, True, "req/s"))
    lines.append(check("added p50 at c=1", add, 1.0, False, "ms"))
    data: dict[str, Any] = {"nonstream_c50_rps": nonstream, "stream_c50_rps": stream,
                            "messages_stream_c50_rps": msgs, "added_p50_c1_ms": add}
    if apis.responses:
        more, more_data = responses_lines(cases, seq or {}, apis.responses_na)
        lines += more
        data.update(more_data)
    if rss:
        peak, at_once = rss["ours"]["peak_rss_mb"], rss["ours"]["streaming_peak"]
        lines.append(check("slow streams peak RSS", peak, 150, False, "MB"))
        lines.append(f"  {'slow streams streaming at once':34} {at_once} of {rss['n']}")
        data.update(rss_peak_mb=peak, streams_at_once=at_once)
    more, more_data = target_lines(seq or {}, cases, bursts, shares)
    lines += more
    data.update(more_data)
    total = sum(r.get("errors", 0) for per in cases.values() for r in per.values())
    lines.append(f"  {'errors (all runs)':34} {total}")
    data["errors"] = total
    return "\n".join(lines), data


SEQ_COLUMNS = [("chat", "p50_ms"), ("chat", "p99_ms"), ("chat", "p999_ms"),
               ("chat_stream", "ttfb_p50_ms"), ("chat_stream", "ttfb_p99_ms"),
               ("chat_stream", "ttfb_p999_ms")]
C50_COLUMNS = [("chat@50", "rps"), ("chat@50", "p50_ms"), ("chat@50", "p99_ms"),
               ("chat_stream@50", "rps")]


def seq_table(seq: dict[str, Any], cases: dict[str, Any]) -> str:
    """c=1 from the sequential client (ms), c=50 from wrk/aiohttp; ratios within this run."""
    if not seq:
        return ""
    n = next(iter(seq["chat"].values()))["ok"] if seq.get("chat") else 0
    head = (f"{'c=1 sequential (ms) | c=50':14} {'p50':>7} {'p99':>7} {'p99.9':>7} "
            f"{'TTFB p50':>9} {'p99':>7} {'p99.9':>7} | {'c=50 rps':>8} {'p50':>7} {'p99':>7} "
            f"{'strm rps':>8}")
    lines = [f"non-stream total / stream TTFB at c=1 ({n} requests one after another on one "
             "connection); c=50 non-stream and stream", head, "-" * len(head)]
    rows: dict[str, list[float | None]] = {}
    for target in ("ours", "bare", "direct"):
        if target not in seq.get("chat", {}):
            continue
        rows[target] = [seq.get(k, {}).get(target, {}).get(f) for k, f in SEQ_COLUMNS] + \
            [get(cases, k, target, f) for k, f in C50_COLUMNS]
    for name, other in (("ours/bare", "bare"), ("ours/direct", "direct")):
        if "ours" in rows and other in rows:
            rows[name] = [None if o is None or not b else o / b
                          for o, b in zip(rows["ours"], rows[other], strict=True)]
    for name, vals in rows.items():
        text = [f"{v:.2f}x" if "/" in name and v is not None else fmt(v) for v in vals]
        lines.append(f"{name:14} " + " ".join(f"{t:>7}" for t in text[:3]) + f" {text[3]:>9} "
                     + " ".join(f"{t:>7}" for t in text[4:6]) + f" | {text[6]:>8} "
                     + " ".join(f"{t:>7}" for t in text[7:9]) + f" {text[9]:>8}")
    return "\n".join(lines)


def burst_table(bursts: dict[str, Any] | None) -> str:
    if not bursts:
        return ""
    head = (f"{'burst':>6} {'round':>5} | {'ours: at once':>13} {'OK':>5} {'TTFB p50':>9} "
            f"{'p99 ms':>8} | {'direct: at once':>15} {'TTFB p50':>9} {'p99 ms':>8} | "
            f"{'p99 o/d':>7}")
    lines = [f"connection bursts: N streams opened at once, 20 events {bursts['gap_ms']:.0f} ms "
             "apart", head, "-" * len(head)]
    for n, per in bursts["sizes"].items():
        for i, (o, d) in enumerate(zip(per["ours"], per["direct"], strict=True)):
            lines.append(f"{n:>6} {i + 1:>5} | {o['streaming_peak']:>13} {o['ok']:>5} "
                         f"{fmt(o['ttfb_p50_ms']):>9} {fmt(o['ttfb_p99_ms']):>8} | "
                         f"{d['streaming_peak']:>15} {fmt(d['ttfb_p50_ms']):>9} "
                         f"{fmt(d['ttfb_p99_ms']):>8} | "
                         f"{ratio(o['ttfb_p99_ms'], d['ttfb_p99_ms']):>7}")
    return "\n".join(lines)


def target_lines(seq: dict[str, Any], cases: dict[str, Any], bursts: dict[str, Any] | None,
                 shares: dict[str, Any] | None = None) -> tuple[list[str], dict[str, Any]]:
    """The goals of shared/spec/performance.md that this run can check."""
    lines, data = [], {}
    for kind, label in (("chat", "non-stream"), ("chat_stream", "stream")):
        share = (shares or {}).get(kind)
        if not share or share["median"] is None:
            continue
        data[f"paired_share_of_bare_{kind}"] = share["median"]
        lines.append(f"  {'share of bare, paired, ' + label:34} {share['median']:.0%} "
                     f"(rounds {share['min']:.0%}-{share['max']:.0%}; target >= 80%: "
                     f"{'met' if share['median'] >= 0.8 else 'NOT met'})")
    ours, bare = get(cases, "chat@50", "ours", "rps"), get(cases, "chat@50", "bare", "rps")
    if ours and bare:
        share = ours / bare
        data["share_of_bare_c50"] = round(share, 3)
        verdict = "the paired share above is the one to judge by" if shares else \
            f"target >= 80%: {'met' if share >= 0.8 else 'NOT met'}"
        lines.append(f"  {'c=50 share of the bare proxy':34} {share:.0%}  (back to back; "
                     f"{verdict})")
    ours, bare = (get(cases, "chat@50", t, "rps_per_cpu") for t in ("ours", "bare"))
    if ours and bare:
        data["share_of_bare_c50_per_cpu"] = round(ours / bare, 3)
        lines.append(f"  {'  the same per CPU-second used':34} {ours / bare:.0%}  (robust when "
                     "other processes share the gateway's core)")
    for kind, key, label in (("chat", "", "non-stream"), ("chat_stream", "ttfb_", "stream TTFB")):
        r = seq.get(kind, {}).get("ours")
        if not r or r.get(f"{key}p99_ms") is None:
            continue
        p99, p999 = r[f"{key}p99_ms"], r[f"{key}p999_ms"]
        good = p99 <= 3 and p999 <= 10
        data[f"c1_{kind}_p99_ms"], data[f"c1_{kind}_p999_ms"] = p99, p999
        lines.append(f"  {'c=1 ' + label + ' p99 / p99.9':34} {fmt(p99)} / {fmt(p999)} ms  "
                     f"(target <= 3 / <= 10: {'met' if good else 'NOT met'})")
    for n, per in (bursts or {}).get("sizes", {}).items():
        all_at_once = all(o["streaming_peak"] == int(n) for o in per["ours"])
        worst = max((o["ttfb_p99_ms"] or 1e9) / (d["ttfb_p99_ms"] or 1e-9)
                    for o, d in zip(per["ours"], per["direct"], strict=True))
        data[f"burst_{n}_all_at_once"], data[f"burst_{n}_worst_p99_ratio"] = \
            all_at_once, round(worst, 2)
        lines.append(f"  {'burst ' + n + ': all streaming at once':34} "
                     f"{'yes' if all_at_once else 'NO'} every round; worst TTFB p99 "
                     f"{worst:.1f}x direct (target <= 3x: {'met' if worst <= 3 else 'NOT met'})")
    return lines, data


def responses_lines(cases: dict[str, Any], seq: dict[str, Any], na: str | None,
                    ) -> tuple[list[str], dict[str, Any]]:
    """The Responses stream beside the chat stream, both through the gateway in this run."""
    if na:
        return [f"  {'Responses stream':34} n/a ({na})"], {}
    lines, data = [], {}
    for label, case, field in RESPONSES_VS_CHAT:
        resp = get(cases, f"responses_stream{case}", "ours", field)
        chat = get(cases, f"chat_stream{case}", "ours", field)
        if resp is None or not chat:
            continue
        share = resp / chat
        data[f"responses_vs_chat_{case.strip('@/').replace('/', '_')}_{field}"] = round(share, 3)
        lines.append(f"  {'Responses/chat stream ' + label:34} {share:.0%}  ({fmt(resp)} vs "
                     f"{fmt(chat)}; target >= 90%: {'met' if share >= 0.9 else 'NOT met'})")
    r, c = seq.get("responses_stream", {}).get("ours"), seq.get("chat_stream", {}).get("ours")
    if r and c:
        lines.append(f"  {'c=1 TTFB p50/p99/p99.9 resp | chat':34} "
                     f"{fmt(r['ttfb_p50_ms'])}/{fmt(r['ttfb_p99_ms'])}/{fmt(r['ttfb_p999_ms'])} "
                     f"| {fmt(c['ttfb_p50_ms'])}/{fmt(c['ttfb_p99_ms'])}/"
                     f"{fmt(c['ttfb_p999_ms'])} ms (sequential client)")
        data["c1_responses_stream_ttfb_p99_ms"] = r["ttfb_p99_ms"]
    return lines, data
