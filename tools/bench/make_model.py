#!/usr/bin/env python3
"""Make benchmark model folders with seeded random bf16 weights (PERFORMANCE.md, "Benchmark
models"): real Llama architectures built by HF transformers (LlamaConfig + LlamaForCausalLM,
save_pretrained), so anvil and the HF baseline load the same files. Speed does not depend on the
weight values. Fast: the model is built on the GPU (or the meta device, then materialized) and
filled with one seeded normal draw per tensor; transformers' slow CPU init never runs.

  python3 tools/bench/make_model.py --name llama-8b --out /tmp/models/llama-8b
  python3 tools/bench/make_model.py --name tiny --out /tmp/tiny --device cpu     # for tests

An existing folder with the same config is kept (pass --force to remake it).
"""
import argparse
import json
import os
import shutil
import sys
import time

LLAMA3_ROPE = {"rope_type": "llama3", "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192}

SHAPES = {
    # Llama-3.2-1B
    "llama-1b": dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                     head_dim=64, intermediate_size=8192, vocab_size=128256, tie_word_embeddings=True,
                     rope_theta=500000.0, rope_scaling=dict(LLAMA3_ROPE, factor=32.0),
                     max_position_embeddings=131072),
    # Llama-3.1-8B
    "llama-8b": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                     head_dim=128, intermediate_size=14336, vocab_size=128256, tie_word_embeddings=False,
                     rope_theta=500000.0, rope_scaling=dict(LLAMA3_ROPE, factor=8.0),
                     max_position_embeddings=131072),
    # A few MB, for testing the tools on a CPU.
    "tiny": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 head_dim=32, intermediate_size=256, vocab_size=512, tie_word_embeddings=False,
                 rope_theta=500000.0, rope_scaling=dict(LLAMA3_ROPE, factor=8.0), max_position_embeddings=16384),
}


def config_for(name, layers=0):
    shape = dict(SHAPES[name])
    if layers > 0:
        shape["num_hidden_layers"] = layers
    return dict(shape, architectures=["LlamaForCausalLM"], model_type="llama", hidden_act="silu",
                rms_norm_eps=1e-5, attention_bias=False, mlp_bias=False, bos_token_id=1, eos_token_id=2,
                torch_dtype="bfloat16")


def already_made(out, want):
    try:
        with open(os.path.join(out, "anvil_bench_model.json")) as f:
            return json.load(f) == want
    except (OSError, ValueError):
        return False


def make(name, out, seed, device, force, layers=0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg_dict = config_for(name, layers)
    stamp = {"name": name, "seed": seed, "config": cfg_dict}
    if not force and already_made(out, stamp):
        print(f"{out}: already made ({name}, seed {seed})", flush=True)
        return
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    t0 = time.time()
    kwargs = {k: v for k, v in cfg_dict.items() if k not in ("architectures", "model_type", "torch_dtype")}
    config = LlamaConfig(**kwargs)
    config.architectures = ["LlamaForCausalLM"]
    torch.manual_seed(seed)
    # Build without running any init (meta device, bf16 so nothing is ever allocated in fp32),
    # then allocate on the target device.
    old_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("meta"):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(old_dtype)
    model = model.to_empty(device=device)
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    gen = torch.Generator(device=device).manual_seed(seed)
    std = 0.02
    with torch.no_grad():
        for pname, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if pname.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                p.normal_(0.0, std, generator=gen)
        # Buffers (rotary inv_freq) hold to_empty's garbage here; they are not saved, and every
        # loader recomputes them from the config.
    if config.tie_word_embeddings:
        model.tie_weights()
    t1 = time.time()
    tmp = out.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True, max_shard_size="5GB")
    with open(os.path.join(tmp, "anvil_bench_model.json"), "w") as f:
        json.dump(stamp, f, indent=2)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    n = sum(p.numel() for p in model.parameters())
    print(f"{out}: {name}, {n / 1e6:.2f} M parameters, built on {device} in {t1 - t0:.1f} s, "
          f"saved in {time.time() - t1:.1f} s", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", required=True, choices=sorted(SHAPES))
    ap.add_argument("--out", required=True, help="model folder to write")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto", help="auto (cuda if present), cuda or cpu")
    ap.add_argument("--force", action="store_true", help="remake even if the folder matches")
    ap.add_argument("--layers", type=int, default=0,
                    help="keep the shape but use this many layers (0: the real count); per-layer "
                         "profiles of a full-size model without building all of it")
    a = ap.parse_args()
    make(a.name, a.out, a.seed, a.device, a.force, a.layers)


if __name__ == "__main__":
    sys.exit(main())
