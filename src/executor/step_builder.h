// Turns the scheduler's decision for one step into the runner's StepInput and the sampler's
// per-row parameters (packed into one host buffer, uploaded once, viewed as a SamplingBatch).
#pragma once

#include <vector>

#include "backend/backend.h"
#include "executor/sequence.h"
#include "runtime/model_runner.h"

namespace anvil {

struct ScheduledSeq {
  Sequence* seq;
  int32_t num_new;  // tokens computed this step
  bool sample;      // the step reaches the end of the sequence: a token is drawn
  // n > 1: siblings forked from `seq` this step; each draws its own first token from seq's
  // logits row (the row is listed once per sibling, after seq's).
  std::vector<Sequence*> forks = {};
};

StepInput build_step_input(const std::vector<ScheduledSeq>& scheduled, int32_t block_size);

// Sampling parameters for the rows that sample, in the order of `scheduled` (a sequence, then
// its forks). Beam rows are sampled greedily; the executor's beam search reads their logits.
class SamplingInputs {
 public:
  // Fills host arrays; `eos` are the model's EOS ids (banned below min_tokens unless ignore_eos).
  void build(const std::vector<ScheduledSeq>& scheduled, const std::vector<int64_t>& eos);
  // Uploads to `device` (grown as needed) and returns the batch view over it.
  Result<SamplingBatch> upload(Backend* backend, DeviceBuffer* device);

 private:
  void add_row(const Sequence& q, const std::vector<int64_t>& eos);

  int32_t rows_ = 0;
  bool all_greedy_ = true, any_penalty_ = false, any_bias_ = false;
  std::vector<float> temperature_, top_p_, min_p_, rep_, pres_, freq_;
  std::vector<int32_t> top_k_;
  std::vector<uint64_t> seeds_;
  std::vector<int64_t> steps_;
  std::vector<int32_t> pen_offsets_, pen_ids_, pen_counts_;
  std::vector<int32_t> bias_offsets_, bias_ids_;
  std::vector<float> bias_values_;
  std::vector<uint8_t> host_;
};

}  // namespace anvil
