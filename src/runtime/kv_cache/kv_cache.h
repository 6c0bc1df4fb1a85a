// The paged KV cache: per layer, one K and one V pool of fixed-size blocks (layout in
// backend.h, KvCacheLayer). Block ids are handed out by BlockManager (block_manager.h).
// Elements are the compute dtype, or fp8 e4m3 / int8 with per-layer, per-KV-head scales that
// the caller owns (they must outlive the cache).
#pragma once

#include <cstdint>
#include <vector>

#include "backend/backend.h"
#include "model/model_spec.h"

namespace anvil {

// One layer's dequantization scales, [num_kv_heads] f32 each, in backend memory.
struct KvLayerScales {
  const float* k = nullptr;
  const float* v = nullptr;
};

class KvCache {
 public:
  // dtype: the backend's compute dtype (f32 on the CPU), kF8E4M3 or kI8. A quantized cache needs
  // one KvLayerScales per layer (non-null); other dtypes take none.
  static Result<KvCache> create(Backend* backend, const ModelSpec& spec, int32_t num_blocks, int32_t block_size,
                                DType dtype, const std::vector<KvLayerScales>& scales = {});
  const KvCacheLayer& layer(int i) const { return layers_[i]; }
  int32_t num_layers() const { return static_cast<int32_t>(layers_.size()); }
  // Copies block `src`'s K and V into block `dst` in every layer (copy-on-write of a shared
  // block), queued on the backend's stream like any op. One head's block is contiguous, so a
  // block is num_kv_heads runs of block_size * head_dim elements per pool.
  Status copy_block(Backend* backend, int32_t src, int32_t dst) const;
  int32_t num_blocks() const { return num_blocks_; }
  int32_t block_size() const { return block_size_; }
  DType dtype() const { return dtype_; }
  // Bytes one block takes over all layers (K and V) when elements are `dtype`.
  static size_t bytes_per_block(const ModelSpec& spec, int32_t block_size, DType dtype);

 private:
  std::vector<DeviceBuffer> buffers_;
  std::vector<KvCacheLayer> layers_;
  int32_t num_blocks_ = 0;
  int32_t block_size_ = 0;
  DType dtype_ = DType::kF32;
};

}  // namespace anvil
