"""scripts/compare's bookkeeping.

    report.py record SYSTEM STORE SHAPE REP < output    one JSON line for results.jsonl
    report.py table results.jsonl [--svg FILE]          medians, ratios, a Markdown table, a plot

`output` is what one run printed: `runyard bench --json` (a report with `results`), a BullMQ or
Celery producer's JSON line, the spawn ceiling's, or `runyard bench --http-ceiling --json`."""

from __future__ import annotations

import json
import os
import statistics
import sys
from collections import defaultdict


def first_json(text: str):
    start = text.index("{")
    obj, _ = json.JSONDecoder().raw_decode(text[start:])
    return obj


def record(system, store, shape, rep):
    raw = first_json(sys.stdin.read())
    row = {"system": system, "store": store, "shape": shape, "rep": int(rep)}
    if "results" in raw:  # runyard bench --json
        want = "trickle" if shape == "idle" else "burst"
        r = next(x for x in raw["results"] if x["scenario"] == want)
        lat = r.get("submit_to_start") or {}
        row.update(
            jobs=r["jobs"], e2e_rate=r["e2e_rate"], submit_rate=r["submit_rate"],
            start_p50_ms=lat.get("p50_ms"), start_p99_ms=lat.get("p99_ms"),
            not_success=r["not_success"], server_peak_rss_kib=raw.get("server_peak_rss_kib"),
        )
    else:
        row.update({k: v for k, v in raw.items() if k not in ("system", "shape")})
    # run.sh's CPU_S: the CPU seconds of the system's processes over the run (see run.sh), plus
    # what a BullMQ or Celery producer reported of its own (`cpu_s`); CPU_JOBS the jobs they ran.
    cpu, jobs = os.environ.get("CPU_S"), os.environ.get("CPU_JOBS")
    if cpu and jobs:
        row["cpu_s"] = float(cpu) + float(raw.get("cpu_s") or 0)
        row["cpu_jobs"] = int(jobs)
    print(json.dumps(row))


LABELS = {
    "sequential": "one producer, sequential, no-op jobs/s",
    "inflight": "32 in flight, no-op jobs/s",
    "batch": "batch submit, no-op jobs/s",
    "idle": "submit-to-start p99 ms, idle queue (lower is better)",
    "true": "/bin/true jobs/s (32 in flight, 16 at a time)",
}
COLUMNS = [("runyard", "embedded"), ("runyard", "redis"), ("bullmq", "redis"), ("celery", "redis")]
CPU_SHAPES = ("sequential", "inflight", "batch")


def adjacent_shares(by, system):
    """Each `true` run of `system` (embedded) over the mean of the spawn ceilings measured right
    before and right after it (`store` = next-to-runyard_embedded / next-to-base_embedded)."""
    store = "next-to-runyard_embedded" if system == "runyard" else "next-to-base_embedded"
    ceilings = defaultdict(list)
    for r in by.get(("ceiling", store, "true"), []):
        ceilings[r["rep"]].append(r["e2e_rate"])
    shares = []
    for r in sorted(by.get((system, "embedded", "true"), []), key=lambda r: r["rep"]):
        c = ceilings.get(r["rep"])
        if c and r.get("e2e_rate"):
            shares.append(r["e2e_rate"] / statistics.mean(c))
    return shares


