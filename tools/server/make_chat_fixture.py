#!/usr/bin/env python3
"""Makes tests/server/data/chat_model/: a tiny byte-level BPE tokenizer (256 byte tokens, 123
merges, 5 special tokens: exactly the 384-token vocab of tests/golden/llama3_gqa) with a
chat template, plus expected.json: the chat prompt's ids, HF transformers' greedy continuation on
the golden llama3_gqa weights, its decoded text, and a stop string that spans a token boundary.
The C++ server tests copy the golden model folder and these files into a temp dir and check that
/v1/chat/completions reproduces these values. Run once (CPU): python3 tools/server/make_chat_fixture.py
"""
import json
import os
import sys

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, AddedToken
from transformers import AutoModelForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GOLDEN = os.path.join(ROOT, "tests", "golden", "llama3_gqa")
OUT = os.path.join(ROOT, "tests", "server", "data", "chat_model")

MAX_NEW = 8
TEMPLATE = ("{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")
SPECIALS = ["<s>", "</s>", "<|user|>", "<|assistant|>", "<|end|>"]


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def make_tokenizer():
    b2u = bytes_to_unicode()
    vocab = {b2u[b]: b for b in range(256)}
    merges = [("h", "e"), ("l", "l"), ("Ġ", "t"), ("Ġt", "he"), ("o", "r"), ("Ġ", "w"), ("e", "r"), ("i", "n"),
              ("he", "ll"), ("Ġ", "a")]
    letters = "etaoinshrdlucmfwy"
    for x in letters:
        for y in letters:
            if len(merges) == 384 - 256 - len(SPECIALS):
                break
            if (x, y) not in merges and x + y not in [a + b for a, b in merges]:
                merges.append((x, y))
    for a, b in merges:
        vocab[a + b] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in SPECIALS])
    return tok


def main():
    os.makedirs(OUT, exist_ok=True)
    tok = make_tokenizer()
    assert tok.get_vocab_size() == 384, tok.get_vocab_size()
    tok.save(os.path.join(OUT, "tokenizer.json"))
    config = {"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": False, "chat_template": TEMPLATE,
              "tokenizer_class": "PreTrainedTokenizerFast"}
    with open(os.path.join(OUT, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=2)

    import jinja2
    env = jinja2.Environment()
    model = AutoModelForCausalLM.from_pretrained(GOLDEN, torch_dtype=torch.float32)
    model.eval()
    words = ["hello", "there", "tell", "the", "world", "hi", "write", "a", "story", "weather", "is", "fine", "in"]
    candidates = [" ".join(words[(i * 7 + k * 3) % len(words)] for k in range(1 + i % 5)) for i in range(400)]
    chosen = None
    for text in candidates:
        messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": text}]
        rendered = env.from_string(TEMPLATE).render(messages=messages, add_generation_prompt=True, bos_token="<s>")
        ids = tok.encode(rendered, add_special_tokens=False).ids
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), max_new_tokens=MAX_NEW, do_sample=False, eos_token_id=None,
                                 pad_token_id=0)
        gen = out[0, len(ids):].tolist()
        decoded = tok.decode(gen, skip_special_tokens=True)
        # Every generated id is a tokenizer id, and the text is clean UTF-8 with at least 3 visible pieces.
        pieces = [tok.decode([g], skip_special_tokens=True) for g in gen]
        if "\ufffd" in decoded or any(g >= tok.get_vocab_size() for g in gen):
            continue
        nonempty = [i for i, p in enumerate(pieces) if p]
        if len(nonempty) < 3:
            continue
        chosen = (messages, rendered, ids, gen, decoded, pieces)
        break
    if chosen is None:
        sys.exit("no candidate prompt gives a clean greedy continuation; add candidates")
    messages, rendered, ids, gen, decoded, pieces = chosen
    # A stop string that spans the boundary between two non-empty pieces (last char + first char).
    nonempty = [i for i, p in enumerate(pieces) if p]
    a, b = nonempty[len(nonempty) // 2 - 1], nonempty[len(nonempty) // 2]
    stop = pieces[a][-1] + pieces[b][0]
    stop_text = decoded[:decoded.find(stop)]
    expected = {
        "model": "tests/golden/llama3_gqa",
        "messages": messages,
        "rendered": rendered,
        "prompt_ids": ids,
        "max_tokens": MAX_NEW,
        "greedy_ids": gen,
        "greedy_text": decoded,
        "stop": stop,
        "stop_text": stop_text,
        "transformers_version": __import__("transformers").__version__,
        "tokenizers_version": __import__("tokenizers").__version__,
    }
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=2, ensure_ascii=False)
    print(json.dumps(expected, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
