#!/usr/bin/env python3
# Makes the golden reference fixtures in tests/golden/: tiny HF models with seeded random weights and
# the logits, hidden states and greedy continuations that HF transformers computes for them.
# Invariant: same bytes on every rerun with the same torch/transformers versions and device.
"""Generate tiny-model golden fixtures with HF transformers.

Usage: python3 tools/golden/make_golden.py [--out tests/golden] [--device cpu|cuda] [--only NAME]

See tools/golden/README.md for the file layout and conventions.
"""

import argparse
import json
import math
import os
import sys
import time

_START = time.time()

# Deterministic cuBLAS needs this before torch initializes CUDA.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

MAX_NEW_TOKENS = 32
PROMPT_LENGTHS = (1, 7, 23)
BOS_ID = 1
EOS_ID = 2
MAX_SAFETENSORS_BYTES = 2 * 1024 * 1024
MIN_GREEDY_MARGIN = 1e-3  # ~10x the fp32 noise on these logits

# Common shape of every tiny model; each entry below overrides what its family needs.
_BASE = dict(
    hidden_size=64,
    intermediate_size=160,  # deliberately not a power of two
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=64,  # the CUDA attention kernels' head sizes are 64 and 128: keep goldens runnable there
    vocab_size=384,
    max_position_embeddings=128,
    hidden_act="silu",
    bos_token_id=BOS_ID,
    eos_token_id=EOS_ID,
    pad_token_id=None,
)

# name -> (config class, model class, config overrides, rope parameters, config.json style, seed).
# config.json style "hub" rewrites the rope fields into the top-level `rope_theta` + `rope_scaling`
# form that checkpoints on the Hub use; "v5" keeps transformers 5's `rope_parameters` dict. Both are
# loaded by transformers (checked below), so the C++ config parser must accept both.
MODELS = {
    "llama3_gqa": (
        LlamaConfig, LlamaForCausalLM,
        dict(tie_word_embeddings=True, rms_norm_eps=1e-5, attention_bias=False, mlp_bias=False),
        # original_max_position_embeddings 64 with head_dim 64 and theta 5e5 puts the 32 rotary
        # frequencies into all three llama3 bands: wavelengths < 16 (kept), in [16, 64]
        # (smoothed), > 64 (divided by factor). See check_llama3_rope().
        dict(rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0,
             high_freq_factor=4.0, original_max_position_embeddings=64),
        "hub", 1011,
    ),
    "llama2_mha": (
        LlamaConfig, LlamaForCausalLM,
        dict(num_key_value_heads=4, tie_word_embeddings=False, rms_norm_eps=1e-6,
             intermediate_size=176, attention_bias=False, mlp_bias=False),
        dict(rope_type="default", rope_theta=10000.0),
        "hub", 1002,
    ),
    "mistral": (
        MistralConfig, MistralForCausalLM,
        dict(tie_word_embeddings=False, rms_norm_eps=1e-5, sliding_window=None, vocab_size=352),
        dict(rope_type="default", rope_theta=1000000.0),
        "hub", 1003,
    ),
    "qwen2": (
        Qwen2Config, Qwen2ForCausalLM,
        # Qwen2 derives head_dim = hidden / heads: 128 / 2 = 64.
        dict(tie_word_embeddings=True, rms_norm_eps=1e-6, use_sliding_window=False,
             sliding_window=None, intermediate_size=136, hidden_size=128, num_attention_heads=2,
             num_key_value_heads=1),
        dict(rope_type="default", rope_theta=1000000.0),
        "hub", 1004,
    ),
    "qwen3": (
        Qwen3Config, Qwen3ForCausalLM,
        dict(head_dim=64, tie_word_embeddings=False, rms_norm_eps=1e-6, attention_bias=False,
             use_sliding_window=False, sliding_window=None, vocab_size=416),
        dict(rope_type="default", rope_theta=1000000.0),
        "v5", 1005,
    ),
}