def table(path, svg=None):
    rows = [json.loads(l) for l in open(path) if l.strip()]
    by = defaultdict(list)
    for r in rows:
        by[(r["system"], r["store"], r["shape"])].append(r)

    def med(system, store, shape):
        rs = by.get((system, store, shape))
        if not rs:
            return None
        key = "start_p99_ms" if shape == "idle" else "e2e_rate"
        vals = [r[key] for r in rs if r.get(key) is not None]
        return (statistics.median(vals), len(vals), min(vals), max(vals)) if vals else None

    out = []
    out.append("| load | runyard embedded | runyard Redis (2 workers) | BullMQ | Celery | runyard/BullMQ (embedded, Redis) |")
    out.append("| --- | --- | --- | --- | --- | --- |")
    plot = []
    for shape, label in LABELS.items():
        cells, vals = [], {}
        for system, store in COLUMNS:
            m = med(system, store, shape)
            vals[(system, store)] = m[0] if m else None
            if m is None:
                cells.append("not built" if system == "runyard" and shape == "batch" else "-")
            else:
                fmt = "{:.2f}" if shape == "idle" else "{:,.0f}"
                cells.append(f"{fmt.format(m[0])} ({fmt.format(m[2])}-{fmt.format(m[3])}, n={m[1]})")
        b = vals[("bullmq", "redis")]
        ratios = []
        for store in ("embedded", "redis"):
            v = vals[("runyard", store)]
            if v is None or not b:
                ratios.append("-")
            elif shape == "idle":
                ratios.append(f"{v / b:.2f}x")  # lower is better: runyard's p99 over BullMQ's
            else:
                ratios.append(f"{v / b:.2f}x")
        out.append(f"| {label} | " + " | ".join(cells) + f" | {', '.join(ratios)} |")
        plot.append((shape, vals))
    ceil = med("ceiling", "machine", "true")
    if ceil:
        v = med("runyard", "embedded", "true")
        share = f"; runyard embedded reaches {v[0] / ceil[0]:.2f}x of it" if v else ""
        out.append("")
        out.append(f"Spawn ceiling (two parallel shell loops of /bin/true): {ceil[0]:,.0f} processes/s{share}.")
    # The same ceiling measured right before and right after each runyard embedded run: each run
    # against the mean of its own two, then the median of those shares over the repetitions.
    for system, label in (("runyard", "runyard embedded"), ("runyard-base", "the base build, embedded")):
        shares = adjacent_shares(by, system)
        if shares:
            out.append(
                f"Measured next to each run (the ceiling right before and right after it), {label} reaches "
                f"{statistics.median(shares):.2f}x of it (median; {', '.join(f'{x:.2f}' for x in shares)})."
            )
    # `runyard bench --http-ceiling`: a bare hyper server (no store) answering each submit 202,
    # driven by bench's own client in the same shape.
    http = [(shape, med("ceiling", "http", shape)) for shape in ("sequential", "inflight")]
    if any(c for _, c in http):
        out.append("")
        for shape, c in http:
            if not c:
                continue
            shares = []
            for system, store in (("runyard", "embedded"), ("runyard", "redis"), ("bullmq", "redis")):
                v = med(system, store, shape)
                if v:
                    shares.append(f"{system} {store} {v[0] / c[0]:.2f}x")
            of_it = f"; of it: {', '.join(shares)}" if shares else ""
            if any(x.startswith("bullmq") for x in shares):
                of_it += " (BullMQ does not use HTTP: its share is for scale)"
            out.append(
                f"HTTP ceiling, {LABELS[shape].split(',')[0]} (a bare HTTP server answering 202 without a store, "
                f"runyard bench's client): {c[0]:,.0f} requests/s (n={c[1]}){of_it}."
            )
    # CPU per job: every process of the system (producer, server or API, workers, redis-server);
    # what each side's figure covers is in run.sh's header.
    def cpu_med(system, store, shape):
        vals = [
            r["cpu_s"] * 1e6 / r["cpu_jobs"]
            for r in by.get((system, store, shape), [])
            if r.get("cpu_s") and r.get("cpu_jobs")
        ]
        return (statistics.median(vals), len(vals), min(vals), max(vals)) if vals else None

    cpu_rows, have_cpu = [], False
    for shape in CPU_SHAPES:
        cells, vals = [], {}
        for system, store in COLUMNS:
            m = cpu_med(system, store, shape)
            vals[(system, store)] = m[0] if m else None
            have_cpu = have_cpu or m is not None
            cells.append(f"{m[0]:,.0f} ({m[2]:,.0f}-{m[3]:,.0f}, n={m[1]})" if m else "-")
        b = vals[("bullmq", "redis")]
        ratios = [
            f"{b / vals[('runyard', store)]:.2f}x" if b and vals[("runyard", store)] else "-"
            for store in ("embedded", "redis")
        ]
        cpu_rows.append(f"| {LABELS[shape].split(',')[0]} | " + " | ".join(cells) + f" | {', '.join(ratios)} |")
    if have_cpu:
        out.append("")
        out.append(
            "CPU per job, µs (user + system of every process of the system: producer, server or API, "
            "workers, redis-server; runyard's start-up and warm-up included, BullMQ's and Celery's "
            "not: see scripts/compare/run.sh; lower is better):"
        )
        out.append("")
        out.append("| load | runyard embedded | runyard Redis (2 workers) | BullMQ | Celery | BullMQ's CPU per job / runyard's (embedded, Redis) |")
        out.append("| --- | --- | --- | --- | --- | --- |")
        out += cpu_rows
    if any(system == "runyard-base" for system, _, _ in by):
        # RUNYARD_BASE: this build against an older one, interleaved in the same run.
        out.append("")
        out.append("| load | this build, embedded / base | this build, Redis / base |")
        out.append("| --- | --- | --- |")
        for shape, label in LABELS.items():
            cells = []
            for store in ("embedded", "redis"):
                new, old = med("runyard", store, shape), med("runyard-base", store, shape)
                if not new or not old:
                    cells.append("-")
                    continue
                fmt = "{:.2f}" if shape == "idle" else "{:,.0f}"
                cells.append(f"{new[0] / old[0]:.2f}x ({fmt.format(new[0])} vs {fmt.format(old[0])})")
            out.append(f"| {label} | " + " | ".join(cells) + " |")
    text = "\n".join(out)
    print(text)
    if svg:
        write_svg(svg, plot)


