// The executor's API, loop thread and request lifecycle. Each loop turn takes new requests and
// cancellations, then runs one step (scheduler.cpp, step.cpp). Outputs: streaming sequences get a
// delta per token, the others one final Output; beams one final Output per returned hypothesis.
// Debug aid: with ANVIL_CHECK_KV_BLOCKS=1 in the environment, the block manager's bookkeeping is
// verified after every step (and the pool must be whole when idle); a breach logs and aborts.
#include <algorithm>
#include <cmath>

#include "core/logging.h"
#include "executor/executor_impl.h"

namespace anvil {

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::kNone: return "none";
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kCancelled: return "cancelled";
    case FinishReason::kError: return "error";
  }
  return "?";
}

namespace {
constexpr int32_t kMaxBeamWidth = 8;
}  // namespace

ExecutorImpl::ExecutorImpl(ModelRunner* runner, const ExecutorOptions& o)
    : runner_(runner),
      opts_(o),
      blocks_(runner->kv_cache().num_blocks(), runner->kv_cache().block_size(), o.enable_prefix_cache),
      block_size_(runner->kv_cache().block_size()) {
  opts_.max_num_tokens = std::min(opts_.max_num_tokens, runner->options().max_num_tokens);
  opts_.max_num_seqs = std::min({opts_.max_num_seqs, runner->options().max_num_seqs, runner->options().max_logit_rows});
  last_progress_ = Clock::now();
  thread_ = std::thread([this] { loop(); });
}

Status ExecutorImpl::validate(const Request& r) const {
  const int64_t vocab = vocab_size();
  const int32_t max_len = max_context_len();
  const int32_t kv_tokens = blocks_.num_blocks() * block_size_;
  const SamplingParams& p = r.sampling;
  if (r.prompt.empty()) return invalid_argument("prompt: must contain at least one token");
  for (int32_t id : r.prompt) {
    if (id < 0 || id >= vocab) {
      return invalid_argument("prompt: token id " + std::to_string(id) + " is outside the vocabulary [0, " +
                              std::to_string(vocab) + ")");
    }
  }
  if (static_cast<int64_t>(r.prompt.size()) >= max_len) {
    return invalid_argument("prompt: " + std::to_string(r.prompt.size()) + " tokens leave no room in the model's context of " +
                            std::to_string(max_len) + " tokens");
  }
  if (static_cast<int64_t>(r.prompt.size()) >= kv_tokens) {
    return invalid_argument("prompt: " + std::to_string(r.prompt.size()) + " tokens do not fit the KV cache (" +
                            std::to_string(kv_tokens) + " tokens)");
  }
  if (!(p.temperature >= 0.0f) || !std::isfinite(p.temperature)) return invalid_argument("temperature: must be a finite number >= 0");
  if (p.top_k < 0) return invalid_argument("top_k: must be >= 0 (0 disables it)");
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) return invalid_argument("top_p: must be in (0, 1]");
  if (!(p.min_p >= 0.0f && p.min_p <= 1.0f)) return invalid_argument("min_p: must be in [0, 1]");
  if (!(p.repetition_penalty > 0.0f) || !std::isfinite(p.repetition_penalty)) return invalid_argument("repetition_penalty: must be > 0");
  if (!(p.presence_penalty >= -2.0f && p.presence_penalty <= 2.0f)) return invalid_argument("presence_penalty: must be in [-2, 2]");
  if (!(p.frequency_penalty >= -2.0f && p.frequency_penalty <= 2.0f)) return invalid_argument("frequency_penalty: must be in [-2, 2]");
  if (p.max_tokens < 1) return invalid_argument("max_tokens: must be >= 1");
  if (p.min_tokens < 0 || p.min_tokens > p.max_tokens) return invalid_argument("min_tokens: must be in [0, max_tokens]");
  if (p.logprobs < -1 || p.logprobs > 20) return invalid_argument("logprobs: must be in [0, 20]");
  for (int32_t s : p.stop_token_ids) {
    if (s < 0 || s >= vocab) return invalid_argument("stop_token_ids: " + std::to_string(s) + " is outside the vocabulary");
  }
  if (p.n < 1 || p.n > opts_.max_num_seqs) {
    return invalid_argument("n: must be in [1, " + std::to_string(opts_.max_num_seqs) + "] (max_num_seqs: the sequences run at once)");
  }
  if (!p.stop.empty()) {
    if (p.stop.size() > 16) return invalid_argument("stop: at most 16 stop strings");
    for (const std::string& s : p.stop) {
      if (s.empty()) return invalid_argument("stop: stop strings must not be empty");
    }
    if (!r.detokenizer) return invalid_argument("stop: stop strings need a detokenizer (Request::detokenizer)");
  }
  if (p.beam_width != 0) {
    if (p.beam_width < 0 || p.beam_width > kMaxBeamWidth || p.beam_width > opts_.max_num_seqs) {
      return invalid_argument("beam_width: must be in [0, " + std::to_string(std::min(kMaxBeamWidth, opts_.max_num_seqs)) + "]");
    }
    if (p.n > p.beam_width) return invalid_argument("n: must not exceed beam_width (" + std::to_string(p.beam_width) + ")");
    if (!std::isfinite(p.length_penalty)) return invalid_argument("length_penalty: must be a finite number");
    if (p.repetition_penalty != 1.0f || p.presence_penalty != 0.0f || p.frequency_penalty != 0.0f) {
      return invalid_argument("beam_width: beam search does not take repetition/presence/frequency penalties");
    }
    if (!p.stop.empty()) return invalid_argument("stop: stop strings are not supported with beam search");
    if (p.logprobs > 0) return invalid_argument("logprobs: beam search returns the chosen tokens' logprobs only (logprobs 0)");
  }
  return Status::ok();
}

