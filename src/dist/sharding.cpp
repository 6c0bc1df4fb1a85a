// Sharding plan: every split reduces to a list of row segments of the full tensor (dim 0) and a
// column range (dim 1), copied in order into the shard; padded vocab rows are zeros.
#include "dist/sharding.h"

#include <algorithm>

namespace anvil::dist {

std::string ParallelConfig::to_string() const {
  return "tp " + std::to_string(tp_rank) + "/" + std::to_string(tp_size) + " pp " + std::to_string(pp_rank) + "/" +
         std::to_string(pp_size);
}

Result<ParallelConfig> ParallelConfig::for_world_rank(int32_t tp_size, int32_t pp_size, int32_t world_rank) {
  if (tp_size < 1 || pp_size < 1) {
    return invalid_argument("--tp and --pp must be at least 1 (got tp " + std::to_string(tp_size) + ", pp " +
                            std::to_string(pp_size) + ")");
  }
  if (world_rank < 0 || world_rank >= tp_size * pp_size) {
    return invalid_argument("rank " + std::to_string(world_rank) + " is outside a job of tp " + std::to_string(tp_size) +
                            " x pp " + std::to_string(pp_size) + " = " + std::to_string(tp_size * pp_size) + " ranks");
  }
  ParallelConfig pc;
  pc.tp_size = tp_size;
  pc.pp_size = pp_size;
  pc.tp_rank = world_rank % tp_size;
  pc.pp_rank = world_rank / tp_size;
  return pc;
}

std::vector<std::pair<int64_t, int64_t>> stage_layer_ranges(int64_t num_layers, int32_t stages) {
  std::vector<std::pair<int64_t, int64_t>> out;
  const int64_t base = num_layers / stages, extra = num_layers % stages;
  int64_t begin = 0;
  for (int32_t s = 0; s < stages; ++s) {
    const int64_t n = base + (s < extra ? 1 : 0);
    out.emplace_back(begin, begin + n);
    begin += n;
  }
  return out;
}

Result<RankPlan> plan_rank(const ModelDims& d, const ParallelConfig& pc) {
  ANVIL_RETURN_IF_ERROR(ParallelConfig::for_world_rank(pc.tp_size, pc.pp_size, pc.world_rank()).status());
  if (pc.tp_rank < 0 || pc.tp_rank >= pc.tp_size || pc.pp_rank < 0 || pc.pp_rank >= pc.pp_size) {
    return invalid_argument("bad parallel config " + pc.to_string());
  }
  const int64_t tp = pc.tp_size;
  auto not_divisible = [&](const char* field, int64_t v) {
    return invalid_argument(std::string("--tp ") + std::to_string(tp) + " does not divide the model's " + field + " (" +
                            std::to_string(v) + ")");
  };
  if (d.num_heads <= 0 || d.num_kv_heads <= 0 || d.num_heads % d.num_kv_heads != 0) {
    return invalid_argument("bad head counts: " + std::to_string(d.num_heads) + " query heads, " +
                            std::to_string(d.num_kv_heads) + " KV heads");
  }
  if (d.num_heads % tp != 0) return not_divisible("num_attention_heads", d.num_heads);
  if (d.intermediate % tp != 0) return not_divisible("intermediate_size", d.intermediate);
  if (d.num_kv_heads >= tp ? d.num_kv_heads % tp != 0 : tp % d.num_kv_heads != 0) {
    return invalid_argument("--tp " + std::to_string(tp) + " and num_key_value_heads " + std::to_string(d.num_kv_heads) +
                            ": one must divide the other (KV heads are split, or replicated when fewer than ranks)");
  }
  if (d.num_layers < pc.pp_size) {
    return invalid_argument("--pp " + std::to_string(pc.pp_size) + " is more stages than the model's " +
                            std::to_string(d.num_layers) + " layers");
  }
  RankPlan p;
  p.num_heads = d.num_heads / tp;
  p.q_head_begin = pc.tp_rank * p.num_heads;
  if (d.num_kv_heads >= tp) {
    p.num_kv_heads = d.num_kv_heads / tp;
    p.kv_head_begin = pc.tp_rank * p.num_kv_heads;
  } else {
    // tp / kv ranks share each KV head; rank r's query heads all map to KV head r / (tp / kv).
    p.num_kv_heads = 1;
    p.kv_head_begin = pc.tp_rank / (tp / d.num_kv_heads);
  }
  p.intermediate = d.intermediate / tp;
  p.intermediate_begin = pc.tp_rank * p.intermediate;
  p.vocab_shard = (d.vocab + tp - 1) / tp;
  p.vocab_begin = pc.tp_rank * p.vocab_shard;
  const auto ranges = stage_layer_ranges(d.num_layers, pc.pp_size);
  p.layer_begin = ranges[pc.pp_rank].first;
  p.layer_end = ranges[pc.pp_rank].second;
  p.first_stage = pc.pp_rank == 0;
  p.last_stage = pc.pp_rank == pc.pp_size - 1;
  return p;
}

const char* tp_split_name(TpSplit s) {
  switch (s) {
    case TpSplit::kReplicated: return "replicated";
    case TpSplit::kQkvHeads: return "qkv_heads";
    case TpSplit::kColumn: return "column";
    case TpSplit::kRow: return "row";
    case TpSplit::kRowBias: return "row_bias";
    case TpSplit::kVocab: return "vocab";
  }
  return "?";
}

namespace {

// What a shard takes from the full tensor, viewed as [rows, cols] (1-D: cols = 1).
struct Selection {
  std::vector<std::pair<int64_t, int64_t>> segments;  // full-tensor rows [begin, end), in order
  int64_t col_begin = 0, col_end = 0;
  int64_t pad_rows = 0;  // zero rows appended
  bool zeros = false;    // the shard is all zeros (kRowBias off rank 0)
};

Result<Selection> select(TpSplit split, int32_t parts, const Shape& full, const ModelDims& d, const RankPlan& p,
                         const ParallelConfig& pc) {
  if (full.rank < 1 || full.rank > 2) return invalid_argument("sharding handles 1-D and 2-D weights, not " + full.to_string());
  const int64_t rows = full[0], cols = full.rank == 2 ? full[1] : 1;
  const int64_t tp = pc.tp_size;
  Selection s;
  s.col_end = cols;
  auto bad = [&](const std::string& why) {
    return invalid_argument(std::string(tp_split_name(split)) + " split of " + full.to_string() + ": " + why);
  };
  switch (split) {
    case TpSplit::kReplicated:
    case TpSplit::kRowBias:
      s.segments.emplace_back(0, rows);
      s.zeros = split == TpSplit::kRowBias && pc.tp_rank != 0;
      return s;
    case TpSplit::kQkvHeads: {
      const int64_t hd = d.head_dim;
      if (rows != (d.num_heads + 2 * d.num_kv_heads) * hd) return bad("rows are not (heads + 2 kv heads) * head_dim");
      const int64_t k0 = d.num_heads * hd, v0 = k0 + d.num_kv_heads * hd;
      s.segments.emplace_back(p.q_head_begin * hd, (p.q_head_begin + p.num_heads) * hd);
      s.segments.emplace_back(k0 + p.kv_head_begin * hd, k0 + (p.kv_head_begin + p.num_kv_heads) * hd);
      s.segments.emplace_back(v0 + p.kv_head_begin * hd, v0 + (p.kv_head_begin + p.num_kv_heads) * hd);
      return s;
    }
    case TpSplit::kColumn: {
      if (parts < 1 || rows % (parts * tp) != 0) return bad(std::to_string(parts) + " part(s) do not split evenly over " + std::to_string(tp) + " ranks");
      const int64_t part = rows / parts, per = part / tp;
      for (int32_t k = 0; k < parts; ++k) s.segments.emplace_back(k * part + pc.tp_rank * per, k * part + (pc.tp_rank + 1) * per);
      return s;
    }
    case TpSplit::kRow: {
      if (full.rank != 2) return bad("a row-parallel weight must be 2-D");
      if (cols % tp != 0) return bad("columns do not split evenly over " + std::to_string(tp) + " ranks");
      s.segments.emplace_back(0, rows);
      s.col_begin = pc.tp_rank * (cols / tp);
      s.col_end = s.col_begin + cols / tp;
      return s;
    }
    case TpSplit::kVocab: {
      if (rows != d.vocab) return bad("rows are not the vocabulary size " + std::to_string(d.vocab));
      const int64_t begin = std::min(p.vocab_begin, rows), end = std::min(p.vocab_begin + p.vocab_shard, rows);
      if (end > begin) s.segments.emplace_back(begin, end);
      s.pad_rows = p.vocab_shard - (end - begin);
      return s;
    }
  }
  return bad("unknown split");
}

}  // namespace

Result<Shape> shard_shape(TpSplit split, int32_t parts, const Shape& full, const ModelDims& d, const RankPlan& p,
                          const ParallelConfig& pc) {
  ANVIL_ASSIGN_OR_RETURN(Selection s, select(split, parts, full, d, p, pc));
  int64_t rows = s.pad_rows;
  for (const auto& [b, e] : s.segments) rows += e - b;
  Shape out = full;
  out.dims[0] = rows;
  if (full.rank == 2) out.dims[1] = s.col_end - s.col_begin;
  return out;
}

Result<std::vector<float>> shard_weight(TpSplit split, int32_t parts, const std::vector<float>& full, const Shape& full_shape,
                                        const ModelDims& d, const RankPlan& p, const ParallelConfig& pc) {
  if (static_cast<int64_t>(full.size()) != full_shape.numel()) {
    return invalid_argument("shard_weight: " + std::to_string(full.size()) + " values for shape " + full_shape.to_string());
  }
  ANVIL_ASSIGN_OR_RETURN(Selection s, select(split, parts, full_shape, d, p, pc));
  const int64_t cols = full_shape.rank == 2 ? full_shape[1] : 1;
  const int64_t width = s.col_end - s.col_begin;
  std::vector<float> out;
  int64_t rows = s.pad_rows;
  for (const auto& [b, e] : s.segments) rows += e - b;
  out.reserve(static_cast<size_t>(rows * width));
  for (const auto& [b, e] : s.segments) {
    for (int64_t r = b; r < e; ++r) {
      const float* src = full.data() + r * cols + s.col_begin;
      out.insert(out.end(), src, src + width);
    }
  }
  out.resize(static_cast<size_t>(rows * width), 0.0f);
  if (s.zeros) std::fill(out.begin(), out.end(), 0.0f);
  return out;
}

}  // namespace anvil::dist
