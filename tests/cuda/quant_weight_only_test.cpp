// Tests of the weight-only quantized linear (CudaBackend::linear_quantized, ops/quant_weight_only.h):
// int8 per-channel and int4 group-wise (g32/64/128) against a float64 host reference that
// dequantizes backend.h's layout itself (checked against CpuBackend once, no GPU needed), for
// M in {1,2,3,8,16,17,64,300}, odd N, bf16/fp16, bias or not, f32 output; contract errors; the
// decode path inside a CUDA graph and the prefill scratch rule during capture.
// QuantWeightOnlyBench (ANVIL_QUANT_BENCH=1) times llama-8b shapes against dense bf16 and sweeps
// the decode variants (ANVIL_QUANT_BENCH_PREFILL=1 adds the M = 2048 prefill path).
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>
#include <string>

#include "backend/cuda/ops/linear.h"
#include "backend/cuda/ops/quant_weight_only.h"
#include "cuda_test_util.h"

namespace anvil::test {
namespace {

// A quantized weight in host memory (backend.h layout) and its f32 dequantization.
struct HostQuant {
  QuantFormat format = QuantFormat::kInt8WeightOnly;
  int64_t n = 0, k = 0;
  int32_t group = 0;
  std::vector<uint8_t> data;
  std::vector<float> scales_f32;   // int8
  std::vector<uint16_t> scales16;  // int4, f16 bits
  std::vector<uint16_t> offsets16;
  std::vector<float> deq;  // [n, k]
};

HostQuant make_quant(QuantFormat f, int64_t n, int64_t k, int32_t group, uint32_t seed) {
  HostQuant q;
  q.format = f;
  q.n = n;
  q.k = k;
  q.group = group;
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_real_distribution<float> scale(0.004f, 0.02f);
  q.deq.resize(n * k);
  if (f == QuantFormat::kFp8W8A8) {  // per-channel e4m3 (no NaN codes), scaled down to ~|w| < 0.1
    q.data.resize(n * k);
    q.scales_f32.resize(n);
    for (auto& s : q.scales_f32) s = scale(rng) / 16.0f;
    for (int64_t r = 0; r < n; ++r)
      for (int64_t c = 0; c < k; ++c) {
        int b = byte(rng);
        if ((b & 0x7f) == 0x7f) b ^= 1;
        q.data[r * k + c] = static_cast<uint8_t>(b);
        q.deq[r * k + c] = f8e4m3_to_f32(static_cast<uint8_t>(b)) * q.scales_f32[r];
      }
  } else if (f != QuantFormat::kInt4Group) {  // int8 per channel (weight-only or W8A8)
    q.data.resize(n * k);
    q.scales_f32.resize(n);
    for (auto& s : q.scales_f32) s = scale(rng);
    for (int64_t r = 0; r < n; ++r)
      for (int64_t c = 0; c < k; ++c) {
        int v = byte(rng) - 128;
        if (v == -128) v = -127;
        q.data[r * k + c] = static_cast<uint8_t>(static_cast<int8_t>(v));
        q.deq[r * k + c] = static_cast<float>(v) * q.scales_f32[r];
      }
  } else {
    const int64_t groups = k / group;
    q.data.resize(n * k / 2);
    q.scales16.resize(n * groups);
    q.offsets16.resize(n * groups);
    std::uniform_int_distribution<int> zp(0, 15);
    for (int64_t i = 0; i < n * groups; ++i) {
      const float s = scale(rng);
      q.scales16[i] = f32_to_f16(s);
      q.offsets16[i] = f32_to_f16(-static_cast<float>(zp(rng)) * f16_to_f32(q.scales16[i]));
    }
    for (auto& b : q.data) b = static_cast<uint8_t>(byte(rng));
    for (int64_t r = 0; r < n; ++r)
      for (int64_t c = 0; c < k; ++c) {
        const int code = (q.data[r * (k / 2) + c / 2] >> ((c & 1) * 4)) & 0xf;
        const int64_t g = r * groups + c / group;
        q.deq[r * k + c] = static_cast<float>(code) * f16_to_f32(q.scales16[g]) + f16_to_f32(q.offsets16[g]);
      }
  }
  return q;
}

// The weight's buffers on a backend, and the QuantizedWeight view of them.
struct DevQuant {
  DevBuf data, scales, offsets;
  QuantizedWeight w;
};
DevQuant upload(Backend* be, const HostQuant& q) {
  DevQuant d;
  d.data = DevBuf::of(be, q.data);
  d.w.format = q.format;
  d.w.n = q.n;
  d.w.k = q.k;
  d.w.data = d.data.buf.get();
  if (q.format != QuantFormat::kInt4Group) {
    d.scales = DevBuf::of(be, q.scales_f32);
  } else {
    d.scales = DevBuf::of(be, q.scales16);
    d.offsets = DevBuf::of(be, q.offsets16);
    d.w.group_size = q.group;
    d.w.offsets = d.offsets.buf.get();
  }
  d.w.scales = d.scales.buf.get();
  return d;
}

// ref[m, n] = sum_k x[m, k] * deq[n, k] (+ bias[n]) in float64.
std::vector<double> reference(const std::vector<float>& x, const HostQuant& q, const std::vector<float>* bias, int64_t m) {
  std::vector<double> ref(m * q.n);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < q.n; ++j) {
      double s = bias ? (*bias)[j] : 0.0;
      for (int64_t t = 0; t < q.k; ++t) s += static_cast<double>(x[i * q.k + t]) * q.deq[j * q.k + t];
      ref[i * q.n + j] = s;
    }
  return ref;
}

// Tolerance on ||out - ref|| / ||ref||: the output rounding (bf16 2^-9, fp16 2^-11 relative) plus
// the int4 weights rounded once to the compute dtype (same order, averaging down over K).
double tolerance(DType dt) { return dt == DType::kBF16 ? 8e-3 : 1.5e-3; }

struct Case {
  QuantFormat format;
  int32_t group;
  int64_t m, n, k;
  bool bias;
  bool out_f32;
};

std::string describe(const Case& c, DType dt) {
  char b[160];
  std::snprintf(b, sizeof b, "%s g%d %s M=%lld N=%lld K=%lld bias=%d out=%s", quant_format_name(c.format), c.group,
                name_of(dt), static_cast<long long>(c.m), static_cast<long long>(c.n), static_cast<long long>(c.k), c.bias,
                c.out_f32 ? "f32" : name_of(dt));
  return b;
}

void run_case(Backend* gpu, DType dt, const Case& c, uint32_t seed) {
  const std::string what = describe(c, dt);
  HostQuant q = make_quant(c.format, c.n, c.k, c.group, seed);
  auto x = random_floats(c.m * c.k, seed + 1);
  auto xb = round_to(dt, x);
  std::vector<float> bias = random_floats(c.n, seed + 2, -0.5f, 0.5f);
  auto bb = round_to(dt, bias);
  DevQuant dq = upload(gpu, q);
  DevBuf dx = DevBuf::of(gpu, xb);
  DevBuf db = DevBuf::of(gpu, bb);
  const DType odt = c.out_f32 ? DType::kF32 : dt;
  DevBuf dout = DevBuf::poison(gpu, c.m * c.n * dtype_size(odt));
  Status st = gpu->linear_quantized(dx.t(dt, {c.m, c.k}), dq.w, c.bias ? db.t(dt, {c.n}) : Tensor(),
                                    dout.t(odt, {c.m, c.n}));
  ASSERT_TRUE(st.is_ok()) << what << ": " << st.to_string();
  std::vector<float> out;
  if (c.out_f32) {
    out = dout.read<float>(c.m * c.n);
  } else {
    out = to_f32(dt, dout.read<uint16_t>(c.m * c.n));
  }
  const auto ref = reference(x, q, c.bias ? &bias : nullptr, c.m);
  std::vector<float> reff(ref.begin(), ref.end());
  const double err = rel_err(out, reff);
  EXPECT_LT(err, tolerance(dt)) << what;
  // Every element written and none far off (poison is NaN for 16-bit and f32 alike).
  double rms = 0;
  for (double v : ref) rms += v * v;
  rms = std::sqrt(rms / ref.size());
  int bad = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!(std::fabs(out[i] - ref[i]) <= 10 * tolerance(dt) * rms) && bad++ < 3) {
      ADD_FAILURE() << what << ": element " << i << " = " << out[i] << ", reference " << ref[i];
    }
  }
}

