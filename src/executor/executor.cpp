// The executor's step loop. Each step: take new requests and cancellations; schedule (running
// decodes first, then running prefills, then waiting requests, within the token budget and the
// free KV blocks; preempt the lowest-priority latest sequence when a running one cannot grow);
// run the model; sample; append tokens, check stop conditions, emit outputs; release finished
// sequences' blocks and register full blocks in the prefix cache.
// Debug aid: with ANVIL_CHECK_KV_BLOCKS=1 in the environment, the block manager's bookkeeping is
// verified after every step (and the pool must be whole when idle); a breach logs and aborts.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <condition_variable>
#include <deque>
#include <list>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "anvil/executor.h"
#include "core/logging.h"
#include "executor/sequence.h"
#include "executor/step_builder.h"
#include "runtime/kv_cache/block_manager.h"
#include "runtime/model_runner.h"

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

using Clock = std::chrono::steady_clock;

Status validate(const Request& r, int64_t vocab, int32_t max_len, int32_t kv_tokens) {
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
  return Status::ok();
}

class ExecutorImpl final : public Executor {
 public:
  ExecutorImpl(ModelRunner* runner, const ExecutorOptions& o)
      : runner_(runner),
        opts_(o),
        blocks_(runner->kv_cache().num_blocks(), runner->kv_cache().block_size(), o.enable_prefix_cache),
        block_size_(runner->kv_cache().block_size()) {
    opts_.max_num_tokens = std::min(opts_.max_num_tokens, runner->options().max_num_tokens);
    opts_.max_num_seqs = std::min({opts_.max_num_seqs, runner->options().max_num_seqs, runner->options().max_logit_rows});
    last_progress_ = Clock::now();
    thread_ = std::thread([this] { loop(); });
  }

  ~ExecutorImpl() override { shutdown(false); }

  Result<RequestId> enqueue(Request request, OutputCallback callback) override {
    ANVIL_RETURN_IF_ERROR(validate(request, vocab_size(), max_context_len(), blocks_.num_blocks() * block_size_));
    std::lock_guard<std::mutex> lk(mu_);
    if (stopping_) return unavailable("the executor is shutting down");
    if (static_cast<int32_t>(incoming_.size()) + num_waiting_ >= opts_.max_queue) {
      return unavailable("the request queue is full (" + std::to_string(opts_.max_queue) + " waiting); retry later");
    }
    auto seq = std::make_unique<Sequence>();
    seq->id = next_id_++;
    seq->arrival = seq->id;
    seq->enqueued_at = Clock::now();
    seq->seed = request.sampling.seed.value_or(opts_.seed * 0x9E3779B97F4A7C15ull + seq->id);
    seq->tokens = request.prompt;
    seq->num_prompt = static_cast<int32_t>(request.prompt.size());
    seq->request = std::move(request);
    seq->callback = std::move(callback);
    seq->pending.id = seq->id;
    seq->pending.num_prompt_tokens = seq->num_prompt;
    const RequestId id = seq->id;
    incoming_.push_back(std::move(seq));
    cv_.notify_one();
    return id;
  }

  void cancel(RequestId id) override {
    std::lock_guard<std::mutex> lk(mu_);
    cancels_.insert(id);
    cv_.notify_one();
  }