Result<RequestId> ExecutorImpl::enqueue(Request request, OutputCallback callback) {
  ANVIL_RETURN_IF_ERROR(validate(request));
  std::lock_guard<std::mutex> lk(mu_);
  if (stopping_) return unavailable("the executor is shutting down");
  if (static_cast<int32_t>(incoming_.size()) + num_waiting_ >= opts_.max_queue) {
    return unavailable("the request queue is full (" + std::to_string(opts_.max_queue) + " waiting); retry later");
  }
  auto rq = std::make_unique<RequestState>();
  rq->id = next_id_++;
  rq->arrival = rq->id;
  rq->enqueued_at = Clock::now();
  rq->seed = request.sampling.seed.value_or(opts_.seed * 0x9E3779B97F4A7C15ull + rq->id);
  auto root = std::make_unique<Sequence>();
  root->req = rq.get();
  root->tokens = request.prompt;
  root->num_prompt = static_cast<int32_t>(request.prompt.size());
  root->pending.id = rq->id;
  root->pending.num_prompt_tokens = root->num_prompt;
  rq->request = std::move(request);
  rq->callback = std::move(callback);
  rq->seqs.push_back(std::move(root));
  const RequestId id = rq->id;
  incoming_.push_back(std::move(rq));
  cv_.notify_one();
  return id;
}

void ExecutorImpl::cancel(RequestId id) {
  std::lock_guard<std::mutex> lk(mu_);
  cancels_.insert(id);
  cv_.notify_one();
}

void ExecutorImpl::shutdown(bool drain) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (stopping_ && !thread_.joinable()) return;
    stopping_ = true;
    drain_ = drain;
    cv_.notify_one();
  }
  if (thread_.joinable()) thread_.join();
}

ExecutorStats ExecutorImpl::stats() const {
  std::lock_guard<std::mutex> lk(stats_mu_);
  ExecutorStats s = stats_;
  {
    std::lock_guard<std::mutex> lk2(mu_);
    s.num_waiting = num_waiting_ + static_cast<int32_t>(incoming_.size());
    const bool pending = s.num_running > 0 || s.num_waiting > 0;
    s.seconds_since_last_step = pending ? std::chrono::duration<double>(Clock::now() - last_progress_).count() : 0.0;
  }
  return s;
}

