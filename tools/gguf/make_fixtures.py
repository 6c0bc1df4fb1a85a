#!/usr/bin/env python3
"""Writes the small GGUF fixtures under tests/data/gguf/ that anvil_gguf_tests reads.

  quant_<TYPE>.gguf + quant_<TYPE>.f32   one tensor per ggml type, and its float32 dequantization
                                          by the gguf package's numpy reference (raw little-endian)
  tiny_llama_bpe.gguf                     a 2-layer llama with a byte-level BPE vocab ("llama-bpe"),
                                          Q/K permuted the way convert_hf_to_gguf does, mixed 32-block
                                          quants (k-quants need rows of 256; quant_*.gguf covers them)
  tiny_llama_bpe.hf.safetensors           the HF state dict transformers makes from it (the
                                          reference for name mapping and Q/K un-permutation)
  tiny_llama_bpe.hf_tokenizer.json        transformers' tokenizer.json for it
  tiny_llama_spm.gguf                     a 1-layer llama with a SentencePiece-style vocab ("llama")
  tiny_llama_spm.hf_tokenizer.json        transformers' tokenizer.json for it
  metadata.gguf                           every metadata value type, nested arrays, custom alignment

Run from the repo root:  python3 tools/gguf/make_fixtures.py   (needs gguf, numpy, torch,
transformers, safetensors). Outputs are deterministic for a given gguf/transformers version.
"""
import json
import os
import shutil
import sys
import tempfile

import numpy as np
import gguf
from gguf import GGMLQuantizationType as QT, GGUFWriter, quants

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "data", "gguf")
OUT = os.path.normpath(OUT)


def quantize_or_random(data: np.ndarray, qt: QT, rng: np.random.Generator) -> np.ndarray:
    """Quantized bytes of `data` [rows, cols]; random blocks where the gguf package cannot quantize
    (the k-quants), with finite f16 scales so every bit pattern of the quants is exercised."""
    if qt in (QT.F32,):
        return data.astype(np.float32)
    if qt == QT.F16:
        return data.astype(np.float16)
    try:
        return quants.quantize(data, qt)
    except NotImplementedError:
        pass
    block_size, type_size = gguf.GGML_QUANT_SIZES[qt]
    rows, cols = data.shape
    nblocks = rows * cols // block_size
    blocks = rng.integers(0, 256, size=(nblocks, type_size), dtype=np.uint8)
    scale = lambda n: rng.uniform(0.001, 0.05, size=n).astype(np.float16).view(np.uint8).reshape(n, 2)
    if qt in (QT.Q4_K, QT.Q5_K):
        blocks[:, 0:2] = scale(nblocks)  # d
        blocks[:, 2:4] = scale(nblocks)  # dmin
    elif qt == QT.Q6_K:
        blocks[:, type_size - 2:] = scale(nblocks)  # d is last
    else:
        raise NotImplementedError(qt)
    return blocks.reshape(rows, cols // block_size * type_size)


def write_quant_fixtures(rng):
    for qt in (QT.F32, QT.F16, QT.BF16, QT.Q8_0, QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1, QT.Q4_K, QT.Q5_K,
               QT.Q6_K):
        rows, cols = 3, 256
        data = (rng.standard_normal((rows, cols)) * 0.5).astype(np.float32)
        data[0, :8] = [0.0, -0.0, 1.0, -1.0, 65504.0 if qt == QT.F16 else 3.0, 1e-8, -2.5, 0.125]
        q = quantize_or_random(data, qt, rng)
        expected = quants.dequantize(q.view(np.uint8) if q.dtype not in (np.float32, np.float16) else q, qt)
        expected = np.asarray(expected, dtype=np.float32).reshape(rows, cols)
        path = os.path.join(OUT, f"quant_{qt.name}.gguf")
        w = GGUFWriter(path, "none")
        w.add_string("anvil.fixture", f"one {qt.name} tensor")
        if qt in (QT.F32, QT.F16):
            w.add_tensor("t", q)
        else:
            w.add_tensor("t", q, raw_dtype=qt)
        w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
        expected.astype("<f4").tofile(os.path.join(OUT, f"quant_{qt.name}.f32"))


def byte_encoder():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b); cs.append(256 + n); n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf's LlamaModel.permute (HF rotate-half rows -> interleaved)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def add_q(w: GGUFWriter, name: str, hf: np.ndarray, qt: QT, rng):
    """Adds an HF [out, in] weight as ggml type qt (ggml ne = [in, out])."""
    q = quantize_or_random(hf, qt, rng)
    if qt in (QT.F32, QT.F16):
        w.add_tensor(name, q)
    else:
        w.add_tensor(name, q, raw_dtype=qt)


