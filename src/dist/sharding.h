// The sharding plan: how a model's weights and layers are divided among tp_size x pp_size ranks.
// World rank = pp_rank * tp_size + tp_rank (a pipeline stage is tp_size consecutive ranks; world
// rank 0 is stage 0's first tensor-parallel rank). Tensor parallelism follows Megatron: QKV and
// gate/up are column-parallel (split by output rows; QKV by attention heads), attention output
// and down are row-parallel (split by input columns, summed by an all-reduce), the LM head is
// vocab-parallel (rows padded to ceil(vocab / tp)). KV heads are split across ranks, or
// replicated when there are fewer KV heads than ranks (each rank keeps the one its q heads use).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/status.h"
#include "core/tensor.h"

namespace anvil::dist {

struct ParallelConfig {
  int32_t tp_size = 1, tp_rank = 0;
  int32_t pp_size = 1, pp_rank = 0;

  int32_t world_size() const { return tp_size * pp_size; }
  int32_t world_rank() const { return pp_rank * tp_size + tp_rank; }
  bool single() const { return tp_size == 1 && pp_size == 1; }
  // World rank of (stage, tp rank).
  int32_t world_rank_of(int32_t stage, int32_t tp) const { return stage * tp_size + tp; }
  std::string to_string() const;  // "tp 1/2 pp 0/1"
  // The config of world rank `world_rank` in a tp x pp job; errors name the bad value.
  static Result<ParallelConfig> for_world_rank(int32_t tp_size, int32_t pp_size, int32_t world_rank);
};

// The sizes of a decoder-only transformer that sharding depends on.
struct ModelDims {
  int64_t vocab = 0, hidden = 0, intermediate = 0, num_layers = 0;
  int64_t num_heads = 0, num_kv_heads = 0, head_dim = 0;
};

// One rank's part of the model.
struct RankPlan {
  int64_t num_heads = 0, q_head_begin = 0;        // this rank's query heads
  int64_t num_kv_heads = 0, kv_head_begin = 0;    // its KV heads (shared with other ranks when replicated)
  int64_t intermediate = 0, intermediate_begin = 0;
  int64_t vocab_shard = 0, vocab_begin = 0;       // LM head rows held (padded) and the first vocab id
  int64_t layer_begin = 0, layer_end = 0;         // this stage's layers [begin, end)
  bool first_stage = true, last_stage = true;
};

// Layers [begin, end) of each of `stages` stages: as even as possible, earlier stages take the
// extra layers (the last stage also runs the LM head).
std::vector<std::pair<int64_t, int64_t>> stage_layer_ranges(int64_t num_layers, int32_t stages);

// This rank's plan, or an error naming the size that does not divide (e.g. heads by --tp).
Result<RankPlan> plan_rank(const ModelDims& dims, const ParallelConfig& pc);

enum class TpSplit {
  kReplicated,  // every rank holds all of it
  kQkvHeads,    // dim 0 is q | k | v by heads: this rank's q heads, then its k heads, then its v heads
  kColumn,      // dim 0 split in tp_size parts; with parts > 1 (gate | up) each stacked part is split
  kRow,         // dim 1 split in tp_size parts (row-parallel linear: this rank's input columns)
  kRowBias,     // bias of a row-parallel linear: added once, so rank 0 keeps it, the others hold zeros
  kVocab,       // dim 0 by vocabulary, ceil(vocab / tp_size) rows per rank, padded with zeros
};
const char* tp_split_name(TpSplit s);

// Shape of this rank's shard of a weight whose full shape is `full` (`parts` as for kColumn).
Result<Shape> shard_shape(TpSplit split, int32_t parts, const Shape& full, const ModelDims& dims, const RankPlan& plan,
                          const ParallelConfig& pc);

// This rank's shard of `full` (row-major f32 values of shape full_shape).
Result<std::vector<float>> shard_weight(TpSplit split, int32_t parts, const std::vector<float>& full, const Shape& full_shape,
                                        const ModelDims& dims, const RankPlan& plan, const ParallelConfig& pc);

}  // namespace anvil::dist
