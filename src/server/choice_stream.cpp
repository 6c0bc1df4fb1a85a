// ChoiceStream (choice_stream.h): detokenize -> stop-string match -> delta, token by token, so
// the tokens and logprobs reported are exactly those up to the one that completed a stop string.
#include "server/choice_stream.h"

namespace anvil::server {

const char* openai_finish_reason(FinishReason r) {
  switch (r) {
    case FinishReason::kNone: return "";
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kCancelled: return "abort";
    case FinishReason::kError: return "error";
  }
  return "error";
}

ChoiceStream::ChoiceStream(const Tokenizer* tokenizer, std::vector<std::string> stop, bool skip_special_tokens,
                           bool want_logprobs)
    : want_logprobs_(want_logprobs) {
  executor_text_ = tokenizer != nullptr && !stop.empty();  // Generation hands the stops over then
  if (tokenizer != nullptr && !executor_text_) decoder_ = std::make_unique<IncrementalDecoder>(*tokenizer, skip_special_tokens);
}

ChoiceDelta ChoiceStream::on_output(const Output& out) {
  ChoiceDelta d;
  if (out.num_prompt_tokens > 0) num_prompt_ = out.num_prompt_tokens;
  num_cached_ = std::max(num_cached_, out.num_cached_prompt_tokens);
  if (executor_done_) return d;
  if (out.finished) executor_done_ = true;

  for (size_t k = 0; k < out.tokens.size(); ++k) {
    const int32_t token = out.tokens[k];
    ++num_generated_;
    d.token_ids.push_back(token);
    if (want_logprobs_) {
      LogprobEntry e;
      e.token = token;
      e.logprob = k < out.logprobs.size() ? out.logprobs[k] : 0.0f;
      if (k < out.top_logprobs.size()) e.top = out.top_logprobs[k];
      d.logprobs.push_back(std::move(e));
    }
    if (decoder_ != nullptr) d.text += decoder_->add(token);
  }
  if (executor_text_) d.text += out.text;
  if (!out.finished) return d;
  if (decoder_ != nullptr) d.text += decoder_->finish();
  finished_ = true;
  finish_reason_ = openai_finish_reason(out.finish_reason);
  if (out.finish_reason == FinishReason::kError) d.error = out.error.message();
  d.finished = true;
  d.finish_reason = finish_reason_;
  return d;
}

}  // namespace anvil::server
