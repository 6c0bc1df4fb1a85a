#!/usr/bin/env python3
# Builds the tokenizer reference fixtures: a deterministic corpus of >= 2,000 strings and, for each
# tokenizer under tests/data/tokenizers/<name>/, the HF `tokenizers` ids (with and without special
# tokens) and HF decodes. Output: tests/data/tokenizers/reference/{corpus,<name>}.jsonl.xz.
#
# components.jsonl.xz: the llama3/llama2 files with one component swapped (every Split behavior,
# Metaspace schemes, Digits, normalizers, added-token flags, templates), each with HF's results on
# a short list of strings, so that components the five real files do not use are checked too.
#
# Invalid UTF-8: corpus entries with "raw_hex" hold raw bytes; "text" is those bytes decoded with
# errors="replace", which is the rule anvil's Tokenizer applies to invalid input.
import argparse
import json
import lzma
import os
import random
import sys

from tokenizers import Tokenizer

NAMES = ["llama2", "llama3", "qwen3", "deepseek_v3", "gemma3"]

PROSE = [
    "The quick brown fox jumps over the lazy dog.",
    "It was the best of times, it was the worst of times.",
    "In 1969, Neil Armstrong became the first person to walk on the Moon.",
    "She said: \"I'll be there at 5 o'clock, don't worry!\"",
    "Transformers use self-attention; RNNs don't. They're different, aren't they?",
    "HELLO World! We've got 3 apples & 4 oranges (7 fruits total).",
    "Mr. O'Neil's dog's bone wasn't there; we'd've found it.",
    "e-mail me at someone@example.com or visit https://example.org/path?q=1&r=2#frag",
    "The price rose 12.5% to $1,234,567.89 on 2024-03-15T10:30:00Z.",
    "Once upon a time, in a land far, far away, there lived a king.",
    "  leading spaces and trailing spaces  ",
    "multiple     spaces\tand\ttabs\nand\nnewlines\r\nwindows\r\nlines",
    "ALL CAPS SENTENCE WITH NUMBERS 123 456 7890",
    "naïve café résumé coöperate façade jalapeño Ångström",
    "Straße, Ærøskøbing, İstanbul, ǅemal, ﬁnance, ſtreet",
    "I'M SHOUTING BECAUSE I'VE GOT SOMETHING TO SAY, YOU'LL SEE.",
]
CODE = [
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "#include <stdio.h>\nint main(void) {\n\tprintf(\"hello, world\\n\");\n\treturn 0;\n}\n",
    "for (int i = 0; i < 10; ++i) { sum += a[i] * b[i]; }",
    "SELECT name, COUNT(*) FROM users WHERE age >= 18 GROUP BY name ORDER BY 2 DESC;",
    "const f = async (x) => { await fetch(`/api/${x}`); return x?.y ?? 0; };",
    "    \n\n    # indented comment\n\t\t\tdeep_tabs()\n",
    "{\"key\": [1, 2, 3], \"nested\": {\"a\": null, \"b\": true}}",
    "fn main() -> Result<(), Box<dyn Error>> { let v: Vec<u8> = vec![0; 16]; Ok(()) }",
    "x = [i**2 for i in range(100) if i % 3 == 0]  # squares",
    "<html><body><div class=\"a\">Text &amp; more</div></body></html>",
    "$ ls -la /usr/local/bin | grep -E '^d' && echo \"done\" >> log.txt 2>&1",
    "\\begin{equation} E = mc^2 \\end{equation}",
]
CJK = ["你好，世界！", "我爱自然语言处理。", "東京は日本の首都です。", "ひらがなとカタカナ",
       "한국어 텍스트 처리", "机器学习和深度学习", "今日はいい天気ですね", "中文English混合mixed文本"]
