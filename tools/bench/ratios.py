#!/usr/bin/env python3
"""Print the ratios table of a tools/bench/run_gpu.sh run: for each model and workload, anvil's
figure, the HF transformers baseline from the same call, their ratio, and the floor-derived
ceiling with the fraction reached. Reads DIR/anvil-<model>-<workload>.json and
DIR/hf-<model>-<workload>.json (anvil.bench/1 schema); missing files show as '-'.

  python3 tools/bench/ratios.py bench-out
"""
import glob
import json
import os
import re
import sys

# workload -> (metric in results, ceiling key in anvil's "ceiling" block or None, label)
WORKLOADS = {
    "decode": ("decode_tok_s", "decode_tok_s_ceiling", "decode tok/s, batch 1"),
    "prefill": ("prefill_tok_s", "prefill_tok_s_ceiling", "prefill tok/s"),
    "throughput": ("output_tok_s", None, "offline output tok/s"),
}


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def fmt(v):
    if v is None:
        return "-"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.2f}"


def shape(doc):
    c = doc.get("config", {})
    return f"{c.get('isl', '?')}/{c.get('osl', '?')}"


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else "bench-out"
    models = sorted({re.match(r"(?:anvil|hf)-(.+)-(?:decode|prefill|throughput)\.json$", os.path.basename(p)).group(1)
                     for p in glob.glob(os.path.join(out_dir, "*.json"))
                     if re.match(r"(?:anvil|hf)-(.+)-(?:decode|prefill|throughput)\.json$", os.path.basename(p))})
    rows = []
    device = None
    for m in models:
        for w, (metric, ceil_key, label) in WORKLOADS.items():
            a = load(os.path.join(out_dir, f"anvil-{m}-{w}.json"))
            h = load(os.path.join(out_dir, f"hf-{m}-{w}.json"))
            if a is None and h is None:
                continue
            device = device or (a or h).get("backend")
            av = a["results"].get(metric) if a else None
            hv = h["results"].get(metric) if h else None
            cv = a["ceiling"].get(ceil_key) if a and ceil_key and "ceiling" in a else None
            rows.append([m, f"{label} ({shape(a or h)})", fmt(av), fmt(hv),
                         f"{av / hv:.2f}x" if av and hv else "-", fmt(cv),
                         f"{av / cv:.1%}" if av and cv else "-"])
    print(f"# anvil vs HF transformers on {device or 'unknown device'} (same call)\n")
    header = ["model", "workload (ISL/OSL)", "anvil", "HF", "anvil/HF", "ceiling", "of ceiling"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print("| " + " | ".join(r) + " |")
    if not rows:
        print("(no results found in " + out_dir + ")")
    serve = sorted(glob.glob(os.path.join(out_dir, "anvil-*-serve.json")))
    if serve:
        print("\n| online (anvil serve) | rate | TTFT p50 ms | ITL p50 ms | TPOT p50 ms | e2e p99 ms | goodput req/s | errors |")
        print("|---|---|---|---|---|---|---|---|")
        for p in serve:
            d = load(p)
            if not d:
                continue
            r, c = d["results"], d["config"]
            print(f"| {os.path.basename(p)[6:-11]} {c.get('isl')}/{c.get('osl')} | {c.get('rate')} | "
                  f"{r['ttft_ms']['p50']:.2f} | {r['itl_ms']['p50']:.2f} | {r['tpot_ms']['p50']:.2f} | "
                  f"{r['e2e_ms']['p99']:.1f} | {r['goodput_req_s']:.3f} | {r['num_errors']} |")
        print("\nP6 target (llama-8b bf16, 467/256 at 2 req/s): TTFT p50 <= 20 ms, ITL p50 <= 6.5 ms; "
              "TensorRT-LLM published: TTFT 23 ms, ITL 8 ms.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
