// Host launchers for paged attention: argument checks, dtype / KV cache dtype / head_dim / group
// dispatch, the decode split choice and the routing of rows between the decode and prefill kernels.
// Routing (kAuto): sequences with q_len == 1 go to a split-KV decode kernel (the tensor-core v3 for
// up to 16 query heads per KV head, v2 above that), the others to the prefill kernel; in a mixed
// batch both launch and each skips the other's sequences. A prefill
// step whose caller rules out decode rows (max_decode_seqs == 0) launches the prefill kernel only.
#include "backend/cuda/ops/attention.h"

#include <algorithm>
#include <cstdint>
#include <string>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels/attention/attention_decode.cuh"
#include "backend/cuda/kernels/attention/attention_decode_mma.cuh"
#include "backend/cuda/kernels/attention/attention_decode_v1.cuh"
#include "backend/cuda/kernels/attention/attention_prefill.cuh"
#include "backend/cuda/kernels/attention/attention_reference.cuh"
#include "backend/cuda/ops/pdl_launch.h"

namespace anvil::cuda {
namespace {

using attn::AttentionParams;
using attn::KvQuant;

int multiprocessor_count() {
  int dev = 0, sms = 0;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess || sms <= 0) {
    cudaGetLastError();  // clear: fall back to a typical count
    return 132;
  }
  return sms;
}

// Decode splits. kTargetCtas bounds num_seqs * Hkv * splits with a constant (not the SM count) so
// that the workspace bound attention_workspace_bytes gives is independent of the device.
constexpr int kTargetCtas = 1024;
// A split holds at least kMinPartition keys, rounded up to a granule: 32 for the current kernel
// (finer rounding of long partitions: 49 splits of 672 keys at 32k), 64 for the frozen v1 kernel.
// Partitions of 32 keys (twice the CTAs at short contexts) measured slower: 10.9 against 9.3 us
// per layer at batch 1, ctx 1k (bench/cuda_kernels.md, Attention v2).
constexpr int kMinPartition = 64;
constexpr int kPartitionGranule = 32;
constexpr int kPartitionGranuleV1 = 64;
constexpr int kPartitionGranuleV3 = attn::v3::kTileKeys;  // v3: whole tiles (one per warp slice)
constexpr int kMaxSplits = 128;
constexpr int kSplitOverheadTiles = 2;  // fixed cost of a split (start-up, merge), in key tiles
// The workspace ends in workspace_bytes / kCounterStride int32 arrival counters (16-byte aligned),
// a layout that depends on its size alone, so partials of one call never land on counters.
constexpr size_t kCounterStride = 256;
constexpr int kPrefillWarps = 4;
constexpr int kPrefillCtasPerSm = 2;
constexpr int kMaxDecodeGroup = 32;

int ceil_div(int a, int b) { return (a + b - 1) / b; }

template <typename Kernel>
Status set_smem(Kernel kernel, size_t bytes, const char* name) {
  return cuda_status(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)), name);
}

size_t counter_count(size_t workspace_bytes) { return workspace_bytes / kCounterStride; }
size_t partial_capacity(size_t workspace_bytes) {
  return (workspace_bytes - counter_count(workspace_bytes) * sizeof(int32_t)) & ~size_t{15};
}

void choose_splits(const AttentionLaunch& p, int slots, size_t capacity, int granule, AttentionParams& prm);

// The frozen first kernel pair, for benchmarks (decode_version == 1): whole workspace for
// partials, separate combine launch.
template <typename T, int D, int kMaxG>
Status launch_decode_v1(const AttentionLaunch& p, AttentionParams prm, cudaStream_t stream) {
  using Shape = attn::v1::DecodeShape<D, kMaxG>;
  constexpr size_t smem = Shape::template smem_bytes<T>();
  auto kernel = attn::v1::attention_decode_kernel<T, D, kMaxG>;
  ANVIL_RETURN_IF_ERROR(set_smem(kernel, smem, "attention: cudaFuncSetAttribute(attention_decode_kernel v1)"));
  int ctas_per_sm = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&ctas_per_sm, kernel, attn::v1::kDecodeThreads, smem) !=
          cudaSuccess ||
      ctas_per_sm <= 0) {
    cudaGetLastError();
    ctas_per_sm = 2;
  }
  choose_splits(p, ctas_per_sm * multiprocessor_count(), p.workspace_bytes, kPartitionGranuleV1, prm);
  prm.split_counters = nullptr;
  kernel<<<dim3(prm.num_seqs, prm.num_kv_heads, prm.num_splits), attn::v1::kDecodeThreads, smem, stream>>>(prm);
  ANVIL_RETURN_IF_ERROR(check_launch("attention: attention_decode_kernel v1"));
  if (prm.num_splits > 1) {
    attn::v1::attention_decode_combine_kernel<T, D><<<dim3(prm.num_seqs, prm.num_heads), 32, 0, stream>>>(prm);
    ANVIL_RETURN_IF_ERROR(check_launch("attention: attention_decode_combine_kernel v1"));
  }
  return Status::ok();
}