// The host dequantization above is the CPU backend's semantics (CPU only; runs in CI).
TEST(QuantWeightOnly, HostReferenceMatchesCpuBackend) {
  CpuBackend cpu;
  for (auto [f, g] : {std::pair{QuantFormat::kInt8WeightOnly, 0}, std::pair{QuantFormat::kInt4Group, 32},
                      std::pair{QuantFormat::kInt4Group, 128}}) {
    const int64_t m = 3, n = 19, k = 256;
    HostQuant q = make_quant(f, n, k, g, 11);
    QuantizedWeight w;
    w.format = f;
    w.n = n;
    w.k = k;
    w.group_size = g;
    w.data = q.data.data();
    w.scales = f == QuantFormat::kInt8WeightOnly ? static_cast<const void*>(q.scales_f32.data()) : q.scales16.data();
    w.offsets = f == QuantFormat::kInt4Group ? q.offsets16.data() : nullptr;
    auto x = random_floats(m * k, 5);
    std::vector<float> out(m * n, NAN);
    Status st = cpu.linear_quantized(host_tensor(x, {m, k}), w, Tensor(), host_tensor(out, {m, n}));
    ASSERT_TRUE(st.is_ok()) << st.to_string();
    const auto ref = reference(x, q, nullptr, m);
    for (size_t i = 0; i < ref.size(); ++i) EXPECT_NEAR(out[i], ref[i], 1e-4 * (1 + std::fabs(ref[i]))) << i;
  }
}

