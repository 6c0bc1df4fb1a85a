#!/usr/bin/env python3
# Times HF `tokenizers` single-threaded encode on the text tests/tokenizer/speed_test.cpp uses
# (reference corpus texts joined by "\n", repeated to >= 100,000 tokens), cold cache and warm,
# so that anvil's printed tokens/s can be compared: run both and divide.
import argparse
import json
import lzma
import os
import time

os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
from tokenizers import Tokenizer  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
DATA = os.path.join(ROOT, "tests", "data", "tokenizers")


def load(name):
    with lzma.open(os.path.join(DATA, name, "tokenizer.json.xz"), "rt", encoding="utf-8") as f:
        return f.read()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("names", nargs="*", default=["llama2", "llama3", "qwen3", "deepseek_v3", "gemma3"])
    args = ap.parse_args()
    with lzma.open(os.path.join(DATA, "reference", "corpus.jsonl.xz"), "rt", encoding="utf-8") as f:
        unit = "".join(json.loads(line)["text"] + "\n" for line in f)
    for name in args.names:
        js = load(name)
        t0 = time.perf_counter()
        tok = Tokenizer.from_str(js)
        load_s = time.perf_counter() - t0
        unit_tokens = len(tok.encode(unit, add_special_tokens=False).ids)
        reps = -(-100000 // unit_tokens)
        text = unit * reps
        tok = Tokenizer.from_str(js)  # cold cache for the timed run
        t0 = time.perf_counter()
        ids = tok.encode(text, add_special_tokens=False).ids
        cold = time.perf_counter() - t0
        warm = min(timeit(tok, text) for _ in range(3))
        print(f"[ hf speed ] {name:<12} load {load_s * 1e3:.0f} ms | {len(text.encode())} bytes -> {len(ids)} tokens | "
              f"cold {cold * 1e3:.1f} ms ({len(ids) / cold / 1e6:.2f} M tok/s) | "
              f"warm {warm * 1e3:.1f} ms ({len(ids) / warm / 1e6:.2f} M tok/s)")


def timeit(tok, text):
    t0 = time.perf_counter()
    tok.encode(text, add_special_tokens=False)
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
