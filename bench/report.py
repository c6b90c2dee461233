#!/usr/bin/env python3
"""Turn a bench/run.sh raw log into a markdown table (median of the repetitions).

Input lines (one per run), as run.sh writes them:
  rep=1 scenario=tput1 target=msm proxy_cpu_pct=97.0 RESULT mode=throughput gbps=...
Ratios are msm-proxy / haproxy, oriented so that higher is better for msm-proxy:
  throughput and connection rate: msm / haproxy;
  added latency: haproxy_added / msm_added (added = p99 via proxy - p99 direct, same repetition).
"""
import statistics
import sys

TARGET = 0.9

# scenario -> (label, metric key, unit, kind)
SCENARIOS = [
    ("tput1", "Throughput, 1 connection", "gbps", "Gbit/s", "rate"),
    ("tput100", "Throughput, 100 connections", "gbps", "Gbit/s", "rate"),
    ("connrate", "New connections/s", "cps", "conn/s", "rate"),
    ("lat1", "p99 RTT, 64 B echo, 1 connection", "p99_us", "µs", "latency"),
    ("lat16", "p99 RTT, 64 B echo, 16 connections", "p99_us", "µs", "latency"),
]
TARGETS = ["direct", "haproxy", "msm"]


def parse(path):
    runs = []
    with open(path) as f:
        for line in f:
            if "RESULT" not in line:
                continue
            kv = {}
            for tok in line.split():
                if "=" in tok:
                    k, v = tok.split("=", 1)
                    kv[k] = v
            runs.append(kv)
    return runs


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(v, unit):
    if v is None:
        return "–"
    if unit == "conn/s":
        return f"{v:,.0f}"
    if unit == "µs":
        return f"{v:.1f}"
    return f"{v:.2f}"