void ExecutorImpl::loop() {
  for (;;) {
    std::vector<std::unique_ptr<RequestState>> fresh;
    std::unordered_set<RequestId> cancels;
    bool stopping, drain;
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return stopping_ || !incoming_.empty() || !cancels_.empty() || has_work(); });
      for (auto& r : incoming_) fresh.push_back(std::move(r));
      incoming_.clear();
      cancels.swap(cancels_);
      stopping = stopping_;
      drain = drain_;
      last_progress_ = Clock::now();
    }
    for (auto& r : fresh) add_waiting(std::move(r));
    for (RequestId id : cancels) cancel_now(id);
    if (stopping && !drain) {
      std::vector<RequestId> all;
      for (auto& [id, r] : requests_) all.push_back(id);
      for (RequestId id : all) cancel_now(id);
    }
    if (!has_work()) {
      if (check_blocks_) check_blocks(/*idle=*/true);
      if (stopping) return;
      publish_stats(0);
      continue;
    }
    step();
    if (check_blocks_) check_blocks(/*idle=*/false);
  }
}

// ANVIL_CHECK_KV_BLOCKS: a broken invariant here means K/V of one request may be read or
// overwritten by another, so stop loudly rather than serve wrong tokens.
void ExecutorImpl::check_blocks(bool idle) const {
  Status st = blocks_.check_consistency();
  if (st.is_ok() && !idle) {
    // Every reference is held by a live sequence: count them against the manager's counts.
    std::unordered_map<int32_t, int32_t> refs;
    for (const auto& [id, rq] : requests_) {
      for (const auto& s : rq->seqs) {
        for (int32_t b : s->blocks) ++refs[b];
      }
    }
    for (const auto& [b, n] : refs) {
      if (blocks_.ref_count(b) != n) {
        st = internal_error("block manager: block " + std::to_string(b) + " has " + std::to_string(blocks_.ref_count(b)) +
                            " reference(s) but " + std::to_string(n) + " sequence(s) hold it");
        break;
      }
    }
  }
  if (st.is_ok() && idle && blocks_.num_available() != blocks_.num_blocks()) {
    st = internal_error("block manager: " + std::to_string(blocks_.num_blocks() - blocks_.num_available()) +
                        " block(s) still referenced with no request left (leak)");
  }
  if (st.is_ok()) return;
  ANVIL_LOG_ERROR("ANVIL_CHECK_KV_BLOCKS: %s", st.to_string().c_str());
  std::abort();
}

void ExecutorImpl::add_waiting(std::unique_ptr<RequestState> rq) {
  rq->arrival_step = steps_;
  Sequence* root = rq->seqs.front().get();
  if (rq->is_beam()) {
    std::vector<int32_t> stop_ids = rq->request.sampling.stop_token_ids;
    if (!rq->request.sampling.ignore_eos) {
      for (int64_t e : runner_->spec().eos_token_ids) stop_ids.push_back(static_cast<int32_t>(e));
    }
    const int32_t room = max_context_len() - root->num_prompt;
    rq->beam = std::make_unique<BeamSearch>(rq->request.sampling, std::move(stop_ids),
                                            std::min(rq->request.sampling.max_tokens, room));
  }
  if (!rq->request.sampling.stop.empty()) {
    root->stop = std::make_unique<StopStringChecker>(rq->request.detokenizer(), rq->request.sampling.stop);
  }
  const RequestId id = rq->id;
  requests_[id] = std::move(rq);
  insert_waiting(root);
}

// Effective priority: the request's priority plus one per priority_aging_steps steps waited
// since it arrived (a preempted request keeps its arrival), so nothing starves.
int64_t ExecutorImpl::effective_priority(const Sequence* s) const {
  const int64_t age = opts_.priority_aging_steps > 0 ? (steps_ - s->req->arrival_step) / opts_.priority_aging_steps : 0;
  return s->req->request.priority + age;
}

// Scheduling order: effective priority desc, then arrival asc (FCFS), then sequence index.
bool ExecutorImpl::runs_before(const Sequence* a, const Sequence* b) const {
  const int64_t pa = effective_priority(a), pb = effective_priority(b);
  if (pa != pb) return pa > pb;
  if (a->req->arrival != b->req->arrival) return a->req->arrival < b->req->arrival;
  return a->index < b->index;
}

