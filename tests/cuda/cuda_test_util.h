// Helpers for the CUDA backend tests: skip without a GPU, random inputs rounded to the compute
// dtype (the CPU reference gets the same rounded values in f32), device round trips and the
// relative-norm error ||out - ref|| / ||ref||.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <cuda_runtime_api.h>
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/cpu_backend.h"
#include "backend/cuda/cuda_backend.h"
#include "core/dtype.h"

namespace anvil::test {

#define ANVIL_REQUIRE_GPU()                                        \
  do {                                                             \
    if (!::anvil::cuda_device_present()) GTEST_SKIP() << "no CUDA device"; \
  } while (0)

inline std::unique_ptr<Backend> make_gpu(DType dtype) {
  BackendOptions o;
  o.kind = BackendKind::kCuda;
  o.compute_dtype = dtype;
  auto r = create_cuda_backend(o);
  EXPECT_TRUE(r.is_ok()) << r.status().to_string();
  return r.is_ok() ? std::move(r).value() : nullptr;
}

inline std::vector<float> random_floats(size_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) {
    x = d(rng);
    if (x == 0.0f) x = 0.5f * hi;  // never zeros
  }
  return v;
}

// Rounds f32 values to the 16-bit dtype in place and returns the 16-bit storage.
inline std::vector<uint16_t> round_to(DType dtype, std::vector<float>& v) {
  std::vector<uint16_t> bits(v.size());
  convert_from_f32(dtype, v.data(), bits.data(), v.size());
  convert_to_f32(dtype, bits.data(), v.data(), v.size());
  return bits;
}

inline std::vector<float> to_f32(DType dtype, const std::vector<uint16_t>& bits) {
  std::vector<float> v(bits.size());
  convert_to_f32(dtype, bits.data(), v.data(), v.size());
  return v;
}

inline double rel_err(const std::vector<float>& out, const std::vector<float>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (std::isnan(out[i])) return INFINITY;
    num += (static_cast<double>(out[i]) - ref[i]) * (static_cast<double>(out[i]) - ref[i]);
    den += static_cast<double>(ref[i]) * ref[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

// A device buffer holding a copy of host data (or `bytes` of 0xFF poison when data is null).
struct DevBuf {
  DeviceBuffer buf;
  Backend* be = nullptr;
  template <typename T>
  static DevBuf of(Backend* be, const std::vector<T>& host) {
    DevBuf d;
    d.be = be;
    auto r = DeviceBuffer::create(be, host.size() * sizeof(T));
    EXPECT_TRUE(r.is_ok()) << r.status().to_string();
    d.buf = std::move(r).value();
    EXPECT_TRUE(be->copy_h2d(d.buf.get(), host.data(), host.size() * sizeof(T)).is_ok());
    EXPECT_TRUE(be->synchronize().is_ok());
    return d;
  }
  static DevBuf poison(Backend* be, size_t bytes) {
    std::vector<uint8_t> p(bytes, 0xFF);
    return of(be, p);
  }
  template <typename T>
  std::vector<T> read(size_t n) const {
    std::vector<T> h(n);
    EXPECT_TRUE(be->copy_d2h(h.data(), buf.get(), n * sizeof(T)).is_ok());
    return h;
  }
  Tensor t(DType dtype, Shape s) const { return buf.tensor(dtype, s); }
};

inline Tensor host_tensor(std::vector<float>& v, Shape s) { return Tensor(v.data(), DType::kF32, s); }
inline Tensor host_tensor(std::vector<int32_t>& v, Shape s) { return Tensor(v.data(), DType::kI32, s); }

inline const char* name_of(DType d) { return d == DType::kBF16 ? "bf16" : "f16"; }

// Median microseconds per call of fn over `batches` batches of `per_batch` calls on `stream`,
// after 3 warm-up calls (micro-benchmarks).
inline double time_us(cudaStream_t stream, const std::function<void(int)>& fn, int batches = 15, int per_batch = 10) {
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  for (int i = 0; i < 3; ++i) fn(i);
  cudaStreamSynchronize(stream);
  std::vector<double> t;
  int call = 0;
  for (int i = 0; i < batches; ++i) {
    cudaEventRecord(a, stream);
    for (int j = 0; j < per_batch; ++j) fn(call++);
    cudaEventRecord(b, stream);
    cudaEventSynchronize(b);
    float ms = 0;
    cudaEventElapsedTime(&ms, a, b);
    t.push_back(ms * 1000.0 / per_batch);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// n random elements of dt on the device: a 1M-element random block tiled (fast to make for the
// 1 GiB lm head; still nonzero, non-repeating within any kernel tile).
inline DevBuf random_dev(Backend* be, DType dt, size_t n, uint32_t seed) {
  const size_t block = std::min<size_t>(n, size_t{1} << 20);
  auto v = random_floats(block, seed);
  auto bits = round_to(dt, v);
  DevBuf d = DevBuf::poison(be, 16);
  auto r = DeviceBuffer::create(be, n * 2);
  EXPECT_TRUE(r.is_ok());
  d.buf = std::move(r).value();
  for (size_t off = 0; off < n; off += block) {
    const size_t cnt = std::min(block, n - off);
    EXPECT_TRUE(be->copy_h2d(static_cast<uint16_t*>(d.buf.get()) + off, bits.data(), cnt * 2).is_ok());
  }
  EXPECT_TRUE(be->synchronize().is_ok());
  return d;
}

}  // namespace anvil::test
