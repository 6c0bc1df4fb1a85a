// ModelRunner: executes a ModelDefinition's op list on a Backend for one step's Batch.
// It owns the weights, the KV cache pools, the planned activation arena and a metadata buffer
// whose layout is fixed at creation, so BatchView pointers never change between steps (what a
// captured CUDA graph needs). forward() queues work and returns the device logits; nothing in
// it allocates.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "dist/communicator.h"
#include "dist/watchdog.h"
#include "graph/graph.h"
#include "model/archs/arch.h"
#include "runtime/kv_cache/kv_cache.h"
#include "runtime/weights.h"

namespace anvil {

struct RunnerOptions {
  int32_t max_num_tokens = 2048;  // tokens per step
  int32_t max_num_seqs = 64;      // sequences per step
  int32_t max_logit_rows = 0;     // 0: max_num_seqs. Raise it to get logits at every position.
  int32_t max_seq_len = 0;        // 0: the model's max_position_embeddings
  int32_t block_size = 16;
  int32_t num_kv_blocks = 0;      // 0: from kv_memory_fraction of free memory
  double kv_memory_fraction = 0.90;  // of the memory free after weights and activations
  int64_t max_kv_bytes = 0;       // 0: no cap (the CPU backend caps at 2 GiB by default)
  // Decode-only steps run as CUDA graphs captured per batch-size bucket (backends that support
  // capture). Buckets: 1, 2, 4, 8, then multiples of 8 up to max_num_seqs.
  bool use_graphs = true;
  // KV cache element type; unset: the backend's compute dtype. kF8E4M3 / kI8 quantize the cache
  // with per-layer, per-KV-head scales read from the weights "layers.{i}.attn.k_scale" and
  // "layers.{i}.attn.v_scale" (f32 [num_kv_heads], made by calibration at build time).
  std::optional<DType> kv_dtype;
  // Tensor / pipeline parallelism (a definition whose parallel config is not single): this rank's
  // communicators, owned by the caller (dist::DistContext). control: the world in host memory
  // (rank 0 broadcasts each step's StepInput); world: the world in backend memory (pipeline
  // send/recv, logits to rank 0); tp: this rank's tensor-parallel group in backend memory.
  dist::Communicator* comm_control = nullptr;
  dist::Communicator* comm_world = nullptr;
  dist::Communicator* comm_tp = nullptr;
  // A distributed step running longer than this is reported (rank, step); 0: no watchdog.
  double watchdog_seconds = 30.0;
};

// One step's batch on the host. See backend.h (BatchView) for the meaning of each field.
struct StepInput {
  std::vector<int32_t> token_ids;     // [num_tokens]
  std::vector<int32_t> positions;     // [num_tokens]
  std::vector<int32_t> seq_starts;    // [num_seqs + 1]
  std::vector<int32_t> context_lens;  // [num_seqs]
  std::vector<int32_t> slot_map;      // [num_tokens]
  std::vector<int32_t> logit_rows;    // [num_logit_rows]
  // [num_seqs][blocks]; each row padded to max_blocks_per_seq by the runner.
  std::vector<std::vector<int32_t>> block_tables;
};

struct DumpedTensor {
  Shape shape;
  std::vector<float> data;
};

class ModelRunner {
 public:
  static Result<std::unique_ptr<ModelRunner>> create(Backend* backend, ModelDefinition def, WeightStore weights,
                                                     const RunnerOptions& options);

  // Runs one step. On success *logits is a device view [num_logit_rows, vocab] f32, valid until the
  // next forward(). In a parallel job only rank 0 calls it: it broadcasts the step, every rank
  // runs its part, and the logits end on rank 0. A failure after the broadcast (ranks out of
  // step) ends the whole job through the communicator, after logging the error.
  Status forward(const StepInput& step, Tensor* logits);

  // Parallel jobs. Ranks other than 0 run follow(): receive each step from rank 0 and run their
  // part, until rank 0 calls stop_followers() (returns OK) or a rank fails (returns the error).
  bool distributed() const { return !def_.parallel.single(); }
  bool is_follower() const { return distributed() && def_.parallel.world_rank() != 0; }
  Status follow();
  Status stop_followers();
  // Distributed steps this rank has started.
  int64_t steps_run() const { return step_count_.load(); }