  void shutdown(bool drain) override {
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (stopping_ && !thread_.joinable()) return;
      stopping_ = true;
      drain_ = drain;
      cv_.notify_one();
    }
    if (thread_.joinable()) thread_.join();
  }

  ExecutorStats stats() const override {
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

  int32_t max_context_len() const override { return runner_->options().max_seq_len; }
  int64_t vocab_size() const override { return runner_->spec().vocab_size; }

 private:
  // ---- the loop ----
  void loop() {
    for (;;) {
      std::vector<std::unique_ptr<Sequence>> fresh;
      std::unordered_set<RequestId> cancels;
      bool stopping, drain;
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return stopping_ || !incoming_.empty() || !cancels_.empty() || has_work(); });
        for (auto& s : incoming_) fresh.push_back(std::move(s));
        incoming_.clear();
        cancels.swap(cancels_);
        stopping = stopping_;
        drain = drain_;
        last_progress_ = Clock::now();
      }
      for (auto& s : fresh) add_waiting(std::move(s));
      for (RequestId id : cancels) cancel_now(id);
      if (stopping && !drain) {
        std::vector<RequestId> all;
        for (auto& [id, s] : seqs_) all.push_back(id);
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
  void check_blocks(bool idle) const {
    Status st = blocks_.check_consistency();
    if (st.is_ok() && idle && blocks_.num_available() != blocks_.num_blocks()) {
      st = internal_error("block manager: " + std::to_string(blocks_.num_blocks() - blocks_.num_available()) +
                          " block(s) still referenced with no request left (leak)");
    }
    if (st.is_ok()) return;
    ANVIL_LOG_ERROR("ANVIL_CHECK_KV_BLOCKS: %s", st.to_string().c_str());
    std::abort();
  }

  bool has_work() const { return !running_.empty() || !waiting_.empty(); }

  void add_waiting(std::unique_ptr<Sequence> s) {
    Sequence* p = s.get();
    p->arrival_step = steps_;
    seqs_[p->id] = std::move(s);
    insert_waiting(p);
  }

  // Effective priority: the request's priority plus one per priority_aging_steps steps waited
  // since it arrived (a preempted request keeps its arrival), so nothing starves.
  int64_t effective_priority(const Sequence* s) const {
    const int64_t age = opts_.priority_aging_steps > 0 ? (steps_ - s->arrival_step) / opts_.priority_aging_steps : 0;
    return s->request.priority + age;
  }
  // Scheduling order: effective priority desc, then arrival asc (FCFS).
  bool runs_before(const Sequence* a, const Sequence* b) const {
    const int64_t pa = effective_priority(a), pb = effective_priority(b);
    if (pa != pb) return pa > pb;
    return a->arrival < b->arrival;
  }

  void insert_waiting(Sequence* s) {
    auto it = std::find_if(waiting_.begin(), waiting_.end(), [&](Sequence* o) { return runs_before(s, o); });
    waiting_.insert(it, s);
    std::lock_guard<std::mutex> lk(mu_);
    num_waiting_ = static_cast<int32_t>(waiting_.size());
  }

  void release_blocks(Sequence* s) {
    // Last block first: cached blocks enter the LRU tail-first, so eviction takes a chain's tail
    // before its head (a prefix match walks from block 0; a tail without its head is dead weight).
    for (auto it = s->blocks.rbegin(); it != s->blocks.rend(); ++it) blocks_.release(*it);
    s->blocks.clear();
    s->block_keys.clear();
    s->num_computed = 0;
  }

  void finish(Sequence* s, FinishReason reason, Status error = Status::ok()) {
    release_blocks(s);
    running_.erase(std::remove(running_.begin(), running_.end(), s), running_.end());
    waiting_.erase(std::remove(waiting_.begin(), waiting_.end(), s), waiting_.end());
    {
      std::lock_guard<std::mutex> lk(mu_);
      num_waiting_ = static_cast<int32_t>(waiting_.size());
    }
    Output& out = s->pending;
    out.finished = true;
    out.finish_reason = reason;
    out.error = error;
    out.num_generated_tokens = s->num_generated();
    out.num_cached_prompt_tokens = s->num_cached_prompt;
    publish_stats(0);  // so a caller woken by the final output sees the freed blocks
    stamp_queue_time(s);
    if (s->callback) s->callback(out);
    seqs_.erase(s->id);
  }

  // The first Output of a request carries its queue time (-1 if it never ran, e.g. cancelled
  // while waiting); later ones carry -1.
  void stamp_queue_time(Sequence* s) {
    s->pending.queue_seconds = s->queue_reported ? -1.0 : s->queue_seconds;
    s->queue_reported = true;
  }

  void cancel_now(RequestId id) {
    auto it = seqs_.find(id);
    if (it == seqs_.end()) return;
    finish(it->second.get(), FinishReason::kCancelled);
  }

  // Makes sure `s` has blocks for `total` tokens; false if the pool is exhausted.
  bool grow(Sequence* s, int32_t total) {
    while (static_cast<int32_t>(s->blocks.size()) * block_size_ < total) {
      const int32_t b = blocks_.allocate();
      if (b < 0) return false;
      s->blocks.push_back(b);
    }
    return true;
  }

  // Preempts the lowest-priority, latest running sequence other than those already scheduled.
  Sequence* pick_victim(const std::vector<ScheduledSeq>& scheduled) {
    Sequence* victim = nullptr;
    for (Sequence* s : running_) {
      bool busy = false;
      for (const ScheduledSeq& sc : scheduled) busy |= sc.seq == s;
      if (busy) continue;
      if (!victim || runs_before(victim, s)) {
        victim = s;
      }
    }
    return victim;
  }

  void preempt(Sequence* s) {
    release_blocks(s);
    running_.erase(std::remove(running_.begin(), running_.end(), s), running_.end());
    insert_waiting(s);
    ++preemptions_;
  }

  // Schedules one step. Returns the scheduled sequences in batch order.
  std::vector<ScheduledSeq> schedule() {
    std::vector<ScheduledSeq> out;
    int32_t budget = opts_.max_num_tokens;
    auto order = [this](const Sequence* a, const Sequence* b) { return runs_before(a, b); };
    std::sort(running_.begin(), running_.end(), order);
    std::stable_sort(waiting_.begin(), waiting_.end(), order);  // ages change the order over time
    // Decodes first, then running prefills (chunks).
    for (int pass = 0; pass < 2; ++pass) {
      std::vector<Sequence*> order = running_;
      for (Sequence* s : order) {
        if (std::find(running_.begin(), running_.end(), s) == running_.end()) continue;  // preempted
        const int32_t len = static_cast<int32_t>(s->tokens.size());
        const bool decode = s->num_computed == len - 1 && s->num_computed > 0;
        if ((pass == 0) != decode) continue;
        if (budget <= 0) break;
        const int32_t n = decode ? 1 : std::min(len - s->num_computed, budget);
        bool ok = grow(s, s->num_computed + n);
        while (!ok) {
          Sequence* victim = pick_victim(out);
          if (!victim || victim == s) break;
          preempt(victim);
          ok = grow(s, s->num_computed + n);
        }
        if (!ok) {
          if (out.empty() && running_.size() == 1) {
            // Alone and still out of blocks: the sequence cannot grow further.
            finish(s, FinishReason::kLength);
          } else {
            preempt(s);
          }
          continue;
        }
        out.push_back({s, n, s->num_computed + n == len});
        budget -= n;
      }
    }
    // Admit waiting sequences.
    while (!waiting_.empty() && budget > 0 && static_cast<int32_t>(running_.size()) < opts_.max_num_seqs) {
      Sequence* s = waiting_.front();
      const int32_t len = static_cast<int32_t>(s->tokens.size());
      // Equal prompts arriving together (n > 1, a shared system prompt): if a running sequence is
      // computing this prompt's first block right now, wait a step so its blocks are registered
      // and shared instead of computed twice. The front waits (FCFS holds); the running sequence
      // is scheduled before any admission, so this always resolves.
      if (first_block_in_flight(s)) break;
      int32_t lookup_queried = 0, lookup_hit = 0;
      if (s->num_computed == 0 && s->blocks.empty()) {
        // Prefix cache: full blocks of tokens[0, len - 1) (the last token is always computed).
        const int32_t full = (len - 1) / block_size_;
        std::vector<uint64_t> keys;
        std::vector<int32_t> hit = blocks_.match_prefix(s->tokens.data(), full, &keys);
        lookup_queried = full;
        lookup_hit = static_cast<int32_t>(hit.size());
        s->blocks = hit;
        s->block_keys = keys;
        s->num_computed = static_cast<int32_t>(hit.size()) * block_size_;
        if (s->num_generated() == 0) s->num_cached_prompt = s->num_computed;
      }
      const int32_t n = std::min(len - s->num_computed, budget);
      if (!grow(s, s->num_computed + n)) {
        // A waiting sequence holds no blocks: what it matched goes back to the evictable cache,
        // so running sequences can still grow.
        release_blocks(s);
        break;
      }
      // Counted once per admission, not per failed attempt, so the hit rate means what it says.
      blocks_.record_lookup(lookup_queried, lookup_hit);
      waiting_.pop_front();
      {
        std::lock_guard<std::mutex> lk(mu_);
        num_waiting_ = static_cast<int32_t>(waiting_.size());
      }
      running_.push_back(s);
      if (s->queue_seconds < 0) s->queue_seconds = std::chrono::duration<double>(Clock::now() - s->enqueued_at).count();
      out.push_back({s, n, s->num_computed + n == len});
      budget -= n;
    }
    return out;
  }

  // True when `s` has not started and a running sequence has the same first full block but has not
  // computed (registered) it yet.
  bool first_block_in_flight(const Sequence* s) const {
    if (!opts_.enable_prefix_cache || s->num_computed > 0 || !s->blocks.empty()) return false;
    if (static_cast<int32_t>(s->tokens.size()) - 1 < block_size_) return false;  // no full block to share
    for (const Sequence* r : running_) {
      if (!r->block_keys.empty() || static_cast<int32_t>(r->tokens.size()) <= block_size_) continue;
      if (std::equal(s->tokens.begin(), s->tokens.begin() + block_size_, r->tokens.begin())) return true;
    }
    return false;
  }

  void register_full_blocks(Sequence* s) {
    const int32_t full = s->num_computed / block_size_;
    while (static_cast<int32_t>(s->block_keys.size()) < full) {
      const size_t i = s->block_keys.size();
      const uint64_t parent = i == 0 ? 0 : s->block_keys[i - 1];
      const uint64_t key = BlockManager::block_key(parent, s->tokens.data() + i * block_size_, block_size_);
      blocks_.register_block(s->blocks[i], key);
      s->block_keys.push_back(key);
    }
  }

  bool is_stop(const Sequence* s, int32_t tok) const {
    const SamplingParams& p = s->request.sampling;
    if (s->num_generated() < p.min_tokens) return false;
    if (!p.ignore_eos) {
      for (int64_t e : runner_->spec().eos_token_ids)
        if (tok == e) return true;
    }
    return std::find(p.stop_token_ids.begin(), p.stop_token_ids.end(), tok) != p.stop_token_ids.end();
  }

  void fail_all(const std::vector<ScheduledSeq>& scheduled, const Status& st) {
    ANVIL_LOG_ERROR("step failed: %s", st.to_string().c_str());
    for (const ScheduledSeq& sc : scheduled) finish(sc.seq, FinishReason::kError, st);
  }

  void step() {
    const auto t0 = Clock::now();
    ++steps_;
    std::vector<ScheduledSeq> scheduled = schedule();
    if (scheduled.empty()) {
      publish_stats(0);
      return;
    }
    StepInput input = build_step_input(scheduled, block_size_);
    Backend* backend = runner_->backend();
    Tensor logits;
    Status st = runner_->forward(input, &logits);
    const int32_t rows = static_cast<int32_t>(input.logit_rows.size());
    std::vector<int32_t> ids(rows);
    std::vector<float> logprobs(rows);
    std::vector<std::vector<TokenLogprob>> tops(rows);
    if (st.is_ok() && rows > 0) {
      // Top logprobs need the raw rows before the sampler modifies them.
      int32_t r = 0;
      std::vector<float> row_host;
      for (const ScheduledSeq& sc : scheduled) {
        if (!sc.sample) continue;
        const int32_t k = sc.seq->request.sampling.logprobs;
        if (k > 0 && st.is_ok()) {
          const int64_t vocab = logits.dim(1);
          row_host.resize(vocab);
          st = backend->copy_d2h(row_host.data(), logits.ptr<float>() + static_cast<int64_t>(r) * vocab, vocab * 4);
          tops[r] = top_logprobs(row_host, k);
        }
        ++r;
      }
      sampling_.build(scheduled, runner_->spec().eos_token_ids);
      Result<SamplingBatch> sb = sampling_.upload(backend, &sampling_device_);
      if (st.is_ok()) st = sb.status();
      if (st.is_ok()) {
        if (ids_device_.bytes() < static_cast<size_t>(rows) * 8) {
          auto a = DeviceBuffer::create(backend, static_cast<size_t>(opts_.max_num_seqs) * 8);
          if (a.is_ok()) ids_device_ = std::move(a).value(); else st = a.status();
        }
      }
      if (st.is_ok()) {
        Tensor ids_t = ids_device_.tensor(DType::kI32, {rows});
        Tensor lp_t(static_cast<int32_t*>(ids_device_.get()) + opts_.max_num_seqs, DType::kF32, {rows}, backend->device());
        st = backend->sample(logits, *sb, ids_t, lp_t);
        if (st.is_ok()) st = backend->copy_d2h(ids.data(), ids_t.data, rows * 4);
        if (st.is_ok()) st = backend->copy_d2h(logprobs.data(), lp_t.data, rows * 4);
      }
    }
    if (!st.is_ok()) {
      fail_all(scheduled, st);
      publish_stats(0);
      return;
    }
    int32_t r = 0;
    int64_t generated = 0, prompt_tokens = 0;
    std::vector<Sequence*> done_stop, done_len;
    for (const ScheduledSeq& sc : scheduled) {
      Sequence* s = sc.seq;
      if (s->num_computed < s->num_prompt) prompt_tokens += std::min(sc.num_new, s->num_prompt - s->num_computed);
      s->num_computed += sc.num_new;
      register_full_blocks(s);
      if (!sc.sample) continue;
      const int32_t tok = ids[r];
      const SamplingParams& p = s->request.sampling;
      s->tokens.push_back(tok);
      s->output_counts[tok]++;
      ++generated;
      s->pending.tokens.push_back(tok);
      if (p.logprobs >= 0) {
        s->pending.logprobs.push_back(logprobs[r]);
        if (p.logprobs > 0) s->pending.top_logprobs.push_back(std::move(tops[r]));
      }
      ++r;
      if (is_stop(s, tok)) {
        done_stop.push_back(s);
      } else if (s->num_generated() >= p.max_tokens || static_cast<int32_t>(s->tokens.size()) >= max_context_len()) {
        done_len.push_back(s);
      } else if (s->request.streaming) {
        s->pending.num_generated_tokens = s->num_generated();
        s->pending.num_cached_prompt_tokens = s->num_cached_prompt;
        stamp_queue_time(s);
        if (s->callback) s->callback(s->pending);
        s->pending.tokens.clear();
        s->pending.logprobs.clear();
        s->pending.top_logprobs.clear();
      }
    }
    for (Sequence* s : done_stop) finish(s, FinishReason::kStop);
    for (Sequence* s : done_len) finish(s, FinishReason::kLength);
    const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    {
      std::lock_guard<std::mutex> lk(stats_mu_);
      stats_.num_steps++;
      stats_.num_generated_tokens += generated;
      stats_.num_prompt_tokens += prompt_tokens;
    }
    publish_stats(ms);
  }

  static std::vector<TokenLogprob> top_logprobs(const std::vector<float>& row, int32_t k) {
    float mx = -INFINITY;
    for (float v : row) mx = std::max(mx, v);
    double sum = 0;
    for (float v : row) sum += std::exp(static_cast<double>(v - mx));
    const double lse = mx + std::log(sum);
    std::vector<int32_t> idx(row.size());
    for (size_t i = 0; i < idx.size(); ++i) idx[i] = static_cast<int32_t>(i);
    k = std::min<int32_t>(k, static_cast<int32_t>(row.size()));
    std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int32_t a, int32_t b) {
      return row[a] > row[b] || (row[a] == row[b] && a < b);
    });
    std::vector<TokenLogprob> out;
    for (int32_t i = 0; i < k; ++i) out.push_back({idx[i], static_cast<float>(row[idx[i]] - lse)});
    return out;
  }

  void publish_stats(double step_ms) {
    std::lock_guard<std::mutex> lk(stats_mu_);
    stats_.num_running = static_cast<int32_t>(running_.size());
    stats_.kv_blocks_total = blocks_.num_blocks();
    stats_.kv_blocks_free = blocks_.num_available();
    stats_.num_prefix_cache_queries = blocks_.num_queries();
    stats_.num_prefix_cache_hits = blocks_.num_hits();
    stats_.num_preemptions = preemptions_;
    if (step_ms > 0) stats_.last_step_ms = step_ms;
  }

  ModelRunner* runner_;
  ExecutorOptions opts_;
  BlockManager blocks_;
  int32_t block_size_;

  // Loop-thread state.
  std::unordered_map<RequestId, std::unique_ptr<Sequence>> seqs_;
  std::vector<Sequence*> running_;
  std::deque<Sequence*> waiting_;
  SamplingInputs sampling_;
  DeviceBuffer sampling_device_;
  DeviceBuffer ids_device_;
  int64_t preemptions_ = 0;
  int64_t steps_ = 0;  // steps run (priority aging clock)
  const bool check_blocks_ = std::getenv("ANVIL_CHECK_KV_BLOCKS") != nullptr;

  // Shared with callers.
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<Sequence>> incoming_;
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

}  // namespace

Result<std::unique_ptr<Executor>> Executor::create(ModelRunner* runner, const ExecutorOptions& options) {
  if (!runner) return invalid_argument("executor: runner is null");
  if (options.max_num_tokens <= 0 || options.max_num_seqs <= 0) return invalid_argument("executor: max_num_tokens and max_num_seqs must be positive");
  return std::unique_ptr<Executor>(new ExecutorImpl(runner, options));
}

}  // namespace anvil