// The separate merge of split partials (v2 / v3 when the workspace holds no arrival counters).
template <typename T, int D>
Status launch_combine(const AttentionParams& prm, cudaStream_t stream) {
  ANVIL_CUDA_RETURN_IF_ERROR(launch_chained(attn::attention_decode_combine_kernel<T, D>,
                                            dim3(prm.num_seqs, prm.num_heads), dim3(32), 0, stream, prm),
                             "attention: attention_decode_combine_kernel");
  return check_launch("attention: attention_decode_combine_kernel");
}

// One split-KV decode launch (v2 or v3): residency asked once per kernel, splits chosen for it,
// the partials' merge fused into the last CTA when the workspace holds a counter for every
// (sequence, KV head), else a separate combine launch.
// The kernel is a template argument so that each kernel keeps its own residency.
template <typename T, int D, auto kKernel>
Status launch_split_decode(int threads, size_t smem, int granule, const char* name, const AttentionLaunch& p,
                           AttentionParams prm, cudaStream_t stream) {
  const auto kernel = kKernel;
  ANVIL_RETURN_IF_ERROR(set_smem(kernel, smem, name));
  // Resident CTAs per SM: a property of the kernel and the architecture, asked once per kernel
  // (all GPUs of a process are assumed to be of one architecture).
  static const int ctas_per_sm = [&] {
    int n = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, threads, smem) != cudaSuccess || n <= 0) {
      cudaGetLastError();
      n = 2;
    }
    return n;
  }();
  const bool fused = p.workspace != nullptr && p.workspace_zeroed &&
                     static_cast<size_t>(prm.num_seqs) * prm.num_kv_heads <= counter_count(p.workspace_bytes);
  choose_splits(p, ctas_per_sm * multiprocessor_count(),
                p.workspace != nullptr ? (fused ? partial_capacity(p.workspace_bytes) : p.workspace_bytes) : 0,
                granule, prm);
  prm.split_counters = nullptr;
  if (fused && prm.num_splits > 1) {
    prm.split_counters =
        reinterpret_cast<int*>(static_cast<char*>(p.workspace) + partial_capacity(p.workspace_bytes));
  }
  const dim3 grid(prm.num_seqs, prm.num_kv_heads, prm.num_splits);
  ANVIL_CUDA_RETURN_IF_ERROR(launch_chained(kernel, grid, dim3(threads), smem, stream, prm), name);
  ANVIL_RETURN_IF_ERROR(check_launch(name));
  if (prm.num_splits > 1 && prm.split_counters == nullptr) return launch_combine<T, D>(prm, stream);
  return Status::ok();
}

template <typename T, int D, int kMaxG, KvQuant Q>
Status launch_decode_g(const AttentionLaunch& p, AttentionParams prm, cudaStream_t stream) {
  if constexpr (Q == KvQuant::kNone) {
    if (p.decode_version == 1) return launch_decode_v1<T, D, kMaxG>(p, prm, stream);
  } else {
    if (p.decode_version == 1) return unsupported("attention: the frozen v1 decode kernel reads no quantized KV cache");
  }
  using Shape = attn::DecodeShape<D, kMaxG, attn::KvBytes<Q>::kValue>;
  return launch_split_decode<T, D, attn::attention_decode_kernel<T, D, kMaxG, Q>>(
      attn::kDecodeThreads, Shape::template smem_bytes<T>(), kPartitionGranule, "attention: attention_decode_kernel", p,
      prm, stream);
}

