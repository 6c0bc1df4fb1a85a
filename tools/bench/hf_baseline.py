#!/usr/bin/env python3
"""The HF transformers baseline for `anvil bench`: the same latency and offline-throughput
workloads (seeded random token-id prompts of exactly ISL tokens, greedy, exactly OSL new tokens,
KV cache on) run with transformers in eager PyTorch (no torch.compile), bf16, printing JSON in
the anvil.bench/1 schema so tools/bench/run_gpu.sh can put the two side by side.

The decode loop is written out (one forward per token over the DynamicCache, argmax), not
model.generate, so the baseline pays no logits-processor overhead and is timed per phase:
TTFT = prefill forward + first argmax; decode step = (end-to-end - TTFT) / (OSL - 1), as anvil.

  python3 tools/bench/hf_baseline.py latency --model DIR --isl 128 --osl 128 --json out.json
  python3 tools/bench/hf_baseline.py throughput --model DIR --isl 128 --osl 128 --num-requests 64 --concurrency 64
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
import warnings

# transformers >= 5.2x renames past_key_values to cache; the old name still works and is the one
# older 5.x releases (the GPU machine's) know.
warnings.filterwarnings("ignore", message=".*past_key_values.*")


def percentiles(values, scale=1.0):
    import numpy as np
    if not values:
        return {"count": 0, "mean": 0, "stddev": 0, "min": 0, "max": 0, "p50": 0, "p90": 0, "p99": 0}
    v = np.asarray(values, dtype=np.float64) * scale
    return {"count": int(v.size), "mean": float(v.mean()), "stddev": float(v.std(ddof=1)) if v.size > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max()), "p50": float(np.percentile(v, 50)),
            "p90": float(np.percentile(v, 90)), "p99": float(np.percentile(v, 99))}


class Runner:
    def __init__(self, model_dir, device, attn):
        import torch
        from transformers import AutoModelForCausalLM
        self.torch = torch
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        dtype = torch.bfloat16 if device == "cuda" else torch.float32
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, attn_implementation=attn).to(device)
        self.model.eval()
        self.vocab = self.model.config.vocab_size
        self.attn = attn
        self.dtype = str(dtype).replace("torch.", "")

    def sync(self):
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def prompts(self, seed, batch, isl):
        g = self.torch.Generator().manual_seed(seed)
        return self.torch.randint(0, self.vocab, (batch, isl), generator=g).to(self.device)

    def generate(self, ids, osl):
        """Greedy, exactly osl new tokens per row. Returns (ttft_s, e2e_s, tokens)."""
        torch = self.torch
        from transformers import DynamicCache
        with torch.inference_mode():
            self.sync()
            t0 = time.perf_counter()
            cache = DynamicCache(config=self.model.config)
            out = self.model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
            nxt = out.logits[:, -1, :].argmax(dim=-1, keepdim=True)
            self.sync()
            t1 = time.perf_counter()
            tokens = [nxt]
            for _ in range(osl - 1):
                out = self.model(input_ids=nxt, past_key_values=cache, use_cache=True, logits_to_keep=1)
                nxt = out.logits[:, -1, :].argmax(dim=-1, keepdim=True)
                tokens.append(nxt)
            self.sync()
            t2 = time.perf_counter()
        return t1 - t0, t2 - t0, torch.cat(tokens, dim=1)

    def backend_name(self):
        if self.device == "cuda":
            return f"cuda:0 ({self.torch.cuda.get_device_name(0)})"
        return "cpu"


def header(mode, r, model_dir):
    import torch
    import transformers
    return {"schema": "anvil.bench/1", "mode": mode, "engine": "hf-transformers",
            "meta": {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                     "transformers_version": transformers.__version__, "torch_version": torch.__version__,
                     "commit": os.environ.get("ANVIL_COMMIT", ""), "host": platform.node(),
                     "attn_implementation": r.attn, "dtype": r.dtype},
            "model": model_dir, "backend": r.backend_name(), "device": r.device}


def latency(a, r):
    ttft, e2e, step = [], [], []
    iters = []
    for it in range(a.warmup + a.iters):
        ids = r.prompts(a.seed + it, a.batch, a.isl)
        t, e, toks = r.generate(ids, a.osl)
        assert toks.shape == (a.batch, a.osl), toks.shape
        s = (e - t) / (a.osl - 1) if a.osl > 1 else 0.0
        if it >= a.warmup:
            ttft.append(t)
            e2e.append(e)
            step.append(s)
            iters.append({"ttft_ms": t * 1e3, "e2e_ms": e * 1e3, "decode_step_ms": s * 1e3,
                          "output_tokens": a.batch * a.osl})
    tm, em, sm = statistics.median(ttft), statistics.median(e2e), statistics.median(step)
    doc = header("latency", r, a.model)
    doc["config"] = {"isl": a.isl, "osl": a.osl, "batch": a.batch, "warmup": a.warmup, "iters": a.iters, "seed": a.seed}
    doc["results"] = {"ttft_ms": percentiles(ttft, 1e3), "e2e_ms": percentiles(e2e, 1e3),
                      "decode_step_ms": percentiles(step, 1e3), "ttft_ms_median": tm * 1e3,
                      "decode_step_ms_median": sm * 1e3, "e2e_ms_median": em * 1e3,
                      "prefill_tok_s": a.batch * a.isl / tm if tm > 0 else 0.0,
                      "decode_tok_s": a.batch / sm if sm > 0 else 0.0,
                      "output_tok_s": a.batch * a.osl / em if em > 0 else 0.0,
                      "num_output_tokens": len(iters) * a.batch * a.osl, "num_errors": 0}
    doc["iterations"] = iters
    return doc


def throughput(a, r):
    torch = r.torch
    conc = a.concurrency if a.concurrency > 0 else a.num_requests
    # One untimed batch first, so CUDA/cuBLAS warm-up is not billed to the run.
    r.generate(r.prompts(a.seed + 999_983, min(conc, a.num_requests), a.isl), min(a.osl, 4))
    if r.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    done, out_tokens, ttfts, e2es = 0, 0, [], []
    t0 = time.perf_counter()
    while done < a.num_requests:
        b = min(conc, a.num_requests - done)  # static batches: every row has ISL and OSL, no padding
        start = time.perf_counter()
        t, e, toks = r.generate(r.prompts(a.seed + done, b, a.isl), a.osl)
        queued = start - t0
        ttfts += [queued + t] * b  # from the run's start: requests wait for their batch
        e2es += [queued + e] * b
        out_tokens += toks.numel()
        done += b
    dur = time.perf_counter() - t0
    doc = header("throughput", r, a.model)
    doc["config"] = {"isl": a.isl, "osl": a.osl, "num_requests": a.num_requests, "concurrency": conc, "seed": a.seed}
    doc["results"] = {"duration_s": dur, "timed_out": False, "num_requests_completed": done, "num_errors": 0,
                      "num_prompt_tokens": done * a.isl, "num_output_tokens": out_tokens,
                      "requests_per_s": done / dur, "output_tok_s": out_tokens / dur,
                      "total_tok_s": (out_tokens + done * a.isl) / dur,
                      "ttft_ms": percentiles(ttfts, 1e3), "e2e_ms": percentiles(e2es, 1e3),
                      "peak_device_memory_bytes": torch.cuda.max_memory_allocated() if r.device == "cuda" else None}
    return doc


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="mode", required=True)
    for name in ("latency", "throughput"):
        p = sub.add_parser(name)
        p.add_argument("--model", required=True)
        p.add_argument("--isl", type=int, default=128)
        p.add_argument("--osl", type=int, default=128)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--device", default="auto")
        p.add_argument("--attn-implementation", default="sdpa", help="sdpa (transformers' default) or eager")
        p.add_argument("--json", default="", help="also write the JSON here")
        if name == "latency":
            p.add_argument("--batch", type=int, default=1)
            p.add_argument("--warmup", type=int, default=1)
            p.add_argument("--iters", type=int, default=3)
        else:
            p.add_argument("--num-requests", type=int, default=64)
            p.add_argument("--concurrency", type=int, default=0)
    a = ap.parse_args()
    if a.isl < 1 or a.osl < 1:
        ap.error("--isl and --osl must be at least 1")
    r = Runner(a.model, a.device, a.attn_implementation)
    doc = latency(a, r) if a.mode == "latency" else throughput(a, r)
    text = json.dumps(doc, indent=2)
    if a.json:
        with open(a.json, "w") as f:
            f.write(text + "\n")
        res = doc["results"]
        keys = ("ttft_ms_median", "decode_step_ms_median", "prefill_tok_s", "decode_tok_s", "output_tok_s",
                "requests_per_s", "total_tok_s")
        print(f"hf {a.mode} on {doc['backend']}: " + ", ".join(f"{k} {res[k]:.2f}" for k in keys if k in res))
    else:
        print(text)


if __name__ == "__main__":
    sys.exit(main())
