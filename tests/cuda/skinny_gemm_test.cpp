// Tests of the weight-streaming skinny GEMM (ops/skinny_gemm.h) against a float64 reference on
// random 16-bit inputs (never zeros): M 1..8, odd N, K not a multiple of the CTA's K step, with
// and without bias (16-bit or f32), 16-bit or f32 output; the contract checks and the cuBLASLt
// fallback through CudaBackend::linear; chained GEMMs (early weight reads) eager and in a CUDA graph. SkinnyGemmBench (ANVIL_SKINNY_BENCH=1)
// times cuBLASLt against the kernel at llama-8b decode shapes with the weights rotated past L2.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>

#include "backend/cuda/ops/linear.h"
#include "backend/cuda/ops/skinny_gemm.h"
#include "cuda_test_util.h"

namespace anvil::test {
namespace {

using cuda::SkinnyGemmArgs;

// ref[m, n] = sum_k x[m, k] * w[n, k] in float64 (no bias).
std::vector<double> reference(const std::vector<float>& x, const std::vector<float>& w, int64_t m, int64_t n,
                              int64_t k) {
  std::vector<double> ref(m * n);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t t = 0; t < k; ++t) s += static_cast<double>(x[i * k + t]) * w[j * k + t];
      ref[i * n + j] = s;
    }
  return ref;
}

// Per element |out - ref| <= rel * |ref| + abs, where rel is the output rounding (half an ulp,
// doubled for slack) and abs covers fp32 accumulation over k terms of magnitude <= 1.
void expect_close(const std::vector<float>& out, const std::vector<double>& ref, DType out_dtype, int64_t k,
                  const std::string& what) {
  const double rel = out_dtype == DType::kBF16 ? 1.0 / 256 : out_dtype == DType::kF16 ? 1.0 / 2048 : 1e-6;
  const double abs = 2e-7 * static_cast<double>(k);
  int bad = 0;
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double err = std::fabs(static_cast<double>(out[i]) - ref[i]);
    num += err * err;
    den += ref[i] * ref[i];
    if (!(err <= rel * std::fabs(ref[i]) + abs) && bad++ < 3) {
      ADD_FAILURE() << what << ": element " << i << " = " << out[i] << ", reference " << ref[i];
    }
  }
  EXPECT_EQ(bad, 0) << what;
  EXPECT_LT(std::sqrt(num / den), out_dtype == DType::kF32 ? 1e-6 : rel) << what;
}

struct Problem {
  int64_t m, n, k;
  DType dt;
  std::vector<float> x, w, bias;  // values exactly representable in dt
  std::vector<uint16_t> x_bits, w_bits, bias_bits;
  std::vector<double> ref;  // without bias

  Problem(int64_t m_, int64_t n_, int64_t k_, DType dt_, uint32_t seed) : m(m_), n(n_), k(k_), dt(dt_) {
    x = random_floats(m * k, seed);
    w = random_floats(n * k, seed + 1);
    bias = random_floats(n, seed + 2);
    x_bits = round_to(dt, x);
    w_bits = round_to(dt, w);
    bias_bits = round_to(dt, bias);
    ref = reference(x, w, m, n, k);
  }
  std::vector<double> ref_with_bias() const {
    std::vector<double> r = ref;
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) r[i * n + j] += bias[j];
    return r;
  }
};

std::vector<float> read_out(const DevBuf& o, DType out_dtype, size_t count) {
  if (out_dtype == DType::kF32) return o.read<float>(count);
  return to_f32(out_dtype, o.read<uint16_t>(count));
}

