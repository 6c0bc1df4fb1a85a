#!/usr/bin/env python3
"""Sums the kernel times of an Nsight Compute raw CSV (one row per kernel launch) by kernel name.

    ncu --clock-control none --cache-control none --print-kernel-base function --csv --page raw \
        --metrics gpu__time_duration.sum --log-file run.csv PROGRAM ...
    tools/bench/ncu_summary.py run.csv [--per N] [--grid]

--per N divides every total by N (e.g. the number of decode steps, for a per-step breakdown);
--grid keeps launches of one kernel with different grid sizes apart (prefill vs decode shapes).
"""
import argparse
import csv
import sys
from collections import OrderedDict


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("csv")
    ap.add_argument("--per", type=float, default=1.0, help="divide totals by this (steps)")
    ap.add_argument("--grid", action="store_true", help="group by kernel name and grid size")
    ap.add_argument("--top", type=int, default=40)
    a = ap.parse_args()
    with open(a.csv, newline="") as f:
        lines = [l for l in f if l.startswith('"')]  # drop ncu's own ==PROF== lines
    rows = list(csv.reader(lines))
    if len(rows) < 3:
        print(f"{a.csv}: no kernel rows", file=sys.stderr)
        return 1
    head = rows[0]
    name_i = head.index("Kernel Name")
    grid_i = head.index("Grid Size") if "Grid Size" in head else None
    t_i = head.index("gpu__time_duration.sum")
    unit = rows[1][t_i]
    scale = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3}.get(unit, 1.0)
    agg = OrderedDict()
    total = 0.0
    for r in rows[2:]:
        if len(r) <= t_i:
            continue
        try:
            us = float(r[t_i].replace(",", "")) * scale
        except ValueError:
            continue
        key = r[name_i][:70] + (f" {r[grid_i]}" if a.grid and grid_i is not None else "")
        c, s = agg.get(key, (0, 0.0))
        agg[key] = (c + 1, s + us)
        total += us
    print(f"{'kernel':<{90 if a.grid else 72}} {'launches':>9} {'total us':>11} {'mean us':>9} {'share':>6}")
    for key, (c, s) in sorted(agg.items(), key=lambda kv: -kv[1][1])[: a.top]:
        print(f"{key:<{90 if a.grid else 72}} {c / a.per:>9.1f} {s / a.per:>11.1f} {s / c:>9.2f} {100 * s / total:>5.1f}%")
    print(f"{'all kernels':<{90 if a.grid else 72}} {sum(c for c, _ in agg.values()) / a.per:>9.1f} {total / a.per:>11.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
