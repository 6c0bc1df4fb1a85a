// Tests of the W8A8 linear (ops/quant_w8a8.h, backend.h kFp8W8A8 / kInt8W8A8) against a host
// reference with backend.h's exact semantics: activations quantized per token on the host the way
// cpu_quant.cpp does (core/dtype.h's e4m3), sum_k qx * q exactly (double), then f32
// (acc * (s_t * s_w) + bias), rounded to the output dtype. Tolerances, per element:
//   int8:  bit-exact (exact int32 sums, then the same f32 operations and the same rounding);
//   fp8:   1 ulp of the output dtype + tol * L1, L1 = s_t * s_w * sum_k |qx * q|: Hopper's fp8
//          tensor cores keep partial sums with fewer bits than f32 (measured up to ~3e-4 * L1 even
//          at K = 48), so tol = 2^-10 with cuBLASLt's periodic promotion and 2^-8 with fast
//          accumulation.
// The activation quantization kernel must match the host bit for bit (bytes and scales).
// W8A8Bench (ANVIL_W8A8_BENCH=1) times llama-8b shapes against bf16 cuBLASLt.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "backend/cuda/ops/quant_w8a8.h"
#include "core/thread_pool.h"
#include "cuda_test_util.h"

namespace anvil::test {
namespace {

using cuda::W8A8Linear;
using cuda::W8A8Path;
using cuda::W8A8Shape;

bool is_int8(QuantFormat f) { return f == QuantFormat::kInt8W8A8; }

// backend.h / cpu_quant.cpp: s = amax / qmax (1 for a zero row), q = quant(x * (1 / s)).
float host_quant_row(QuantFormat f, const float* x, int64_t k, uint8_t* q) {
  float amax = 0.0f;
  for (int64_t c = 0; c < k; ++c) amax = std::max(amax, std::fabs(x[c]));
  const float s = amax > 0.0f ? amax / (is_int8(f) ? 127.0f : 448.0f) : 1.0f;
  const float inv = 1.0f / s;
  for (int64_t c = 0; c < k; ++c) {
    const float v = x[c] * inv;
    q[c] = is_int8(f) ? static_cast<uint8_t>(static_cast<int8_t>(std::clamp(std::nearbyint(v), -127.0f, 127.0f)))
                      : f32_to_f8e4m3(v);
  }
  return s;
}

std::vector<float> byte_lut(QuantFormat f) {
  std::vector<float> lut(256);
  for (int b = 0; b < 256; ++b) lut[b] = is_int8(f) ? static_cast<float>(static_cast<int8_t>(b)) : f8e4m3_to_f32(b);
  return lut;
}

// Activations [m, k] in the 16-bit dtype: uniform [-1, 1], every 61st channel an outlier (x 24),
// row 2 all zeros (scale 1 path) when m > 4.
struct Acts {
  int64_t m = 0, k = 0;
  DType dt = DType::kBF16;
  std::vector<float> x;
  std::vector<uint16_t> bits;
  DevBuf dev;
  Acts(Backend* be, int64_t m_, int64_t k_, DType dt_, uint32_t seed) : m(m_), k(k_), dt(dt_) {
    x = random_floats(m * k, seed);
    for (int64_t i = 0; i < m; ++i)
      for (int64_t c = 0; c < k; c += 61) x[i * k + c] *= 24.0f;
    if (m > 4) std::fill(x.begin() + 2 * k, x.begin() + 3 * k, 0.0f);
    bits = round_to(dt, x);
    dev = DevBuf::of(be, bits);
  }
  // Host quantization of every row: q [m, k], s [m].
  void quantize(QuantFormat f, std::vector<uint8_t>& q, std::vector<float>& s) const {
    q.resize(m * k);
    s.resize(m);
    for (int64_t i = 0; i < m; ++i) s[i] = host_quant_row(f, x.data() + i * k, k, q.data() + i * k);
  }
};

// Quantized weight [n, k] and per-channel scales; a random 1M-byte block tiled (cheap for 117M
// elements, still non-repeating within any GEMM tile).
struct Weights {
  QuantFormat f;
  int64_t n = 0, k = 0;
  std::vector<uint8_t> q;
  std::vector<float> s;
  DevBuf dq, ds;
  Weights(Backend* be, QuantFormat f_, int64_t n_, int64_t k_, uint32_t seed) : f(f_), n(n_), k(k_) {
    const size_t total = static_cast<size_t>(n * k), block = std::min<size_t>(total, size_t{1} << 20);
    std::mt19937 rng(seed);
    std::vector<uint8_t> blk(block);
    std::uniform_int_distribution<int> i8(-127, 127);
    std::uniform_real_distribution<float> f8(-448.0f, 448.0f);
    for (auto& b : blk) b = is_int8(f) ? static_cast<uint8_t>(static_cast<int8_t>(i8(rng))) : f32_to_f8e4m3(f8(rng));
    q.resize(total);
    for (size_t off = 0; off < total; off += block) std::copy_n(blk.begin(), std::min(block, total - off), q.begin() + off);
    std::uniform_real_distribution<float> sd(0.5f, 1.5f);
    s.resize(n);
    for (auto& v : s) v = sd(rng) * 0.05f / (is_int8(f) ? 127.0f : 448.0f);
    dq = DevBuf::of(be, q);
    ds = DevBuf::of(be, s);
  }
};

double ulp_rel(DType t) { return t == DType::kBF16 ? 1.0 / 128 : t == DType::kF16 ? 1.0 / 1024 : 1.0 / (1 << 22); }
// Absolute floor: the spacing of subnormals.
double ulp_abs(DType t) { return t == DType::kF16 ? std::ldexp(1.0, -24) : 1e-38; }

// f32 -> the output dtype -> f32 (round to nearest even, as the device stores).
float round_to_dtype(DType t, float v) {
  if (t == DType::kF32) return v;
  uint16_t b = 0;
  convert_from_f32(t, &v, &b, 1);
  float r = 0;
  convert_to_f32(t, &b, &r, 1);
  return r;
}

struct CheckResult {
  double max_err_over_l1 = 0;  // max over elements of |out - ref| / L1
  double rel_norm = 0;         // ||out - ref|| / ||ref|| over the checked rows
  int64_t exact = 0, checked = 0;
};

// Compares rows `rows` of out [m, n] (any dtype, converted to f32) with the reference; every row
// must be finite (poisoned output catches unwritten elements).
CheckResult check_rows(const std::vector<float>& out, const Acts& a, const std::vector<uint8_t>& qx,
                       const std::vector<float>& st, const Weights& w, const std::vector<float>* bias,
                       const std::vector<int64_t>& rows, DType out_dt, double tol_l1, bool bit_exact,
                       const std::string& what) {
  const int64_t n = w.n, k = w.k;
  for (size_t i = 0; i < out.size(); ++i) {
    if (!std::isfinite(out[i])) {
      ADD_FAILURE() << what << ": non-finite output at " << i;
      return {};
    }
  }
  const std::vector<float> lut = byte_lut(w.f);
  std::vector<float> ref(rows.size() * n), l1(rows.size() * n);
  ThreadPool::global().parallel_for(n, [&](int64_t nb, int64_t ne) {
    std::vector<float> wr(k);
    for (int64_t j = nb; j < ne; ++j) {
      for (int64_t c = 0; c < k; ++c) wr[c] = lut[w.q[j * k + c]];
      for (size_t r = 0; r < rows.size(); ++r) {
        const int64_t i = rows[r];
        double acc = 0, abs = 0;
        for (int64_t c = 0; c < k; ++c) {
          const double t = static_cast<double>(lut[qx[i * k + c]]) * wr[c];  // exact in double
          acc += t;
          abs += std::fabs(t);
        }
        float v = static_cast<float>(acc);
        v = v * (st[i] * w.s[j]);
        if (bias) v = v + (*bias)[j];
        ref[r * n + j] = v;
        l1[r * n + j] = static_cast<float>(abs * st[i] * w.s[j]);
      }
    }
  });
  (void)a;
  CheckResult res;
  double num = 0, den = 0;
  int bad = 0;
  const double ur = ulp_rel(out_dt);
  for (size_t r = 0; r < rows.size(); ++r) {
    for (int64_t j = 0; j < n; ++j) {
      const double o = out[rows[r] * n + j], rf = ref[r * n + j];
      const double err = std::fabs(o - rf);
      num += err * err;
      den += rf * rf;
      const bool exact = out[rows[r] * n + j] == round_to_dtype(out_dt, ref[r * n + j]);
      res.exact += exact;
      ++res.checked;
      if (l1[r * n + j] > 0) res.max_err_over_l1 = std::max(res.max_err_over_l1, err / l1[r * n + j]);
      const double allowed = ur * std::fabs(rf) + ulp_abs(out_dt) + tol_l1 * l1[r * n + j];
      if (!(bit_exact ? exact : err <= allowed) && bad++ < 3) {
        ADD_FAILURE() << what << ": row " << rows[r] << " col " << j << " = " << o << ", reference " << rf
                      << " (L1 " << l1[r * n + j] << ")";
      }
    }
  }
  EXPECT_EQ(bad, 0) << what;
  res.rel_norm = std::sqrt(num / std::max(den, 1e-30));
  return res;
}

std::vector<float> read_out(const DevBuf& o, DType dt, size_t count) {
  if (dt == DType::kF32) return o.read<float>(count);
  return to_f32(dt, o.read<uint16_t>(count));
}

// Rows to check: all when the reference is cheap, else a spread including the first and last.
std::vector<int64_t> rows_to_check(int64_t m, int64_t n, int64_t k) {
  std::vector<int64_t> rows;
  if (m * n * k <= (int64_t{1} << 28)) {
    for (int64_t i = 0; i < m; ++i) rows.push_back(i);
    return rows;
  }
  const int64_t want = std::max<int64_t>(2, (int64_t{1} << 29) / (n * k));
  for (int64_t i = 0; i < m; i += std::max<int64_t>(1, m / want)) rows.push_back(i);
  if (rows.back() != m - 1) rows.push_back(m - 1);
  if (m > 2 && std::find(rows.begin(), rows.end(), 2) == rows.end()) rows.push_back(2);  // the zero row
  return rows;
}

struct Variant {
  const char* name;
  bool outer_vec;
  bool fast_accum;
  double tol_l1;
  bool bit_exact;
};
constexpr Variant kFp8Default{"fp8", true, false, 1.0 / 1024, false};
constexpr Variant kFp8Epilogue{"fp8/epilogue", false, false, 1.0 / 1024, false};
constexpr Variant kFp8Fast{"fp8/fast-accum", true, true, 1.0 / 256, false};
constexpr Variant kInt8{"int8", false, false, 0.0, true};

std::unique_ptr<Backend> gpu_or_skip(DType dt) { return cuda_device_present() ? make_gpu(dt) : nullptr; }

std::unique_ptr<W8A8Linear> make_runner(Backend* be) {
  auto r = W8A8Linear::create(static_cast<CudaBackend*>(be)->stream());
  EXPECT_TRUE(r.is_ok()) << r.status().to_string();
  return r.is_ok() ? std::move(r).value() : nullptr;
}

// Runs one case on rows [0, m) of `a` and checks it. bias_dt kI32 = no bias.
void run_case(Backend* be, W8A8Linear& lin, const Acts& a, int64_t m, const std::vector<uint8_t>& qx,
              const std::vector<float>& st, const Weights& w, DType out_dt, DType bias_dt, const Variant& v) {
  const bool has_bias = bias_dt != DType::kI32;
  std::vector<float> bias;
  DevBuf dbias;
  if (has_bias) {
    bias = random_floats(w.n, 99, -0.5f, 0.5f);
    if (bias_dt == DType::kF32) {
      dbias = DevBuf::of(be, bias);
    } else {
      dbias = DevBuf::of(be, round_to(bias_dt, bias));
    }
  }
  lin.set_fp8_outer_vec_scaling(v.outer_vec);
  lin.set_fp8_fast_accum(v.fast_accum);
  W8A8Shape s;
  s.format = w.f;
  s.m = m;
  s.n = w.n;
  s.k = w.k;
  s.in_dtype = a.dt;
  s.out_dtype = out_dt;
  s.has_bias = has_bias;
  s.bias_dtype = has_bias ? bias_dt : DType::kBF16;
  DevBuf o = DevBuf::poison(be, static_cast<size_t>(m * w.n) * dtype_size(out_dt));
  Status st_run = lin.run(s, a.dev.buf.get(), w.dq.buf.get(), static_cast<const float*>(w.ds.buf.get()),
                          has_bias ? dbias.buf.get() : nullptr, o.buf.get());
  ASSERT_TRUE(st_run.is_ok()) << st_run.to_string();
  auto path = lin.path_for(s);
  ASSERT_TRUE(path.is_ok()) << path.status().to_string();
  std::ostringstream what;
  what << v.name << " [" << cuda::w8a8_path_name(path.value()) << "] M=" << m << " N=" << w.n << " K=" << w.k << " "
       << dtype_name(a.dt) << "->" << dtype_name(out_dt) << " bias " << (has_bias ? dtype_name(bias_dt) : "none");
  const std::vector<float> out = read_out(o, out_dt, m * w.n);
  const CheckResult r = check_rows(out, a, qx, st, w, has_bias ? &bias : nullptr, rows_to_check(m, w.n, w.k), out_dt,
                                   v.tol_l1, v.bit_exact, what.str());
  std::printf("  %-90s rel %.2e  max err/L1 %.2e  bit-exact %.1f%%\n", what.str().c_str(), r.rel_norm, r.max_err_over_l1,
              100.0 * r.exact / std::max<int64_t>(r.checked, 1));
}

TEST(W8A8, ActQuantMatchesHostBitForBit) {
  auto gpu = gpu_or_skip(DType::kBF16);
  if (!gpu) {
    GTEST_SKIP() << "no CUDA device";
  }
  auto* be = static_cast<CudaBackend*>(gpu.get());
  struct C {
    int64_t m, k;
  };
  // k: one warp, registers (1/2/4/8 packs per thread), and the two-read path (k > 65536).
  for (C c : {C{3, 16}, C{7, 48}, C{64, 4096}, C{5, 8192}, C{9, 14336}, C{3, 28672}, C{3, 32768}, C{2, 65536},
              C{3, 70016}}) {
    for (DType dt : {DType::kBF16, DType::kF16}) {
      Acts a(gpu.get(), c.m, c.k, dt, 11);
      for (QuantFormat f : {QuantFormat::kFp8W8A8, QuantFormat::kInt8W8A8}) {
        std::vector<uint8_t> q;
        std::vector<float> s;
        a.quantize(f, q, s);
        DevBuf dq = DevBuf::poison(gpu.get(), q.size());
        DevBuf ds = DevBuf::poison(gpu.get(), s.size() * 4);
        const Status st = cuda::launch_act_quant(a.dev.buf.get(), dt, f, c.m, c.k, dq.buf.get(),
                                                 static_cast<float*>(ds.buf.get()), be->stream());
        ASSERT_TRUE(st.is_ok()) << st.to_string() << " k=" << c.k;
        const auto gq = dq.read<uint8_t>(q.size());
        const auto gs = ds.read<float>(s.size());
        int64_t diff = 0;
        for (size_t i = 0; i < q.size(); ++i) diff += gq[i] != q[i];
        EXPECT_EQ(diff, 0) << quant_format_name(f) << " " << dtype_name(dt) << " m=" << c.m << " k=" << c.k;
        for (int64_t i = 0; i < c.m; ++i) {
          EXPECT_EQ(gs[i], s[i]) << "scale of row " << i << " k=" << c.k << " " << quant_format_name(f);
        }
        if (c.m > 4) {
          EXPECT_EQ(gs[2], 1.0f) << "a zero row has scale 1";
        }
      }
    }
  }
}

// Small and odd-ish shapes (K % 16 == 0, N % 8 == 0), every M of the brief, every output and bias
// dtype, both formats and all fp8 paths; references over every row.
TEST(W8A8, SmallShapesAllPathsAndDtypes) {
  for (DType dt : {DType::kBF16, DType::kF16}) {
    auto gpu = gpu_or_skip(dt);
    if (!gpu) {
      GTEST_SKIP() << "no CUDA device";
    }
    auto lin = make_runner(gpu.get());
    ASSERT_TRUE(lin);
    struct NK {
      int64_t n, k;
    };
    for (NK nk : {NK{24, 48}, NK{200, 80}, NK{64, 1024}}) {
      Acts sub(gpu.get(), 2048, nk.k, dt, 7 + static_cast<uint32_t>(nk.k));
      for (QuantFormat f : {QuantFormat::kFp8W8A8, QuantFormat::kInt8W8A8}) {
        Weights w(gpu.get(), f, nk.n, nk.k, 21);
        std::vector<uint8_t> qx;
        std::vector<float> st;
        sub.quantize(f, qx, st);
        const std::vector<Variant> variants =
            is_int8(f) ? std::vector<Variant>{kInt8} : std::vector<Variant>{kFp8Default, kFp8Epilogue, kFp8Fast};
        int idx = 0;
        for (int64_t m : {1, 2, 7, 64, 257, 2048}) {
          for (const Variant& v : variants) {
            // Cycle through output / bias dtypes so each path sees every combination.
            const DType outs[] = {dt, DType::kF32, dt};
            const DType biases[] = {DType::kI32, dt, DType::kF32, dt};
            const int oi = static_cast<int>((idx / static_cast<int>(variants.size()) + idx) % 3);
            run_case(gpu.get(), *lin, sub, m, qx, st, w, outs[oi], biases[idx % 4], v);
            ++idx;
          }
        }
      }
    }
  }
}

// llama-8b projection shapes (qkv, o, gate_up, down) at decode and prefill sizes; sampled rows.
TEST(W8A8, LlamaShapes) {
  auto gpu = gpu_or_skip(DType::kBF16);
  if (!gpu) {
    GTEST_SKIP() << "no CUDA device";
  }
  auto lin = make_runner(gpu.get());
  ASSERT_TRUE(lin);
  struct NK {
    int64_t n, k;
  };
  for (NK nk : {NK{6144, 4096}, NK{4096, 4096}, NK{28672, 4096}, NK{4096, 14336}}) {
    Acts a(gpu.get(), 2048, nk.k, DType::kBF16, 31);
    for (QuantFormat f : {QuantFormat::kFp8W8A8, QuantFormat::kInt8W8A8}) {
      Weights w(gpu.get(), f, nk.n, nk.k, 41);
      std::vector<uint8_t> qx;
      std::vector<float> st;
      a.quantize(f, qx, st);
      for (int64_t m : {1, 7, 257, 2048}) {
        run_case(gpu.get(), *lin, a, m, qx, st, w, DType::kBF16, m == 7 ? DType::kBF16 : DType::kI32,
                 is_int8(f) ? kInt8 : kFp8Default);
      }
      // f32 outputs expose the accumulation error itself (no 16-bit rounding on top).
      run_case(gpu.get(), *lin, a, 257, qx, st, w, DType::kF32, DType::kBF16, is_int8(f) ? kInt8 : kFp8Default);
      if (!is_int8(f)) {
        run_case(gpu.get(), *lin, a, 2048, qx, st, w, DType::kBF16, DType::kI32, kFp8Epilogue);
        run_case(gpu.get(), *lin, a, 257, qx, st, w, DType::kF32, DType::kBF16, kFp8Fast);
        run_case(gpu.get(), *lin, a, 2048, qx, st, w, DType::kBF16, DType::kI32, kFp8Fast);
      }
    }
  }
}

TEST(W8A8, RejectsUnsupportedShapesClearly) {
  auto gpu = gpu_or_skip(DType::kBF16);
  if (!gpu) {
    GTEST_SKIP() << "no CUDA device";
  }
  auto lin = make_runner(gpu.get());
  ASSERT_TRUE(lin);
  W8A8Shape s;
  s.m = 4;
  s.n = 64;
  s.k = 40;
  Status st = lin->check(s);
  EXPECT_EQ(st.code(), StatusCode::kUnsupported);
  EXPECT_NE(st.message().find("K must be a multiple of 16"), std::string::npos) << st.to_string();
  s.k = 64;
  s.n = 12;
  st = lin->check(s);
  EXPECT_NE(st.message().find("N must be a multiple of 8"), std::string::npos) << st.to_string();
  s.n = 64;
  s.format = QuantFormat::kInt4Group;
  EXPECT_FALSE(lin->check(s).is_ok());
  s.format = QuantFormat::kInt8W8A8;
  s.out_dtype = DType::kI8;
  EXPECT_FALSE(lin->check(s).is_ok());
  s.out_dtype = DType::kBF16;
  EXPECT_TRUE(lin->check(s).is_ok());
  // Through the backend: the error names the op, no crash, nothing written.
  const int64_t n = 24, k = 40;
  std::vector<uint8_t> wq(n * k, 1);
  std::vector<float> ws(n, 1.0f);
  auto dw = DevBuf::of(gpu.get(), wq);
  auto dws = DevBuf::of(gpu.get(), ws);
  auto x = random_dev(gpu.get(), DType::kBF16, 2 * k, 3);
  auto o = DevBuf::poison(gpu.get(), 2 * n * 2);
  QuantizedWeight qw;
  qw.format = QuantFormat::kFp8W8A8;
  qw.n = n;
  qw.k = k;
  qw.data = dw.buf.get();
  qw.scales = dws.buf.get();
  st = gpu->linear_quantized(x.t(DType::kBF16, {2, k}), qw, Tensor(), o.t(DType::kBF16, {2, n}));
  EXPECT_FALSE(st.is_ok());
  EXPECT_NE(st.message().find("K must be a multiple of 16"), std::string::npos) << st.to_string();
}

// The backend entry point and CUDA-graph replay: the scales are recomputed from the new
// activations on every replay; a larger M during capture fails clearly instead of allocating.
TEST(W8A8, BackendEntryAndGraphReplay) {
  auto gpu = gpu_or_skip(DType::kBF16);
  if (!gpu) {
    GTEST_SKIP() << "no CUDA device";
  }
  // M = 17: the smallest M the backend sends through the W8A8 GEMMs (M <= 16 runs weight-only).
  const int64_t m = 17, n = 256, k = 512;
  for (QuantFormat f : {QuantFormat::kFp8W8A8, QuantFormat::kInt8W8A8}) {
    Weights w(gpu.get(), f, n, k, 51);
    Acts a1(gpu.get(), m, k, DType::kBF16, 61), a2(gpu.get(), m, k, DType::kBF16, 62);
    QuantizedWeight qw;
    qw.format = f;
    qw.n = n;
    qw.k = k;
    qw.data = w.dq.buf.get();
    qw.scales = w.ds.buf.get();
    std::vector<float> bias = random_floats(n, 71);
    auto dbias = DevBuf::of(gpu.get(), round_to(DType::kBF16, bias));
    auto xin = DevBuf::poison(gpu.get(), m * k * 2);
    auto o = DevBuf::poison(gpu.get(), m * n * 2);
    const Tensor xt = xin.t(DType::kBF16, {m, k});
    auto big = DevBuf::poison(gpu.get(), 4096 * k * 2);
    auto big_o = DevBuf::poison(gpu.get(), 4096 * n * 4);
    ASSERT_TRUE(gpu->copy_d2d(xin.buf.get(), a1.dev.buf.get(), m * k * 2).is_ok());
    ASSERT_TRUE(gpu->linear_quantized(xt, qw, dbias.t(DType::kBF16, {n}), o.t(DType::kBF16, {m, n})).is_ok());
    ASSERT_TRUE(gpu->begin_capture().is_ok());
    Status st = gpu->linear_quantized(xt, qw, dbias.t(DType::kBF16, {n}), o.t(DType::kBF16, {m, n}));
    Status grow = gpu->linear_quantized(big.t(DType::kBF16, {4096, k}), qw, Tensor(), big_o.t(DType::kF32, {4096, n}));
    auto g = gpu->end_capture();
    ASSERT_TRUE(st.is_ok()) << st.to_string();
    EXPECT_FALSE(grow.is_ok());
    EXPECT_NE(grow.message().find("graph capture"), std::string::npos) << grow.to_string();
    ASSERT_TRUE(g.is_ok()) << g.status().to_string();
    for (const Acts* a : {&a2, &a1}) {
      ASSERT_TRUE(gpu->copy_d2d(xin.buf.get(), a->dev.buf.get(), m * k * 2).is_ok());
      ASSERT_TRUE(gpu->memset_zero(o.buf.get(), m * n * 2).is_ok());
      ASSERT_TRUE(gpu->replay(g.value()).is_ok());
      std::vector<uint8_t> qx;
      std::vector<float> s_t;
      a->quantize(f, qx, s_t);
      std::vector<float> bias_r = bias;
      round_to(DType::kBF16, bias_r);
      const auto out = read_out(o, DType::kBF16, m * n);
      std::vector<int64_t> rows;
      for (int64_t i = 0; i < m; ++i) rows.push_back(i);
      const Variant& v = is_int8(f) ? kInt8 : kFp8Default;
      check_rows(out, *a, qx, s_t, w, &bias_r, rows, DType::kBF16, v.tol_l1, v.bit_exact,
                 std::string("graph replay ") + quant_format_name(f));
    }
  }
}

// ---- micro-benchmark (ANVIL_W8A8_BENCH=1) ----

struct Report {
  std::ostringstream md;
  void row(const std::string& s) {
    md << s << "\n";
    std::printf("%s\n", s.c_str());
  }
  ~Report() {
    if (const char* p = std::getenv("ANVIL_BENCH_OUT")) std::ofstream(p, std::ios::app) << md.str();
  }
};

TEST(W8A8Bench, Llama8b) {
  const char* e = std::getenv("ANVIL_W8A8_BENCH");
  if (!e || std::string(e) != "1") {
    GTEST_SKIP() << "set ANVIL_W8A8_BENCH=1 to run the W8A8 micro-benchmarks";
  }
  auto gpu = gpu_or_skip(DType::kBF16);
  if (!gpu) {
    GTEST_SKIP() << "no CUDA device";
  }
  auto* be = static_cast<CudaBackend*>(gpu.get());
  auto lin = make_runner(gpu.get());
  ASSERT_TRUE(lin);
  cudaStream_t stream = be->stream();
  Report rep;
  char line[512];
  rep.row("device: " + gpu->name());

  // Activation quantization alone: read 2 bytes, write 1 per element (+ 4 per row).
  rep.row("\n| act_quant (bf16 in) | M | K | us | GB/s |");
  rep.row("| --- | --- | --- | --- | --- |");
  for (int64_t k : {int64_t{4096}, int64_t{14336}}) {
    for (QuantFormat f : {QuantFormat::kFp8W8A8, QuantFormat::kInt8W8A8}) {
      const int64_t m = 2048;
      auto x = random_dev(gpu.get(), DType::kBF16, m * k, 3);
      auto q = DevBuf::poison(gpu.get(), m * k);
      auto s = DevBuf::poison(gpu.get(), m * 4);
      const double us = time_us(stream, [&](int) {
        (void)cuda::launch_act_quant(x.buf.get(), DType::kBF16, f, m, k, q.buf.get(), static_cast<float*>(s.buf.get()),
                                     stream);
      });
      std::snprintf(line, sizeof line, "| %s | %lld | %lld | %.1f | %.0f |", is_int8(f) ? "int8" : "e4m3",
                    (long long)m, (long long)k, us, (3.0 * m * k + 4.0 * m) / us / 1e3);
      rep.row(line);
    }
  }

  // Epilogue alone (int32 acc -> bf16): read 4 bytes, write 2 per element.
  {
    const int64_t m = 2048, n = 28672;
    auto acc = DevBuf::poison(gpu.get(), m * n * 4);
    ASSERT_TRUE(gpu->memset_zero(acc.buf.get(), m * n * 4).is_ok());
    auto st = DevBuf::of(gpu.get(), std::vector<float>(m, 1.0f));
    auto sw = DevBuf::of(gpu.get(), std::vector<float>(n, 1.0f));
    auto o = DevBuf::poison(gpu.get(), m * n * 2);
    const double us = time_us(stream, [&](int) {
      (void)cuda::launch_w8a8_epilogue(acc.buf.get(), true, static_cast<float*>(st.buf.get()),
                                       static_cast<float*>(sw.buf.get()), nullptr, DType::kBF16, o.buf.get(),
                                       DType::kBF16, m, n, stream);
    });
    std::snprintf(line, sizeof line, "\nepilogue i32 -> bf16, M=%lld N=%lld: %.1f us, %.0f GB/s", (long long)m,
                  (long long)n, us, 6.0 * m * n / us / 1e3);
    rep.row(line);
  }

  rep.row("\n| GEMM | M | N | K | bf16 us | bf16 TF/s | fp8 path | fp8 us | fp8 TF/s | fp8 fast-acc TF/s | "
          "fp8 epilogue-path TF/s | fp8 e2e us | int8 us | int8 TF/s | int8 e2e us |");
  rep.row("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
  struct G {
    const char* name;
    int64_t n, k;
  };
  const G shapes[] = {{"qkv", 6144, 4096}, {"o", 4096, 4096}, {"gate_up", 28672, 4096}, {"down", 4096, 14336}};
  for (int64_t m : {int64_t{2048}, int64_t{16}, int64_t{1}}) {
    for (const G& g : shapes) {
      // M <= 16: rotate weights past the 50 MB L2 so decode numbers are HBM numbers.
      const int copies = m <= 16 ? static_cast<int>(std::clamp<int64_t>((int64_t{200} << 20) / (g.n * g.k) + 1, 1, 4)) : 1;
      std::vector<DevBuf> wb;
      for (int i = 0; i < copies; ++i) wb.push_back(random_dev(gpu.get(), DType::kBF16, g.n * g.k, 100 + i));
      auto x = random_dev(gpu.get(), DType::kBF16, m * g.k, 7);
      auto o = DevBuf::poison(gpu.get(), m * g.n * 4);
      const double flops = 2.0 * m * g.n * g.k;
      const int batches = m <= 16 ? 15 : 7, per = m <= 16 ? 10 : 4;
      const double bf16_us = time_us(stream, [&](int i) {
        (void)gpu->linear(x.t(DType::kBF16, {m, g.k}), wb[i % copies].t(DType::kBF16, {g.n, g.k}), Tensor(),
                          o.t(DType::kBF16, {m, g.n}));
      }, batches, per);
      wb.clear();
      double t[2][4] = {};  // [fp8, int8][gemm, fast, epilogue-path, e2e]
      std::string fp8_path = "-";
      for (QuantFormat f : {QuantFormat::kFp8W8A8, QuantFormat::kInt8W8A8}) {
        const int fi = is_int8(f) ? 1 : 0;
        std::vector<std::unique_ptr<Weights>> ws;
        for (int i = 0; i < copies; ++i) ws.push_back(std::make_unique<Weights>(gpu.get(), f, g.n, g.k, 200 + i));
        auto qx = DevBuf::poison(gpu.get(), m * g.k);
        auto st = DevBuf::poison(gpu.get(), m * 4);
        ASSERT_TRUE(cuda::launch_act_quant(x.buf.get(), DType::kBF16, f, m, g.k, qx.buf.get(),
                                           static_cast<float*>(st.buf.get()), stream)
                        .is_ok());
        W8A8Shape s;
        s.format = f;
        s.m = m;
        s.n = g.n;
        s.k = g.k;
        auto gemm_only = [&](int i) {
          Status r = lin->run_prequantized(s, qx.buf.get(), static_cast<float*>(st.buf.get()), ws[i % copies]->dq.buf.get(),
                                           static_cast<float*>(ws[i % copies]->ds.buf.get()), nullptr, o.buf.get());
          if (!r.is_ok()) ADD_FAILURE() << r.to_string();
        };
        lin->set_fp8_outer_vec_scaling(true);
        lin->set_fp8_fast_accum(false);
        if (!is_int8(f)) {
          auto p = lin->path_for(s);
          if (p.is_ok()) fp8_path = cuda::w8a8_path_name(p.value());
        }
        t[fi][0] = time_us(stream, gemm_only, batches, per);
        if (!is_int8(f)) {
          lin->set_fp8_fast_accum(true);
          t[fi][1] = time_us(stream, gemm_only, batches, per);
          lin->set_fp8_fast_accum(false);
          lin->set_fp8_outer_vec_scaling(false);
          t[fi][2] = time_us(stream, gemm_only, batches, per);
          lin->set_fp8_outer_vec_scaling(true);
        }
        t[fi][3] = time_us(stream, [&](int i) {
          Status r = lin->run(s, x.buf.get(), ws[i % copies]->dq.buf.get(),
                              static_cast<float*>(ws[i % copies]->ds.buf.get()), nullptr, o.buf.get());
          if (!r.is_ok()) ADD_FAILURE() << r.to_string();
        }, batches, per);
      }
      auto tf = [&](double us) { return us > 0 ? flops / us / 1e6 : 0.0; };
      std::snprintf(line, sizeof line,
                    "| %s | %lld | %lld | %lld | %.1f | %.0f | %s | %.1f | %.0f | %.0f | %.0f | %.1f | %.1f | %.0f | %.1f |",
                    g.name, (long long)m, (long long)g.n, (long long)g.k, bf16_us, tf(bf16_us), fp8_path.c_str(),
                    t[0][0], tf(t[0][0]), tf(t[0][1]), tf(t[0][2]), t[0][3], t[1][0], tf(t[1][0]), t[1][3]);
      rep.row(line);
    }
  }
  rep.row("\nPeaks (H100 SXM dense): bf16 989 TFLOP/s, fp8 / int8 1979 TFLOP/s. M <= 16: weight bytes / 3.0 TB/s "
          "is the floor (fp8/int8 stream half the bf16 bytes).");
}

}  // namespace
}  // namespace anvil::test
