// KV pools: one zeroed K and one V allocation per layer, elements of the cache dtype (1 byte for
// fp8 / int8, whose scales the caller passes in).
#include "runtime/kv_cache/kv_cache.h"

#include <string>

#include "backend/kv_quant.h"

namespace anvil {

size_t KvCache::bytes_per_block(const ModelSpec& spec, int32_t block_size, DType dtype) {
  return 2 * static_cast<size_t>(spec.num_layers) * spec.num_kv_heads * block_size * spec.head_dim * dtype_size(dtype);
}

Result<KvCache> KvCache::create(Backend* backend, const ModelSpec& spec, int32_t num_blocks, int32_t block_size,
                                DType dtype, const std::vector<KvLayerScales>& scales) {
  if (num_blocks <= 0 || block_size <= 0) return invalid_argument("kv cache: num_blocks and block_size must be positive");
  const bool quantized = kv_dtype_quantized(dtype);
  if (!quantized && dtype != backend->compute_dtype()) {
    return invalid_argument("kv cache: dtype " + std::string(dtype_name(dtype)) + " on " + backend->name() +
                            " (use the compute dtype " + std::string(dtype_name(backend->compute_dtype())) +
                            ", f8e4m3 or i8)");
  }
  if (quantized && scales.size() != static_cast<size_t>(spec.num_layers)) {
    return invalid_argument("kv cache: a " + std::string(dtype_name(dtype)) + " cache needs scales for each of the " +
                            std::to_string(spec.num_layers) + " layers, got " + std::to_string(scales.size()));
  }
  if (!quantized && !scales.empty()) {
    return invalid_argument("kv cache: scales given for an unquantized " + std::string(dtype_name(dtype)) + " cache");
  }
  KvCache cache;
  cache.num_blocks_ = num_blocks;
  cache.block_size_ = block_size;
  cache.dtype_ = dtype;
  const size_t pool = static_cast<size_t>(num_blocks) * spec.num_kv_heads * block_size * spec.head_dim * dtype_size(dtype);
  for (int64_t l = 0; l < spec.num_layers; ++l) {
    if (quantized && (!scales[l].k || !scales[l].v)) {
      return invalid_argument("kv cache: layer " + std::to_string(l) + " has a null k or v scale");
    }
    ANVIL_ASSIGN_OR_RETURN(DeviceBuffer k, DeviceBuffer::create(backend, pool));
    ANVIL_ASSIGN_OR_RETURN(DeviceBuffer v, DeviceBuffer::create(backend, pool));
    ANVIL_RETURN_IF_ERROR(backend->memset_zero(k.get(), pool));
    ANVIL_RETURN_IF_ERROR(backend->memset_zero(v.get(), pool));
    KvCacheLayer layer;
    layer.k = k.get();
    layer.v = v.get();
    layer.dtype = dtype;
    layer.num_blocks = num_blocks;
    layer.block_size = block_size;
    layer.num_kv_heads = static_cast<int32_t>(spec.num_kv_heads);
    layer.head_dim = static_cast<int32_t>(spec.head_dim);
    if (quantized) {
      layer.k_scale = scales[l].k;
      layer.v_scale = scales[l].v;
    }
    cache.layers_.push_back(layer);
    cache.buffers_.push_back(std::move(k));
    cache.buffers_.push_back(std::move(v));
  }
  return cache;
}

Status KvCache::copy_block(Backend* backend, int32_t src, int32_t dst) const {
  if (src < 0 || src >= num_blocks_ || dst < 0 || dst >= num_blocks_) {
    return invalid_argument("kv cache: copy_block(" + std::to_string(src) + ", " + std::to_string(dst) +
                            ") outside the pool of " + std::to_string(num_blocks_) + " blocks");
  }
  for (const KvCacheLayer& l : layers_) {
    // Layout [num_blocks, num_kv_heads, block_size, head_dim]: a block is one contiguous run.
    const size_t bytes = static_cast<size_t>(l.num_kv_heads) * l.block_size * l.head_dim * dtype_size(l.dtype);
    for (void* pool : {l.k, l.v}) {
      auto* base = static_cast<uint8_t*>(pool);
      ANVIL_RETURN_IF_ERROR(backend->copy_d2d(base + static_cast<size_t>(dst) * bytes, base + static_cast<size_t>(src) * bytes, bytes));
    }
  }
  return Status::ok();
}

}  // namespace anvil
