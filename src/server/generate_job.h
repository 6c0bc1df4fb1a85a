// GenerateJob: one completion or chat request in flight: its executor sequences (Generation),
// one ChoiceStream per sequence, latency bookkeeping for the metrics, and the usage totals.
// Driven by a single HTTP thread; pump() turns arriving Outputs into per-choice deltas (stop
// strings are matched by the executor, which ends those sequences itself).
#pragma once

#include <chrono>
#include <memory>
#include <vector>

#include "server/choice_stream.h"
#include "server/generation.h"
#include "server/metrics.h"
#include "server/openai_request.h"
#include "server/openai_response.h"

namespace anvil::server {

struct IndexedDelta {
  size_t seq = 0;
  ChoiceDelta delta;
};

class GenerateJob {
 public:
  GenerateJob(std::shared_ptr<const ServingModel> model, GenerateRequest req, Metrics* metrics, Clock::time_point arrival);
  ~GenerateJob();

  // Enqueues the sequences (the error is the HTTP answer when it fails).
  MaybeError start() {
    MaybeError e = gen_.start(req_, model_->tokenizer);
    started_ = !e.has_value();
    return e;
  }
  // Waits up to `timeout` and returns the deltas of the Outputs that arrived.
  std::vector<IndexedDelta> pump(std::chrono::milliseconds timeout);
  bool all_finished() const { return num_finished_ == choices_.size(); }
  // The client is gone or the server stops: cancel what runs, count it as aborted.
  void abort();

  const GenerateRequest& request() const { return req_; }
  const ResponseContext& context() const { return ctx_; }
  size_t num_sequences() const { return choices_.size(); }
  Usage usage() const;

 private:
  void on_finished(size_t seq, const std::string& reason);

  std::shared_ptr<const ServingModel> model_;
  GenerateRequest req_;
  Metrics* metrics_;
  Clock::time_point arrival_;
  ResponseContext ctx_;
  Generation gen_;
  std::vector<ChoiceStream> choices_;
  std::vector<Clock::time_point> last_token_at_;
  std::vector<bool> got_token_;
  std::vector<bool> recorded_;
  size_t num_finished_ = 0;
  bool started_ = false;
};

}  // namespace anvil::server