// The tensor-core decode kernel (v3); same workspace, counters and split rules as v2, whole
// 64-key tiles per split.
template <typename T, int D, KvQuant Q>
Status launch_decode_v3(const AttentionLaunch& p, AttentionParams prm, cudaStream_t stream) {
  return launch_split_decode<T, D, attn::v3::attention_decode_mma_kernel<T, D, Q>>(
      attn::v3::kThreads, attn::v3::Shape<D, Q>::smem_bytes(), kPartitionGranuleV3,
      "attention: attention_decode_mma_kernel", p, prm, stream);
}

// Decode kernel choice: decode_version 1 / 2 / 3 forces that kernel; 0 takes v3 wherever it
// applies (group <= 16; measured faster than v2 at every benchmarked shape, bench/cuda_kernels.md)
// and v2 for larger groups.
template <typename T, int D, KvQuant Q>
Status launch_decode(const AttentionLaunch& p, const AttentionParams& prm, cudaStream_t stream) {
  const bool v3_fits = prm.group <= attn::v3::kMaxGroup;
  if (p.decode_version == 3 && !v3_fits) {
    return unsupported("attention: decode kernel v3 serves at most " + std::to_string(attn::v3::kMaxGroup) +
                       " query heads per KV head, got " + std::to_string(prm.group));
  }
  if (p.decode_version == 3 || (p.decode_version == 0 && v3_fits)) return launch_decode_v3<T, D, Q>(p, prm, stream);
  if (prm.group <= 1) return launch_decode_g<T, D, 1, Q>(p, prm, stream);
  if (prm.group <= 2) return launch_decode_g<T, D, 2, Q>(p, prm, stream);
  if (prm.group <= 4) return launch_decode_g<T, D, 4, Q>(p, prm, stream);
  if (prm.group <= 8) return launch_decode_g<T, D, 8, Q>(p, prm, stream);
  if (prm.group <= 16) return launch_decode_g<T, D, 16, Q>(p, prm, stream);
  return launch_decode_g<T, D, kMaxDecodeGroup, Q>(p, prm, stream);
}

template <typename T, int D, int kMTiles, KvQuant Q>
Status launch_prefill_mt(const AttentionParams& prm, int64_t tiles, cudaStream_t stream) {
  using Shape = attn::PrefillShape<D, kPrefillWarps, kMTiles>;
  constexpr size_t smem = Shape::template smem_bytes<T, Q>();
  auto kernel = attn::attention_prefill_kernel<T, D, kPrefillWarps, kMTiles, Q>;
  ANVIL_RETURN_IF_ERROR(set_smem(kernel, smem, "attention: cudaFuncSetAttribute(attention_prefill_kernel)"));
  const dim3 grid(static_cast<unsigned>(tiles), prm.num_seqs, prm.num_kv_heads);
  ANVIL_CUDA_RETURN_IF_ERROR(launch_chained(kernel, grid, dim3(Shape::kThreads), smem, stream, prm),
                             "attention: attention_prefill_kernel");
  return check_launch("attention: attention_prefill_kernel");
}

// Query rows per warp: 32 (twice the MMAs per shared-memory read; 292 vs 241 TFLOP/s on an 8k
// prefill) unless its grid would leave SMs idle, as short chunks do: then 16, which doubles the
// CTAs. kPrefillCtasPerSm is the residency of the 32-row kernel (255 registers, 96 KB).
template <typename T, int D, KvQuant Q>
Status launch_prefill(const AttentionParams& prm, int max_query_len, int warp_rows, cudaStream_t stream) {
  constexpr int64_t kRows16 = attn::PrefillShape<D, kPrefillWarps, 1>::kRows;
  constexpr int64_t kRows32 = attn::PrefillShape<D, kPrefillWarps, 2>::kRows;
  const int64_t rows = static_cast<int64_t>(max_query_len) * prm.group;
  const int64_t tiles32 = (rows + kRows32 - 1) / kRows32;
  if (warp_rows == 0) {
    const int64_t ctas32 = tiles32 * prm.num_seqs * prm.num_kv_heads;
    warp_rows = ctas32 >= static_cast<int64_t>(kPrefillCtasPerSm) * multiprocessor_count() ? 32 : 16;
  }
  if (warp_rows == 16) return launch_prefill_mt<T, D, 1, Q>(prm, (rows + kRows16 - 1) / kRows16, stream);
  return launch_prefill_mt<T, D, 2, Q>(prm, tiles32, stream);
}