void ExecutorImpl::insert_waiting(Sequence* s) {
  auto it = std::find_if(waiting_.begin(), waiting_.end(), [&](Sequence* o) { return runs_before(s, o); });
  waiting_.insert(it, s);
  sync_num_waiting();
}

void ExecutorImpl::sync_num_waiting() {
  std::lock_guard<std::mutex> lk(mu_);
  num_waiting_ = static_cast<int32_t>(waiting_.size());
}

void ExecutorImpl::release_blocks(Sequence* s) {
  // Last block first: cached blocks enter the LRU tail-first, so eviction takes a chain's tail
  // before its head (a prefix match walks from block 0; a tail without its head is dead weight).
  for (auto it = s->blocks.rbegin(); it != s->blocks.rend(); ++it) blocks_.release(*it);
  s->blocks.clear();
  s->block_keys.clear();
  s->num_computed = 0;
}

void ExecutorImpl::remove_sequence(Sequence* s) {
  release_blocks(s);
  running_.erase(std::remove(running_.begin(), running_.end(), s), running_.end());
  const size_t before = waiting_.size();
  waiting_.erase(std::remove(waiting_.begin(), waiting_.end(), s), waiting_.end());
  if (waiting_.size() != before) sync_num_waiting();
  auto& seqs = s->req->seqs;
  seqs.erase(std::remove_if(seqs.begin(), seqs.end(), [s](const std::unique_ptr<Sequence>& p) { return p.get() == s; }),
             seqs.end());
}

// The first Output of a sequence carries its queue time (-1 if it never ran, e.g. cancelled
// while waiting); later ones carry -1.
void ExecutorImpl::stamp_queue_time(Sequence* s) {
  s->pending.queue_seconds = s->queue_reported ? -1.0 : s->req->queue_seconds;
  s->queue_reported = true;
}

void ExecutorImpl::emit(Sequence* s) {
  s->pending.num_generated_tokens = s->num_generated();
  s->pending.num_cached_prompt_tokens = s->num_cached_prompt;
  stamp_queue_time(s);
  if (s->req->callback) s->req->callback(s->pending);
  s->pending.tokens.clear();
  s->pending.logprobs.clear();
  s->pending.top_logprobs.clear();
  s->pending.text.clear();
}

void ExecutorImpl::send_final(RequestState* rq, Output& out) {
  out.finished = true;
  ++rq->num_finished;
  publish_stats(0);  // so a caller woken by the final output sees the freed blocks
  if (rq->callback) rq->callback(out);
}

void ExecutorImpl::finish(Sequence* s, FinishReason reason, Status error) {
  RequestState* rq = s->req;
  if (rq->is_beam()) return finish_beams(rq, error, reason);
  const bool unborn_siblings = s->will_fork();
  Output out = std::move(s->pending);
  out.index = s->index;
  out.finish_reason = reason;
  out.error = error;
  out.num_generated_tokens = s->num_generated();
  out.num_cached_prompt_tokens = s->num_cached_prompt;
  out.queue_seconds = s->queue_reported ? -1.0 : rq->queue_seconds;
  const int32_t cached = s->num_cached_prompt;
  remove_sequence(s);
  send_final(rq, out);
  if (unborn_siblings) {
    // An n > 1 root that ends before its siblings were forked (cancelled, failed): they end too.
    for (int32_t i = 1; i < rq->request.sampling.n; ++i) {
      Output o;
      o.id = rq->id;
      o.index = i;
      o.finish_reason = reason;
      o.error = error;
      o.num_prompt_tokens = static_cast<int32_t>(rq->request.prompt.size());
      o.num_cached_prompt_tokens = cached;
      send_final(rq, o);
    }
  }
  if (rq->seqs.empty()) requests_.erase(rq->id);
}

