// Helpers for the CUDA backend tests: skip without a GPU, random inputs rounded to the compute
// dtype (the CPU reference gets the same rounded values in f32), device round trips and the
// relative-norm error ||out - ref|| / ||ref||.
#pragma once

#include <gtest/gtest.h>

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

}  // namespace anvil::test
