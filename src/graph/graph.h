// Graph: a model written once as a flat SSA list of ops over named tensors
// ("layers.3.attn_norm"), so any intermediate can be dumped by name. Activation shapes are given
// per token row (rows scale with the step's token or sequence count); weights have fixed shapes.
// An op output may alias an input (the fused residual add updates the residual in place): the
// memory planner gives both the same buffer.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "backend/backend.h"
#include "core/dtype.h"
#include "core/status.h"
#include "core/tensor.h"

namespace anvil {

enum class OpKind {
  kEmbedding,    // in: ids(input), table(weight)                 out: [T, H]
  kRmsNorm,      // in: x, residual|-1, weight                     out: y, residual_out|none
  kLinear,       // in: x, weight, bias|-1                         out: [rows, N]
  kRopeKvWrite,  // in: qkv, q_norm|-1, k_norm|-1, inv_freq        out: q [T, Hq*D]   (+ KV cache of attrs.layer)
  kAttention,    // in: q                                          out: [T, Hq*D]     (reads KV cache of attrs.layer)
  kActMul,       // in: gate_up                                    out: [T, F]
  kGatherRows,   // in: x, rows(input)                             out: [S, H]
  // Quantized linear (backend.h QuantizedWeight; attrs.quant, attrs.group_size):
  kQLinear,      // in: x, qweight, bias|-1, scales, offsets|-1    out: [rows, N]
  // Tensor parallelism: sum of x over the ranks of the runner's communicator, in place.
  kAllReduce,    // in: x                                          out: x (alias)
  // Vocab-parallel LM head: each rank's [rows, n_shard] columns gathered into [rows, N] (the
  // padding of the last shards dropped).
  kAllGather,    // in: x [rows, n_shard]                          out: [rows, N]
  // Pipeline parallelism: the residual stream to the next stage / from the previous one (same
  // tensor-parallel rank).
  kSend,         // in: x                                          out: none
  kRecv,         // in: none                                       out: x [T, H]
};
const char* op_kind_name(OpKind k);

enum class TensorKind { kInput, kWeight, kActivation };
// How an activation's row count scales with the batch: one row per token, or one per logit row
// (normally one per sequence; every token when all-position logits are asked for).
enum class RowScale { kTokens, kLogitRows };

struct GraphTensor {
  std::string name;
  TensorKind kind = TensorKind::kActivation;
  // Weights: full shape. Activations/inputs: shape of one row (row count comes from `rows`).
  Shape shape;
  RowScale rows = RowScale::kTokens;
  // kInvalid-like sentinel: activations default to the backend compute dtype unless forced.
  bool force_f32 = false;  // logits
  bool is_int32 = false;   // ids, row indices
  int alias_of = -1;       // this tensor shares the buffer of tensor `alias_of`
};

struct OpAttrs {
  float eps = 0.0f;
  float scale = 1.0f;              // attention softmax scale
  float attention_scaling = 1.0f;  // rope cos/sin multiplier
  int32_t layer = -1;              // KV cache layer for rope/attention
  Activation act = Activation::kSilu;
  QuantFormat quant = QuantFormat::kInt8WeightOnly;  // kQLinear only
  int32_t group_size = 0;                            // kQLinear with kInt4Group
};

struct Node {
  OpKind op;
  std::string name;
  std::vector<int> inputs;   // tensor ids; -1 for an absent optional input
  std::vector<int> outputs;  // tensor ids
  OpAttrs attrs;
};

class Graph {
 public:
  int add_tensor(GraphTensor t);
  int input(const std::string& name, Shape row_shape, RowScale rows, bool is_int32);
  int weight(const std::string& name, Shape shape);
  int activation(const std::string& name, Shape row_shape, RowScale rows = RowScale::kTokens);
  void add_node(Node n) { nodes_.push_back(std::move(n)); }
  void mark_output(int id) { outputs_.push_back(id); }

  const std::vector<GraphTensor>& tensors() const { return tensors_; }
  const std::vector<Node>& nodes() const { return nodes_; }
  const std::vector<int>& outputs() const { return outputs_; }
  const GraphTensor& tensor(int id) const { return tensors_[id]; }
  // -1 if absent.
  int find(const std::string& name) const;
  // Human-readable listing, one op a line.
  std::string to_string() const;

 private:
  std::vector<GraphTensor> tensors_;
  std::vector<Node> nodes_;
  std::vector<int> outputs_;
  std::unordered_map<std::string, int> by_name_;
};

// Activation memory plan: buffer offsets (in bytes per row-scaled unit) chosen by liveness so
// tensors whose lifetimes do not overlap share memory.
struct MemoryPlan {
  // For each tensor id: offset into the arena in bytes, or -1 for non-activations.
  std::vector<int64_t> offsets;
  int64_t arena_bytes = 0;      // planned peak
  int64_t unplanned_bytes = 0;  // sum of all activation sizes (what no reuse would need)
};

// Plans activations for a step of at most max_tokens tokens and max_logit_rows sequences, each
// element `elem_bytes` wide (f32 tensors use 4). Aliased tensors share their target's slot.
MemoryPlan plan_memory(const Graph& g, int64_t max_tokens, int64_t max_logit_rows, size_t elem_bytes);

}  // namespace anvil