TEST(QuantWeightOnly, MatchesHostReference) {
  ANVIL_REQUIRE_GPU();
  uint32_t seed = 100;
  for (DType dt : {DType::kBF16, DType::kF16}) {
    auto gpu = make_gpu(dt);
    ASSERT_TRUE(gpu);
    const std::pair<QuantFormat, int32_t> formats[] = {{QuantFormat::kInt8WeightOnly, 0},
                                                       {QuantFormat::kInt4Group, 32},
                                                       {QuantFormat::kInt4Group, 64},
                                                       {QuantFormat::kInt4Group, 128}};
    for (auto [f, g] : formats) {
      for (int64_t m : {1, 2, 3, 8, 16, 17, 64, 300}) {
        // Odd N (not a multiple of the 16-row tile); K = 384 is not a multiple of a CTA's K step
        // (a warp's last step is partly masked). Split-K is exercised by the long-K cases below.
        for (int64_t n : {int64_t{37}, int64_t{1031}}) {
          if (m == 300 && n == 1031 && f == QuantFormat::kInt4Group && g != 128) continue;  // keep CPU time low
          const bool bias = (m + n + g) % 2 == 1;
          run_case(gpu.get(), dt, {f, g, m, n, 384, bias, false}, seed++);
        }
      }
      // f32 output (logits) on both paths, and a long K.
      run_case(gpu.get(), dt, {f, g, 2, 257, 2048, true, true}, seed++);
      run_case(gpu.get(), dt, {f, g, 33, 129, 512, false, true}, seed++);
      run_case(gpu.get(), dt, {f, g, 5, 64, 4096, true, false}, seed++);
      // K = 8448 with N = 40: few row tiles, so the rule splits K across many CTAs.
      run_case(gpu.get(), dt, {f, g, 3, 40, 8448, true, false}, seed++);
      run_case(gpu.get(), dt, {f, g, 12, 40, 8448, false, false}, seed++);
      // A chunk count that is not a multiple of 4 (the last 64-byte segment partly past K).
      if (f == QuantFormat::kInt8WeightOnly || g == 32) {
        run_case(gpu.get(), dt, {f, g, 4, 37, f == QuantFormat::kInt8WeightOnly ? 400 : 800, true, false}, seed++);
      }
    }
  }
}

// W8A8 weights at decode sizes (M <= 16) run through the weight-streaming kernel against the
// unquantized activations (backend.h): the reference is x . dequant(w), with no activation
// quantization. Covers int8 and e4m3 codes, both dtypes, bias and f32 output, and a split K.
TEST(QuantWeightOnly, W8A8DecodeStreamsWeights) {
  ANVIL_REQUIRE_GPU();
  uint32_t seed = 900;
  for (DType dt : {DType::kBF16, DType::kF16}) {
    auto gpu = make_gpu(dt);
    ASSERT_TRUE(gpu);
    for (QuantFormat f : {QuantFormat::kInt8W8A8, QuantFormat::kFp8W8A8}) {
      for (int64_t m : {1, 2, 5, 16}) {
        run_case(gpu.get(), dt, {f, 0, m, 1031, 512, m % 2 == 1, false}, seed++);
      }
      run_case(gpu.get(), dt, {f, 0, 3, 257, 2048, true, true}, seed++);
      run_case(gpu.get(), dt, {f, 0, 4, 40, 8448, false, false}, seed++);
    }
  }
}

