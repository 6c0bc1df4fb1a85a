// Quantized KV cache on CUDA (fp8 e4m3 / int8 codes, per-KV-head f32 scales; backend.h,
// KvCacheLayer). rope_kv_write: the 8-bit cache holds exactly kv_quantize(x, scale) of the 16-bit
// values x the unquantized path stores (V straight from qkv, K from the GPU's own bf16/fp16 run),
// byte for byte, and nothing else is touched. Attention: the split-KV decode kernel (fused merge,
// combine kernel, forced split counts) and the prefill kernel (16- and 32-row warps) over code
// caches against a float64 host reference over the dequantized values (code * scale), GQA 1..32,
// head_dim 64/128, block sizes 16/32/64, contexts up to 3000, mixed batches. Tolerance as in
// attention_test.cpp: relative L2 error of the output < 1e-2 (bf16) / 2e-3 (fp16), every row < 4x.
// The decode kernels v2 and v3 (tensor cores) are also driven explicitly, in mixed batches up to
// 5000 keys and under CUDA-graph replay. The decode speed benchmark (v2 vs v3, bf16 vs 8-bit
// caches, llama-8b shapes) runs with ANVIL_KV_QUANT_BENCH=1.
#include <cuda_runtime_api.h>

#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <string>

#include "backend/cuda/ops/attention.h"
#include "backend/kv_quant.h"
#include "cuda_test_util.h"