ARABIC = ["مرحبا بالعالم", "اللغة العربية جميلة جدا", "٠١٢٣٤٥٦٧٨٩ أرقام"]
HINDI = ["नमस्ते दुनिया", "हिन्दी भाषा बहुत सुंदर है", "क्षत्रिय ज्ञान"]
OTHER = ["Привет, мир! Как дела?", "Γειά σου Κόσμε", "שלום עולם", "สวัสดีชาวโลก", "Xin chào thế giới",
         "ئۇيغۇرچە", "ᚠᛇᚻ᛫ᛒᛦᚦ", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕞𝕒𝕥𝕙", "ℌ𝔢𝔩𝔩𝔬 ①②③ ¼½¾ ㎏ ㍻"]
EMOJI = ["😀", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "❤️", "🇯🇵🇺🇸", "🧑🏻‍💻", "👩🏾‍🚀", "✨🎉🔥", "🤖 robots 🤖",
         "e\u0301", "a\u0308\u0304", "\u1100\u1161\u11a8", "Å vs \u212b vs A\u030a"]
WHITESPACE = [" ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", "\r", " \n ", "\t\t\n\t", "\u00a0", "\u3000",
              "\u2003", "\u200b", "\u0085", "\u2028", "\u000b", "\u000c", "\u202f", "\ufeff"]
SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|start_header_id|>",
            "<|end_header_id|>", "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<s>", "</s>", "<unk>",
            "<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>", "<pad>", "<mask>", "<unused5>",
            "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>",
            "<|fim_prefix|>", "<think>", "</think>", "<tool_call>", "<0x41>", "<|reserved_special_token_3|>"]


def build_corpus():
    rng = random.Random(20261125)
    out = []  # list of (text, raw_bytes or None)
    seen = set()

    def add(s, raw=None):
        key = raw if raw is not None else s
        if key in seen:
            return
        seen.add(key)
        out.append((s, raw))

    scripts = CJK + ARABIC + HINDI + OTHER
    for s in PROSE + CODE + scripts + EMOJI + WHITESPACE + SPECIALS:
        add(s)
        add(" " + s)
        add(s + " ")
    add("")
    # Special-token strings embedded in text, with the spacing variants that stress lstrip/rstrip.
    for sp in SPECIALS:
        add(f"Hello{sp}world")
        add(f"{sp}Hello world{sp}")
        add(f"text {sp} more text")
        add(f"{sp}\n{rng.choice(PROSE)}")
        add(f"a{sp}{sp}b")
    # Numbers.
    for n in [1, 2, 3, 4, 5, 7, 10, 16, 33, 100]:
        add("".join(rng.choice("0123456789") for _ in range(n)))
        add("x" + "".join(rng.choice("0123456789") for _ in range(n)) + "y")
    add("3.14159265358979323846264338327950288419716939937510")
    add("١٢٣ ४५६ ๗๘๙ ⅣⅫ ²³")
    # Whitespace runs and mixtures.
    for _ in range(120):
        parts = [rng.choice(WHITESPACE) * rng.randint(1, 6) if rng.random() < 0.5 else rng.choice(PROSE).split()[0]
                 for _ in range(rng.randint(2, 10))]
        add("".join(parts))
    # Very long words and long inputs.
    add("a" * 3000)
    add("ab" * 1500)
    add("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(4000)))
    add("Supercalifragilisticexpialidocious" * 40)
    add(" ".join(PROSE) * 3)
    add("\n".join(CODE))
    add("😀" * 200)
    add("你好" * 500)
    add(" " * 500 + "x")
    add("\n" * 300)
    # Invalid UTF-8 byte strings, kept raw; the text is Python's errors="replace" decode.
    invalid_samples = [b"\xff", b"abc\x80def", b"\xe4\xbd", b"\xe4\xbd\xa0\xe5", b"\xc0\xaf", b"\xed\xa0\x80",
                       b"\xf4\x90\x80\x80", b"\xf0\x9f\x98", b"hi \xfe\xfe there", b"\xe2\x82\xac\xe2\x82",
                       b"\x80\x81\x82\x83", b"ok\xc3(", b"\xf8\x88\x80\x80\x80"]
    for _ in range(150):
        base = rng.choice(PROSE + scripts + EMOJI).encode()
        pos = rng.randint(0, len(base))
        junk = bytes(rng.randint(0x80, 0xff) for _ in range(rng.randint(1, 4)))
        invalid_samples.append(base[:pos] + junk + base[pos:])
    for raw in invalid_samples:
        add(raw.decode("utf-8", errors="replace"), raw)
    # Random mixtures from all pools until the corpus is large enough.
    pools = [PROSE, CODE, scripts, EMOJI, WHITESPACE, SPECIALS]
    weights = [5, 3, 4, 2, 2, 1]
    while len(out) < 2200:
        k = rng.randint(1, 6)
        pieces = []
        for _ in range(k):
            pool = rng.choices(pools, weights)[0]
            s = rng.choice(pool)
            r = rng.random()
            if r < 0.3 and len(s) > 4:  # cut a random slice (may split words/grapheme clusters)
                a = rng.randint(0, len(s) - 1)
                s = s[a:a + rng.randint(1, len(s) - a)]
            elif r < 0.4:
                s = s.upper()
            elif r < 0.5:
                s = s.lower()
            pieces.append(s)
        sep = rng.choice(["", " ", "  ", "\n", "\t", " \n", ""])
        add(sep.join(pieces))
    return out


COMPONENT_TEXTS = [
    "Hello world", "Hello <mask> world", "Hello<mask>world", "the cat sat on the concatenated cat.",
    "DOG dog Dog dogs", "abc123def4567 89", "ｆｕｌｌｗｉｄｔｈ １２３ ﬁ", "  padded  ", "x-y--z-", "-lead",
    "  two  spaces  ", "a\tb\nc\r\nd", "İstanbul ÀÉÎ", "[R]   next", "pre   [R]", "<mask>", "cat", "",
    " ", "日本語のテキスト 123", "emoji 👍🏽 ok", "Mixed CASE Words", "e\u0301 vs \u00e9", "<s> x </s>",
    "ends with space ", "dogcat catdog cat_dog cat-dog", "<|begin_of_text|>Hello<|eot_id|>world", "x<s>y</s> z",
]

SPLIT = lambda pat, beh, inv=False: {"type": "Split", "pattern": pat, "behavior": beh, "invert": inv}
BL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}
EXTRA_ADDED = [
    {"content": "<mask>", "lstrip": True, "rstrip": False, "single_word": False, "normalized": False, "special": True},
    {"content": "[R]", "lstrip": False, "rstrip": True, "single_word": False, "normalized": False, "special": False},
    {"content": "cat", "lstrip": False, "rstrip": False, "single_word": True, "normalized": False, "special": False},
    {"content": "dog", "lstrip": False, "rstrip": False, "single_word": False, "normalized": True, "special": False},
]