// Forced paths, kernel variants and split-K factors agree with the reference, and every decode
// launch is bit-for-bit repeatable (fixed summation order; the split-K counters were reset).
// K = 4608: 4.5 CTA steps of the 4-chunk variant (odd step counts, a partial last step, the
// register pipeline's refill path).
TEST(QuantWeightOnly, DecodeSplitsAndPrefillAgree) {
  ANVIL_REQUIRE_GPU();
  const DType dt = DType::kBF16;
  auto gpu = make_gpu(dt);
  ASSERT_TRUE(gpu);
  auto* be = static_cast<CudaBackend*>(gpu.get());
  auto runner = cuda::LinearRunner::create(be->stream());
  ASSERT_TRUE(runner.is_ok());
  auto wo = cuda::WeightOnlyLinear::create(be->stream(), runner.value().get());
  ASSERT_TRUE(wo.is_ok());
  const cuda::WeightOnlyVariant variants[] = {{2, 1, 0}, {4, 1, 0}, {0, 2, 0}};
  for (auto [f, g] : {std::pair{QuantFormat::kInt8WeightOnly, 0}, std::pair{QuantFormat::kInt4Group, 64}}) {
    for (int64_t m : {int64_t{5}, int64_t{16}}) {
      const int64_t n = 77, k = 4608;
      HostQuant q = make_quant(f, n, k, g, 3 + m);
      auto x = random_floats(m * k, 4 + m);
      auto xb = round_to(dt, x);
      DevQuant dq = upload(gpu.get(), q);
      DevBuf dx = DevBuf::of(gpu.get(), xb);
      std::vector<float> reff;
      for (double v : reference(x, q, nullptr, m)) reff.push_back(static_cast<float>(v));
      for (const auto& var : variants) {
        for (int mode = 0; mode < 6; ++mode) {  // splits 1, 2, 3, 5, auto; prefill
          wo.value()->set_variant(var);
          DevBuf dout = DevBuf::poison(gpu.get(), m * n * 2);
          cuda::WeightOnlyArgs a;
          a.x = dx.buf.get();
          a.m = m;
          a.dtype = dt;
          a.out = dout.buf.get();
          a.out_dtype = dt;
          const int splits[] = {1, 2, 3, 5, 0};
          const std::string what = std::string(quant_format_name(f)) + " M=" + std::to_string(m) + " mode " +
                                   std::to_string(mode) + " unroll " + std::to_string(var.unroll) + " row_tiles " +
                                   std::to_string(var.row_tiles);
          if (mode < 5) {
            const auto c = wo.value()->decode_config(dq.w, m, splits[mode]);
            EXPECT_GE(c.splits, 1) << what;
            // 2 and 3 splits fit every variant's 3-18 CTA steps; 5 may be clamped to the steps.
            if (mode == 1 || mode == 2) {
              EXPECT_EQ(c.splits, splits[mode]) << what;
            }
            if (mode == 3) {
              EXPECT_LE(c.splits, 5) << what;
            }
          }
          Status st = mode < 5 ? wo.value()->run_decode(dq.w, a, splits[mode]) : wo.value()->run_prefill(dq.w, a);
          ASSERT_TRUE(st.is_ok()) << st.to_string();
          const auto out = to_f32(dt, dout.read<uint16_t>(m * n));
          EXPECT_LT(rel_err(out, reff), tolerance(dt)) << what;
          if (mode < 5) {
            DevBuf again = DevBuf::poison(gpu.get(), m * n * 2);
            a.out = again.buf.get();
            ASSERT_TRUE(wo.value()->run_decode(dq.w, a, splits[mode]).is_ok());
            EXPECT_EQ(dout.read<uint16_t>(m * n), again.read<uint16_t>(m * n)) << what << ": not repeatable";
          }
        }
      }
    }
  }
  wo.value()->set_auto_variant();
}

