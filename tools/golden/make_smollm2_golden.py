#!/usr/bin/env python3
"""Golden fixtures for the default model (SmolLM2-135M-Instruct, Q4_1 GGUF) from HF transformers.

HF loads the same GGUF file (gguf_file=, dequantized to float32 on the CPU). For a few chat
questions it records the prompt ids (HF's tokenizer + chat template), 32 greedy tokens and the
last prompt position's logits; and the perplexity of tests/data/ppl/heldout.txt. The C++ tests
(tests/model_e2e/) check anvil against them. Needs torch, transformers, gguf, accelerate.

    python3 tools/golden/make_smollm2_golden.py --gguf models/SmolLM2-135M-Instruct.Q4_1.gguf
"""
import argparse
import json
import math
import os

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

QUESTIONS = [
    "What is the capital of France?",
    "Name three primary colors.",
    "What is 12 plus 7?",
    "Write one sentence about the sea.",
    "Translate 'good morning' into Spanish.",
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", default="models/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--out", default="tests/golden/smollm2/golden.json")
    ap.add_argument("--text", default="tests/data/ppl/heldout.txt")
    args = ap.parse_args()
    d, f = os.path.split(os.path.abspath(args.gguf))
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32).eval()
    cases = []
    with torch.no_grad():
        for q in QUESTIONS:
            ids = tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True)
            if isinstance(ids, dict) or hasattr(ids, "input_ids"):
                ids = ids["input_ids"]
            x = torch.tensor([ids])
            logits = model(x).logits[0, -1]
            top = torch.topk(logits, 20)
            out = model.generate(x, do_sample=False, max_new_tokens=32, eos_token_id=None, pad_token_id=0,
                                 output_logits=True, return_dict_in_generate=True)
            greedy = out.sequences[0, len(ids):].tolist()
            margins = []
            for step in out.logits:
                t2 = torch.topk(step[0], 2).values
                margins.append(float(t2[0] - t2[1]))
            cases.append({"question": q, "prompt_ids": ids, "greedy": greedy,
                          "greedy_text": tok.decode(greedy, skip_special_tokens=True),
                          "greedy_top2_margins": margins,
                          "last_logits_top20_ids": top.indices.tolist(),
                          "last_logits_top20_values": [float(v) for v in top.values]})
            print(q, "->", repr(tok.decode(greedy, skip_special_tokens=True)))
        text = open(args.text, encoding="utf-8").read()
        ids = tok(text, add_special_tokens=False)["input_ids"]
        x = torch.tensor([ids])
        logits = model(x).logits[0].double()
        lp = torch.log_softmax(logits[:-1], dim=-1)
        nll = -lp.gather(1, x[0, 1:, None]).sum().item()
        ppl = math.exp(nll / (len(ids) - 1))
        print("heldout tokens", len(ids), "ppl", ppl)
    import transformers
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump({"model": "SmolLM2-135M-Instruct.Q4_1.gguf", "transformers_version": transformers.__version__,
                   "torch_version": torch.__version__, "dtype": "float32", "max_new_tokens": 32,
                   "notes": "greedy: HF generate, EOS not stopping (eos_token_id=None); last_logits: logits of the "
                            "last prompt position; heldout_ppl: exp(mean NLL) of tests/data/ppl/heldout.txt tokenized "
                            "without special tokens, all positions after the first.",
                   "cases": cases, "heldout_ids": ids, "heldout_ppl": ppl}, fh, indent=1)


if __name__ == "__main__":
    main()
