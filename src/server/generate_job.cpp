// GenerateJob (generate_job.h). Latencies: TTFT from the HTTP arrival to the Output carrying the
// first token; inter-token latency from one token's Output to the next (split evenly when one
// Output carries several); end-to-end from arrival to the choice's end.
#include "server/generate_job.h"

#include <ctime>

namespace anvil::server {
namespace {

double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

}  // namespace

GenerateJob::GenerateJob(std::shared_ptr<const ServingModel> model, GenerateRequest req, Metrics* metrics,
                         Clock::time_point arrival)
    : model_(std::move(model)), req_(std::move(req)), metrics_(metrics), arrival_(arrival), gen_(model_->executor) {
  ctx_.kind = req_.kind;
  ctx_.id = make_response_id(req_.kind == ApiKind::kChat ? "chatcmpl-" : "cmpl-");
  ctx_.created = static_cast<int64_t>(std::time(nullptr));
  ctx_.model = model_->name;
  ctx_.tokenizer = model_->tokenizer;
  ctx_.want_logprobs = req_.logprobs >= 0;
  ctx_.return_token_ids = req_.return_token_ids;
  const size_t total = req_.prompts.size() * static_cast<size_t>(req_.n);
  choices_.reserve(total);
  for (size_t i = 0; i < total; ++i) {
    choices_.emplace_back(model_->tokenizer, req_.stop, req_.skip_special_tokens, req_.logprobs >= 0);
  }
  last_token_at_.assign(total, arrival_);
  got_token_.assign(total, false);
  recorded_.assign(total, false);
}

GenerateJob::~GenerateJob() { abort(); }

std::vector<IndexedDelta> GenerateJob::pump(std::chrono::milliseconds timeout) {
  std::vector<IndexedDelta> out;
  for (OutputEvent& ev : gen_.wait(timeout)) {
    if (ev.seq >= choices_.size()) continue;
    ChoiceStream& c = choices_[ev.seq];
    const bool was_finished = c.finished();
    const size_t k = ev.output.tokens.size();
    if (ev.output.queue_seconds >= 0) metrics_->observe_queue(ev.output.queue_seconds);
    if (k > 0 && !was_finished) {
      if (!got_token_[ev.seq]) {
        metrics_->observe_ttft(seconds(ev.at - arrival_));
        got_token_[ev.seq] = true;
        for (size_t t = 1; t < k; ++t) metrics_->observe_inter_token(0.0);
      } else {
        const double each = seconds(ev.at - last_token_at_[ev.seq]) / static_cast<double>(k);
        for (size_t t = 0; t < k; ++t) metrics_->observe_inter_token(each);
      }
      last_token_at_[ev.seq] = ev.at;
    }
    ChoiceDelta d = c.on_output(ev.output);
    if (!was_finished && c.finished()) on_finished(ev.seq, d.finish_reason);
    if (!d.text.empty() || !d.token_ids.empty() || d.finished) out.push_back(IndexedDelta{ev.seq, std::move(d)});
  }
  return out;
}

void GenerateJob::on_finished(size_t seq, const std::string& reason) {
  ++num_finished_;
  if (recorded_[seq]) return;
  recorded_[seq] = true;
  const size_t prompt = seq / static_cast<size_t>(req_.n);
  metrics_->record_finished(reason, static_cast<int32_t>(req_.prompts[prompt].ids.size()),
                            choices_[seq].num_generated_tokens());
  metrics_->observe_e2e(seconds(Clock::now() - arrival_));
}

void GenerateJob::abort() {
  gen_.cancel_unfinished();
  if (!started_) return;
  for (size_t s = 0; s < choices_.size(); ++s) {
    if (!choices_[s].finished() && !recorded_[s]) {
      recorded_[s] = true;
      const size_t prompt = s / static_cast<size_t>(req_.n);
      metrics_->record_finished("abort", static_cast<int32_t>(req_.prompts[prompt].ids.size()),
                                choices_[s].num_generated_tokens());
    }
  }
}

Usage GenerateJob::usage() const {
  Usage u;
  for (size_t p = 0; p < req_.prompts.size(); ++p) {
    u.prompt_tokens += static_cast<int64_t>(req_.prompts[p].ids.size());
    u.cached_tokens += choices_[p * static_cast<size_t>(req_.n)].num_cached_prompt_tokens();
  }
  for (const auto& c : choices_) u.completion_tokens += c.num_generated_tokens();
  return u;
}

}  // namespace anvil::server