template <typename T>
Status launch_reference(const AttentionParams& prm, int num_tokens, int head_dim, cudaStream_t stream) {
  attn::attention_reference_kernel<T><<<dim3(num_tokens, prm.num_heads), head_dim, 0, stream>>>(prm, head_dim);
  return check_launch("attention: attention_reference_kernel");
}

// Keys per split for `splits` splits of max_ctx keys: a whole number of granules.
int partition_for(int max_ctx, int splits, int granule) {
  return ceil_div(ceil_div(std::max(1, max_ctx), splits), granule) * granule;
}

// Number of decode splits and keys per split for this batch. Automatic choice: the split count
// that minimizes waves(s) * (granules per split + kSplitOverheadTiles * 64 / granule), i.e. the
// key tiles a CTA streams plus a fixed cost per split, where a wave is `slots` resident CTAs;
// each split has at least kMinPartition keys; the workspace caps the count. Only speed depends
// on it, never results beyond rounding. `capacity`: workspace bytes for partials.
void choose_splits(const AttentionLaunch& p, int slots, size_t capacity, int granule, AttentionParams& prm) {
  const BatchView& b = p.batch;
  const int max_ctx = std::max(1, b.max_context_len);
  const int overhead = kSplitOverheadTiles * attn::kDecodeTileKeys / granule;  // in granules
  int splits = 1;
  if (p.workspace != nullptr && max_ctx > kMinPartition) {
    const int base = std::max(1, b.num_seqs * p.num_kv_heads);
    const size_t per_split = static_cast<size_t>(b.num_seqs) * p.num_heads * (p.head_dim + 1) * sizeof(float);
    const int limit = static_cast<int>(std::min<size_t>(
        {static_cast<size_t>(ceil_div(kTargetCtas, base)), static_cast<size_t>(ceil_div(max_ctx, kMinPartition)),
         static_cast<size_t>(kMaxSplits), capacity / per_split}));
    if (p.decode_splits > 0) {
      splits = std::min(p.decode_splits, limit);
    } else {
      int64_t best_cost = INT64_MAX;
      for (int s = 1; s <= limit; ++s) {
        const int part = partition_for(max_ctx, s, granule);
        const int64_t ctas = static_cast<int64_t>(base) * ceil_div(max_ctx, part);
        const int64_t waves = (ctas + std::max(1, slots) - 1) / std::max(1, slots);
        const int64_t cost = waves * (part / granule + overhead);
        if (cost < best_cost) {
          best_cost = cost;
          splits = s;
        }
      }
    }
    splits = std::max(1, splits);
  }
  const int partition = partition_for(max_ctx, splits, granule);
  splits = ceil_div(max_ctx, partition);  // drop splits that rounding left empty
  prm.num_splits = splits;
  prm.partition_size = partition;
  if (splits > 1) {
    prm.partial_out = static_cast<float*>(p.workspace);
    prm.partial_lse = prm.partial_out + static_cast<size_t>(b.num_seqs) * p.num_heads * splits * p.head_dim;
  }
}