void ExecutorImpl::finish_beams(RequestState* rq, Status error, FinishReason forced) {
  const SamplingParams& p = rq->request.sampling;
  std::vector<BeamHypothesis> best;
  if (forced != FinishReason::kCancelled && forced != FinishReason::kError) {
    best = rq->beam->finished();
    if (static_cast<int32_t>(best.size()) < p.n) {
      // Cut short (max_tokens or no KV left): the running beams, scored alike, fill the gap.
      std::vector<BeamHypothesis> extra;
      for (const auto& s : rq->seqs) {
        if (s->num_generated() == 0) continue;
        BeamHypothesis h;
        h.tokens = s->pending.tokens;
        h.logprobs = s->pending.logprobs;
        h.cumulative = s->cumulative_logprob;
        h.score = h.cumulative / std::pow(static_cast<double>(h.tokens.size()), static_cast<double>(p.length_penalty));
        extra.push_back(std::move(h));
      }
      std::stable_sort(extra.begin(), extra.end(), [](const BeamHypothesis& a, const BeamHypothesis& b) { return a.score > b.score; });
      for (auto& h : extra) best.push_back(std::move(h));
    }
  }
  const int32_t cached = rq->seqs.empty() ? 0 : rq->seqs.front()->num_cached_prompt;
  while (!rq->seqs.empty()) remove_sequence(rq->seqs.back().get());
  for (int32_t i = 0; i < p.n; ++i) {
    Output o;
    o.id = rq->id;
    o.index = i;
    o.num_prompt_tokens = static_cast<int32_t>(rq->request.prompt.size());
    o.num_cached_prompt_tokens = cached;
    o.queue_seconds = rq->queue_seconds;
    o.error = error;
    if (i < static_cast<int32_t>(best.size())) {
      BeamHypothesis& h = best[i];
      o.tokens = std::move(h.tokens);
      if (p.logprobs >= 0) o.logprobs = std::move(h.logprobs);
      o.cumulative_logprob = h.cumulative;
      o.finish_reason = h.by_stop ? FinishReason::kStop : FinishReason::kLength;
    } else {
      o.finish_reason = forced == FinishReason::kNone ? FinishReason::kLength : forced;
    }
    o.num_generated_tokens = static_cast<int32_t>(o.tokens.size());
    send_final(rq, o);
  }
  requests_.erase(rq->id);
}

void ExecutorImpl::end_request(RequestState* rq, FinishReason reason, Status error) {
  if (rq->is_beam()) return finish_beams(rq, error, reason);
  // finish() erases the request with its last sequence.
  const RequestId id = rq->id;
  while (requests_.count(id) && !rq->seqs.empty()) finish(rq->seqs.front().get(), reason, error);
}

void ExecutorImpl::cancel_now(RequestId id) {
  auto it = requests_.find(id);
  if (it == requests_.end()) return;
  end_request(it->second.get(), FinishReason::kCancelled);
}

void ExecutorImpl::publish_stats(double step_ms) {
  std::lock_guard<std::mutex> lk(stats_mu_);
  stats_.num_running = static_cast<int32_t>(running_.size());
  stats_.kv_blocks_total = blocks_.num_blocks();
  stats_.kv_blocks_free = blocks_.num_available();
  stats_.num_prefix_cache_queries = blocks_.num_queries();
  stats_.num_prefix_cache_hits = blocks_.num_hits();
  stats_.num_preemptions = preemptions_;
  stats_.num_kv_block_copies = kv_copies_;
  stats_.kv_slots_allocated = kv_slots_allocated_;
  stats_.kv_slots_used = kv_slots_used_;
  stats_.kv_slots_allocated_steps = kv_slots_allocated_steps_;
  stats_.kv_slots_used_steps = kv_slots_used_steps_;
  if (step_ms > 0) stats_.last_step_ms = step_ms;
}

Result<std::unique_ptr<Executor>> Executor::create(ModelRunner* runner, const ExecutorOptions& options) {
  if (!runner) return invalid_argument("executor: runner is null");
  if (options.max_num_tokens <= 0 || options.max_num_seqs <= 0) return invalid_argument("executor: max_num_tokens and max_num_seqs must be positive");
  return std::unique_ptr<Executor>(new ExecutorImpl(runner, options));
}

}  // namespace anvil
