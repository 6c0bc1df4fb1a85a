#!/usr/bin/env python3
"""Turn `anvil bench` JSON reports (anvil.bench/1, also the HF baseline's) into PNG plots:

  throughput_vs_concurrency.png  output tok/s against concurrency (throughput runs) or against the
                                 offered rate / concurrency (serve runs), one line per engine+model
  latency_cdf.png                CDFs of TTFT, ITL and end-to-end latency of every serve run, and
                                 of TTFT / end-to-end of throughput runs
  latency_vs_floor.png           latency runs: measured decode and prefill against their ceilings

  python3 tools/plot_bench.py bench-out/*.json --out plots/
Needs matplotlib (pip install matplotlib).
"""
import argparse
import json
import os
import sys
from collections import defaultdict


def load(paths):
    docs = []
    for p in paths:
        try:
            with open(p) as f:
                d = json.load(f)
        except (OSError, ValueError) as e:
            print(f"skipping {p}: {e}", file=sys.stderr)
            continue
        if d.get("schema") != "anvil.bench/1":
            print(f"skipping {p}: not an anvil.bench/1 report", file=sys.stderr)
            continue
        d["_path"] = p
        docs.append(d)
    return docs


def label(d):
    model = os.path.basename(str(d.get("model") or d.get("url") or "").rstrip("/")) or "?"
    c = d.get("config", {})
    shape = f"{c.get('isl')}/{c.get('osl')}" if c.get("isl") is not None else os.path.basename(str(c.get("dataset", "")))
    return f"{d.get('engine')} {model} {shape}"


def cdf(ax, values, name):
    v = sorted(x for x in values if x is not None and x >= 0)
    if not v:
        return False
    n = len(v)
    ax.plot(v, [(i + 1) / n for i in range(n)], label=name)
    return True


def plot_throughput(docs, plt, out):
    series = defaultdict(list)
    for d in docs:
        c, r = d.get("config", {}), d.get("results", {})
        if d["mode"] == "throughput":
            series[label(d)].append((c.get("concurrency") or c.get("num_requests"), r.get("output_tok_s", 0)))
        elif d["mode"] == "serve":
            x = c.get("concurrency") if c.get("rate") in ("inf", None, 0) else c.get("rate")
            kind = "concurrency" if c.get("rate") in ("inf", None, 0) else "rate"
            series[label(d) + f" (by {kind})"].append((x, r.get("output_tok_s", 0)))
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, pts in sorted(series.items()):
        pts.sort(key=lambda p: float(p[0] or 0))
        ax.plot([float(p[0] or 0) for p in pts], [p[1] for p in pts], marker="o", label=name)
    ax.set_xlabel("concurrency (or offered rate, req/s)")
    ax.set_ylabel("output tokens/s")
    ax.set_title("throughput")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    path = os.path.join(out, "throughput_vs_concurrency.png")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_cdfs(docs, plt, out):
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    drawn = False
    for d in docs:
        reqs = [q for q in d.get("requests", []) if q.get("ok", True) and q.get("sent", True)]
        if d["mode"] not in ("serve", "throughput") or not reqs:
            continue
        name = label(d) + (f" @{d['config'].get('rate')}" if d["mode"] == "serve" else "")
        drawn |= cdf(axes[0], [q.get("ttft_ms") for q in reqs], name)
        drawn |= cdf(axes[1], d.get("itl_ms_samples", []), name)
        drawn |= cdf(axes[2], [q.get("e2e_ms") for q in reqs], name)
    if not drawn:
        plt.close(fig)
        return None
    for ax, t in zip(axes, ("TTFT (ms)", "inter-token latency (ms)", "end-to-end latency (ms)")):
        ax.set_xlabel(t)
        ax.set_ylabel("fraction of requests" if t != "inter-token latency (ms)" else "fraction of gaps")
        ax.grid(True, alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=6)
    path = os.path.join(out, "latency_cdf.png")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_floor(docs, plt, out):
    rows = []
    for d in docs:
        if d["mode"] != "latency" or "ceiling" not in d:
            continue
        r, c = d["results"], d["ceiling"]
        batch = d.get("config", {}).get("batch", 1)
        name = label(d) + (f" batch {batch}" if batch and batch > 1 else "")
        rows.append((name + " decode", r.get("decode_tok_s", 0), c.get("decode_tok_s_ceiling", 0)))
        rows.append((name + " prefill", r.get("prefill_tok_s", 0), c.get("prefill_tok_s_ceiling", 0)))
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(rows) + 1.5))
    names = [r[0] for r in rows]
    frac = [r[1] / r[2] if r[2] else 0 for r in rows]
    # Numeric positions: equal names must not collapse into one bar while their labels stay apart.
    ax.barh(range(len(rows)), frac)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(names)
    for i, (f, r) in enumerate(zip(frac, rows)):
        ax.text(f, i, f" {f:.1%} ({r[1]:,.0f} of {r[2]:,.0f} tok/s)", va="center", fontsize=7)
    ax.set_xlim(0, max(1.0, max(frac) * 1.3))
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_xlabel("fraction of the ceiling")
    ax.set_title("latency runs against their floors")
    path = os.path.join(out, "latency_vs_floor.png")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("reports", nargs="+", help="JSON files written by anvil bench --json or hf_baseline.py")
    ap.add_argument("--out", default="bench-plots", help="folder for the PNGs")
    a = ap.parse_args()
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot_bench.py needs matplotlib: pip install matplotlib", file=sys.stderr)
        return 2
    docs = load(a.reports)
    if not docs:
        print("no anvil.bench/1 reports given", file=sys.stderr)
        return 1
    os.makedirs(a.out, exist_ok=True)
    made = [p for p in (plot_throughput(docs, plt, a.out), plot_cdfs(docs, plt, a.out), plot_floor(docs, plt, a.out)) if p]
    for p in made:
        print(p)
    return 0 if made else 1


if __name__ == "__main__":
    sys.exit(main())