def component_variants():
    v = []
    for beh in ["Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"]:
        for inv in [False, True]:
            for pat in [{"Regex": "\\p{N}+|\\s"}, {"String": "-"}]:
                v.append(("llama3", {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [SPLIT(pat, beh, inv), BL]}}))
    v.append(("llama3", {"pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}}))
    v.append(("llama3", {"pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}}))
    for ind in [True, False]:
        v.append(("llama3", {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": ind}, BL]}}))
    for norm in [{"type": "Lowercase"}, {"type": "NFKC"}, {"type": "NFD"}, {"type": "NFKD"},
                 {"type": "Strip", "strip_left": True, "strip_right": True},
                 {"type": "Strip", "strip_left": False, "strip_right": True},
                 {"type": "Sequence", "normalizers": [{"type": "NFKC"}, {"type": "Lowercase"}]},
                 {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "},
                 {"type": "Prepend", "prepend": "_"}]:
        v.append(("llama3", {"normalizer": norm}))
    # Added-token flags, with a lowercasing normalizer so that normalized=true matters.
    v.append(("llama3", {"normalizer": {"type": "Lowercase"}, "added_tokens+": EXTRA_ADDED}))
    v.append(("llama3", {"added_tokens+": EXTRA_ADDED}))
    for scheme in ["first", "always", "never"]:
        for split in [True, False]:
            v.append(("llama2", {"normalizer": None,
                                 "pre_tokenizer": {"type": "Metaspace", "replacement": "\u2581",
                                                   "prepend_scheme": scheme, "split": split},
                                 "decoder": {"type": "Metaspace", "replacement": "\u2581",
                                             "prepend_scheme": scheme, "split": split}}))
    tp = {"type": "TemplateProcessing",
          "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "</s>", "type_id": 0}}],
          "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
          "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]},
                             "</s>": {"id": "</s>", "ids": [2], "tokens": ["</s>"]}}}
    v.append(("llama2", {"post_processor": tp, "added_tokens+": EXTRA_ADDED}))
    v.append(("llama3", {"post_processor": {"type": "Sequence", "processors": [
        {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        dict(tp, special_tokens={"<s>": {"id": "<s>", "ids": [128000], "tokens": ["<|begin_of_text|>"]},
                                 "</s>": {"id": "</s>", "ids": [128001, 128009], "tokens": ["a", "b"]}})]}}))
    v.append(("llama2", {"decoder": {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "}, {"type": "ByteFallback"},
        {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 2, "stop": 0}]}}))
    return v


def apply_patch(j, patch):
    j = json.loads(json.dumps(j))
    for k, val in patch.items():
        if k == "added_tokens+":
            next_id = max(t["id"] for t in j["added_tokens"]) + 1
            next_id = max(next_id, len(j["model"]["vocab"]))
            for t in val:
                j["added_tokens"].append(dict(t, id=next_id))
                next_id += 1
        else:
            j[k] = val
    return j


def write_components(data, outdir):
    bases = {}
    for name in ["llama2", "llama3"]:
        with lzma.open(os.path.join(data, name, "tokenizer.json.xz"), "rt", encoding="utf-8") as f:
            bases[name] = json.loads(f.read())
    with lzma.open(os.path.join(outdir, "components.jsonl.xz"), "wt", encoding="utf-8", preset=9) as f:
        for base, patch in component_variants():
            tok = Tokenizer.from_str(json.dumps(apply_patch(bases[base], patch)))
            cases = []
            for text in COMPONENT_TEXTS:
                ids = tok.encode(text, add_special_tokens=True).ids
                cases.append({"text": text, "ids": ids, "plain": tok.encode(text, add_special_tokens=False).ids,
                              "decode": tok.decode(ids, skip_special_tokens=False),
                              "decode_skip": tok.decode(ids, skip_special_tokens=True)})
            f.write(json.dumps({"base": base, "patch": patch, "cases": cases}, ensure_ascii=False) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default=os.path.join(os.path.dirname(__file__), "..", ".."))
    args = ap.parse_args()
    data = os.path.join(args.root, "tests", "data", "tokenizers")
    outdir = os.path.join(data, "reference")
    os.makedirs(outdir, exist_ok=True)
    corpus = build_corpus()
    with lzma.open(os.path.join(outdir, "corpus.jsonl.xz"), "wt", encoding="utf-8", preset=9) as f:
        for text, raw in corpus:
            rec = {"text": text}
            if raw is not None:
                rec["raw_hex"] = raw.hex()
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    write_components(data, outdir)
    for name in NAMES:
        with lzma.open(os.path.join(data, name, "tokenizer.json.xz"), "rt", encoding="utf-8") as f:
            tok = Tokenizer.from_str(f.read())
        with lzma.open(os.path.join(outdir, name + ".jsonl.xz"), "wt", encoding="utf-8", preset=9) as f:
            for text, _ in corpus:
                ids = tok.encode(text, add_special_tokens=True).ids
                plain = tok.encode(text, add_special_tokens=False).ids
                rec = {"ids": ids, "plain": plain,
                       "decode": tok.decode(ids, skip_special_tokens=False),
                       "decode_skip": tok.decode(ids, skip_special_tokens=True)}
                rec["roundtrip"] = tok.decode(plain, skip_special_tokens=False) == text
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        print(name, "done", file=sys.stderr)
    print(len(corpus), "strings", file=sys.stderr)


if __name__ == "__main__":
    main()
