// Counter-based random numbers (Philox-4x32-10), identical on host and device: a request's draw
// depends only on (seed, step), never on the batch it ran in. Header-only and __host__
// __device__ so the CUDA sampler includes the same code.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define ANVIL_HD __host__ __device__ __forceinline__
#else
#define ANVIL_HD inline
#endif

namespace anvil {

ANVIL_HD void philox_round(uint32_t& c0, uint32_t& c1, uint32_t& c2, uint32_t& c3, uint32_t k0, uint32_t k1) {
  const uint64_t p0 = static_cast<uint64_t>(0xD2511F53u) * c0;
  const uint64_t p1 = static_cast<uint64_t>(0xCD9E8D57u) * c2;
  const uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
  const uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
  const uint32_t n0 = hi1 ^ c1 ^ k0;
  const uint32_t n2 = hi0 ^ c3 ^ k1;
  c0 = n0;
  c1 = lo1;
  c2 = n2;
  c3 = lo0;
}

// Philox-4x32-10 of counter (step, 0, 0, 0) under key seed; returns the first 32-bit word.
ANVIL_HD uint32_t philox_u32(uint64_t seed, uint64_t step) {
  uint32_t c0 = static_cast<uint32_t>(step), c1 = static_cast<uint32_t>(step >> 32), c2 = 0, c3 = 0;
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int i = 0; i < 10; ++i) {
    philox_round(c0, c1, c2, c3, k0, k1);
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return c0;
}

// Uniform in [0, 1) with 24 bits of resolution.
ANVIL_HD float philox_uniform(uint64_t seed, uint64_t step) {
  return static_cast<float>(philox_u32(seed, step) >> 8) * (1.0f / 16777216.0f);
}

}  // namespace anvil
