// The public request/response types of anvil's C++ API: what a caller asks for (Request,
// SamplingParams) and what comes back, token by token (Output). Plain data; validated by
// Executor::enqueue, which names the field that is out of range. A request yields n sequences
// (n > 1 samples, or the n best beams); each sequence's Outputs carry its index.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "anvil/status.h"

namespace anvil {

using RequestId = uint64_t;

// Beam search stopping rule, as Hugging Face defines `early_stopping`: kTrue stops as soon as
// `beam_width` hypotheses are finished; kFalse stops when the best running beam, scored at its
// current length, can no longer beat the worst finished one; kNever scores it at max_tokens when
// length_penalty > 0 (the canonical, slowest rule).
enum class EarlyStopping { kFalse, kTrue, kNever };

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
  // Stop strings (OpenAI `stop`, at most 16): generation ends once the text contains one; the
  // returned text ends just before it, the tokens end with the one that completed it. They may
  // span tokens. Needs Request::detokenizer. Checked from min_tokens on.
  std::vector<std::string> stop;

  // Sequences returned. Sampling: n samples of the prompt, sequence i seeded with seed + i; they
  // share the prompt's KV blocks (the last, partial one copied on first write).
  int32_t n = 1;
  // Beam search when > 0 (1..8): deterministic, scored by the sum of the tokens' log-probabilities
  // over (generated length ^ length_penalty); the n <= beam_width best hypotheses come back in one
  // final Output each (index 0 is the best), nothing is streamed. Temperature, top-k/p and min-p
  // are not used; penalties and stop strings are refused. EOS and stop_token_ids end a beam.
  int32_t beam_width = 0;
  float length_penalty = 1.0f;
  EarlyStopping early_stopping = EarlyStopping::kFalse;
};

// Incremental detokenizer that the caller supplies (the executor does not link a tokenizer).
// One instance per sequence, used only on the executor's thread and only for requests with stop
// strings. add() returns the text the token completed (UTF-8 may be held back across tokens).
class TextDecoder {
 public:
  virtual ~TextDecoder() = default;
  virtual std::string add(int32_t token) = 0;
  virtual std::string finish() = 0;  // releases any held-back text at the end
};
using TextDecoderFactory = std::function<std::unique_ptr<TextDecoder>()>;

struct Request {
  std::vector<int32_t> prompt;  // token ids
  SamplingParams sampling;
  int32_t priority = 0;         // higher runs first; FCFS within a priority
  bool streaming = true;        // deliver every token as it comes; else one Output at the end
  TextDecoderFactory detokenizer;  // required when sampling.stop is not empty
};

enum class FinishReason { kNone, kStop, kLength, kCancelled, kError };
const char* finish_reason_name(FinishReason r);

struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0.0f;
};

struct Output {
  RequestId id = 0;
  int32_t index = 0;                                // which of the request's n sequences
  std::vector<int32_t> tokens;                      // new tokens since the last Output
  std::vector<float> logprobs;                      // per new token, if asked
  std::vector<std::vector<TokenLogprob>> top_logprobs;  // per new token, if asked
  // With stop strings only: the new text of the new tokens, held back while it could still be
  // the start of a stop string, cut just before the stop string that ended the sequence.
  std::string text;
  std::string stop_reason;                          // the stop string that matched, if one did
  double cumulative_logprob = 0.0;                  // beam search: the hypothesis' sum of logprobs
  bool finished = false;                            // this sequence (index) is done
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
