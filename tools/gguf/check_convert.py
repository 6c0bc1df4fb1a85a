#!/usr/bin/env python3
"""Checks anvil's GGUF -> HF conversion of the default model against HF transformers.

  python3 tools/gguf/check_convert.py [--anvil build/bin/anvil | --converted DIR] [--gguf FILE]

1. Converts the GGUF with `anvil convert --dtype f32` (or takes an already converted DIR).
2. Loads that folder with AutoModelForCausalLM / AutoTokenizer, and the GGUF itself with
   transformers' GGUF import (`from_pretrained(dir, gguf_file=NAME)`).
3. Compares every weight (bit for bit), the logits of a few chat prompts, the chat template
   rendering and the token ids of chat prompts; where an anvil binary is at hand, also the ids
   from `anvil tokenize` (anvil's own tokenizer) on the converted folder.

Expected differences, printed but not failing: transformers' GGUF import gives the "smollm"
pre-tokenizer GPT-2's regex, which keeps digit runs together; llama.cpp and SmolLM2's own
tokenizer.json split digits one by one, and so does anvil. Digit prompts are therefore compared
with transformers' tokenizer given SmolLM2's Digits pre-tokenizer. Exit status 0 when all match.
Needs torch, transformers, accelerate, gguf (CPU is enough).
"""
import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile

import torch
from tokenizers import pre_tokenizers
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Explain gravity in one sentence."}],
    [{"role": "user", "content": "Write a haiku about the sea, please!"},
     {"role": "assistant", "content": "Waves fold into foam,\nsalt wind hums an old refrain,\nthe tide keeps its time."},
     {"role": "user", "content": "Now one about mountains — with émojis 🏔️ and ÜTF-8 text."}],
    [{"role": "user", "content": "  leading spaces,\ttabs\n\nand newlines  "}],
]
DIGIT_TEXTS = ["In 2024 there were 365 days and 12345 visitors.", "3.14159 * 2 = 6.28318"]


