// Block allocator and KV pools.
#include "runtime/kv_cache/kv_cache.h"

namespace anvil {

size_t KvCache::bytes_per_block(const ModelSpec& spec, int32_t block_size, DType dtype) {
  return 2 * static_cast<size_t>(spec.num_layers) * spec.num_kv_heads * block_size * spec.head_dim * dtype_size(dtype);
}

Result<KvCache> KvCache::create(Backend* backend, const ModelSpec& spec, int32_t num_blocks, int32_t block_size) {
  if (num_blocks <= 0 || block_size <= 0) return invalid_argument("kv cache: num_blocks and block_size must be positive");
  KvCache cache;
  cache.num_blocks_ = num_blocks;
  cache.block_size_ = block_size;
  const DType dt = backend->compute_dtype();
  const size_t pool = static_cast<size_t>(num_blocks) * spec.num_kv_heads * block_size * spec.head_dim * dtype_size(dt);
  for (int64_t l = 0; l < spec.num_layers; ++l) {
    ANVIL_ASSIGN_OR_RETURN(DeviceBuffer k, DeviceBuffer::create(backend, pool));
    ANVIL_ASSIGN_OR_RETURN(DeviceBuffer v, DeviceBuffer::create(backend, pool));
    ANVIL_RETURN_IF_ERROR(backend->memset_zero(k.get(), pool));
    ANVIL_RETURN_IF_ERROR(backend->memset_zero(v.get(), pool));
    KvCacheLayer layer;
    layer.k = k.get();
    layer.v = v.get();
    layer.dtype = dt;
    layer.num_blocks = num_blocks;
    layer.block_size = block_size;
    layer.num_kv_heads = static_cast<int32_t>(spec.num_kv_heads);
    layer.head_dim = static_cast<int32_t>(spec.head_dim);
    cache.layers_.push_back(layer);
    cache.buffers_.push_back(std::move(k));
    cache.buffers_.push_back(std::move(v));
  }
  return cache;
}

}  // namespace anvil