# Weight init scales, chosen so that activations stay O(1), logits spread over several units and
# greedy decoding does not collapse into one repeated token (checked in check_not_collapsed()).
EMBED_STD = 0.7  # also the tied heads' scale: logits of tied models spread wider
LINEAR_GAIN = 2.0  # std = gain / sqrt(fan_in); layers must outweigh the token's own embedding
LM_HEAD_GAIN = 3.0  # untied heads; a tied head reuses the embedding (std 1.0)
NORM_NOISE = 0.1  # norm weights ~ 1 + noise * N(0, 1)
BIAS_STD = 0.1


def set_determinism(device):
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    # One thread: CPU GEMM blocking (and so rounding) must not depend on the host's core count.
    torch.set_num_threads(1)
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False


def build_config(name):
    config_cls, _, overrides, rope, _, _ = MODELS[name]
    kwargs = dict(_BASE)
    kwargs.update(overrides)
    kwargs["rope_parameters"] = dict(rope)
    config = config_cls(**kwargs)
    config._attn_implementation = "eager"
    return config


def init_weights(model, seed):
    """Overwrites every parameter from a generator seeded per model, in sorted-name order."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    tied = model.config.tie_word_embeddings
    with torch.no_grad():
        for pname, param in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            shape = tuple(param.shape)
            if pname.endswith("norm.weight"):
                value = 1.0 + NORM_NOISE * torch.randn(shape, generator=gen)
            elif pname.endswith(".bias"):
                value = BIAS_STD * torch.randn(shape, generator=gen)
            elif pname.endswith("embed_tokens.weight"):
                value = EMBED_STD * torch.randn(shape, generator=gen)
            elif pname == "lm_head.weight":
                if tied:
                    raise RuntimeError("tied lm_head must not appear as a separate parameter")
                value = (LM_HEAD_GAIN / math.sqrt(shape[1])) * torch.randn(shape, generator=gen)
            elif pname.endswith("proj.weight"):
                value = (LINEAR_GAIN / math.sqrt(shape[1])) * torch.randn(shape, generator=gen)
            else:
                raise RuntimeError(f"init_weights: no rule for parameter {pname} {shape}")
            param.copy_(value.to(param.dtype))
    if tied and model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr():
        raise RuntimeError("tie_word_embeddings is set but lm_head is not tied")


def make_prompts(vocab_size, seed):
    """Fixed prompts: BOS followed by ids drawn from [3, vocab) (0..2 are special)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    prompts = []
    for length in PROMPT_LENGTHS:
        body = torch.randint(3, vocab_size, (length - 1,), generator=gen).tolist()
        prompts.append([BOS_ID] + body)
    return prompts


def layer_outputs_hook(model, store):
    """Registers hooks that record each decoder layer's output (pre-final-norm residual stream)."""
    handles = []
    for idx, layer in enumerate(model.model.layers):
        def hook(_mod, _inp, out, idx=idx):
            store[idx] = (out[0] if isinstance(out, tuple) else out).detach()
        handles.append(layer.register_forward_hook(hook))
    return handles