TEST(SkinnyGemm, MatchesFloat64Reference) {
  ANVIL_REQUIRE_GPU();
  struct Shape {
    int64_t n, k;
  };
  // K = 96 and 1000 leave most threads of the CTA idle; K = 6152 ends in a partial K step;
  // N % rows_per_cta != 0 everywhere except 4096-wide K.
  const Shape shapes[] = {{17, 96}, {33, 1000}, {257, 6152}, {130, 4096}};
  for (DType dt : {DType::kBF16, DType::kF16}) {
    auto gpu = make_gpu(dt);
    ASSERT_TRUE(gpu);
    auto* be = static_cast<CudaBackend*>(gpu.get());
    for (const Shape& sh : shapes) {
      for (int64_t m = 1; m <= 8; ++m) {
        Problem pr(m, sh.n, sh.k, dt, static_cast<uint32_t>(1000 * m + sh.n));
        auto x = DevBuf::of(gpu.get(), pr.x_bits);
        auto w = DevBuf::of(gpu.get(), pr.w_bits);
        auto b16 = DevBuf::of(gpu.get(), pr.bias_bits);
        auto b32 = DevBuf::of(gpu.get(), pr.bias);
        const auto ref_b = pr.ref_with_bias();
        for (DType out_dt : {dt, DType::kF32}) {
          for (int bias_kind = 0; bias_kind < 3; ++bias_kind) {  // none, 16-bit, f32
            for (int rows : {0, 2, 4, 8}) {
              if (rows == 8 && m > 2) continue;
              auto o = DevBuf::poison(gpu.get(), m * sh.n * dtype_size(out_dt));
              SkinnyGemmArgs a{x.buf.get(), w.buf.get(), nullptr, o.buf.get(), m, sh.n, sh.k, dt, dt, out_dt};
              if (bias_kind == 1) a.bias = b16.buf.get();
              if (bias_kind == 2) {
                a.bias = b32.buf.get();
                a.bias_dtype = DType::kF32;
              }
              ASSERT_TRUE(cuda::skinny_gemm_supported(a));
              Status st = cuda::launch_skinny_gemm(a, be->stream(), rows);
              ASSERT_TRUE(st.is_ok()) << st.to_string();
              ASSERT_TRUE(gpu->synchronize().is_ok());
              char what[160];
              std::snprintf(what, sizeof what, "%s M=%lld N=%lld K=%lld out %s bias %d rows %d", name_of(dt),
                            static_cast<long long>(m), static_cast<long long>(sh.n), static_cast<long long>(sh.k),
                            out_dt == DType::kF32 ? "f32" : "16-bit", bias_kind, rows);
              expect_close(read_out(o, out_dt, m * sh.n), bias_kind ? ref_b : pr.ref, out_dt, sh.k, what);
            }
          }
        }
      }
    }
  }
}

