// The paged KV cache: per layer, one K and one V pool of fixed-size blocks (layout in
// backend.h, KvCacheLayer). Block ids are handed out by BlockManager (block_manager.h).
#pragma once

#include <cstdint>
#include <vector>

#include "backend/backend.h"
#include "model/model_spec.h"

namespace anvil {

class KvCache {
 public:
  static Result<KvCache> create(Backend* backend, const ModelSpec& spec, int32_t num_blocks, int32_t block_size);
  const KvCacheLayer& layer(int i) const { return layers_[i]; }
  int32_t num_blocks() const { return num_blocks_; }
  int32_t block_size() const { return block_size_; }
  // Bytes one block takes over all layers (K and V).
  static size_t bytes_per_block(const ModelSpec& spec, int32_t block_size, DType dtype);

 private:
  std::vector<DeviceBuffer> buffers_;
  std::vector<KvCacheLayer> layers_;
  int32_t num_blocks_ = 0;
  int32_t block_size_ = 0;
};

}  // namespace anvil
