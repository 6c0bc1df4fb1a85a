#!/usr/bin/env python3
# Writes tests/build/data/prequant_fixture.json: small AutoAWQ-GEMM and GPTQ (v1) packed int4
# tensors with their integer codes, zero points and the dequantized values (q - z) * s, packed here
# with numpy straight from the formats' descriptions, independently of the C++ importer.
# Usage: python3 tools/quant/make_prequant_fixture.py [OUT.json]   (numpy only)
import json
import sys

import numpy as np

AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]  # nibble i of an AWQ word holds column 8j + AWQ_ORDER[i]


def pack_awq(cols_major):
    """cols_major: int array [rows, N] of 0..15 -> int32 [rows, N/8], AWQ interleaved nibbles."""
    rows, n = cols_major.shape
    out = np.zeros((rows, n // 8), dtype=np.uint32)
    for j in range(n // 8):
        for i in range(8):
            out[:, j] |= cols_major[:, 8 * j + AWQ_ORDER[i]].astype(np.uint32) << np.uint32(4 * i)
    return out.view(np.int32)


def pack_gptq_rows(intweight_kn):
    """intweight [K, N] -> int32 [K/8, N]: nibble i of word [r, n] is row 8r + i."""
    k, n = intweight_kn.shape
    out = np.zeros((k // 8, n), dtype=np.uint32)
    for i in range(8):
        out |= intweight_kn[i::8, :].astype(np.uint32) << np.uint32(4 * i)
    return out.view(np.int32)


def pack_gptq_cols(z_gn):
    """[G, N] -> int32 [G, N/8]: nibble i of word [g, j] is column 8j + i."""
    g, n = z_gn.shape
    out = np.zeros((g, n // 8), dtype=np.uint32)
    for i in range(8):
        out |= z_gn[:, i::8].astype(np.uint32) << np.uint32(4 * i)
    return out.view(np.int32)


def f16_bits(a):
    return a.astype(np.float16).view(np.uint16)


def dequant(q_kn, z_gn, s_gn, group_of_k):
    """(q - z) * s in f32, returned as [N, K] (anvil's orientation)."""
    s = s_gn.astype(np.float32)[group_of_k, :]          # [K, N]
    z = z_gn.astype(np.float32)[group_of_k, :]
    return ((q_kn.astype(np.float32) - z) * s).T.copy()


def main():
    out_path = sys.argv[1] if len(sys.argv) > 1 else "tests/build/data/prequant_fixture.json"
    rng = np.random.default_rng(20240609)
    k, n, g = 64, 16, 32
    groups = k // g
    fixture = {"k": k, "n": n, "group_size": g}

    # AutoAWQ GEMM: qweight [K, N/8], qzeros [K/g, N/8] (same interleave), scales f16 [K/g, N].
    q = rng.integers(0, 16, size=(k, n))
    z = rng.integers(0, 16, size=(groups, n))
    s = (rng.uniform(0.002, 0.05, size=(groups, n))).astype(np.float16)
    fixture["awq"] = {
        "qweight": pack_awq(q).ravel().tolist(),
        "qzeros": pack_awq(z).ravel().tolist(),
        "scales_f16": f16_bits(s).ravel().tolist(),
        "codes_nk": q.T.ravel().tolist(),
        "zeros_gn": z.ravel().tolist(),
        "dequant_nk": [float(v) for v in dequant(q, z, s, np.arange(k) // g).ravel()],
    }

    # GPTQ v1: qzeros store zero - 1 (zero 0 wraps to nibble 15 and reads back as 16, as the
    # v1 kernels do). The group labels of the two column runs are swapped (g_idx = 1 then 0),
    # so the importer must gather scale/zero rows by label.
    q = rng.integers(0, 16, size=(k, n))
    z = rng.integers(1, 16, size=(groups, n))
    z[0, 3] = 0  # exercise the v1 wrap-around
    s = (rng.uniform(0.002, 0.05, size=(groups, n))).astype(np.float16)
    g_idx = np.where(np.arange(k) < g, 1, 0)
    stored = (z - 1) & 0xF
    z_read = stored + 1  # what a v1 reader decodes
    fixture["gptq"] = {
        "qweight": pack_gptq_rows(q).ravel().tolist(),
        "qzeros": pack_gptq_cols(stored).ravel().tolist(),
        "scales_f16": f16_bits(s).ravel().tolist(),
        "g_idx": g_idx.tolist(),
        "codes_nk": q.T.ravel().tolist(),
        "zeros_gn": z_read.ravel().tolist(),
        "dequant_nk": [float(v) for v in dequant(q, z_read, s, g_idx).ravel()],
        # gptq_v2 reads the same words without the + 1.
        "dequant_v2_nk": [float(v) for v in dequant(q, stored, s, g_idx).ravel()],
    }
    with open(out_path, "w") as f:
        json.dump(fixture, f, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()