def write_tiny_bpe(rng):
    enc = byte_encoder()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tokens = list(specials) + [enc[b] for b in range(256)]
    merges = ["Ġ t", "h e", "Ġt he", "l l", "ll o", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld", "e ll", "ell o",
              "h ello", "Ġ hello", "i n", "Ġ a", "e r", "Ġ 1", "2 3"]
    for m in merges:
        a, b = m.split(" ")
        if a + b not in tokens:
            tokens.append(a + b)
    tokens.append("<think>")  # user-defined (type 4)
    vocab = len(tokens)
    types = [3, 3, 3] + [1] * (vocab - 4) + [4]

    hidden, heads, kv_heads, layers, ffn = 32, 4, 2, 2, 64
    head_dim = hidden // heads
    path = os.path.join(OUT, "tiny_llama_bpe.gguf")
    w = GGUFWriter(path, "llama")
    w.add_name("tiny-llama-bpe")
    w.add_context_length(512)
    w.add_embedding_length(hidden)
    w.add_block_count(layers)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_freq_base(50000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(head_dim)
    w.add_vocab_size(vocab)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("llama-bpe")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_pad_token_id(0)
    w.add_add_bos_token(True)
    w.add_chat_template("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}")
    s = 0.05
    add_q(w, "token_embd.weight", (rng.standard_normal((vocab, hidden)) * s).astype(np.float32), QT.Q8_0, rng)
    add_q(w, "output.weight", (rng.standard_normal((vocab, hidden)) * s).astype(np.float32), QT.F16, rng)
    w.add_tensor("output_norm.weight", (1 + 0.1 * rng.standard_normal(hidden)).astype(np.float32))
    kinds = [QT.Q4_0, QT.Q5_1]
    for i in range(layers):
        qt = kinds[i % 2]
        q = (rng.standard_normal((heads * head_dim, hidden)) * s).astype(np.float32)
        k = (rng.standard_normal((kv_heads * head_dim, hidden)) * s).astype(np.float32)
        add_q(w, f"blk.{i}.attn_q.weight", permute(q, heads), QT.F32 if i == 0 else qt, rng)
        add_q(w, f"blk.{i}.attn_k.weight", permute(k, kv_heads), QT.F32 if i == 0 else QT.Q8_0, rng)
        add_q(w, f"blk.{i}.attn_v.weight", (rng.standard_normal((kv_heads * head_dim, hidden)) * s).astype(np.float32), qt, rng)
        add_q(w, f"blk.{i}.attn_output.weight", (rng.standard_normal((hidden, hidden)) * s).astype(np.float32), QT.Q4_1, rng)
        add_q(w, f"blk.{i}.ffn_gate.weight", (rng.standard_normal((ffn, hidden)) * s).astype(np.float32), QT.Q5_0, rng)
        add_q(w, f"blk.{i}.ffn_up.weight", (rng.standard_normal((ffn, hidden)) * s).astype(np.float32), QT.Q8_0, rng)
        add_q(w, f"blk.{i}.ffn_down.weight", (rng.standard_normal((hidden, ffn)) * s).astype(np.float32), QT.Q8_0 if i == 0 else QT.Q4_0, rng)
        w.add_tensor(f"blk.{i}.attn_norm.weight", (1 + 0.1 * rng.standard_normal(hidden)).astype(np.float32))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", (1 + 0.1 * rng.standard_normal(hidden)).astype(np.float32))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    return path


def write_tiny_spm(rng):
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    pieces = ["▁", "e", "h", "l", "o", "w", "r", "d", "a", "n", "▁h", "he", "ll", "llo", "▁he", "▁hello", "▁w",
              "or", "ld", "▁wor", "▁world", "an", "▁an", "▁and", "nd", "é", "▁é"]
    tokens += pieces
    scores = [0.0, 0.0, 0.0] + [0.0] * 256 + [-float(i) for i in range(len(pieces))]
    types = [2, 3, 3] + [6] * 256 + [1] * len(pieces)
    tokens.append("<|user|>")
    scores.append(0.0)
    types.append(4)
    vocab = len(tokens)
    hidden, heads = 32, 2
    path = os.path.join(OUT, "tiny_llama_spm.gguf")
    w = GGUFWriter(path, "llama")
    w.add_context_length(128)
    w.add_embedding_length(hidden)
    w.add_block_count(1)
    w.add_feed_forward_length(64)
    w.add_head_count(heads)
    w.add_head_count_kv(heads)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(True)
    s = 0.05
    w.add_tensor("token_embd.weight", (rng.standard_normal((vocab, hidden)) * s).astype(np.float32))
    w.add_tensor("output_norm.weight", np.ones(hidden, dtype=np.float32))
    for n, shape in (("attn_q", (hidden, hidden)), ("attn_k", (hidden, hidden)), ("attn_v", (hidden, hidden)),
                     ("attn_output", (hidden, hidden)), ("ffn_gate", (64, hidden)), ("ffn_up", (64, hidden)),
                     ("ffn_down", (hidden, 64))):
        w.add_tensor(f"blk.0.{n}.weight", (rng.standard_normal(shape) * s).astype(np.float32))
    w.add_tensor("blk.0.attn_norm.weight", np.ones(hidden, dtype=np.float32))
    w.add_tensor("blk.0.ffn_norm.weight", np.ones(hidden, dtype=np.float32))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    return path


def write_metadata_fixture():
    path = os.path.join(OUT, "metadata.gguf")
    w = GGUFWriter(path, "none")
    w.add_custom_alignment(64)
    w.add_uint8("t.u8", 200)
    w.add_int8("t.i8", -100)
    w.add_uint16("t.u16", 60000)
    w.add_int16("t.i16", -30000)
    w.add_uint32("t.u32", 4000000000)
    w.add_int32("t.i32", -2000000000)
    w.add_uint64("t.u64", 1 << 60)
    w.add_int64("t.i64", -(1 << 60))
    w.add_float32("t.f32", 0.15625)
    w.add_float64("t.f64", -1.0e100)
    w.add_bool("t.bool", True)
    w.add_string("t.str", "héllo wörld")
    w.add_array("t.arr_i32", [1, -2, 3])
    w.add_array("t.arr_str", ["a", "", "ccc"])
    w.add_array("t.arr_f32", [0.5, -1.5])
    w.add_key_value("t.nested", [[1, 2], [3]], gguf.GGUFValueType.ARRAY, sub_type=gguf.GGUFValueType.ARRAY)
    w.add_tensor("a", np.arange(32, dtype=np.float32))
    w.add_tensor("b", np.arange(6, dtype=np.float16).reshape(2, 3))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()


def hf_references(gguf_path: str, with_model: bool):
    """transformers' own GGUF import of the file: its tokenizer.json and (optionally) state dict."""
    from transformers import AutoTokenizer, AutoModelForCausalLM
    from safetensors.numpy import save_file
    d, name = os.path.split(gguf_path)
    stem = name[: -len(".gguf")]
    tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
    with tempfile.TemporaryDirectory() as tmp:
        tok.save_pretrained(tmp)
        shutil.copy(os.path.join(tmp, "tokenizer.json"), os.path.join(OUT, f"{stem}.hf_tokenizer.json"))
    if with_model:
        import torch
        model = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, dtype=torch.float32)
        sd = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
        save_file(sd, os.path.join(OUT, f"{stem}.hf.safetensors"))


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(1234)
    write_quant_fixtures(rng)
    write_metadata_fixture()
    bpe = write_tiny_bpe(rng)
    spm = write_tiny_spm(rng)
    hf_references(bpe, with_model=True)
    hf_references(spm, with_model=False)
    for f in sorted(os.listdir(OUT)):
        print(f"{os.path.getsize(os.path.join(OUT, f)):8d}  {f}")


if __name__ == "__main__":
    sys.exit(main())