template <typename T, int D, KvQuant Q>
Status dispatch(const AttentionLaunch& p, AttentionParams prm, cudaStream_t stream) {
  const BatchView& b = p.batch;
  const bool decode_ok = prm.group <= kMaxDecodeGroup;
  switch (p.path) {
    case AttentionPath::kReference:
      if constexpr (Q != KvQuant::kNone) {
        return unsupported("attention: the reference kernel reads no quantized KV cache");
      } else {
        return launch_reference<T>(prm, b.num_tokens, D, stream);
      }
    case AttentionPath::kPrefill:
      prm.min_query_len = 1;
      prm.max_query_len = b.max_query_len;
      return launch_prefill<T, D, Q>(prm, b.max_query_len, p.prefill_warp_rows, stream);
    case AttentionPath::kDecode:
      if (b.max_query_len != 1) {
        return invalid_argument("attention: AttentionPath::kDecode needs batch.max_query_len == 1, got " +
                                std::to_string(b.max_query_len));
      }
      if (!decode_ok) {
        return unsupported("attention: decode kernel serves at most " + std::to_string(kMaxDecodeGroup) +
                           " query heads per KV head, got " + std::to_string(prm.group));
      }
      return launch_decode<T, D, Q>(p, prm, stream);
    case AttentionPath::kAuto:
      break;
  }
  // A prefill step without decode rows (by the caller's hint) skips the decode launch; the
  // prefill kernel then takes every row, so a wrong hint costs speed, not correctness.
  const bool no_decode_rows = p.max_decode_seqs == 0 && b.max_query_len > 1;
  if (decode_ok && !no_decode_rows) {
    const Status decoded = launch_decode<T, D, Q>(p, prm, stream);
    if (!decoded.is_ok()) return decoded;
    if (b.max_query_len <= 1) return Status::ok();
    prm.min_query_len = 2;
  } else {
    prm.min_query_len = 1;
  }
  prm.max_query_len = b.max_query_len;
  return launch_prefill<T, D, Q>(prm, b.max_query_len, p.prefill_warp_rows, stream);
}

template <typename T, KvQuant Q>
Status dispatch_dim(const AttentionLaunch& p, const AttentionParams& prm, cudaStream_t stream) {
  if (p.head_dim == 64) return dispatch<T, 64, Q>(p, prm, stream);
  return dispatch<T, 128, Q>(p, prm, stream);
}

template <typename T>
Status dispatch_kv(const AttentionLaunch& p, const AttentionParams& prm, cudaStream_t stream) {
  const DType kv = p.kv_dtype.value_or(p.dtype);
  if (kv == DType::kF8E4M3) return dispatch_dim<T, KvQuant::kFp8E4M3>(p, prm, stream);
  if (kv == DType::kI8) return dispatch_dim<T, KvQuant::kInt8>(p, prm, stream);
  return dispatch_dim<T, KvQuant::kNone>(p, prm, stream);
}

bool is_pow2(int v) { return v > 0 && (v & (v - 1)) == 0; }

}  // namespace

size_t attention_workspace_bytes(int max_seqs, int num_heads, int num_kv_heads, int head_dim) {
  if (max_seqs <= 0 || num_heads <= 0 || num_kv_heads <= 0 || head_dim <= 0) return 0;
  // choose_splits keeps num_seqs * splits <= num_seqs + kTargetCtas / Hkv (rounded up).
  const size_t rows = static_cast<size_t>(max_seqs) + static_cast<size_t>(ceil_div(kTargetCtas, num_kv_heads));
  const size_t partials = rows * static_cast<size_t>(num_heads) * (static_cast<size_t>(head_dim) + 1) * sizeof(float);
  // Counters take 1/64 of the total (4 bytes per kCounterStride); partials the rest. As
  // partials >= max_seqs * Hkv * 260 bytes, that leaves a counter for every (sequence, KV head).
  const size_t total = partials + partials / (kCounterStride / sizeof(int32_t) - 1) + kCounterStride;
  return total / kCounterStride * kCounterStride;
}