def forward_record(model, prompt, device):
    ids = torch.tensor([prompt], dtype=torch.long, device=device)
    layer_out = {}
    handles = layer_outputs_hook(model, layer_out)
    try:
        out = model(input_ids=ids, output_hidden_states=True, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    logits = out.logits[0]  # [prompt_len, vocab]
    hidden = torch.stack([h[0] for h in out.hidden_states])  # [num_layers + 1, prompt_len, hidden]
    layers = torch.stack([layer_out[i][0] for i in range(len(layer_out))])  # [num_layers, T, H]
    return logits, hidden, layers


def check_hidden_state_layout(model, hidden, layers, prompt, device):
    """Pins down what HF's hidden_states hold, so the README's description is a checked fact."""
    ids = torch.tensor([prompt], dtype=torch.long, device=device)
    emb = model.model.embed_tokens(ids)[0]
    num_layers = layers.shape[0]
    if hidden.shape[0] != num_layers + 1:
        raise RuntimeError(f"expected {num_layers + 1} hidden states, got {hidden.shape[0]}")
    if not torch.equal(hidden[0], emb):
        raise RuntimeError("hidden_states[0] is not the embedding output")
    for i in range(num_layers - 1):
        if not torch.equal(hidden[i + 1], layers[i]):
            raise RuntimeError(f"hidden_states[{i + 1}] is not decoder layer {i}'s output")
    normed = model.model.norm(layers[-1])
    if not torch.equal(hidden[-1], normed):
        raise RuntimeError("hidden_states[-1] is not final_norm(last layer output)")


def check_llama3_rope(model, config):
    """Asserts that llama3 scaling changes frequencies and covers all three bands."""
    inv_freq = model.model.rotary_emb.inv_freq.detach().cpu()
    rope = config.rope_parameters
    dim = config.head_dim
    base = 1.0 / (rope["rope_theta"] ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    wavelen = 2 * math.pi / base
    low_wl = rope["original_max_position_embeddings"] / rope["low_freq_factor"]
    high_wl = rope["original_max_position_embeddings"] / rope["high_freq_factor"]
    kept = wavelen < high_wl
    scaled = wavelen > low_wl
    smooth = ~kept & ~scaled
    if not (kept.any() and scaled.any() and smooth.any()):
        raise RuntimeError(f"llama3 rope does not hit all bands: wavelengths {wavelen.tolist()}")
    if torch.equal(inv_freq, base):
        raise RuntimeError("llama3 rope scaling left the frequencies unchanged")
    bands = ["kept" if k else ("scaled" if s else "smoothed")
             for k, s in zip(kept.tolist(), scaled.tolist())]
    return {"unscaled_inv_freq": base.tolist(), "bands": bands}


def greedy_generate(model, prompt, device):
    """Greedy decoding of exactly MAX_NEW_TOKENS tokens with the KV cache; EOS does not stop it.

    generate() fills every unset field (eos_token_id=None included) from model.generation_config,
    so EOS is removed there for the call. No min_new_tokens, so no logit is masked: the recorded
    raw logits are exactly what the model produced and argmax(logits[k]) == tokens[k].
    """
    gen_config = GenerationConfig(
        do_sample=False, max_new_tokens=MAX_NEW_TOKENS, pad_token_id=0, bos_token_id=BOS_ID,
        use_cache=True, num_beams=1, return_dict_in_generate=True, output_logits=True,
    )
    ids = torch.tensor([prompt], dtype=torch.long, device=device)
    saved = model.generation_config
    model.generation_config = GenerationConfig(bos_token_id=BOS_ID, do_sample=False)
    try:
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                             generation_config=gen_config)
    finally:
        model.generation_config = saved
    tokens = out.sequences[0, len(prompt):].tolist()
    logits = torch.stack([step[0] for step in out.logits])  # [MAX_NEW_TOKENS, vocab]
    if len(tokens) != MAX_NEW_TOKENS or logits.shape[0] != MAX_NEW_TOKENS:
        raise RuntimeError(f"generate produced {len(tokens)} tokens, want {MAX_NEW_TOKENS}")
    argmax = logits.argmax(dim=-1).tolist()
    if argmax != tokens:
        raise RuntimeError(f"greedy tokens {tokens} differ from argmax of logits {argmax}")
    return tokens, logits


def check_decode_matches_prefill(model, prompt, tokens, greedy_logits, device):
    """Cache-free re-forward over prompt+generated must give the same per-step logits (fp32 noise)."""
    ids = torch.tensor([prompt + tokens], dtype=torch.long, device=device)
    full = model(input_ids=ids, use_cache=False).logits[0]
    ref = full[len(prompt) - 1: len(prompt) - 1 + MAX_NEW_TOKENS]
    err = (ref - greedy_logits).abs().max().item()
    scale = ref.abs().max().item()
    if err > 1e-4 * max(scale, 1.0):
        raise RuntimeError(f"KV-cache decode logits differ from prefill by {err} (max |logit| {scale})")
    return err


def check_not_collapsed(name, greedy):
    """Random tiny models like to loop; the fixtures are only sensitive if the first steps vary."""
    for p, toks in enumerate(greedy):
        if len(set(toks[:4])) < 3 or len(set(toks[:8])) < 5 or len(set(toks)) < 10:
            raise RuntimeError(f"{name}: greedy for prompt {p} collapses: {toks}")


def fp64_noise_floor(model, prompts, logits32, device):
    """max |fp32 - fp64| over all prompt logits, absolute and relative to max |fp64 logit|."""
    model64 = model.to(torch.float64)
    max_abs_err, max_abs_logit = 0.0, 0.0
    try:
        for prompt, l32 in zip(prompts, logits32):
            ids = torch.tensor([prompt], dtype=torch.long, device=device)
            l64 = model64(input_ids=ids, use_cache=False).logits[0]
            max_abs_err = max(max_abs_err, (l32.double() - l64).abs().max().item())
            max_abs_logit = max(max_abs_logit, l64.abs().max().item())
    finally:
        model.to(torch.float32)
    return max_abs_err, max_abs_err / max_abs_logit


# Extra Hub-style config.json fields that transformers ignores but a parser may trip over. Qwen2
# checkpoints on the Hub carry a sliding_window with use_sliding_window=false (attention is full);
# 32 is below the tested context, so a parser that honours sliding_window alone fails the test.
HUB_CONFIG_EXTRA = {"qwen2": {"sliding_window": 32}}


def rewrite_config_hub_style(path, name):
    """config.json: replace transformers 5's `rope_parameters` with Hub-style rope_theta/rope_scaling."""
    with open(path) as f:
        cfg = json.load(f)
    rope = dict(cfg.pop("rope_parameters"))
    cfg["rope_theta"] = rope.pop("rope_theta")
    cfg["rope_scaling"] = rope if rope.get("rope_type", "default") != "default" else None
    cfg.update(HUB_CONFIG_EXTRA.get(name, {}))
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")


def make_one(name, out_root, device):
    _, model_cls, _, _, config_style, seed = MODELS[name]
    config = build_config(name)
    model = model_cls(config)
    init_weights(model, seed)
    model = model.to(device=device, dtype=torch.float32).eval()

    out_dir = os.path.join(out_root, name)
    os.makedirs(out_dir, exist_ok=True)
    model.generation_config = GenerationConfig(
        bos_token_id=BOS_ID, eos_token_id=EOS_ID, do_sample=False)
    model.save_pretrained(out_dir)
    config_path = os.path.join(out_dir, "config.json")
    if config_style == "hub":
        rewrite_config_hub_style(config_path, name)
    st_path = os.path.join(out_dir, "model.safetensors")
    st_bytes = os.path.getsize(st_path)
    if st_bytes > MAX_SAFETENSORS_BYTES:
        raise RuntimeError(f"{st_path} is {st_bytes} bytes, over {MAX_SAFETENSORS_BYTES}")
    for tname, t in load_file(st_path).items():
        if t.dtype != torch.float32:
            raise RuntimeError(f"{st_path}: {tname} is {t.dtype}, want float32")

    prompts = make_prompts(config.vocab_size, seed + 500)
    tensors = {}
    all_logits, greedy, max_abs_logit = [], [], 0.0
    rope_info = None
    with torch.no_grad():
        if config.rope_parameters.get("rope_type") == "llama3":
            rope_info = check_llama3_rope(model, config)
        tensors["rope.inv_freq"] = model.model.rotary_emb.inv_freq.detach().float().cpu().contiguous()
        decode_errs, margins = [], []
        for p, prompt in enumerate(prompts):
            logits, hidden, layers = forward_record(model, prompt, device)
            check_hidden_state_layout(model, hidden, layers, prompt, device)
            tensors[f"prompt{p}.logits"] = logits
            tensors[f"prompt{p}.hidden_states"] = hidden
            # The last decoder layer's output before the final norm, which hidden_states lacks.
            tensors[f"prompt{p}.last_layer_prenorm"] = layers[-1]
            all_logits.append(logits)
            max_abs_logit = max(max_abs_logit, logits.abs().max().item())
            tokens, step_logits = greedy_generate(model, prompt, device)
            decode_errs.append(check_decode_matches_prefill(model, prompt, tokens, step_logits, device))
            greedy.append(tokens)
            top2 = step_logits.topk(2, dim=-1).values
            margins.append((top2[:, 0] - top2[:, 1]).min().item())
            if p == 0:
                tensors["prompt0.greedy_logits"] = step_logits
        check_not_collapsed(name, greedy)
        # A greedy step whose top two logits are within noise could flip in a correct engine.
        if min(margins) < MIN_GREEDY_MARGIN:
            raise RuntimeError(f"{name}: greedy top-2 logit margin {min(margins)} < {MIN_GREEDY_MARGIN}")
        abs_err64, rel_err64 = fp64_noise_floor(model, prompts, all_logits, device)

    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in tensors.items()}
    golden_st = os.path.join(out_dir, "golden.safetensors")
    save_file(tensors, golden_st, metadata={"format": "pt"})

    # The saved folder must reproduce the recorded logits bit for bit when loaded the usual way.
    # Weights are copied out of the mmap first: safetensors data is only 8-byte aligned, and the
    # CPU GEMM rounds differently for unaligned operands (~3e-6 on these logits).
    reloaded = AutoModelForCausalLM.from_pretrained(
        out_dir, dtype=torch.float32, attn_implementation="eager").eval()
    if type(reloaded) is not model_cls:
        raise RuntimeError(f"{name}: reloaded as {type(reloaded).__name__}")
    for param in reloaded.parameters():
        param.data = param.data.clone()
    reloaded = reloaded.to(device)
    with torch.no_grad():
        for p, prompt in enumerate(prompts):
            ids = torch.tensor([prompt], dtype=torch.long, device=device)
            again = reloaded(input_ids=ids, use_cache=False).logits[0].cpu()
            if not torch.equal(again, tensors[f"prompt{p}.logits"]):
                raise RuntimeError(f"{name}: reloaded model gives different logits for prompt {p}")

    meta = {
        "model": name,
        "architecture": model_cls.__name__,
        "config_style": config_style,
        "seed": seed,
        "prompts": prompts,
        "greedy": greedy,
        "max_new_tokens": MAX_NEW_TOKENS,
        "greedy_stopping": "EOS disabled for generate (eos_token_id=None; no min_new_tokens, nothing masked): "
                           "all max_new_tokens tokens are produced even if EOS is generated; "
                           "greedy[i][k] == argmax(greedy_logits[k]) for prompt 0",
        "num_layers": config.num_hidden_layers,
        "hidden_size": config.hidden_size,
        "vocab_size": config.vocab_size,
        "max_abs_logit": max_abs_logit,
        "fp32_vs_fp64_max_abs_err": abs_err64,
        "fp32_vs_fp64_max_rel_err": rel_err64,
        "kv_cache_decode_vs_prefill_max_abs_err": max(decode_errs),
        "greedy_min_top2_margin": margins,
        "device": device,
        "dtype": "float32",
        "attn_implementation": "eager",
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "notes": (
            "logits: [prompt_len, vocab] for every prompt position. hidden_states: "
            "[num_layers+1, prompt_len, hidden]; [0] is the embedding output, [i] for 1<=i<num_layers "
            "is decoder layer i-1's output (residual stream), [num_layers] is final_norm(last layer "
            "output) as HF returns it. last_layer_prenorm: [prompt_len, hidden], the last layer's "
            "output before the final norm. greedy_logits: [max_new_tokens, vocab], raw logits of "
            "each KV-cache decode step for prompt 0 (row k produced greedy[0][k]). rope.inv_freq: "
            "[head_dim/2] as HF computes it (float32 arithmetic). fp32_vs_fp64_max_rel_err = "
            "max|logits_fp32 - logits_fp64| / max|logits_fp64| over all prompt positions."
        ),
    }
    if rope_info is not None:
        meta["llama3_rope"] = rope_info
    with open(os.path.join(out_dir, "golden.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    return {
        "name": name, "model_bytes": st_bytes, "golden_bytes": os.path.getsize(golden_st),
        "max_abs_logit": max_abs_logit, "abs_err64": abs_err64, "rel_err64": rel_err64,
        "decode_err": max(decode_errs), "margin": min(margins), "greedy0": greedy[0][:8],
    }


def verify_outputs(out_root, names):
    """Loads every fixture back and checks shapes against golden.json and config.json."""
    for name in names:
        d = os.path.join(out_root, name)
        with open(os.path.join(d, "golden.json")) as f:
            meta = json.load(f)
        with open(os.path.join(d, "config.json")) as f:
            cfg = json.load(f)
        t = load_file(os.path.join(d, "golden.safetensors"))
        L, H, V = cfg["num_hidden_layers"], cfg["hidden_size"], cfg["vocab_size"]
        for p, prompt in enumerate(meta["prompts"]):
            T = len(prompt)
            want = {f"prompt{p}.logits": (T, V), f"prompt{p}.hidden_states": (L + 1, T, H),
                    f"prompt{p}.last_layer_prenorm": (T, H)}
            for k, shape in want.items():
                if tuple(t[k].shape) != shape or t[k].dtype != torch.float32:
                    raise RuntimeError(f"{d}: {k} is {tuple(t[k].shape)} {t[k].dtype}, want {shape}")
            if len(meta["greedy"][p]) != meta["max_new_tokens"]:
                raise RuntimeError(f"{d}: greedy[{p}] has {len(meta['greedy'][p])} tokens")
        if tuple(t["prompt0.greedy_logits"].shape) != (meta["max_new_tokens"], V):
            raise RuntimeError(f"{d}: prompt0.greedy_logits has shape {t['prompt0.greedy_logits'].shape}")
        for name_t, tensor in t.items():
            if not torch.isfinite(tensor).all():
                raise RuntimeError(f"{d}: {name_t} has non-finite values")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="tests/golden", help="output folder (one subfolder per model)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--only", action="append", choices=sorted(MODELS), help="make only this model")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("make_golden.py: --device cuda but torch sees no CUDA device")
    set_determinism(args.device)
    transformers.utils.logging.disable_progress_bar()
    names = args.only or list(MODELS)
    print(f"transformers {transformers.__version__}, torch {torch.__version__}, device {args.device}")
    print(f"{'model':<12} {'model.st':>9} {'golden.st':>9} {'max|logit|':>10} "
          f"{'fp64 abs':>9} {'fp64 rel':>9} {'kv-decode':>9} {'margin':>8}  greedy[0][:8]")
    for name in names:
        r = make_one(name, args.out, args.device)
        print(f"{r['name']:<12} {r['model_bytes']:>9} {r['golden_bytes']:>9} {r['max_abs_logit']:>10.4f} "
              f"{r['abs_err64']:>9.2e} {r['rel_err64']:>9.2e} {r['decode_err']:>9.2e} {r['margin']:>8.4f}  {r['greedy0']}")
    verify_outputs(args.out, names)
    print(f"all fixtures made and verified in {time.time() - _START:.1f}s")


if __name__ == "__main__":
    main()