namespace anvil::test {
namespace {

constexpr DType kKvDtypes[] = {DType::kI8, DType::kF8E4M3};

// ---- rope_kv_write ----

TEST(CudaKvQuant, RopeKvWriteStoresExactlyTheHostCodes) {
  ANVIL_REQUIRE_GPU();
  struct Case {
    int hq, hkv, d;
    bool qk_norm;
  };
  const Case cases[] = {{8, 2, 128, false}, {14, 2, 64, true}, {4, 4, 256, true}, {6, 3, 96, false}};
  for (DType dt : {DType::kBF16, DType::kF16}) {
    auto gpu = make_gpu(dt);
    ASSERT_TRUE(gpu);
    for (const Case& c : cases) {
      for (DType kvt : kKvDtypes) {
        SCOPED_TRACE(std::string(name_of(dt)) + " kv " + std::string(dtype_name(kvt)) + " Hq=" + std::to_string(c.hq) +
                     " Hkv=" + std::to_string(c.hkv) + " D=" + std::to_string(c.d) + (c.qk_norm ? " qk_norm" : ""));
        const int t = 23, block_size = 16, num_blocks = 5;
        const int64_t row = static_cast<int64_t>(c.hq + 2 * c.hkv) * c.d;
        auto qkv = random_floats(t * row, 300 + c.d, -3.0f, 3.0f);
        auto qn = random_floats(c.d, 301, 0.5f, 1.5f);
        auto kn = random_floats(c.d, 302, 0.5f, 1.5f);
        auto qkvb = round_to(dt, qkv);
        auto qnb = round_to(dt, qn);
        auto knb = round_to(dt, kn);
        std::vector<float> inv_freq(c.d / 2);
        for (int i = 0; i < c.d / 2; ++i) inv_freq[i] = std::pow(500000.0f, -2.0f * i / c.d);
        std::vector<int32_t> pos(t), slots(t);
        for (int i = 0; i < t; ++i) {
          pos[i] = (i * 7919 + 3) % 30000;
          slots[i] = (i * 37 + 5) % (num_blocks * block_size);
        }
        slots[4] = -1;  // padding token: no cache write
        // Scales: head h covers 3 / (1 + h) of the range, so the first heads saturate for int8
        // (and e4m3's top codes are used) while later heads are loose.
        const float range = kvt == DType::kI8 ? 127.0f : 448.0f;
        std::vector<float> ks(c.hkv), vs(c.hkv);
        for (int h = 0; h < c.hkv; ++h) {
          ks[h] = 3.0f / (1.0f + h) / range * (kvt == DType::kI8 ? 0.6f : 1.0f);
          vs[h] = 2.5f / (1.0f + 0.5f * h) / range;
        }
        const size_t cache_elems = static_cast<size_t>(num_blocks) * c.hkv * block_size * c.d;
        auto d_qkv = DevBuf::of(gpu.get(), qkvb);
        auto d_qn = DevBuf::of(gpu.get(), qnb);
        auto d_kn = DevBuf::of(gpu.get(), knb);
        auto d_f = DevBuf::of(gpu.get(), inv_freq);
        auto d_pos = DevBuf::of(gpu.get(), pos);
        auto d_slot = DevBuf::of(gpu.get(), slots);
        auto d_ks = DevBuf::of(gpu.get(), ks);
        auto d_vs = DevBuf::of(gpu.get(), vs);
        auto d_q16 = DevBuf::poison(gpu.get(), static_cast<size_t>(t) * c.hq * c.d * 2);
        auto d_q8 = DevBuf::poison(gpu.get(), static_cast<size_t>(t) * c.hq * c.d * 2);
        auto d_k16 = DevBuf::of(gpu.get(), std::vector<uint16_t>(cache_elems, 0));
        auto d_v16 = DevBuf::of(gpu.get(), std::vector<uint16_t>(cache_elems, 0));
        const uint8_t kPoison = 0x5a;
        auto d_k8 = DevBuf::of(gpu.get(), std::vector<uint8_t>(cache_elems, kPoison));
        auto d_v8 = DevBuf::of(gpu.get(), std::vector<uint8_t>(cache_elems, kPoison));
        BatchView db;
        db.num_tokens = t;
        db.positions = static_cast<const int32_t*>(d_pos.buf.get());
        db.slot_map = static_cast<const int32_t*>(d_slot.buf.get());
        const Tensor qnt = c.qk_norm ? d_qn.t(dt, {c.d}) : Tensor(), knt = c.qk_norm ? d_kn.t(dt, {c.d}) : Tensor();
        KvCacheLayer kv16{d_k16.buf.get(), d_v16.buf.get(), dt, num_blocks, block_size, c.hkv, c.d};
        KvCacheLayer kv8{d_k8.buf.get(), d_v8.buf.get(), kvt, num_blocks, block_size, c.hkv, c.d};
        kv8.k_scale = static_cast<const float*>(d_ks.buf.get());
        kv8.v_scale = static_cast<const float*>(d_vs.buf.get());
        ASSERT_TRUE(gpu->rope_kv_write(d_qkv.t(dt, {t, row}), qnt, knt, 1e-6f, d_f.t(DType::kF32, {c.d / 2}), 1.0f, db,
                                       d_q16.t(dt, {t, c.hq, c.d}), kv16)
                        .is_ok());
        const Status st = gpu->rope_kv_write(d_qkv.t(dt, {t, row}), qnt, knt, 1e-6f, d_f.t(DType::kF32, {c.d / 2}), 1.0f,
                                             db, d_q8.t(dt, {t, c.hq, c.d}), kv8);
        ASSERT_TRUE(st.is_ok()) << st.to_string();
        EXPECT_EQ(d_q8.read<uint16_t>(static_cast<size_t>(t) * c.hq * c.d),
                  d_q16.read<uint16_t>(static_cast<size_t>(t) * c.hq * c.d));
        const auto k16 = to_f32(dt, d_k16.read<uint16_t>(cache_elems));
        const auto k8 = d_k8.read<uint8_t>(cache_elems);
        const auto v8 = d_v8.read<uint8_t>(cache_elems);
        // Host reference: per token and KV head, K codes from the 16-bit K of the same kernel, V
        // codes straight from the qkv input (V is not transformed).
        std::vector<uint8_t> want_k(cache_elems, kPoison), want_v(cache_elems, kPoison);
        for (int i = 0; i < t; ++i) {
          if (slots[i] < 0) continue;
          const int blk = slots[i] / block_size, r = slots[i] % block_size;
          for (int h = 0; h < c.hkv; ++h) {
            const size_t off = ((static_cast<size_t>(blk) * c.hkv + h) * block_size + r) * c.d;
            const float* vin = &qkv[i * row + static_cast<int64_t>(c.hq + c.hkv + h) * c.d];
            for (int e = 0; e < c.d; ++e) {
              want_k[off + e] = kv_quantize(kvt, k16[off + e], ks[h]);
              want_v[off + e] = kv_quantize(kvt, vin[e], vs[h]);
            }
          }
        }
        size_t bad_k = 0, bad_v = 0, saturated = 0;
        for (size_t i = 0; i < cache_elems; ++i) {
          bad_k += k8[i] != want_k[i];
          bad_v += v8[i] != want_v[i];
          saturated += kvt == DType::kI8 && (k8[i] == 0x7f || k8[i] == 0x81);
        }
        EXPECT_EQ(bad_k, 0u);
        EXPECT_EQ(bad_v, 0u);
        if (kvt == DType::kI8) {
          EXPECT_GT(saturated, 0u);  // the test covers saturation
        }
      }
    }
  }
}

TEST(CudaKvQuant, RopeKvWriteRejectsMissingScales) {
  ANVIL_REQUIRE_GPU();
  auto gpu = make_gpu(DType::kBF16);
  ASSERT_TRUE(gpu);
  const int t = 2, hq = 2, hkv = 1, d = 64;
  auto d_qkv = DevBuf::of(gpu.get(), std::vector<uint16_t>(t * (hq + 2 * hkv) * d, 0));
  auto d_f = DevBuf::of(gpu.get(), std::vector<float>(d / 2, 1.0f));
  auto d_i = DevBuf::of(gpu.get(), std::vector<int32_t>{0, 1});
  auto d_q = DevBuf::poison(gpu.get(), t * hq * d * 2);
  auto d_c = DevBuf::poison(gpu.get(), 16 * d * 2);
  BatchView b;
  b.num_tokens = t;
  b.positions = b.slot_map = static_cast<const int32_t*>(d_i.buf.get());
  KvCacheLayer kv{d_c.buf.get(), d_c.buf.get(), DType::kI8, 1, 16, hkv, d};
  const Status st = gpu->rope_kv_write(d_qkv.t(DType::kBF16, {t, (hq + 2 * hkv) * d}), Tensor(), Tensor(), 1e-6f,
                                       d_f.t(DType::kF32, {d / 2}), 1.0f, b, d_q.t(DType::kBF16, {t, hq, d}), kv);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.to_string();
  kv.dtype = DType::kF8E5M2;
  EXPECT_EQ(gpu->rope_kv_write(d_qkv.t(DType::kBF16, {t, (hq + 2 * hkv) * d}), Tensor(), Tensor(), 1e-6f,
                               d_f.t(DType::kF32, {d / 2}), 1.0f, b, d_q.t(DType::kBF16, {t, hq, d}), kv)
                .code(),
            StatusCode::kUnsupported);
}

// ---- attention over code caches ----

struct SeqSpec {
  int q_len, ctx;
};

struct Config {
  DType dtype = DType::kBF16;
  DType kv = DType::kI8;
  int hq = 8, hkv = 2, d = 128, block_size = 16;
  std::vector<SeqSpec> seqs;
};

std::string describe(const Config& c) {
  std::string s = std::string(name_of(c.dtype)) + " kv=" + std::string(dtype_name(c.kv)) + " Hq=" + std::to_string(c.hq) +
                  " Hkv=" + std::to_string(c.hkv) + " D=" + std::to_string(c.d) + " bs=" + std::to_string(c.block_size) +
                  " seqs(q/ctx)=";
  for (const SeqSpec& q : c.seqs) s += std::to_string(q.q_len) + "/" + std::to_string(q.ctx) + " ";
  return s;
}

// Host problem: metadata, q (rounded to dtype), cache codes, scales and the values they stand for.
struct Problem {
  Config cfg;
  int num_tokens = 0, num_blocks = 0, max_blocks_per_seq = 0, max_q = 0, max_ctx = 0;
  std::vector<int32_t> seq_starts, context_lens, block_tables;
  std::vector<uint16_t> q_bits;
  std::vector<float> q;
  std::vector<uint8_t> k_codes, v_codes;
  std::vector<float> k_scale, v_scale, k, v;  // k, v: code * scale
};

Problem make_problem(const Config& c, uint32_t seed) {
  Problem p;
  p.cfg = c;
  std::mt19937 rng(seed);
  p.seq_starts.push_back(0);
  int total_blocks = 0;
  for (const SeqSpec& s : c.seqs) {
    p.seq_starts.push_back(p.seq_starts.back() + s.q_len);
    p.context_lens.push_back(s.ctx);
    p.max_q = std::max(p.max_q, s.q_len);
    p.max_ctx = std::max(p.max_ctx, s.ctx);
    const int nb = (s.ctx + c.block_size - 1) / c.block_size;
    p.max_blocks_per_seq = std::max(p.max_blocks_per_seq, nb);
    total_blocks += nb;
  }
  p.max_blocks_per_seq += 1;
  p.num_tokens = p.seq_starts.back();
  p.num_blocks = total_blocks + 3;
  std::vector<int32_t> pool(p.num_blocks);
  std::iota(pool.begin(), pool.end(), 0);
  std::shuffle(pool.begin(), pool.end(), rng);
  p.block_tables.assign(c.seqs.size() * p.max_blocks_per_seq, pool.back());
  int next = 0;
  for (size_t s = 0; s < c.seqs.size(); ++s) {
    const int nb = (c.seqs[s].ctx + c.block_size - 1) / c.block_size;
    for (int b = 0; b < nb; ++b) p.block_tables[s * p.max_blocks_per_seq + b] = pool[next++];
  }
  std::uniform_real_distribution<float> uq(-3.0f, 3.0f);
  p.q.resize(static_cast<size_t>(p.num_tokens) * c.hq * c.d);
  for (float& x : p.q) x = uq(rng);
  p.q_bits = round_to(c.dtype, p.q);
  // K/V values: per head a different magnitude; codes from amax / range scales (as calibration
  // makes them), so the whole code range is in use.
  const size_t per_head = static_cast<size_t>(c.block_size) * c.d;
  const size_t n = static_cast<size_t>(p.num_blocks) * c.hkv * per_head;
  const float range = c.kv == DType::kI8 ? 127.0f : 448.0f;
  std::normal_distribution<float> g(0.0f, 1.0f);
  for (int which = 0; which < 2; ++which) {
    std::vector<float> x(n);
    std::vector<float> amax(c.hkv, 0.0f);
    for (size_t i = 0; i < n; ++i) {
      const int h = static_cast<int>((i / per_head) % c.hkv);
      x[i] = g(rng) * (0.5f + 0.4f * h);
      amax[h] = std::max(amax[h], std::fabs(x[i]));
    }
    std::vector<float>& scale = which == 0 ? p.k_scale : p.v_scale;
    std::vector<uint8_t>& codes = which == 0 ? p.k_codes : p.v_codes;
    std::vector<float>& deq = which == 0 ? p.k : p.v;
    for (int h = 0; h < c.hkv; ++h) scale.push_back(amax[h] / range);
    codes.resize(n);
    deq.resize(n);
    for (size_t i = 0; i < n; ++i) {
      const int h = static_cast<int>((i / per_head) % c.hkv);
      codes[i] = kv_quantize(c.kv, x[i], scale[h]);
      deq[i] = kv_dequantize(c.kv, codes[i], scale[h]);
    }
  }
  return p;
}

// float64 reference over the dequantized cache: out [T, Hq, D].
std::vector<double> reference(const Problem& p, float scale) {
  const Config& c = p.cfg;
  const int group = c.hq / c.hkv;
  std::vector<double> out(static_cast<size_t>(p.num_tokens) * c.hq * c.d, 0.0);
  std::vector<double> sc;
  for (size_t s = 0; s < c.seqs.size(); ++s) {
    const int q_len = c.seqs[s].q_len, ctx = c.seqs[s].ctx;
    const int32_t* table = &p.block_tables[s * p.max_blocks_per_seq];
    for (int i = 0; i < q_len; ++i) {
      const int t = p.seq_starts[s] + i, pos = ctx - q_len + i;
      for (int h = 0; h < c.hq; ++h) {
        const int kvh = h / group;
        const float* qv = &p.q[(static_cast<size_t>(t) * c.hq + h) * c.d];
        auto row = [&](int j) {
          const size_t blk = static_cast<size_t>(table[j / c.block_size]);
          return ((blk * c.hkv + kvh) * c.block_size + j % c.block_size) * c.d;
        };
        sc.assign(pos + 1, 0.0);
        double mx = -1e300;
        for (int j = 0; j <= pos; ++j) {
          const size_t off = row(j);
          double dot = 0;
          for (int e = 0; e < c.d; ++e) dot += static_cast<double>(qv[e]) * p.k[off + e];
          sc[j] = dot * scale;
          mx = std::max(mx, sc[j]);
        }
        double den = 0;
        double* o = &out[(static_cast<size_t>(t) * c.hq + h) * c.d];
        for (int j = 0; j <= pos; ++j) {
          const double w = std::exp(sc[j] - mx);
          den += w;
          const size_t off = row(j);
          for (int e = 0; e < c.d; ++e) o[e] += w * p.v[off + e];
        }
        for (int e = 0; e < c.d; ++e) o[e] /= den;
      }
    }
  }
  return out;
}

struct DeviceProblem {
  DevBuf q, k, v, ks, vs, out, seq_starts, context_lens, block_tables, workspace;
  cuda::AttentionLaunch launch;
};

DeviceProblem upload(Backend* be, const Problem& p, bool fused_merge) {
  const Config& c = p.cfg;
  DeviceProblem d;
  d.q = DevBuf::of(be, p.q_bits);
  d.k = DevBuf::of(be, p.k_codes);
  d.v = DevBuf::of(be, p.v_codes);
  d.ks = DevBuf::of(be, p.k_scale);
  d.vs = DevBuf::of(be, p.v_scale);
  d.out = DevBuf::poison(be, static_cast<size_t>(p.num_tokens) * c.hq * c.d * 2);  // NaN sentinel
  d.seq_starts = DevBuf::of(be, p.seq_starts);
  d.context_lens = DevBuf::of(be, p.context_lens);
  d.block_tables = DevBuf::of(be, p.block_tables);
  cuda::AttentionLaunch& l = d.launch;
  l.q = d.q.buf.get();
  l.out = d.out.buf.get();
  l.k_cache = d.k.buf.get();
  l.v_cache = d.v.buf.get();
  l.dtype = c.dtype;
  l.kv_dtype = c.kv;
  l.k_scale = static_cast<const float*>(d.ks.buf.get());
  l.v_scale = static_cast<const float*>(d.vs.buf.get());
  l.num_heads = c.hq;
  l.num_kv_heads = c.hkv;
  l.head_dim = c.d;
  l.block_size = c.block_size;
  l.scale = 1.0f / std::sqrt(static_cast<float>(c.d));
  l.batch.num_tokens = p.num_tokens;
  l.batch.num_seqs = static_cast<int32_t>(c.seqs.size());
  l.batch.max_query_len = p.max_q;
  l.batch.max_context_len = p.max_ctx;
  l.batch.max_blocks_per_seq = p.max_blocks_per_seq;
  l.batch.seq_starts = static_cast<const int32_t*>(d.seq_starts.buf.get());
  l.batch.context_lens = static_cast<const int32_t*>(d.context_lens.buf.get());
  l.batch.block_tables = static_cast<const int32_t*>(d.block_tables.buf.get());
  const size_t ws = cuda::attention_workspace_bytes(l.batch.num_seqs, c.hq, c.hkv, c.d);
  d.workspace = DevBuf::of(be, std::vector<uint8_t>(ws, fused_merge ? 0 : 0x5a));
  l.workspace = d.workspace.buf.get();
  l.workspace_bytes = ws;
  l.workspace_zeroed = fused_merge;
  return d;
}

struct RunOptions {
  cuda::AttentionPath path = cuda::AttentionPath::kAuto;
  int decode_splits = 0;
  int prefill_warp_rows = 0;
  bool fused_merge = true;
  int decode_version = 0;  // 0 automatic; 2 the CUDA-core split-KV kernel, 3 the tensor-core one
  bool workspace = true;   // false: no workspace, decode runs as one split
};

std::vector<float> run(Backend* be, const Problem& p, RunOptions o) {
  DeviceProblem d = upload(be, p, o.fused_merge);
  d.launch.path = o.path;
  d.launch.decode_version = o.decode_version;
  if (!o.workspace) {
    d.launch.workspace = nullptr;
    d.launch.workspace_bytes = 0;
    d.launch.workspace_zeroed = false;
  }
  d.launch.decode_splits = o.decode_splits;
  d.launch.prefill_warp_rows = o.prefill_warp_rows;
  const Status st = cuda::launch_attention(d.launch, nullptr);
  EXPECT_TRUE(st.is_ok()) << st.to_string();
  const cudaError_t err = cudaDeviceSynchronize();
  EXPECT_EQ(err, cudaSuccess) << cudaGetErrorString(err);
  if (!st.is_ok() || err != cudaSuccess) return {};
  return to_f32(p.cfg.dtype, d.out.read<uint16_t>(static_cast<size_t>(p.num_tokens) * p.cfg.hq * p.cfg.d));
}

void expect_close(const std::vector<float>& got, const std::vector<double>& want, const Config& c,
                  const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  const double tol = c.dtype == DType::kBF16 ? 1e-2 : 2e-3;
  double num = 0, den = 0, worst = 0;
  for (size_t r = 0; r < got.size() / c.d; ++r) {
    double rn = 0, rd = 0;
    for (int e = 0; e < c.d; ++e) {
      const double g = got[r * c.d + e], w = want[r * c.d + e];
      rn += (g - w) * (g - w);
      rd += w * w;
    }
    num += rn;
    den += rd;
    const double rel = std::isfinite(rn) ? std::sqrt(rn / std::max(rd, 1e-30)) : INFINITY;
    if (!(rel <= worst)) worst = rel;
  }
  EXPECT_LT(std::sqrt(num / std::max(den, 1e-30)), tol) << what;
  EXPECT_LT(worst, 4 * tol) << what;
}

void check_paths(Backend* be, const Config& c, uint32_t seed) {
  const Problem p = make_problem(c, seed);
  const std::vector<double> want = reference(p, 1.0f / std::sqrt(static_cast<float>(c.d)));
  const std::string what = describe(c);
  using cuda::AttentionPath;
  expect_close(run(be, p, {}), want, c, "auto " + what);
  expect_close(run(be, p, {.decode_splits = 7}), want, c, "auto, 7 splits " + what);
  expect_close(run(be, p, {.decode_splits = 7, .fused_merge = false}), want, c, "auto, combine kernel " + what);
  expect_close(run(be, p, {.decode_version = 2}), want, c, "auto, v2 decode " + what);
  expect_close(run(be, p, {.decode_splits = 7, .decode_version = 2}), want, c, "auto, v2 decode, 7 splits " + what);
  if (c.hq / c.hkv <= 16) {
    expect_close(run(be, p, {.decode_splits = 7, .decode_version = 3}), want, c, "auto, v3 decode, 7 splits " + what);
  }
  expect_close(run(be, p, {.path = AttentionPath::kPrefill, .prefill_warp_rows = 16}), want, c, "prefill 16 " + what);
  expect_close(run(be, p, {.path = AttentionPath::kPrefill, .prefill_warp_rows = 32}), want, c, "prefill 32 " + what);
  if (p.max_q == 1) {
    expect_close(run(be, p, {.path = AttentionPath::kDecode}), want, c, "decode " + what);
    expect_close(run(be, p, {.path = AttentionPath::kDecode, .decode_splits = 3}), want, c, "decode 3 splits " + what);
  }
}

const std::vector<SeqSpec> kMixed = {{17, 17}, {1, 97}, {97, 1000}, {1, 1}, {1, 2500}, {5, 40}, {1, 17}};
const std::vector<SeqSpec> kDecodeOnly = {{1, 1}, {1, 17}, {1, 97}, {1, 1000}, {1, 64}, {1, 3000}};

TEST(CudaKvQuant, AttentionDecodeAndPrefillMatchDequantizedReference) {
  ANVIL_REQUIRE_GPU();
  struct HeadShape {
    int hq, hkv, d, bs;
  };
  // GQA 1, 3, 4, 8 (MQA-like 32:1 too), both head dims, every typical block size.
  const HeadShape shapes[] = {{8, 2, 128, 16}, {4, 4, 64, 32}, {6, 2, 128, 64}, {32, 1, 64, 16}, {32, 4, 128, 32}};
  uint32_t seed = 1;
  for (DType dt : {DType::kBF16, DType::kF16}) {
    auto gpu = make_gpu(dt);
    ASSERT_TRUE(gpu);
    for (DType kv : kKvDtypes) {
      for (const HeadShape& s : shapes) {
        for (const auto* seqs : {&kMixed, &kDecodeOnly}) {
          Config c;
          c.dtype = dt;
          c.kv = kv;
          c.hq = s.hq;
          c.hkv = s.hkv;
          c.d = s.d;
          c.block_size = s.bs;
          c.seqs = *seqs;
          check_paths(gpu.get(), c, seed++);
        }
      }
    }
  }
}

// The tensor-core decode kernel (v3) driven explicitly over code caches: fp8 / int8, bf16 / f16
// q, GQA 1 / 4 / 8, head_dim 64 / 128, blocks 16 / 64, decode contexts 1, 15, 64, 1000 and 5000
// in one batch with prefill rows; automatic and forced splits (last-CTA merge and combine kernel)
// and a single split.
TEST(CudaKvQuant, DecodeV3MatchesDequantizedReference) {
  ANVIL_REQUIRE_GPU();
  struct Heads {
    int hq, hkv;
  };
  const Heads heads[] = {{2, 2}, {8, 2}, {16, 2}};
  const std::vector<SeqSpec> seqs = {{1, 1}, {17, 17}, {1, 15}, {1, 64}, {5, 40}, {1, 1000}, {1, 5000}};
  uint32_t seed = 700;
  for (DType dt : {DType::kBF16, DType::kF16}) {
    auto gpu = make_gpu(dt);
    ASSERT_TRUE(gpu);
    for (DType kv : kKvDtypes) {
      for (int d : {64, 128}) {
        for (const Heads& h : heads) {
          for (int bs : {16, 64}) {
            Config c;
            c.dtype = dt;
            c.kv = kv;
            c.hq = h.hq;
            c.hkv = h.hkv;
            c.d = d;
            c.block_size = bs;
            c.seqs = seqs;
            const Problem p = make_problem(c, seed++);
            const std::vector<double> want = reference(p, 1.0f / std::sqrt(static_cast<float>(d)));
            const std::string what = describe(c);
            expect_close(run(gpu.get(), p, {.decode_version = 3}), want, c, "v3 " + what);
            expect_close(run(gpu.get(), p, {.decode_splits = 9, .decode_version = 3}), want, c, "v3, 9 splits " + what);
            expect_close(run(gpu.get(), p, {.decode_splits = 9, .fused_merge = false, .decode_version = 3}), want, c,
                         "v3, 9 splits, combine kernel " + what);
            expect_close(run(gpu.get(), p, {.decode_version = 3, .workspace = false}), want, c, "v3, one split " + what);
          }
        }
      }
    }
  }
}

// One decode step over a code cache captured in a CUDA graph with loose hints (4096 keys), replayed
// after the device context lengths grow (crossing split boundaries) and q changes; v3 and v2.
TEST(CudaKvQuant, DecodeGraphReplayFollowsDeviceLengths) {
  ANVIL_REQUIRE_GPU();
  auto gpu = make_gpu(DType::kBF16);
  ASSERT_TRUE(gpu);
  for (DType kv : kKvDtypes) {
    for (int version : {2, 3}) {
      Config room_cfg;
      room_cfg.kv = kv;
      room_cfg.hq = 32;
      room_cfg.hkv = 8;
      room_cfg.seqs = {{1, 4096}, {1, 4096}, {1, 4096}};
      const Problem room = make_problem(room_cfg, 900 + version);
      DeviceProblem d = upload(gpu.get(), room, true);
      d.launch.decode_version = version;
      cudaStream_t stream;
      ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
      cudaGraph_t graph;
      cudaGraphExec_t exec;
      ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal), cudaSuccess);
      const Status st = cuda::launch_attention(d.launch, stream);
      ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
      ASSERT_TRUE(st.is_ok()) << st.to_string();
      ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
      const int base_ctx[3] = {100, 700, 5};
      for (int step = 0; step < 3; ++step) {
        Problem cur = room;
        for (int s = 0; s < 3; ++s) {
          cur.cfg.seqs[s].ctx = std::min(4096, base_ctx[s] + step * 1500);
          cur.context_lens[s] = cur.cfg.seqs[s].ctx;
        }
        std::mt19937 rng(950 + step);
        std::uniform_real_distribution<float> uq(-3.0f, 3.0f);
        for (float& x : cur.q) x = uq(rng);
        cur.q_bits = round_to(cur.cfg.dtype, cur.q);
        ASSERT_EQ(cudaMemcpy(d.q.buf.get(), cur.q_bits.data(), cur.q_bits.size() * 2, cudaMemcpyHostToDevice),
                  cudaSuccess);
        ASSERT_EQ(cudaMemcpy(d.context_lens.buf.get(), cur.context_lens.data(), cur.context_lens.size() * 4,
                             cudaMemcpyHostToDevice),
                  cudaSuccess);
        ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
        ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
        const auto got = to_f32(cur.cfg.dtype, d.out.read<uint16_t>(cur.q.size()));
        expect_close(got, reference(cur, d.launch.scale), cur.cfg,
                     "graph v" + std::to_string(version) + " step " + std::to_string(step) + " " + describe(cur.cfg));
      }
      cudaGraphExecDestroy(exec);
      cudaGraphDestroy(graph);
      cudaStreamDestroy(stream);
    }
  }
}

