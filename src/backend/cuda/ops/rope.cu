// Launcher for kernels/rope/rope_kv_write.cuh: validates the head geometry and the cache dtype
// (the activation dtype, or fp8 / int8 with scales) and picks the number of warps per token (one
// per head, at most 16; warps loop over the remaining heads).
#include <algorithm>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels/rope/rope_kv_write.cuh"
#include "backend/cuda/ops/elementwise.h"
#include "backend/cuda/ops/pdl_launch.h"

namespace anvil::cuda {
namespace {

template <class E, bool kPairs>
cudaError_t launch_store(const kern::RopeKvParams& p, kern::KvStore store, int threads, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(p.num_tokens)), block(static_cast<unsigned>(threads));
  switch (store) {
    case kern::KvStore::kSame:
      return launch_chained(kern::rope_kv_write_kernel<E, kPairs, kern::KvStore::kSame>, grid, block, 0, stream, p);
    case kern::KvStore::kFp8E4M3:
      return launch_chained(kern::rope_kv_write_kernel<E, kPairs, kern::KvStore::kFp8E4M3>, grid, block, 0, stream, p);
    case kern::KvStore::kInt8:
      return launch_chained(kern::rope_kv_write_kernel<E, kPairs, kern::KvStore::kInt8>, grid, block, 0, stream, p);
  }
  return cudaErrorInvalidValue;
}

template <class E>
cudaError_t launch_kernel(const kern::RopeKvParams& p, kern::KvStore store, bool pairs, int threads,
                          cudaStream_t stream) {
  return pairs ? launch_store<E, true>(p, store, threads, stream) : launch_store<E, false>(p, store, threads, stream);
}

}  // namespace

Status launch_rope_kv_write(const RopeKvLaunch& a, cudaStream_t stream) {
  if (a.num_tokens == 0) return Status::ok();
  if (a.head_dim <= 0 || a.head_dim % 4 != 0 || a.head_dim / 2 > 32 * kern::kRopeMaxPairsPerLane) {
    return unsupported("rope_kv_write: head_dim " + std::to_string(a.head_dim) + " (multiples of 4 up to 256 supported)");
  }
  if (a.block_size <= 0) return invalid_argument("rope_kv_write: kv cache block_size must be > 0");
  kern::RopeKvParams p;
  p.qkv = static_cast<const uint16_t*>(a.qkv);
  p.q_norm = static_cast<const uint16_t*>(a.q_norm);
  p.k_norm = static_cast<const uint16_t*>(a.k_norm);
  p.eps = a.eps;
  p.inv_freq = a.inv_freq;
  p.scaling = a.scaling;
  p.positions = a.positions;
  p.slot_map = a.slot_map;
  p.q_out = static_cast<uint16_t*>(a.q_out);
  p.k_cache = a.k_cache;
  p.v_cache = a.v_cache;
  p.k_scale = a.k_scale;
  p.v_scale = a.v_scale;
  p.num_tokens = a.num_tokens;
  p.num_heads = a.num_heads;
  p.num_kv_heads = a.num_kv_heads;
  p.head_dim = a.head_dim;
  p.block_size = a.block_size;
  const int heads = a.num_heads + 2 * a.num_kv_heads;
  const int threads = 32 * std::min(16, heads);
  const uintptr_t bits = reinterpret_cast<uintptr_t>(a.qkv) | reinterpret_cast<uintptr_t>(a.q_out) |
                         reinterpret_cast<uintptr_t>(a.k_cache) | reinterpret_cast<uintptr_t>(a.v_cache);
  const bool pairs = bits % 4 == 0;
  if (a.dtype != DType::kBF16 && a.dtype != DType::kF16) {
    return unsupported("rope_kv_write: dtype " + std::string(dtype_name(a.dtype)));
  }
  kern::KvStore store = kern::KvStore::kSame;
  if (a.kv_dtype == DType::kF8E4M3 || a.kv_dtype == DType::kI8) {
    if (!a.k_scale || !a.v_scale) {
      return invalid_argument("rope_kv_write: a " + std::string(dtype_name(a.kv_dtype)) + " kv cache needs k_scale and v_scale");
    }
    store = a.kv_dtype == DType::kI8 ? kern::KvStore::kInt8 : kern::KvStore::kFp8E4M3;
  } else if (a.kv_dtype != a.dtype) {
    return unsupported("rope_kv_write: kv cache dtype " + std::string(dtype_name(a.kv_dtype)) + " with " +
                       std::string(dtype_name(a.dtype)) + " activations (the cache holds the activation dtype, f8e4m3 or i8)");
  }
  const cudaError_t err = a.dtype == DType::kBF16 ? launch_kernel<kern::Bf16>(p, store, pairs, threads, stream)
                                                  : launch_kernel<kern::F16>(p, store, pairs, threads, stream);
  ANVIL_CUDA_RETURN_IF_ERROR(err, "rope_kv_write_kernel");
  return check_launch("rope_kv_write_kernel");
}

}  // namespace anvil::cuda