def fmt_ratio(r):
    if r is None:
        return "–", "–"
    return f"**{r:.2f}**", ("yes" if r >= TARGET else "**no**")


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: report.py RAW_LOG [HEADER_FILE]")
    runs = parse(sys.argv[1])
    header = open(sys.argv[2]).read() if len(sys.argv) > 2 else ""
    # by[scenario][target][rep] = kv
    by = {}
    for kv in runs:
        by.setdefault(kv.get("scenario"), {}).setdefault(kv.get("target"), {})[kv.get("rep")] = kv

    out = [header.rstrip(), ""] if header else []
    out.append("| figure | direct | haproxy | msm-proxy | msm/haproxy | ≥ 0.9? "
               "| haproxy CPU | msm CPU |")
    out.append("|---|---:|---:|---:|---:|:---:|---:|---:|")
    errors = 0
    for sc, label, key, unit, kind in SCENARIOS:
        if sc not in by:
            continue
        t = by[sc]
        for tg in t.values():
            for kv in tg.values():
                errors += int(num(kv.get("errors")) or 0)
        val = {tg: med([num(kv.get(key)) for kv in t.get(tg, {}).values()]) for tg in TARGETS}
        cpu = {tg: med([num(kv.get("proxy_cpu_pct")) for kv in t.get(tg, {}).values()])
               for tg in ("haproxy", "msm")}
        cpus = [f"{cpu[tg]:.0f}%" if cpu[tg] is not None else "–" for tg in ("haproxy", "msm")]
        if kind == "rate":
            r = val["msm"] / val["haproxy"] if val["msm"] and val["haproxy"] else None
            rs, ok = fmt_ratio(r)
            out.append(f"| {label} ({unit}) | {fmt(val['direct'], unit)} | "
                       f"{fmt(val['haproxy'], unit)} | {fmt(val['msm'], unit)} | {rs} | {ok} | "
                       f"{cpus[0]} | {cpus[1]} |")
            continue
        # Latency: absolute p99s, then the added p99 (per repetition, then median).
        out.append(f"| {label} ({unit}) | {fmt(val['direct'], unit)} | "
                   f"{fmt(val['haproxy'], unit)} | {fmt(val['msm'], unit)} | | | "
                   f"{cpus[0]} | {cpus[1]} |")
        added, per_rep = {}, {}
        for tg in ("haproxy", "msm"):
            diffs, per_rep[tg] = [], {}
            for rep, kv in t.get(tg, {}).items():
                d = t.get("direct", {}).get(rep)
                if d and num(kv.get(key)) is not None and num(d.get(key)) is not None:
                    per_rep[tg][rep] = num(kv.get(key)) - num(d.get(key))
                    diffs.append(per_rep[tg][rep])
            added[tg] = med(diffs)
        r = None
        if added["haproxy"] is not None and added["msm"] is not None:
            r = added["haproxy"] / added["msm"] if added["msm"] > 0 else float("inf")
        rs, ok = fmt_ratio(r)
        # The spread of the same ratio taken per repetition: how far one run can be trusted.
        reps = [per_rep["haproxy"][k] / per_rep["msm"][k] for k in per_rep["msm"]
                if k in per_rep["haproxy"] and per_rep["msm"][k] > 0]
        spread = f" (per rep {min(reps):.2f}–{max(reps):.2f})" if len(reps) > 1 else ""
        out.append(f"| ↳ p99 added by the proxy ({unit}) | | {fmt(added['haproxy'], unit)} | "
                   f"{fmt(added['msm'], unit)} | {rs}{spread} | {ok} | | |")
        # The median round trip moves much less than the p99: added p50, for reference.
        p50 = {}
        for tg in ("haproxy", "msm"):
            xs = []
            for rep, kv in t.get(tg, {}).items():
                d = t.get("direct", {}).get(rep)
                if d and num(kv.get("p50_us")) is not None and num(d.get("p50_us")) is not None:
                    xs.append(num(kv.get("p50_us")) - num(d.get("p50_us")))
            p50[tg] = med(xs)
        if p50["haproxy"] is not None and p50["msm"] is not None:
            r50 = p50["haproxy"] / p50["msm"] if p50["msm"] > 0 else float("inf")
            out.append(f"| ↳ p50 added by the proxy ({unit}) | | {fmt(p50['haproxy'], unit)} | "
                       f"{fmt(p50['msm'], unit)} | {r50:.2f} | | | |")
    out.append("")
    out.append("Per proxy core (figure / proxy CPU share, per repetition, then median): the "
               "work each proxy does per CPU-second, less sensitive to where the scheduler "
               "put the threads.")
    out.append("")
    out.append("| figure | haproxy | msm-proxy | msm/haproxy |")
    out.append("|---|---:|---:|---:|")
    for sc, label, key, unit, kind in SCENARIOS:
        if sc not in by or kind != "rate":
            continue
        eff = {}
        for tg in ("haproxy", "msm"):
            xs = []
            for kv in by[sc].get(tg, {}).values():
                v, c = num(kv.get(key)), num(kv.get("proxy_cpu_pct"))
                if v is not None and c:
                    xs.append(v / (c / 100))
            eff[tg] = med(xs)
        r = eff["msm"] / eff["haproxy"] if eff["msm"] and eff["haproxy"] else None
        out.append(f"| {label} ({unit} per core) | {fmt(eff['haproxy'], unit)} | "
                   f"{fmt(eff['msm'], unit)} | {f'{r:.2f}' if r else '–'} |")
    out.append("")
    out.append("Medians of the repetitions. Ratios are oriented so that higher is better for "
               "msm-proxy: msm/haproxy for throughput and connection rate, haproxy's added p99 / "
               "msm-proxy's added p99 for latency (added = p99 through the proxy minus p99 direct, "
               "same repetition). CPU = the proxy process's CPU time / wall time during the run "
               "(100% = one core).")
    steal = [num(kv.get("steal_pct")) for kv in runs if kv.get("steal_pct") is not None]
    steal = [x for x in steal if x is not None]
    if steal:
        out.append("")
        out.append(f"Steal (vCPU time the host gave to others, % of one core) per run: median "
                   f"{statistics.median(steal):.0f}%, max {max(steal):.0f}%. Machine busy "
                   f"(all processes) median "
                   f"{med([num(kv.get('machine_busy_pct')) for kv in runs]):.0f}% of one core.")
    if errors:
        out.append("")
        out.append(f"**{errors} client errors** were reported: see the raw log.")
    print("\n".join(out))


if __name__ == "__main__":
    main()