TEST(CudaKvQuant, BackendAttentionReadsQuantizedCache) {
  // Through Backend::attention (the path ModelRunner takes): scales from the KvCacheLayer.
  ANVIL_REQUIRE_GPU();
  auto gpu = make_gpu(DType::kBF16);
  ASSERT_TRUE(gpu);
  for (DType kv : kKvDtypes) {
    Config c;
    c.kv = kv;
    c.hq = 16;
    c.hkv = 4;
    c.d = 128;
    c.block_size = 32;
    c.seqs = {{1, 2000}, {33, 400}, {1, 5}};
    const Problem p = make_problem(c, 77);
    const auto want = reference(p, 0.0883883f);
    DeviceProblem d = upload(gpu.get(), p, true);
    KvCacheLayer layer{d.k.buf.get(), d.v.buf.get(), kv, p.num_blocks, c.block_size, c.hkv, c.d};
    layer.k_scale = d.launch.k_scale;
    layer.v_scale = d.launch.v_scale;
    const Tensor q = d.q.t(c.dtype, {p.num_tokens, c.hq, c.d}), out = d.out.t(c.dtype, {p.num_tokens, c.hq, c.d});
    ASSERT_TRUE(gpu->attention(q, layer, d.launch.batch, 0.0883883f, out).is_ok());
    expect_close(to_f32(c.dtype, d.out.read<uint16_t>(static_cast<size_t>(p.num_tokens) * c.hq * c.d)), want, c,
                 "backend " + describe(c));
    layer.k_scale = nullptr;
    EXPECT_EQ(gpu->attention(q, layer, d.launch.batch, 0.0883883f, out).code(), StatusCode::kInvalidArgument);
  }
}