TEST(SkinnyGemm, ContractAndCublasFallback) {
  ANVIL_REQUIRE_GPU();
  const DType dt = DType::kBF16;
  auto gpu = make_gpu(dt);
  ASSERT_TRUE(gpu);
  auto* be = static_cast<CudaBackend*>(gpu.get());
  // K = 100: not a multiple of 8, so linear() must take cuBLASLt; K = 96 takes the kernel.
  EXPECT_TRUE(cuda::skinny_gemm_preferred(2, 29, 96));
  EXPECT_FALSE(cuda::skinny_gemm_preferred(8, 4096, 4096));
  for (int64_t k : {int64_t{100}, int64_t{96}}) {
    const int64_t m = 2, n = 29;
    Problem pr(m, n, k, dt, 77);
    auto x = DevBuf::of(gpu.get(), pr.x_bits);
    auto w = DevBuf::of(gpu.get(), pr.w_bits);
    auto b = DevBuf::of(gpu.get(), pr.bias_bits);
    auto o = DevBuf::poison(gpu.get(), m * n * 4);
    SkinnyGemmArgs a{x.buf.get(), w.buf.get(), b.buf.get(), o.buf.get(), m, n, k, dt, dt, DType::kF32};
    EXPECT_EQ(cuda::skinny_gemm_supported(a), k % 8 == 0);
    Status st = gpu->linear(x.t(dt, {m, k}), w.t(dt, {n, k}), b.t(dt, {n}), o.t(DType::kF32, {m, n}));
    ASSERT_TRUE(st.is_ok()) << st.to_string();
    ASSERT_TRUE(gpu->synchronize().is_ok());
    expect_close(o.read<float>(m * n), pr.ref_with_bias(), DType::kF32, k, "linear K=" + std::to_string(k));
  }
  // Contract violations are refused, with a message, not launched.
  auto x = DevBuf::poison(gpu.get(), 9 * 64 * 2 + 16);
  auto w = DevBuf::poison(gpu.get(), 16 * 64 * 2 + 16);
  auto o = DevBuf::poison(gpu.get(), 9 * 16 * 4);
  const SkinnyGemmArgs good{x.buf.get(), w.buf.get(), nullptr, o.buf.get(), 8, 16, 64, dt, dt, dt};
  EXPECT_TRUE(cuda::skinny_gemm_supported(good));
  SkinnyGemmArgs bad = good;
  bad.m = 9;
  EXPECT_FALSE(cuda::skinny_gemm_supported(bad));
  bad = good;
  bad.w = static_cast<const uint16_t*>(good.w) + 1;  // 2-byte aligned
  EXPECT_FALSE(cuda::skinny_gemm_supported(bad));
  bad = good;
  bad.x = static_cast<const uint16_t*>(good.x) + 4;  // 8-byte aligned
  EXPECT_FALSE(cuda::skinny_gemm_supported(bad));
  bad = good;
  bad.out_dtype = DType::kF16;  // neither the input dtype nor f32
  EXPECT_FALSE(cuda::skinny_gemm_supported(bad));
  bad = good;
  bad.dtype = DType::kF32;
  EXPECT_FALSE(cuda::skinny_gemm_supported(bad));
  Status st = cuda::launch_skinny_gemm(bad, be->stream());
  EXPECT_FALSE(st.is_ok());
  EXPECT_NE(st.to_string().find("skinny_gemm"), std::string::npos) << st.to_string();
  EXPECT_FALSE(cuda::launch_skinny_gemm(good, be->stream(), 8).is_ok());  // 8 rows per CTA needs M <= 2
  EXPECT_FALSE(cuda::launch_skinny_gemm(good, be->stream(), 3).is_ok());
}

