// Beam search selection, on the host, one step at a time, with Hugging Face's semantics
// (transformers 5 `_beam_search`): from the running beams' log-probability rows take the top
// K = width * (1 + number of stop ids) continuations by cumulative logprob; the best `width` that
// do not stop keep running, the ones among the first `width` that stop (EOS, a stop token id, or
// max_tokens reached) become finished hypotheses scored cumulative / generated_len^length_penalty,
// of which the best `width` are kept. Ties break by (beam, token) ascending. No KV here: the
// executor maps the selection onto sequences (fork / reuse / drop).
#pragma once

#include <cstdint>
#include <vector>

#include "anvil/request.h"

namespace anvil {

struct BeamCandidate {
  int32_t parent = 0;     // index of the running beam it extends
  int32_t token = 0;
  double logprob = 0;     // of the token
  double cumulative = 0;  // parent's cumulative + logprob
};

struct BeamHypothesis {
  std::vector<int32_t> tokens;  // generated tokens, the last one the stop token or the max_tokens-th
  std::vector<float> logprobs;  // per token
  double cumulative = 0;
  double score = 0;             // cumulative / generated_len^length_penalty
  bool by_stop = false;         // ended by a stop id (else by max_tokens)
};

// One running beam as the search sees it.
struct BeamInput {
  const double* row = nullptr;                     // [vocab] log-softmax of its logits
  double cumulative = 0;
  const std::vector<int32_t>* tokens = nullptr;    // generated so far
  const std::vector<float>* logprobs = nullptr;    // per generated token
};

struct BeamStepResult {
  std::vector<BeamCandidate> running;  // next beams, best first (<= width)
  bool done = false;                   // the search is over: read finished()
};

// log_softmax of a logits row, in double.
std::vector<double> log_softmax(const float* logits, int64_t vocab);

class BeamSearch {
 public:
  // stop_ids: EOS (unless ignore_eos) and stop_token_ids; max_tokens: generated tokens allowed.
  BeamSearch(const SamplingParams& p, std::vector<int32_t> stop_ids, int32_t max_tokens);

  // One step over the running beams; num_generated is the tokens each holds before it. Stop ids
  // are banned (-inf) while num_generated < min_tokens.
  BeamStepResult step(const std::vector<BeamInput>& beams, int64_t vocab, int32_t num_generated);

  // The finished hypotheses, best first (<= width).
  const std::vector<BeamHypothesis>& finished() const { return finished_; }
  // Restart from scratch (the executor preempted the group).
  void reset();

 private:
  int32_t width_;
  double length_penalty_;
  EarlyStopping early_;
  int32_t min_tokens_;
  int32_t max_tokens_;
  std::vector<int32_t> stop_ids_;
  std::vector<BeamHypothesis> finished_;
  bool improvable_ = true;  // HF's is_early_stop_heuristic_unsatisfied (sticky once false)
};

}  // namespace anvil