TEST(QuantWeightOnly, ContractErrors) {
  ANVIL_REQUIRE_GPU();
  const DType dt = DType::kBF16;
  auto gpu = make_gpu(dt);
  ASSERT_TRUE(gpu);
  const int64_t m = 2, n = 32, k = 256;
  HostQuant q4 = make_quant(QuantFormat::kInt4Group, n, k, 64, 1);
  DevQuant d4 = upload(gpu.get(), q4);
  auto x = random_floats((m + 1) * k, 2);
  auto xb = round_to(dt, x);
  DevBuf dx = DevBuf::of(gpu.get(), xb);
  DevBuf dout = DevBuf::poison(gpu.get(), m * n * 4);
  const Tensor xt = dx.t(dt, {m, k}), ot = dout.t(dt, {m, n});
  auto expect_error = [&](Status st, const std::string& needle) {
    EXPECT_FALSE(st.is_ok());
    EXPECT_NE(st.to_string().find(needle), std::string::npos) << st.to_string();
  };
  QuantizedWeight w = d4.w;
  w.group_size = 96;  // not 32/64/128
  expect_error(gpu->linear_quantized(xt, w, Tensor(), ot), "group_size");
  // K = 224 is a multiple of 32 but not of the group size 64.
  w = d4.w;
  w.k = 224;
  expect_error(gpu->linear_quantized(dx.t(dt, {m, 224}), w, Tensor(), ot), "multiple of group_size");
  // int8 with K % 16 != 0.
  HostQuant q8 = make_quant(QuantFormat::kInt8WeightOnly, n, 40, 0, 3);
  DevQuant d8 = upload(gpu.get(), q8);
  expect_error(gpu->linear_quantized(dx.t(dt, {m, 40}), d8.w, Tensor(), ot), "multiple of 16");
  // Misaligned x (2 bytes off) and weight data.
  Tensor xmis(static_cast<uint16_t*>(dx.buf.get()) + 1, dt, Shape({m, k}), Device::kCuda);
  expect_error(gpu->linear_quantized(xmis, d4.w, Tensor(), ot), "16-byte aligned");
  w = d4.w;
  w.data = static_cast<const uint8_t*>(w.data) + 8;
  expect_error(gpu->linear_quantized(xt, w, Tensor(), ot), "16-byte aligned");
  // Shapes and dtypes.
  expect_error(gpu->linear_quantized(dx.t(dt, {m, k - 32}), d4.w, Tensor(), ot), "x must be");
  expect_error(gpu->linear_quantized(xt, d4.w, Tensor(), dout.t(dt, {m, n - 1})), "out");
  expect_error(gpu->linear_quantized(xt, d4.w, Tensor(), dout.t(DType::kF16, {m, n})), "out must be");
  expect_error(gpu->linear_quantized(xt, d4.w, dx.t(DType::kF32, {n}), ot), "bias");
  expect_error(gpu->linear_quantized(xt, d4.w, dx.t(dt, {n + 1}), ot), "bias");
  w = d4.w;
  w.offsets = nullptr;
  expect_error(gpu->linear_quantized(xt, w, Tensor(), ot), "offsets");
  // The good call still works after the errors.
  EXPECT_TRUE(gpu->linear_quantized(xt, d4.w, Tensor(), ot).is_ok());
}

// Decode replays inside a CUDA graph; prefill scratch must exist before capture.
TEST(QuantWeightOnly, CudaGraphCapture) {
  ANVIL_REQUIRE_GPU();
  const DType dt = DType::kF16;
  auto gpu = make_gpu(dt);
  ASSERT_TRUE(gpu);
  const int64_t n = 300, k = 512;
  HostQuant q = make_quant(QuantFormat::kInt4Group, n, k, 128, 8);
  DevQuant dq = upload(gpu.get(), q);
  for (int64_t m : {int64_t{4}, int64_t{40}}) {
    auto x = random_floats(m * k, 9 + m);
    auto xb = round_to(dt, x);
    DevBuf dx = DevBuf::of(gpu.get(), xb);
    DevBuf dout = DevBuf::poison(gpu.get(), m * n * 2);
    const Tensor xt = dx.t(dt, {m, k}), ot = dout.t(dt, {m, n});
    if (m > 16) {
      // A fresh backend has no scratch: the capture refuses to grow it, with a clear message.
      ASSERT_TRUE(gpu->begin_capture().is_ok());
      Status st = gpu->linear_quantized(xt, dq.w, Tensor(), ot);
      EXPECT_TRUE(gpu->end_capture().is_ok());
      EXPECT_FALSE(st.is_ok());
      EXPECT_NE(st.to_string().find("before begin_capture"), std::string::npos) << st.to_string();
      ASSERT_TRUE(gpu->linear_quantized(xt, dq.w, Tensor(), ot).is_ok());  // eager: grows the scratch
      ASSERT_TRUE(gpu->synchronize().is_ok());
      ASSERT_TRUE(gpu->memset_zero(dout.buf.get(), m * n * 2).is_ok());
    }
    ASSERT_TRUE(gpu->begin_capture().is_ok());
    ASSERT_TRUE(gpu->linear_quantized(xt, dq.w, Tensor(), ot).is_ok());
    auto id = gpu->end_capture();
    ASSERT_TRUE(id.is_ok()) << id.status().to_string();
    for (int rep = 0; rep < 3; ++rep) ASSERT_TRUE(gpu->replay(id.value()).is_ok());
    ASSERT_TRUE(gpu->synchronize().is_ok());
    std::vector<float> reff;
    for (double v : reference(x, q, nullptr, m)) reff.push_back(static_cast<float>(v));
    EXPECT_LT(rel_err(to_f32(dt, dout.read<uint16_t>(m * n)), reff), tolerance(dt)) << "M=" << m;
  }
}