// Two chained GEMMs through linear() (the skinny path, with early weight reads on sm_90):
// y1 = x @ w1^T, y2 = y1 @ w2^T. The second kernel may start before the first ends, so y2 is
// checked against a reference built from the y1 the GPU wrote; y1 is poisoned before each run.
// Run eagerly and as a replayed CUDA graph.
TEST(SkinnyGemm, ChainedGemmsEagerAndInCudaGraph) {
  ANVIL_REQUIRE_GPU();
  const DType dt = DType::kF16;
  auto gpu = make_gpu(dt);
  ASSERT_TRUE(gpu);
  const int64_t m = 2, k = 2048, n1 = 1024, n2 = 301;
  Problem p1(m, n1, k, dt, 5);
  Problem p2(m, n2, n1, dt, 6);
  auto x = DevBuf::of(gpu.get(), p1.x_bits);
  auto w1 = DevBuf::of(gpu.get(), p1.w_bits);
  auto w2 = DevBuf::of(gpu.get(), p2.w_bits);
  auto b2 = DevBuf::of(gpu.get(), p2.bias_bits);
  auto y1 = DevBuf::poison(gpu.get(), m * n1 * 2);
  auto y2 = DevBuf::poison(gpu.get(), m * n2 * 2);
  auto enqueue = [&]() -> Status {
    ANVIL_RETURN_IF_ERROR(gpu->linear(x.t(dt, {m, k}), w1.t(dt, {n1, k}), Tensor(), y1.t(dt, {m, n1})));
    return gpu->linear(y1.t(dt, {m, n1}), w2.t(dt, {n2, n1}), b2.t(dt, {n2}), y2.t(dt, {m, n2}));
  };
  auto check = [&](const std::string& what) {
    const auto y1_host = read_out(y1, dt, m * n1);
    expect_close(y1_host, p1.ref, dt, k, what + " y1");
    std::vector<double> ref2 = reference(y1_host, p2.w, m, n2, n1);
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n2; ++j) ref2[i * n2 + j] += p2.bias[j];
    // y1 is as large as ~sqrt(k): widen the accumulation allowance accordingly.
    expect_close(read_out(y2, dt, m * n2), ref2, dt, n1 * 64, what + " y2");
  };
  const std::vector<uint8_t> poison(m * n1 * 2, 0xFF);
  for (int rep = 0; rep < 3; ++rep) {
    ASSERT_TRUE(gpu->copy_h2d(y1.buf.get(), poison.data(), poison.size()).is_ok());
    Status st = enqueue();
    ASSERT_TRUE(st.is_ok()) << st.to_string();
    ASSERT_TRUE(gpu->synchronize().is_ok());
    check("eager " + std::to_string(rep));
  }
  ASSERT_TRUE(gpu->begin_capture().is_ok());
  Status st = enqueue();
  auto graph = gpu->end_capture();
  ASSERT_TRUE(st.is_ok()) << st.to_string();
  ASSERT_TRUE(graph.is_ok()) << graph.status().to_string();
  for (int rep = 0; rep < 3; ++rep) {
    ASSERT_TRUE(gpu->copy_h2d(y1.buf.get(), poison.data(), poison.size()).is_ok());
    ASSERT_TRUE(gpu->synchronize().is_ok());
    ASSERT_TRUE(gpu->replay(graph.value()).is_ok());
    ASSERT_TRUE(gpu->synchronize().is_ok());
    check("graph replay " + std::to_string(rep));
  }
}

// ---- benchmark ----------------------------------------------------------------------------------

