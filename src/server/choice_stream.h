// ChoiceStream: turns one executor sequence's Outputs into what a client sees for one choice:
// text detokenized incrementally (UTF-8 safe), the token ids and logprobs. With stop strings the
// executor detokenizes, matches them (they may span tokens) and sends the text cut before the
// stop string (Output::text); without, the text is decoded here.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "anvil/request.h"
#include "tokenizer/incremental_decoder.h"
#include "tokenizer/tokenizer.h"

namespace anvil::server {

struct LogprobEntry {
  int32_t token = 0;
  float logprob = 0.0f;
  std::vector<TokenLogprob> top;
};

struct ChoiceDelta {
  std::string text;
  std::vector<int32_t> token_ids;
  std::vector<LogprobEntry> logprobs;  // one per token in token_ids, when logprobs were asked
  bool finished = false;
  std::string finish_reason;           // stop | length | abort | error (when finished)
  std::string error;                   // the executor's message when finish_reason == "error"
};

class ChoiceStream {
 public:
  // tokenizer may be null (text stays empty; stop must then be empty).
  ChoiceStream(const Tokenizer* tokenizer, std::vector<std::string> stop, bool skip_special_tokens, bool want_logprobs);

  // Consumes one Output of this choice's sequence.
  ChoiceDelta on_output(const Output& out);

  bool finished() const { return finished_; }
  bool executor_done() const { return executor_done_; }
  int32_t num_prompt_tokens() const { return num_prompt_; }
  int32_t num_cached_prompt_tokens() const { return num_cached_; }
  int32_t num_generated_tokens() const { return num_generated_; }
  const std::string& finish_reason() const { return finish_reason_; }

 private:
  std::unique_ptr<IncrementalDecoder> decoder_;  // null when the executor sends the text
  bool executor_text_ = false;
  bool want_logprobs_;
  bool finished_ = false;
  bool executor_done_ = false;
  int32_t num_prompt_ = 0;
  int32_t num_cached_ = 0;
  int32_t num_generated_ = 0;
  std::string finish_reason_;
};

// The OpenAI finish_reason for an executor FinishReason.
const char* openai_finish_reason(FinishReason r);

}  // namespace anvil::server