Status launch_attention(const AttentionLaunch& p, cudaStream_t stream) {
  const BatchView& b = p.batch;
  if (p.dtype != DType::kBF16 && p.dtype != DType::kF16) {
    return unsupported("attention: dtype " + std::string(dtype_name(p.dtype)) + " (CUDA attention takes bf16 or f16)");
  }
  if (p.head_dim != 64 && p.head_dim != 128) {
    return unsupported("attention: head_dim " + std::to_string(p.head_dim) + " (CUDA attention supports 64 and 128)");
  }
  if (!is_pow2(p.block_size) || p.block_size > 1024) {
    return invalid_argument("attention: KV block_size " + std::to_string(p.block_size) +
                            " must be a power of two (16, 32 or 64 are typical)");
  }
  if (p.num_heads <= 0 || p.num_kv_heads <= 0 || p.num_heads % p.num_kv_heads != 0) {
    return invalid_argument("attention: num_heads " + std::to_string(p.num_heads) +
                            " must be a positive multiple of num_kv_heads " + std::to_string(p.num_kv_heads));
  }
  if (b.num_seqs < 0 || b.num_tokens < 0 || b.max_query_len < 0 || b.max_context_len < 0) {
    return invalid_argument("attention: negative batch hint");
  }
  if (b.num_seqs == 0 || b.num_tokens == 0) return Status::ok();
  if (b.num_seqs > 65535 || p.num_kv_heads > 65535 || p.num_heads > 65535) {
    return unsupported("attention: num_seqs " + std::to_string(b.num_seqs) + " / heads beyond the 65535 grid limit");
  }
  if (b.max_query_len <= 0) {
    return invalid_argument("attention: batch.max_query_len hint is 0 with " + std::to_string(b.num_tokens) +
                            " tokens");
  }
  if (!p.q || !p.out || !p.k_cache || !p.v_cache || !b.seq_starts || !b.context_lens || !b.block_tables) {
    return invalid_argument("attention: null q, out, k/v cache, seq_starts, context_lens or block_tables");
  }
  if (p.decode_splits < 0 || (p.prefill_warp_rows != 0 && p.prefill_warp_rows != 16 && p.prefill_warp_rows != 32)) {
    return invalid_argument("attention: decode_splits " + std::to_string(p.decode_splits) + " / prefill_warp_rows " +
                            std::to_string(p.prefill_warp_rows) + " (0 = automatic; warp rows 16 or 32)");
  }
  if (p.decode_version < 0 || p.decode_version > 3 || p.max_decode_seqs < -1) {
    return invalid_argument("attention: decode_version " + std::to_string(p.decode_version) + " (0..3) / " +
                            "max_decode_seqs " + std::to_string(p.max_decode_seqs) + " (-1 = unknown)");
  }
  if (p.workspace_bytes > 0 && p.workspace == nullptr) {
    return invalid_argument("attention: workspace_bytes > 0 with a null workspace");
  }
  const DType kv_dtype = p.kv_dtype.value_or(p.dtype);
  const bool kv_quantized = kv_dtype == DType::kF8E4M3 || kv_dtype == DType::kI8;
  if (!kv_quantized && kv_dtype != p.dtype) {
    return unsupported("attention: kv cache dtype " + std::string(dtype_name(kv_dtype)) + " with " +
                       std::string(dtype_name(p.dtype)) + " q (the cache holds the q dtype, f8e4m3 or i8)");
  }
  if (kv_quantized && (!p.k_scale || !p.v_scale)) {
    return invalid_argument("attention: a " + std::string(dtype_name(kv_dtype)) + " kv cache needs k_scale and v_scale");
  }

  AttentionParams prm{};
  prm.q = p.q;
  prm.out = p.out;
  prm.k_cache = p.k_cache;
  prm.v_cache = p.v_cache;
  prm.seq_starts = b.seq_starts;
  prm.context_lens = b.context_lens;
  prm.block_tables = b.block_tables;
  prm.num_seqs = b.num_seqs;
  prm.num_heads = p.num_heads;
  prm.num_kv_heads = p.num_kv_heads;
  prm.group = p.num_heads / p.num_kv_heads;
  prm.block_size_log2 = __builtin_ctz(static_cast<unsigned>(p.block_size));
  prm.max_blocks_per_seq = b.max_blocks_per_seq;
  prm.scale = p.scale;
  prm.scale_log2 = p.scale * 1.4426950408889634f;
  prm.min_query_len = 1;
  prm.max_query_len = 1;
  prm.num_splits = 1;
  prm.partition_size = std::max(1, b.max_context_len);
  prm.k_scale = kv_quantized ? p.k_scale : nullptr;
  prm.v_scale = kv_quantized ? p.v_scale : nullptr;

  switch (p.dtype) {
    case DType::kBF16:
      return dispatch_kv<__nv_bfloat16>(p, prm, stream);
    case DType::kF16:
      return dispatch_kv<__half>(p, prm, stream);
    case DType::kF32:
    case DType::kF8E4M3:
    case DType::kF8E5M2:
    case DType::kI8:
    case DType::kI4:
    case DType::kI32:
    case DType::kI64:
    case DType::kU8:
      break;
  }
  return unsupported("attention: dtype " + std::string(dtype_name(p.dtype)));
}

}  // namespace anvil::cuda