TEST(SkinnyGemmBench, Llama8bDecodeShapes) {
  ANVIL_REQUIRE_GPU();
  const char* e = std::getenv("ANVIL_SKINNY_BENCH");
  if (!e || std::string(e) != "1") GTEST_SKIP() << "set ANVIL_SKINNY_BENCH=1 to run the benchmark";
  const DType dt = DType::kBF16;
  auto gpu = make_gpu(dt);
  ASSERT_TRUE(gpu);
  auto* be = static_cast<CudaBackend*>(gpu.get());
  auto lt = cuda::LinearRunner::create(be->stream());
  ASSERT_TRUE(lt.is_ok()) << lt.status().to_string();
  auto cublas = std::move(lt).value();
  cublas->set_skinny_max_m(0);  // cuBLASLt only
  std::ostringstream md;
  auto row = [&](const std::string& s) {
    md << s << "\n";
    std::printf("%s\n", s.c_str());
  };
  constexpr double kCeilingGBs = 3000.0;
  row("device: " + gpu->name());
  row("| GEMM | M | N x K | floor us | cuBLASLt us | skinny us | GB/s | % of 3.0 TB/s | no PDL us | rows 2 / 4 / 8 us | "
      "max rel diff | routed |");
  row("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
  struct G {
    const char* name;
    int64_t n, k;
  };
  const G shapes[] = {{"qkv", 6144, 4096}, {"o", 4096, 4096}, {"gate_up", 28672, 4096}, {"down", 4096, 14336},
                      {"lm_head", 128256, 4096}};
  for (const G& g : shapes) {
    const size_t wbytes = g.n * g.k * 2;
    const int copies = static_cast<int>(std::clamp<size_t>((size_t{200} << 20) / wbytes + 1, 1, 4));
    std::vector<DevBuf> ws;
    for (int i = 0; i < copies; ++i) ws.push_back(random_dev(gpu.get(), dt, g.n * g.k, 100 + i));
    const DType odt = std::string(g.name) == "lm_head" ? DType::kF32 : dt;
    for (int64_t m : {int64_t{1}, int64_t{2}, int64_t{4}, int64_t{8}}) {
      auto x = random_dev(gpu.get(), dt, m * g.k, 7);
      auto o_lt = DevBuf::poison(gpu.get(), m * g.n * dtype_size(odt));
      auto o_sk = DevBuf::poison(gpu.get(), m * g.n * dtype_size(odt));
      cuda::LinearShape s;
      s.m = m;
      s.n = g.n;
      s.k = g.k;
      s.in_dtype = dt;
      s.out_dtype = odt;
      const double us_lt = time_us(be->stream(), [&](int i) {
        Status st = cublas->run(s, x.buf.get(), ws[i % copies].buf.get(), nullptr, o_lt.buf.get());
        if (!st.is_ok()) ADD_FAILURE() << st.to_string();
      });
      auto skinny = [&](int rows, bool pdl = true) {
        return time_us(be->stream(), [&](int i) {
          const SkinnyGemmArgs a{x.buf.get(), ws[i % copies].buf.get(), nullptr, o_sk.buf.get(), m, g.n, g.k, dt, dt, odt,
                                 pdl};
          Status st = cuda::launch_skinny_gemm(a, be->stream(), rows);
          if (!st.is_ok()) ADD_FAILURE() << st.to_string();
        });
      };
      const double us_auto = skinny(0), us_no_pdl = skinny(0, false);
      const double us2 = skinny(2), us4 = skinny(4), us8 = m <= 2 ? skinny(8) : 0.0;
      // Same weights copy for both outputs: compare them.
      (void)cublas->run(s, x.buf.get(), ws[0].buf.get(), nullptr, o_lt.buf.get());
      const SkinnyGemmArgs a0{x.buf.get(), ws[0].buf.get(), nullptr, o_sk.buf.get(), m, g.n, g.k, dt, dt, odt};
      ASSERT_TRUE(cuda::launch_skinny_gemm(a0, be->stream()).is_ok());
      ASSERT_TRUE(gpu->synchronize().is_ok());
      const auto r_lt = read_out(o_lt, odt, m * g.n), r_sk = read_out(o_sk, odt, m * g.n);
      double max_abs = 0, max_ref = 0;
      for (size_t i = 0; i < r_lt.size(); ++i) {
        max_abs = std::max(max_abs, std::fabs(static_cast<double>(r_lt[i]) - r_sk[i]));
        max_ref = std::max(max_ref, std::fabs(static_cast<double>(r_lt[i])));
      }
      const double rel = max_abs / std::max(max_ref, 1e-30);
      EXPECT_LT(rel, odt == DType::kF32 ? 1e-4 : 1e-2) << g.name << " M=" << m;
      const double bytes = static_cast<double>(wbytes) + m * g.k * 2.0 + m * g.n * dtype_size(odt);
      char rows8[32] = "-";
      if (m <= 2) std::snprintf(rows8, sizeof rows8, "%.1f", us8);
      char line[512];
      std::snprintf(line, sizeof line,
                    "| %s | %lld | %lld x %lld | %.1f | %.1f | %.1f | %.0f | %.0f%% | %.1f | %.1f / %.1f / %s | %.1e | %s |",
                    g.name,
                    static_cast<long long>(m), static_cast<long long>(g.n), static_cast<long long>(g.k),
                    bytes / kCeilingGBs / 1e3, us_lt, us_auto, bytes / us_auto / 1e3,
                    100.0 * bytes / us_auto / 1e3 / kCeilingGBs, us_no_pdl, us2, us4, rows8, rel,
                    cuda::skinny_gemm_preferred(m, g.n, g.k) ? "skinny" : "cuBLASLt");
      row(line);
    }
  }
  if (const char* p = std::getenv("ANVIL_BENCH_OUT")) std::ofstream(p, std::ios::app) << md.str();
}

}  // namespace
}  // namespace anvil::test