def fetch_default_model() -> str:
    out = subprocess.run([os.path.join(ROOT, "tools", "fetch_default_model.sh")], check=True,
                         capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


def find_anvil() -> str | None:
    """The newest build*/bin/anvil that has the convert subcommand."""
    found = []
    for d in os.listdir(ROOT):
        p = os.path.join(ROOT, d, "bin", "anvil")
        if d.startswith("build") and os.access(p, os.X_OK):
            found.append((os.path.getmtime(p), p))
    for _, p in sorted(found, reverse=True):
        help_text = subprocess.run([p, "--help"], capture_output=True, text=True).stdout
        if "convert" in help_text:
            return p
    return None


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", help="GGUF file (default: the default model, fetched if needed)")
    ap.add_argument("--anvil", help="anvil binary used to convert (default: build*/bin/anvil)")
    ap.add_argument("--converted", help="use this already converted folder (f32) instead of running anvil")
    args = ap.parse_args()
    gguf_path = os.path.abspath(args.gguf or fetch_default_model())
    gguf_dir, gguf_name = os.path.split(gguf_path)

    tmp = tempfile.TemporaryDirectory()
    out_dir = args.converted
    anvil = args.anvil or find_anvil()
    if out_dir is None:
        if anvil is None:
            print("no anvil binary: pass --anvil or --converted", file=sys.stderr)
            return 2
        out_dir = os.path.join(tmp.name, "hf")
        subprocess.run([anvil, "convert", "--gguf", gguf_path, "-o", out_dir, "--dtype", "f32"], check=True)

    failures = 0

    def report(ok: bool, what: str):
        nonlocal failures
        failures += 0 if ok else 1
        print(f"[{'PASS' if ok else 'FAIL'}] {what}")

    # Weights.
    ref = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_name, dtype=torch.float32).eval()
    mine = AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.float32).eval()
    ref_sd, mine_sd = ref.state_dict(), mine.state_dict()
    report(set(ref_sd) == set(mine_sd), f"state dict names ({len(mine_sd)} tensors)")
    worst = max(((ref_sd[k].float() - mine_sd[k].float()).abs().max().item(), k) for k in ref_sd if k in mine_sd)
    exact = all(torch.equal(ref_sd[k], mine_sd[k]) for k in ref_sd if k in mine_sd)
    report(exact, f"weights bit-identical (max |diff| {worst[0]:.3g} at {worst[1]})")
    report(mine.config.tie_word_embeddings == ref.config.tie_word_embeddings,
           f"tie_word_embeddings = {mine.config.tie_word_embeddings}")

    # Tokenizers.
    ref_tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name)
    mine_tok = AutoTokenizer.from_pretrained(out_dir)
    report(len(mine_tok) == len(ref_tok), f"vocabulary size {len(mine_tok)}")
    report((mine_tok.bos_token, mine_tok.eos_token, mine_tok.pad_token, mine_tok.unk_token)
           == (ref_tok.bos_token, ref_tok.eos_token, ref_tok.pad_token, ref_tok.unk_token),
           f"special tokens bos={mine_tok.bos_token!r} eos={mine_tok.eos_token!r} pad={mine_tok.pad_token!r}")
    for i, chat in enumerate(CHATS):
        t_ref = ref_tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        t_mine = mine_tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        report(t_ref == t_mine, f"chat {i}: template renders the same ({len(t_mine)} chars)")
        ids_ref = ref_tok(t_ref, add_special_tokens=True)["input_ids"]
        ids_mine = mine_tok(t_mine, add_special_tokens=True)["input_ids"]
        report(ids_ref == ids_mine, f"chat {i}: token ids equal ({len(ids_mine)} tokens)")
        report(mine_tok.decode(ids_mine) == t_mine, f"chat {i}: decode round-trips")

    digits_ref = copy.deepcopy(ref_tok)
    digits_ref.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True),
         pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)])
    for text in DIGIT_TEXTS:
        ids_mine = mine_tok(text)["input_ids"]
        report(ids_mine == digits_ref(text)["input_ids"], f"digits {text!r}: equal to SmolLM2's own pre-tokenizer")
        same_as_hf_gguf = ids_mine == ref_tok(text)["input_ids"]
        print(f"       (transformers' GGUF tokenizer {'agrees' if same_as_hf_gguf else 'groups digits: differs, expected'})")

    if anvil is not None:
        texts = [mine_tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in CHATS]
        texts += DIGIT_TEXTS
        run = subprocess.run([anvil, "tokenize", "--model", out_dir], capture_output=True, text=True,
                             input="".join(json.dumps({"text": t}) + "\n" for t in texts))
        got = [json.loads(line)["ids"] for line in run.stdout.splitlines() if line.strip()]
        report(run.returncode == 0 and len(got) == len(texts), f"anvil tokenize ran ({anvil})")
        for i, (text, ids) in enumerate(zip(texts, got)):
            report(ids == mine_tok(text)["input_ids"], f"anvil tokenize text {i}: ids equal transformers' ({len(ids)})")

    # Logits.
    worst_logit = 0.0
    with torch.no_grad():
        for i, chat in enumerate(CHATS):
            text = mine_tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
            ids = torch.tensor([ref_tok(text)["input_ids"]])
            a, b = ref(ids).logits, mine(ids).logits
            diff = (a - b).abs().max().item()
            worst_logit = max(worst_logit, diff)
            scale = a.abs().max().item()
            report(diff <= 1e-5 * max(1.0, scale), f"chat {i}: logits max |diff| {diff:.3g} (max |logit| {scale:.3g})")
            report(torch.equal(a[0, -1].argmax(), b[0, -1].argmax()), f"chat {i}: same next token")
    print(f"worst logit difference: {worst_logit:.3g}")
    print("ALL PASS" if failures == 0 else f"{failures} FAILED")
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
