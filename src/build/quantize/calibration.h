// Calibration: runs the unquantized model over calibration token sequences and gathers what
// the activation-aware quantizers need (quant_types.h CalibrationStats): per projection input
// abs max / mean, optionally its Hessian (GPTQ) and a bounded row sample (AWQ), and per layer
// and KV head the |K| / |V| maxima (quantized KV cache). Token ids come from the caller: the
// build library never tokenizes (the CLI does, with the model's tokenizer).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "build/quantize/quant_types.h"
#include "model/archs/arch.h"
#include "model/checkpoint/checkpoint.h"
#include "runtime/model_runner.h"

namespace anvil {

// Calibration text as token sequences, made by the caller's tokenizer.
struct CalibrationData {
  std::vector<std::vector<int32_t>> sequences;
  std::string source;  // where the text came from, for the build log
};

// What calibration must collect (quantize_pass.h decides from the build options).
struct CalibrationNeeds {
  bool linear_inputs = false;  // abs max / mean of every projection's input
  bool hessian = false;        // GPTQ: sum_t x_t x_t^T per projection input
  int64_t sample_rows = 0;     // AWQ: input rows kept per projection (0: none)
  bool kv = false;             // per-layer, per-KV-head |K| / |V| maxima
  bool any() const { return linear_inputs || kv; }
};

// Longest calibration sequence the CLI cuts (tokens).
inline constexpr int32_t kCalibrationMaxSeqLen = 512;

// Cuts one token stream into at most `samples` sequences of one length L = clamp(size / samples,
// 16, max_len), spread evenly over the stream (the whole stream when it is shorter than 16).
std::vector<std::vector<int32_t>> split_calibration_tokens(const std::vector<int32_t>& ids, int32_t samples,
                                                           int32_t max_len = kCalibrationMaxSeqLen);

// The projection weights calibration keys its statistics by, with the graph tensor that is
// their input: {"layers.3.attn.qkv.weight", "layers.3.attn_norm"}, ... in graph order.
std::vector<std::pair<std::string, std::string>> projection_inputs(const Graph& g);

// The unquantized model loaded for calibration runs: one calibration sequence per forward step,
// with chosen graph tensors dumped to the host. Its layer projection weights can be replaced
// (sequential GPTQ writes each layer's quantized weights back before the next layer's run).
class CalibrationRun {
 public:
  // Validates the token ids against the vocabulary, cuts sequences to max_position_embeddings,
  // loads the weights on `device` (its compute dtype) or, when null, on a CPU backend.
  static Result<CalibrationRun> create(const ModelDefinition& def, const Checkpoint& ckpt, Backend* device,
                                       const CalibrationData& data);
  // Runs every sequence with `dump_names` dumped; after_each(seq) reads the dumps (dumped()).
  // stop_after_dumps: each forward ends once every dump is taken (later layers and the KV cache
  // they would write are left alone).
  Status run(const std::set<std::string>& dump_names, const std::function<Status(const std::vector<int32_t>& seq)>& after_each,
             bool stop_after_dumps = false);
  // A dumped tensor of the last forward, f32 [tokens, ...].
  Result<const float*> dumped(const std::string& name) const;
  // Overwrites projection weight `weight` ("layers.3.attn.qkv.weight", [n, k]) with `values`.
  Status set_projection_weight(const std::string& weight, const std::vector<float>& values);

  const std::vector<std::vector<int32_t>>& sequences() const { return seqs_; }
  int64_t tokens() const { return tokens_; }
  Backend* backend() const { return backend_; }
  ModelRunner& runner() { return *runner_; }

 private:
  std::vector<std::vector<int32_t>> seqs_;
  int64_t tokens_ = 0;
  std::unique_ptr<Backend> own_backend_;
  Backend* backend_ = nullptr;
  std::map<std::string, Tensor> projection_weights_;
  std::unique_ptr<ModelRunner> runner_;
};

// H += X^T X for rows x [t, k] (f32, one GEMM; only the lower triangle is meaningful until
// symmetrize_lower copies it up).
void add_to_hessian(const float* x, int64_t t, int64_t k, std::vector<float>* hessian);
void symmetrize_lower(std::vector<float>* hessian, int64_t k);

// Runs `def` (weights read from `ckpt`) on `device` (its compute dtype) or, when null, on a CPU
// backend, one sequence per step. Sequences longer than the model's max_position_embeddings
// are truncated. Writes per-layer statistics to the log and warns on suspicious ones (a dead
// input, a channel far above the rest, an all-zero K/V head).
Result<CalibrationStats> collect_calibration_stats(const ModelDefinition& def, const Checkpoint& ckpt, Backend* device,
                                                   const CalibrationData& data, const CalibrationNeeds& needs);

}  // namespace anvil