def write_svg(path, plot):
    """One group of bars per shape, each bar relative to BullMQ (= 1.0; for latency, BullMQ/x so
    that taller is better everywhere)."""
    colours = ["#1f77b4", "#6baed6", "#ff7f0e", "#2ca02c"]
    w, h, left, top, bottom = 760, 320, 50, 30, 60
    group_w = (w - left - 20) / len(plot)
    bar_w = group_w / (len(COLUMNS) + 1)
    ymax = 1.0
    rel = []
    for shape, vals in plot:
        b = vals[("bullmq", "redis")]
        row = []
        for col in COLUMNS:
            v = vals[col]
            r = None if (v is None or not b) else (b / v if shape == "idle" else v / b)
            row.append(r)
            if r:
                ymax = max(ymax, r)
        rel.append((shape, row))
    scale = (h - top - bottom) / (ymax * 1.1)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">',
             f'<text x="{left}" y="16">relative to BullMQ (1.0 = BullMQ; taller is better)</text>']
    base = h - bottom
    parts.append(f'<line x1="{left}" y1="{base - scale:.1f}" x2="{w - 10}" y2="{base - scale:.1f}" stroke="#999" stroke-dasharray="4"/>')
    for gi, (shape, row) in enumerate(rel):
        x0 = left + gi * group_w
        for ci, r in enumerate(row):
            if r is None:
                continue
            bh = r * scale
            x = x0 + ci * bar_w
            parts.append(f'<rect x="{x:.1f}" y="{base - bh:.1f}" width="{bar_w * 0.9:.1f}" height="{bh:.1f}" fill="{colours[ci]}"/>')
            parts.append(f'<text x="{x:.1f}" y="{base - bh - 3:.1f}">{r:.2f}</text>')
        parts.append(f'<text x="{x0:.1f}" y="{base + 15}">{shape}</text>')
    for ci, (system, store) in enumerate(COLUMNS):
        x = left + ci * 170
        parts.append(f'<rect x="{x}" y="{h - 25}" width="10" height="10" fill="{colours[ci]}"/>')
        parts.append(f'<text x="{x + 14}" y="{h - 16}">{system} {store}</text>')
    parts.append("</svg>")
    open(path, "w").write("\n".join(parts) + "\n")


if __name__ == "__main__":
    if sys.argv[1] == "record":
        record(*sys.argv[2:6])
    elif sys.argv[1] == "table":
        svg = sys.argv[sys.argv.index("--svg") + 1] if "--svg" in sys.argv else None
        table(sys.argv[2], svg)
    else:
        raise SystemExit(__doc__)