  // Names of tensors to copy out after the op that writes them (all rows of the step). With
  // stop_after_dumps, forward() returns as soon as every named tensor has been dumped, leaving the
  // rest of the graph unrun and *logits empty (calibration passes that need early layers only).
  void set_dump_names(std::set<std::string> names, bool stop_after_dumps = false) {
    dump_names_ = std::move(names);
    stop_after_dumps_ = stop_after_dumps && !dump_names_.empty();
  }
  const std::map<std::string, DumpedTensor>& dumps() const { return dumps_; }

  const ModelSpec& spec() const { return def_.spec; }
  const ModelDefinition& definition() const { return def_; }
  Backend* backend() const { return backend_; }
  KvCache& kv_cache() { return kv_; }
  const RunnerOptions& options() const { return options_; }
  int32_t max_blocks_per_seq() const { return max_blocks_per_seq_; }
  const MemoryPlan& memory_plan() const { return plan_; }
  size_t weight_bytes() const { return weights_.total_bytes(); }

 private:
  ModelRunner() = default;
  // Writes the step's metadata into the fixed buffer and uploads it; pad_to > num_seqs appends
  // dummy decode sequences (callers ensure a decode-only step).
  Status upload(const StepInput& step, int32_t pad_to, BatchView* view, int32_t* num_logit_rows);
  Tensor activation(int id, int64_t num_tokens, int64_t num_logit_rows) const;
  Status check_qlinear(const Node& n) const;
  // The per-layer KV scales of a quantized cache from the weights, validated (present, f32
  // [num_kv_heads], positive and finite).
  Result<std::vector<KvLayerScales>> kv_scales(DType kv_dtype) const;
  Status run_node(const Node& n, const BatchView& view, int64_t num_tokens, int64_t num_logit_rows);
  // model_runner_dist.cpp: all_reduce, all_gather, send, recv nodes; the distributed step.
  Status run_collective(const Node& n, int64_t num_tokens, int64_t num_logit_rows);
  Status init_distributed();
  Status forward_distributed(const StepInput& step, Tensor* logits);
  Status run_distributed_step(const StepInput& step, Tensor* logits);
  Status dump(const Node& n, int64_t num_tokens, int64_t num_logit_rows);
  Status run_nodes(const BatchView& view, int32_t rows);
  // Decode-only step of n sequences through the graph of the smallest bucket >= n, padding the
  // batch with dummy sequences (slot -1: no cache write). false in *used when not applicable.
  Status forward_graph(const StepInput& step, Tensor* logits, bool* used);
  int32_t graph_bucket(int32_t n) const;

  Backend* backend_ = nullptr;
  ModelDefinition def_;
  WeightStore weights_;
  RunnerOptions options_;
  MemoryPlan plan_;
  DeviceBuffer arena_;
  KvCache kv_;
  int32_t max_blocks_per_seq_ = 0;
  std::vector<Tensor> weight_of_;  // tensor id -> weight view (empty for non-weights)

  // Metadata: one int32 buffer, fixed layout (offsets in elements).
  DeviceBuffer meta_;
  std::vector<int32_t> meta_host_;
  size_t off_ids_ = 0, off_pos_ = 0, off_starts_ = 0, off_ctx_ = 0, off_slots_ = 0, off_rows_ = 0, off_tables_ = 0;

  std::map<int32_t, int> graph_of_bucket_;  // bucket -> backend graph id
  bool graphs_supported_ = true;

  // Parallelism: this rank's part (heads, KV heads, layers [begin, end)), the all_gather scratch
  // [tp, max_logit_rows, vocab_shard] f32, and rank 0's logits from the last stage
  // [max_logit_rows, vocab] f32 when rank 0 is not on it.
  dist::RankPlan rank_;
  DeviceBuffer gather_scratch_;
  DeviceBuffer stage_logits_;
  std::unique_ptr<dist::StepWatchdog> watchdog_;
  std::atomic<int64_t> step_count_{0};

  std::set<std::string> dump_names_;
  bool stop_after_dumps_ = false;
  std::map<std::string, DumpedTensor> dumps_;
};

}  // namespace anvil
