// Generation (generation.h): enqueue with per-choice seeds, collect Outputs, cancel on demand.
#include "server/generation.h"

namespace anvil::server {
namespace {

// The executor names the field first ("max_tokens: must be >= 1"); use it as the param.
ApiError from_status(const Status& s) {
  switch (s.code()) {
    case StatusCode::kUnavailable:
      return ApiError{429, "The server is at capacity: " + s.message(), "", "queue_full", "rate_limit_error"};
    case StatusCode::kInvalidArgument:
    case StatusCode::kUnsupported:
    case StatusCode::kNotFound: {
      std::string param;
      size_t colon = s.message().find(':');
      if (colon != std::string::npos && s.message().find(' ') > colon) param = s.message().substr(0, colon);
      return invalid_param(param, s.message());
    }
    case StatusCode::kOk:
    case StatusCode::kDataLoss:
    case StatusCode::kOutOfMemory:
    case StatusCode::kInternal:
    case StatusCode::kCancelled:
      break;
  }
  return ApiError{500, s.to_string(), "", "", "server_error"};
}

// The executor's view of the tokenizer's incremental decoder (it links no tokenizer itself).
class TokenizerTextDecoder final : public TextDecoder {
 public:
  TokenizerTextDecoder(const Tokenizer& tokenizer, bool skip_special) : decoder_(tokenizer, skip_special) {}
  std::string add(int32_t token) override { return decoder_.add(token); }
  std::string finish() override { return decoder_.finish(); }

 private:
  IncrementalDecoder decoder_;
};

}  // namespace

MaybeError Generation::start(const GenerateRequest& req, const Tokenizer* tokenizer) {
  const size_t total = req.prompts.size() * static_cast<size_t>(req.n);
  ids_.reserve(total);
  for (size_t p = 0; p < req.prompts.size(); ++p) {
    for (int32_t c = 0; c < req.n; ++c) {
      Request r;
      r.prompt = req.prompts[p].ids;
      r.sampling = req.sampling;
      if (req.sampling.seed) r.sampling.seed = *req.sampling.seed + static_cast<uint64_t>(c);
      r.streaming = true;  // per-token Outputs: latencies are real
      if (!req.stop.empty() && tokenizer != nullptr) {
        r.sampling.stop = req.stop;
        const bool skip = req.skip_special_tokens;
        r.detokenizer = [tokenizer, skip]() -> std::unique_ptr<TextDecoder> {
          return std::make_unique<TokenizerTextDecoder>(*tokenizer, skip);
        };
      }
      const size_t seq = ids_.size();
      std::shared_ptr<Queue> q = queue_;
      auto callback = [q, seq](const Output& out) {
        OutputEvent ev{seq, out, Clock::now()};
        {
          std::lock_guard<std::mutex> lock(q->mu);
          q->events.push_back(std::move(ev));
        }
        q->cv.notify_one();
      };
      Result<RequestId> id = executor_->enqueue(std::move(r), std::move(callback));
      if (!id.is_ok()) {
        cancel_unfinished();
        return from_status(id.status());
      }
      ids_.push_back(*id);
      done_.push_back(false);
    }
  }
  return std::nullopt;
}

std::vector<OutputEvent> Generation::wait(std::chrono::milliseconds timeout) {
  std::vector<OutputEvent> out;
  std::unique_lock<std::mutex> lock(queue_->mu);
  queue_->cv.wait_for(lock, timeout, [&] { return !queue_->events.empty(); });
  out.reserve(queue_->events.size());
  for (auto& ev : queue_->events) out.push_back(std::move(ev));
  queue_->events.clear();
  lock.unlock();
  for (const auto& ev : out) {
    if (ev.output.finished && ev.seq < done_.size()) done_[ev.seq] = true;
  }
  return out;
}

void Generation::cancel(size_t seq) {
  if (seq < ids_.size() && !done_[seq]) executor_->cancel(ids_[seq]);
}

void Generation::cancel_unfinished() {
  for (size_t s = 0; s < ids_.size(); ++s) cancel(s);
}

}  // namespace anvil::server