TEST(CudaKvQuant, AttentionRejectsWhatItCannotRead) {
  ANVIL_REQUIRE_GPU();
  auto gpu = make_gpu(DType::kBF16);
  ASSERT_TRUE(gpu);
  Config c;
  c.seqs = {{1, 40}};
  const Problem p = make_problem(c, 3);
  auto code = [&](auto mutate) {
    DeviceProblem d = upload(gpu.get(), p, true);
    mutate(d.launch);
    return cuda::launch_attention(d.launch, nullptr).code();
  };
  EXPECT_EQ(code([](cuda::AttentionLaunch&) {}), StatusCode::kOk);
  EXPECT_EQ(code([](cuda::AttentionLaunch& l) { l.v_scale = nullptr; }), StatusCode::kInvalidArgument);
  EXPECT_EQ(code([](cuda::AttentionLaunch& l) { l.path = cuda::AttentionPath::kReference; }), StatusCode::kUnsupported);
  EXPECT_EQ(code([](cuda::AttentionLaunch& l) { l.decode_version = 1; }), StatusCode::kUnsupported);
  EXPECT_EQ(code([](cuda::AttentionLaunch& l) { l.kv_dtype = DType::kF8E5M2; }), StatusCode::kUnsupported);
  EXPECT_EQ(code([](cuda::AttentionLaunch& l) { l.kv_dtype = DType::kF16; }), StatusCode::kUnsupported);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

// ---- decode speed: v2 vs v3, bf16 vs 8-bit caches (ANVIL_KV_QUANT_BENCH=1) ----
//
// Llama-8B attention shape (Hq 32, Hkv 8, D 128, block 16, shuffled block table), one layer per
// call, fused split merge. Consecutive calls rotate over enough distinct layers of KV that every
// call reads HBM, not L2 (>= 150 MB of codes in rotation). Floor = K+V bytes / 3.0 TB/s. Each
// case also checks v3 against v2 on the same inputs (relative L2 error of the outputs).

TEST(CudaKvQuantBench, DecodeLongContext) {
  ANVIL_REQUIRE_GPU();
  const char* e = std::getenv("ANVIL_KV_QUANT_BENCH");
  if (!e || std::string(e) != "1") GTEST_SKIP() << "set ANVIL_KV_QUANT_BENCH=1 to run the benchmark";
  auto gpu = make_gpu(DType::kBF16);
  ASSERT_TRUE(gpu);
  const double kCopyBw = 3.0e12;  // measured copy bandwidth of the H100 (bytes/s)
  struct Case {
    int seqs, ctx;
  };
  const int hq = 32, hkv = 8, d = 128, bs = 16;
  std::string table_md =
      "| batch x ctx | KV | KV MB | floor us | v2 us | v3 us | v3 GB/s | v3 % of floor | v3 vs v2 | v3-v2 rel err |\n"
      "|---|---|---|---|---|---|---|---|---|---|\n";
  std::string sweep_md;
  for (const Case& cs : {Case{256, 3072}, Case{64, 8192}, Case{32, 4096}, Case{8, 8192}, Case{1, 4096},
                         Case{1, 32768}}) {
    const int blocks_per_seq = cs.ctx / bs;
    const int num_blocks = cs.seqs * blocks_per_seq;
    const size_t elems = static_cast<size_t>(num_blocks) * hkv * bs * d;  // per layer, K or V
    const int layers = static_cast<int>(std::clamp<size_t>((size_t{150} << 20) / (2 * elems) + 1, 1, 64));
    std::vector<int32_t> starts(cs.seqs + 1), ctx(cs.seqs, cs.ctx), table(num_blocks);
    std::iota(starts.begin(), starts.end(), 0);
    std::iota(table.begin(), table.end(), 0);
    std::shuffle(table.begin(), table.end(), std::mt19937(5));
    auto d_starts = DevBuf::of(gpu.get(), starts);
    auto d_ctx = DevBuf::of(gpu.get(), ctx);
    auto d_table = DevBuf::of(gpu.get(), table);
    auto d_q = random_dev(gpu.get(), DType::kBF16, static_cast<size_t>(cs.seqs) * hq * d, 1);
    auto d_out = DevBuf::poison(gpu.get(), static_cast<size_t>(cs.seqs) * hq * d * 2);
    auto d_k16 = random_dev(gpu.get(), DType::kBF16, elems * layers, 2);
    auto d_v16 = random_dev(gpu.get(), DType::kBF16, elems * layers, 3);
    // 8-bit caches: random codes (any byte but e4m3 NaN 0x7f/0xff is a valid code of both).
    std::vector<uint8_t> codes(std::min<size_t>(elems * layers, size_t{1} << 22));
    std::mt19937 rng(9);
    for (auto& b : codes) {
      b = static_cast<uint8_t>(rng() & 0xff);
      if ((b & 0x7f) == 0x7f) b ^= 1;
    }
    auto fill8 = [&](uint32_t rot) {
      DevBuf buf = DevBuf::poison(gpu.get(), 16);
      auto r = DeviceBuffer::create(gpu.get(), elems * layers);
      EXPECT_TRUE(r.is_ok());
      buf.buf = std::move(r).value();
      std::rotate(codes.begin(), codes.begin() + rot, codes.end());
      for (size_t off = 0; off < elems * layers; off += codes.size()) {
        const size_t n = std::min(codes.size(), elems * layers - off);
        EXPECT_TRUE(gpu->copy_h2d(static_cast<uint8_t*>(buf.buf.get()) + off, codes.data(), n).is_ok());
      }
      EXPECT_TRUE(gpu->synchronize().is_ok());
      return buf;
    };
    DevBuf d_k8 = fill8(0), d_v8 = fill8(12345);
    auto d_scales = DevBuf::of(gpu.get(), std::vector<float>(hkv, 0.01f));
    const size_t ws = cuda::attention_workspace_bytes(cs.seqs, hq, hkv, d);
    auto d_ws = DevBuf::of(gpu.get(), std::vector<uint8_t>(ws, 0));
    cuda::AttentionLaunch l;
    l.q = d_q.buf.get();
    l.out = d_out.buf.get();
    l.dtype = DType::kBF16;
    l.num_heads = hq;
    l.num_kv_heads = hkv;
    l.head_dim = d;
    l.block_size = bs;
    l.scale = 0.0883883f;
    l.batch.num_tokens = cs.seqs;
    l.batch.num_seqs = cs.seqs;
    l.batch.max_query_len = 1;
    l.batch.max_context_len = cs.ctx;
    l.batch.max_blocks_per_seq = blocks_per_seq;
    l.batch.seq_starts = static_cast<const int32_t*>(d_starts.buf.get());
    l.batch.context_lens = static_cast<const int32_t*>(d_ctx.buf.get());
    l.batch.block_tables = static_cast<const int32_t*>(d_table.buf.get());
    l.workspace = d_ws.buf.get();
    l.workspace_bytes = ws;
    l.workspace_zeroed = true;
    for (DType kv : {DType::kBF16, DType::kF8E4M3, DType::kI8}) {
      const bool q8 = kv != DType::kBF16;
      const size_t eb = q8 ? 1 : 2;
      cuda::AttentionLaunch x = l;
      const char* kbase = static_cast<const char*>(q8 ? d_k8.buf.get() : d_k16.buf.get());
      const char* vbase = static_cast<const char*>(q8 ? d_v8.buf.get() : d_v16.buf.get());
      if (q8) {
        x.kv_dtype = kv;
        x.k_scale = x.v_scale = static_cast<const float*>(d_scales.buf.get());
      }
      double us[2] = {0, 0};
      std::vector<float> outs[2];
      for (int vi = 0; vi < 2; ++vi) {
        x.decode_version = vi == 0 ? 2 : 3;
        x.k_cache = kbase;
        x.v_cache = vbase;
        const Status st = cuda::launch_attention(x, nullptr);
        ASSERT_TRUE(st.is_ok()) << st.to_string();
        ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
        outs[vi] = to_f32(DType::kBF16, d_out.read<uint16_t>(static_cast<size_t>(cs.seqs) * hq * d));
        us[vi] = time_us(nullptr, [&](int i) {
          const size_t layer = static_cast<size_t>(i % layers);
          x.k_cache = kbase + layer * elems * eb;
          x.v_cache = vbase + layer * elems * eb;
          (void)cuda::launch_attention(x, nullptr);
        });
        ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      }
      const double err = rel_err(outs[1], outs[0]);
      EXPECT_LT(err, 1e-2) << cs.seqs << " x " << cs.ctx << " " << dtype_name(kv);
      const double bytes = 2.0 * elems * eb;
      const double floor_us = bytes / kCopyBw * 1e6;
      char line[320];
      std::snprintf(line, sizeof line, "| %d x %d | %s | %.1f | %.1f | %.1f | %.1f | %.0f | %.0f%% | %.2fx | %.1e |\n",
                    cs.seqs, cs.ctx, std::string(dtype_name(kv)).c_str(), bytes / 1e6, floor_us, us[0], us[1],
                    bytes / us[1] / 1e3, 100.0 * floor_us / us[1], us[0] / us[1], err);
      std::printf("%s", line);
      table_md += line;
      // Split sweep of v3 (fp8) where the grid is about one wave: forced counts (capped by the
      // launcher like the automatic one) against the automatic choice.
      if (kv == DType::kF8E4M3 && cs.seqs <= 8) {
        std::string sweep = "  v3 f8e4m3 " + std::to_string(cs.seqs) + " x " + std::to_string(cs.ctx) + " splits:";
        x.decode_version = 3;
        for (int sp : {2, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128}) {
          x.decode_splits = sp;
          const double t = time_us(nullptr, [&](int i) {
            const size_t layer = static_cast<size_t>(i % layers);
            x.k_cache = kbase + layer * elems * eb;
            x.v_cache = vbase + layer * elems * eb;
            (void)cuda::launch_attention(x, nullptr);
          });
          char item[48];
          std::snprintf(item, sizeof item, " %d: %.1f", sp, t);
          sweep += item;
        }
        x.decode_splits = 0;
        sweep_md += sweep + " (auto " + std::to_string(us[1]).substr(0, 5) + ")\n";
      }
    }
  }
  std::printf("\n%s\n%s", table_md.c_str(), sweep_md.c_str());
}

}  // namespace
}  // namespace anvil::test
