// ExecutorImpl: the executor behind include/anvil/executor.h, split by responsibility:
//   executor.cpp   API, the loop thread, request lifecycle and outputs (emit / finish / cancel)
//   scheduler.cpp  one step's schedule: decodes first (beam groups as a unit), running prefill
//                  chunks, admissions; KV growth with copy-on-write of shared partial blocks;
//                  preemption; forking siblings and beams
//   step.cpp       running the model, sampling, beam selection, stop conditions, KV statistics
// All private state below is owned by the loop thread except the block marked "shared".
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "anvil/executor.h"
#include "executor/sequence.h"
#include "executor/step_builder.h"
#include "runtime/kv_cache/block_manager.h"
#include "runtime/model_runner.h"

namespace anvil {

class ExecutorImpl final : public Executor {
 public:
  using Clock = std::chrono::steady_clock;

  ExecutorImpl(ModelRunner* runner, const ExecutorOptions& o);
  ~ExecutorImpl() override { shutdown(false); }

  Result<RequestId> enqueue(Request request, OutputCallback callback) override;
  void cancel(RequestId id) override;
  void shutdown(bool drain) override;
  ExecutorStats stats() const override;
  int32_t max_context_len() const override { return runner_->options().max_seq_len; }
  int64_t vocab_size() const override { return runner_->spec().vocab_size; }

 private:
  // ---- executor.cpp: loop and lifecycle ----
  Status validate(const Request& r) const;
  void loop();
  void check_blocks(bool idle) const;
  bool has_work() const { return !running_.empty() || !waiting_.empty(); }
  void add_waiting(std::unique_ptr<RequestState> rq);
  int64_t effective_priority(const Sequence* s) const;
  bool runs_before(const Sequence* a, const Sequence* b) const;
  void insert_waiting(Sequence* s);
  void sync_num_waiting();
  void release_blocks(Sequence* s);
  // Drops `s` from the running / waiting lists and from its request (freeing it).
  void remove_sequence(Sequence* s);
  // Sends `s`'s pending Output (streaming delta) and clears it.
  void emit(Sequence* s);
  // Sends `s`'s final Output with `reason` and removes it; n > 1 roots that never forked also
  // end their unborn siblings; the request goes once all n indices ended.
  void finish(Sequence* s, FinishReason reason, Status error = Status::ok());
  // Beam search is over (or cut short): the best n hypotheses go out, the beams are freed.
  void finish_beams(RequestState* rq, Status error = Status::ok(), FinishReason forced = FinishReason::kNone);
  // Ends every sequence of a request with `reason` (cancel, error, shutdown).
  void end_request(RequestState* rq, FinishReason reason, Status error = Status::ok());
  void send_final(RequestState* rq, Output& out);
  void stamp_queue_time(Sequence* s);
  void cancel_now(RequestId id);
  void publish_stats(double step_ms);

  // ---- scheduler.cpp ----
  std::vector<ScheduledSeq> schedule();
  // Copy-on-write of a shared partial block about to be written, then blocks for num_new more
  // tokens. False when the pool is exhausted.
  bool prepare(Sequence* s, int32_t num_new);
  bool grow(Sequence* s, int32_t total);
  // prepare() with preemption of other work until it fits; `busy` is never preempted.
  bool prepare_or_preempt(Sequence* s, int32_t num_new, const std::vector<ScheduledSeq>& busy, const RequestState* keep);
  Sequence* pick_victim(const std::vector<ScheduledSeq>& scheduled, const RequestState* keep);
  void preempt(Sequence* s);
  void restart_beams(RequestState* rq);
  bool schedule_beam_group(RequestState* rq, std::vector<ScheduledSeq>* out, int32_t* budget);
  bool first_block_in_flight(const Sequence* s) const;
  void register_full_blocks(Sequence* s);
  // A sibling of `parent` sharing all its blocks (each gets a reference), with output `index`.
  Sequence* fork(Sequence* parent, int32_t index);
  int32_t running_seats() const;

  // ---- step.cpp ----
  void step();
  void fail_all(const std::vector<ScheduledSeq>& scheduled, const Status& st);
  bool is_stop_token(const Sequence* s, int32_t tok) const;
  // Appends a sampled token to a non-beam sequence; returns kStop / kLength when it ends it.
  FinishReason accept_token(Sequence* s, int32_t tok, float logprob, std::vector<TokenLogprob> top);
  // One beam search step for a request whose beams' logits rows are `rows` (host, beam order).
  void beam_step(RequestState* rq, const std::vector<Sequence*>& beams, const std::vector<std::vector<float>>& rows);
  void measure_kv();
  static std::vector<TokenLogprob> top_logprobs(const std::vector<float>& row, int32_t k);

  ModelRunner* runner_;
  ExecutorOptions opts_;
  BlockManager blocks_;
  int32_t block_size_;

  // Loop-thread state.
  std::unordered_map<RequestId, std::unique_ptr<RequestState>> requests_;
  std::vector<Sequence*> running_;
  std::deque<Sequence*> waiting_;
  SamplingInputs sampling_;
  DeviceBuffer sampling_device_;
  DeviceBuffer ids_device_;
  Status cow_error_;         // a failed block copy during schedule(); fails the step
  int64_t preemptions_ = 0;
  int64_t kv_copies_ = 0;
  int64_t steps_ = 0;        // steps run (priority aging clock)
  int64_t kv_slots_allocated_ = 0, kv_slots_used_ = 0;
  int64_t kv_slots_allocated_steps_ = 0, kv_slots_used_steps_ = 0;
  std::vector<int32_t> block_fill_;  // measure_kv scratch, one entry per block
  const bool check_blocks_ = std::getenv("ANVIL_CHECK_KV_BLOCKS") != nullptr;

  // Shared with callers.
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<RequestState>> incoming_;
  std::unordered_set<RequestId> cancels_;
  int32_t num_waiting_ = 0;
  bool stopping_ = false;
  bool drain_ = false;
  RequestId next_id_ = 1;
  Clock::time_point last_progress_;

  mutable std::mutex stats_mu_;
  ExecutorStats stats_;

  std::thread thread_;
};

}  // namespace anvil
