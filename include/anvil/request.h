// The public request/response types of anvil's C++ API: what a caller asks for (Request,
// SamplingParams) and what comes back, token by token (Output). Plain data; validated by
// Executor::enqueue, which names the field that is out of range.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "anvil/status.h"

namespace anvil {

using RequestId = uint64_t;

struct SamplingParams {
  float temperature = 1.0f;  // 0 = greedy
  int32_t top_k = 0;         // 0 = off
  float top_p = 1.0f;        // 1 = off
  float min_p = 0.0f;        // 0 = off
  float repetition_penalty = 1.0f;  // HF semantics, over prompt + generated tokens
  float presence_penalty = 0.0f;    // OpenAI semantics, over generated tokens
  float frequency_penalty = 0.0f;
  std::optional<uint64_t> seed;     // unset: drawn from the executor's seed sequence
  int32_t max_tokens = 16;
  int32_t min_tokens = 0;           // EOS and stop tokens are ignored before this many
  bool ignore_eos = false;
  std::vector<int32_t> stop_token_ids;
  int32_t logprobs = -1;            // -1: none; 0: the chosen token's; k > 0: also top k (<= 20)
};

struct Request {
  std::vector<int32_t> prompt;  // token ids
  SamplingParams sampling;
  int32_t priority = 0;         // higher runs first; FCFS within a priority
  bool streaming = true;        // deliver every token as it comes; else one Output at the end
};

enum class FinishReason { kNone, kStop, kLength, kCancelled, kError };
const char* finish_reason_name(FinishReason r);

struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0.0f;
};

struct Output {
  RequestId id = 0;
  std::vector<int32_t> tokens;                      // new tokens since the last Output
  std::vector<float> logprobs;                      // per new token, if asked
  std::vector<std::vector<TokenLogprob>> top_logprobs;  // per new token, if asked
  bool finished = false;
  FinishReason finish_reason = FinishReason::kNone;
  Status error;                                     // set when finish_reason == kError
  int32_t num_prompt_tokens = 0;
  int32_t num_cached_prompt_tokens = 0;             // served from the prefix cache
  int32_t num_generated_tokens = 0;                 // so far
  // Seconds from enqueue until the request was first scheduled; set (>= 0) on the first Output
  // that carries tokens or finishes it, -1 on later ones.
  double queue_seconds = -1.0;
};

// Called on the executor's thread; must not block for long.
using OutputCallback = std::function<void(const Output&)>;

}  // namespace anvil