// ---- micro-benchmark ----

bool bench_enabled() {
  const char* e = std::getenv("ANVIL_QUANT_BENCH");
  return e && std::string(e) == "1";
}

// n bytes of random data on the device: a 1 MiB random block tiled.
DevBuf random_bytes(Backend* be, size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> block(std::min<size_t>(n, size_t{1} << 20));
  for (auto& b : block) b = static_cast<uint8_t>(rng());
  DevBuf d = DevBuf::poison(be, 16);
  auto r = DeviceBuffer::create(be, n);
  EXPECT_TRUE(r.is_ok());
  d.buf = std::move(r).value();
  for (size_t off = 0; off < n; off += block.size()) {
    EXPECT_TRUE(be->copy_h2d(static_cast<uint8_t*>(d.buf.get()) + off, block.data(), std::min(block.size(), n - off)).is_ok());
  }
  EXPECT_TRUE(be->synchronize().is_ok());
  return d;
}

// Per-launch time of `per_graph` launches captured into one CUDA graph, median over replays:
// no host launch overhead between the kernels (the decode engine replays graphs too), and PDL
// launches become programmatic graph edges.
double graph_us(cudaStream_t stream, const std::function<void(int)>& fn, int per_graph = 20, int reps = 15) {
  fn(0);
  EXPECT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  if (cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal) != cudaSuccess) {
    ADD_FAILURE() << "begin capture";
    return 0.0;
  }
  for (int i = 0; i < per_graph; ++i) fn(i);
  if (cudaStreamEndCapture(stream, &graph) != cudaSuccess || cudaGraphInstantiate(&exec, graph, 0) != cudaSuccess) {
    ADD_FAILURE() << "graph capture / instantiate failed";
    if (graph) cudaGraphDestroy(graph);
    return 0.0;
  }
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  std::vector<double> t;
  for (int r = 0; r < reps + 2; ++r) {
    cudaEventRecord(a, stream);
    EXPECT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
    cudaEventRecord(b, stream);
    cudaEventSynchronize(b);
    float ms = 0;
    cudaEventElapsedTime(&ms, a, b);
    if (r >= 2) t.push_back(ms * 1000.0 / per_graph);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// Device-to-device copy bandwidth (bytes read + written), the floor's reference on this card.
double copy_gbps(Backend* be, cudaStream_t stream) {
  const size_t n = size_t{512} << 20;
  auto src = DeviceBuffer::create(be, n), dst = DeviceBuffer::create(be, n);
  if (!src.is_ok() || !dst.is_ok()) return 0.0;
  const double us = time_us(stream, [&](int) {
    EXPECT_EQ(cudaMemcpyAsync(dst.value().get(), src.value().get(), n, cudaMemcpyDeviceToDevice, stream), cudaSuccess);
  }, 7, 3);
  return 2.0 * n / us / 1e3;
}

TEST(QuantWeightOnlyBench, Llama8bShapes) {
  ANVIL_REQUIRE_GPU();
  if (!bench_enabled()) GTEST_SKIP() << "set ANVIL_QUANT_BENCH=1 to run the micro-benchmark";
  const DType dt = DType::kBF16;
  auto gpu = make_gpu(dt);
  ASSERT_TRUE(gpu);
  auto* be = static_cast<CudaBackend*>(gpu.get());
  auto runner = cuda::LinearRunner::create(be->stream());
  ASSERT_TRUE(runner.is_ok());
  auto wo = cuda::WeightOnlyLinear::create(be->stream(), runner.value().get());
  ASSERT_TRUE(wo.is_ok());
  std::ostringstream md;
  auto row = [&](const std::string& s) {
    md << s << "\n";
    std::printf("%s\n", s.c_str());
  };
  char line[512];
  row("device: " + gpu->name());
  struct G {
    const char* name;
    int64_t n, k;
  };
  const G shapes[] = {{"qkv", 6144, 4096}, {"o", 4096, 4096}, {"gate_up", 28672, 4096}, {"down", 4096, 14336}};
  struct F {
    const char* name;
    QuantFormat f;
    int32_t g;
  };
  const F formats[] = {{"int8", QuantFormat::kInt8WeightOnly, 0},
                       {"int4 g128", QuantFormat::kInt4Group, 128},
                       {"int4 g32", QuantFormat::kInt4Group, 32}};
  const double floor_bw = 3.0e3;  // GB/s: H100 copy bandwidth (the table's floor)
  std::snprintf(line, sizeof line, "device-to-device copy on this card: %.0f GB/s", copy_gbps(gpu.get(), be->stream()));
  row(line);
  // Variant sweep columns (graph-timed): (unroll, row_tiles, split-K CTAs per SM; -1 = unsplit).
  const cuda::WeightOnlyVariant sweep[] = {{2, 1, -1}, {2, 1, 4}, {2, 1, 8}, {4, 1, -1}, {4, 1, 2},
                                           {4, 1, 4},  {4, 1, 8}, {0, 2, -1}, {0, 2, 4}};
  std::string head =
      "\n| format | GEMM | M | bytes | floor us | rule (U/R/splits) | graph us | GB/s | % of 3.0 TB/s | eager us | graph no PDL | "
      "graph late trigger | dense bf16 eager us |";
  std::string sep = "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |";
  for (const auto& v : sweep) {
    head += " U" + std::to_string(v.unroll) + "R" + std::to_string(v.row_tiles) + "c" + std::to_string(v.ctas_per_sm) + " |";
    sep += " --- |";
  }
  row(head);
  row(sep);
  for (const F& f : formats) {
    for (const G& g : shapes) {
      const bool int4 = f.f == QuantFormat::kInt4Group;
      const size_t wbytes = int4 ? g.n * g.k / 2 : g.n * g.k;
      const size_t sbytes = int4 ? g.n * (g.k / f.g) * 2 : g.n * 4;
      const int copies = static_cast<int>(std::clamp<size_t>((size_t{256} << 20) / (wbytes + 2 * sbytes) + 1, 1, 64));
      std::vector<DevBuf> data, scales, offsets;
      std::vector<QuantizedWeight> ws;
      // Scales ~0.01 as f16 (int4) or f32 (int8), offsets -8 * scale: finite, nonzero outputs.
      std::vector<uint16_t> s16(g.n * (int4 ? g.k / f.g : 0), f32_to_f16(0.01f)), o16(s16.size(), f32_to_f16(-0.08f));
      std::vector<float> s32(int4 ? 0 : g.n, 0.01f);
      for (int i = 0; i < copies; ++i) {
        data.push_back(random_bytes(gpu.get(), wbytes, 200 + i));
        scales.push_back(int4 ? DevBuf::of(gpu.get(), s16) : DevBuf::of(gpu.get(), s32));
        if (int4) offsets.push_back(DevBuf::of(gpu.get(), o16));
        QuantizedWeight w;
        w.format = f.f;
        w.n = g.n;
        w.k = g.k;
        w.group_size = f.g;
        w.data = data.back().buf.get();
        w.scales = scales.back().buf.get();
        w.offsets = int4 ? offsets.back().buf.get() : nullptr;
        ws.push_back(w);
      }
      const bool g32 = f.g == 32;
      const int dense_copies = static_cast<int>(std::clamp<size_t>((size_t{256} << 20) / (g.n * g.k * 2) + 1, 1, 8));
      std::vector<DevBuf> dense;
      if (!g32) {
        for (int i = 0; i < dense_copies; ++i) dense.push_back(random_dev(gpu.get(), dt, g.n * g.k, 300 + i));
      }
      for (int64_t m : {int64_t{1}, int64_t{4}, int64_t{16}}) {
        if (g32 && m == 4) continue;
        auto x = random_dev(gpu.get(), dt, m * g.k, 7);
        auto o = DevBuf::poison(gpu.get(), m * g.n * 2);
        cuda::WeightOnlyArgs a;
        a.x = x.buf.get();
        a.m = m;
        a.dtype = dt;
        a.out = o.buf.get();
        a.out_dtype = dt;
        auto launch = [&](bool backend, int i) {
          const QuantizedWeight& w = ws[i % copies];
          Status st = backend ? gpu->linear_quantized(x.t(dt, {m, g.k}), w, Tensor(), o.t(dt, {m, g.n}))
                              : wo.value()->run_decode(w, a);
          if (!st.is_ok()) ADD_FAILURE() << st.to_string();
        };
        auto graphed = [&](cuda::WeightOnlyVariant v = {}) {
          wo.value()->set_variant(v);
          return graph_us(be->stream(), [&](int i) { launch(false, i); });
        };
        wo.value()->set_auto_variant();
        const double us_eager = time_us(be->stream(), [&](int i) { launch(true, i); });
        const double us = graphed();
        wo.value()->set_pdl(false);
        const double us_nopdl = graphed();
        wo.value()->set_pdl(true);
        wo.value()->set_early_trigger(false);
        const double us_late = graphed();
        wo.value()->set_early_trigger(true);
        const auto rc = wo.value()->decode_config(ws[0], m);
        std::string cols;
        for (const auto& v : sweep) {
          char b[32];
          if (m <= 8 && v.row_tiles == 2) {
            cols += " - |";
            continue;
          }
          std::snprintf(b, sizeof b, " %.1f |", graphed(v));
          cols += b;
        }
        wo.value()->set_auto_variant();
        const double us_dense = g32 ? 0.0 : time_us(be->stream(), [&](int i) {
          Status st = gpu->linear(x.t(dt, {m, g.k}), dense[i % dense_copies].t(dt, {g.n, g.k}), Tensor(), o.t(dt, {m, g.n}));
          if (!st.is_ok()) ADD_FAILURE() << st.to_string();
        });
        const double bytes = static_cast<double>(wbytes + (int4 ? 2 : 1) * sbytes) + m * g.k * 2.0 + m * g.n * 2.0;
        std::snprintf(line, sizeof line, "| %s | %s | %lld | %.1f MB | %.1f | %d/%d/%d | %.1f | %.0f | %.0f%% | %.1f | %.1f | %.1f | %.1f |",
                      f.name, g.name, static_cast<long long>(m), bytes / 1e6, bytes / floor_bw / 1e3, rc.unroll, rc.row_tiles,
                      rc.splits, us, bytes / us / 1e3, 100.0 * bytes / us / 1e3 / floor_bw, us_eager, us_nopdl, us_late, us_dense);
        row(line + cols);
      }
    }
  }
  if (const char* e = std::getenv("ANVIL_QUANT_BENCH_PREFILL"); !e || std::string(e) != "1") {
    if (const char* p = std::getenv("ANVIL_BENCH_OUT")) std::ofstream(p, std::ios::app) << md.str();
    return;
  }
  // Prefill: M = 2048, the dequantize + cuBLASLt path against dense bf16 cuBLASLt.
  row("\n| format | GEMM | M | N x K | quantized us | TFLOP/s | dense bf16 us | TFLOP/s | quantized / dense |");
  row("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
  const int64_t m = 2048;
  for (const F& f : formats) {
    if (f.g == 32) continue;
    for (const G& g : shapes) {
      const bool int4 = f.f == QuantFormat::kInt4Group;
      DevBuf data = random_bytes(gpu.get(), int4 ? g.n * g.k / 2 : g.n * g.k, 400);
      std::vector<uint16_t> s16(g.n * (int4 ? g.k / f.g : 0), f32_to_f16(0.01f)), o16(s16.size(), f32_to_f16(-0.08f));
      std::vector<float> s32(int4 ? 0 : g.n, 0.01f);
      DevBuf scales = int4 ? DevBuf::of(gpu.get(), s16) : DevBuf::of(gpu.get(), s32);
      DevBuf offsets = DevBuf::of(gpu.get(), int4 ? o16 : std::vector<uint16_t>(8));
      QuantizedWeight w;
      w.format = f.f;
      w.n = g.n;
      w.k = g.k;
      w.group_size = f.g;
      w.data = data.buf.get();
      w.scales = scales.buf.get();
      w.offsets = int4 ? offsets.buf.get() : nullptr;
      auto x = random_dev(gpu.get(), dt, m * g.k, 7);
      auto wd = random_dev(gpu.get(), dt, g.n * g.k, 8);
      auto o = DevBuf::poison(gpu.get(), m * g.n * 2);
      const double us_q = time_us(be->stream(), [&](int) {
        Status st = gpu->linear_quantized(x.t(dt, {m, g.k}), w, Tensor(), o.t(dt, {m, g.n}));
        if (!st.is_ok()) ADD_FAILURE() << st.to_string();
      }, 7, 4);
      const double us_d = time_us(be->stream(), [&](int) {
        Status st = gpu->linear(x.t(dt, {m, g.k}), wd.t(dt, {g.n, g.k}), Tensor(), o.t(dt, {m, g.n}));
        if (!st.is_ok()) ADD_FAILURE() << st.to_string();
      }, 7, 4);
      const double flops = 2.0 * m * g.n * g.k;
      std::snprintf(line, sizeof line, "| %s | %s | %lld | %lld x %lld | %.1f | %.0f | %.1f | %.0f | %.2f |", f.name, g.name,
                    static_cast<long long>(m), static_cast<long long>(g.n), static_cast<long long>(g.k), us_q,
                    flops / us_q / 1e6, us_d, flops / us_d / 1e6, us_q / us_d);
      row(line);
    }
  }
  if (const char* p = std::getenv("ANVIL_BENCH_OUT")) std::ofstream(p, std::ios::app) << md.str();
}

}  // namespace
}  // namespace anvil::test
