// One step's schedule. Order: running decodes (a beam group's beams together or not at all),
// running prefill chunks, then waiting sequences in priority/FCFS order while the token budget,
// the seats (max_num_seqs; an unforked n > 1 / beam root reserves its siblings' seats) and the
// KV pool allow. A sequence about to write into a block it shares with a sibling first gets a
// private copy of it (copy-on-write); only partial blocks are ever written, full blocks stay
// shared. When a running sequence cannot grow, the lowest-priority latest other one is
// preempted (a beam group as a whole, restarting its search).
#include <algorithm>

#include "executor/executor_impl.h"

namespace anvil {

int32_t ExecutorImpl::running_seats() const {
  int32_t n = 0;
  for (const Sequence* s : running_) n += s->seats();
  return n;
}

bool ExecutorImpl::grow(Sequence* s, int32_t total) {
  while (static_cast<int32_t>(s->blocks.size()) * block_size_ < total) {
    const int32_t b = blocks_.allocate();
    if (b < 0) return false;
    s->blocks.push_back(b);
  }
  return true;
}

bool ExecutorImpl::prepare(Sequence* s, int32_t num_new) {
  const int32_t begin = s->num_computed;
  const size_t bi = static_cast<size_t>(begin / block_size_);
  if (begin % block_size_ != 0 && bi < s->blocks.size() && blocks_.ref_count(s->blocks[bi]) > 1) {
    // The block holds rows [0, begin % block_size) shared with a sibling; this sequence is about
    // to write the next row. Copy it; the last holder keeps the original and writes in place.
    const int32_t copy = blocks_.allocate();
    if (copy < 0) return false;
    Status st = runner_->kv_cache().copy_block(runner_->backend(), s->blocks[bi], copy);
    if (!st.is_ok() && cow_error_.is_ok()) cow_error_ = st;
    blocks_.release(s->blocks[bi]);
    s->blocks[bi] = copy;
    ++kv_copies_;
  }
  return grow(s, begin + num_new);
}

Sequence* ExecutorImpl::pick_victim(const std::vector<ScheduledSeq>& scheduled, const RequestState* keep) {
  auto busy = [&](const Sequence* s) {
    if (s->req == keep) return true;
    for (const ScheduledSeq& sc : scheduled) {
      // A beam group is preempted whole: none of it may be in this step already.
      if (sc.seq == s || (s->req->is_beam() && sc.seq->req == s->req)) return true;
    }
    return false;
  };
  Sequence* victim = nullptr;
  for (Sequence* s : running_) {
    if (busy(s)) continue;
    if (!victim || runs_before(victim, s)) victim = s;
  }
  return victim;
}

bool ExecutorImpl::prepare_or_preempt(Sequence* s, int32_t num_new, const std::vector<ScheduledSeq>& busy,
                                      const RequestState* keep) {
  bool ok = prepare(s, num_new);
  while (!ok) {
    Sequence* victim = pick_victim(busy, keep);
    if (!victim || victim == s) break;
    preempt(victim);
    ok = prepare(s, num_new);
  }
  return ok;
}

void ExecutorImpl::preempt(Sequence* s) {
  ++preemptions_;
  if (s->req->is_beam() && s->req->forked) return restart_beams(s->req);
  release_blocks(s);
  running_.erase(std::remove(running_.begin(), running_.end(), s), running_.end());
  insert_waiting(s);
}

void ExecutorImpl::restart_beams(RequestState* rq) {
  // Beams emit nothing until the end, so a restart from the prompt loses no output; the search
  // is deterministic, and the prompt's full blocks are likely still in the prefix cache.
  while (rq->seqs.size() > 1) remove_sequence(rq->seqs.back().get());
  Sequence* root = rq->seqs.front().get();
  release_blocks(root);
  running_.erase(std::remove(running_.begin(), running_.end(), root), running_.end());
  root->tokens.resize(static_cast<size_t>(root->num_prompt));
  root->index = 0;
  root->cumulative_logprob = 0;
  root->pending.tokens.clear();
  root->pending.logprobs.clear();
  rq->forked = false;
  rq->beam->reset();
  insert_waiting(root);
}

bool ExecutorImpl::schedule_beam_group(RequestState* rq, std::vector<ScheduledSeq>* out, int32_t* budget) {
  std::vector<Sequence*> beams;
  for (const auto& s : rq->seqs) beams.push_back(s.get());
  if (*budget < static_cast<int32_t>(beams.size())) return false;
  for (Sequence* b : beams) {
    if (!prepare_or_preempt(b, 1, *out, rq)) {
      const bool alone = out->empty() && running_.size() == beams.size();
      if (alone) {
        finish_beams(rq, Status::ok(), FinishReason::kLength);  // cannot grow further: best so far
      } else {
        ++preemptions_;
        restart_beams(rq);
      }
      return false;
    }
  }
  for (Sequence* b : beams) out->push_back({b, 1, true});
  *budget -= static_cast<int32_t>(beams.size());
  return true;
}

std::vector<ScheduledSeq> ExecutorImpl::schedule() {
  std::vector<ScheduledSeq> out;
  int32_t budget = opts_.max_num_tokens;
  auto order = [this](const Sequence* a, const Sequence* b) { return runs_before(a, b); };
  std::sort(running_.begin(), running_.end(), order);
  std::stable_sort(waiting_.begin(), waiting_.end(), order);  // ages change the order over time
  // Decodes first, then running prefills (chunks).
  for (int pass = 0; pass < 2; ++pass) {
    std::vector<Sequence*> snapshot = running_;
    std::unordered_set<const RequestState*> groups_done;
    for (Sequence* s : snapshot) {
      if (std::find(running_.begin(), running_.end(), s) == running_.end()) continue;  // preempted or ended
      const int32_t len = static_cast<int32_t>(s->tokens.size());
      const bool decode = s->num_computed == len - 1 && s->num_computed > 0;
      if ((pass == 0) != decode) continue;
      if (budget <= 0) break;
      if (s->req->is_beam() && s->req->forked) {
        if (groups_done.insert(s->req).second) schedule_beam_group(s->req, &out, &budget);
        continue;
      }
      const int32_t n = decode ? 1 : std::min(len - s->num_computed, budget);
      if (!prepare_or_preempt(s, n, out, nullptr)) {
        if (out.empty() && running_.size() == 1) {
          finish(s, FinishReason::kLength);  // alone and still out of blocks: it cannot grow further
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
  int32_t seats = running_seats();
  while (!waiting_.empty() && budget > 0) {
    Sequence* s = waiting_.front();
    if (seats + s->seats() > opts_.max_num_seqs) break;
    const int32_t len = static_cast<int32_t>(s->tokens.size());
    // Equal prompts arriving together (a shared system prompt): if a running sequence is
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
    sync_num_waiting();
    running_.push_back(s);
    seats += s->seats();
    if (s->req->queue_seconds < 0) s->req->queue_seconds = std::chrono::duration<double>(Clock::now() - s->req->enqueued_at).count();
    out.push_back({s, n, s->num_computed + n == len});
    budget -= n;
  }
  // n > 1: the root's first token is drawn in this step, so its siblings are born now, sharing
  // every block (the partial last one included) and drawing from the same logits row.
  for (ScheduledSeq& sc : out) {
    Sequence* s = sc.seq;
    if (!sc.sample || s->req->is_beam() || !s->will_fork()) continue;
    for (int32_t i = 1; i < s->req->request.sampling.n; ++i) sc.forks.push_back(fork(s, i));
    s->req->forked = true;
  }
  return out;
}

Sequence* ExecutorImpl::fork(Sequence* parent, int32_t index) {
  RequestState* rq = parent->req;
  auto child = std::make_unique<Sequence>();
  Sequence* c = child.get();
  c->req = rq;
  c->index = index;
  c->queue_reported = parent->queue_reported;
  c->tokens = parent->tokens;
  c->num_prompt = parent->num_prompt;
  c->num_computed = parent->num_computed;
  c->num_cached_prompt = parent->num_cached_prompt;
  c->blocks = parent->blocks;
  for (int32_t b : c->blocks) blocks_.add_ref(b);
  c->block_keys = parent->block_keys;
  c->output_counts = parent->output_counts;
  c->cumulative_logprob = parent->cumulative_logprob;
  c->pending = parent->pending;
  c->pending.index = index;
  if (!rq->request.sampling.stop.empty()) {
    c->stop = std::make_unique<StopStringChecker>(rq->request.detokenizer(), rq->request.sampling.stop);
  }
  rq->seqs.push_back(std::move(child));
  running_.push_back(c);
  return c;
}

// True when `s` has not started and a running sequence has the same first full block but has not
// computed (registered) it yet.
bool ExecutorImpl::first_block_in_flight(const Sequence* s) const {
  if (!opts_.enable_prefix_cache || s->num_computed > 0 || !s->blocks.empty()) return false;
  if (static_cast<int32_t>(s->tokens.size()) - 1 < block_size_) return false;  // no full block to share
  for (const Sequence* r : running_) {
    if (!r->block_keys.empty() || static_cast<int32_t>(r->tokens.size()) <= block_size_) continue;
    if (std::equal(s->tokens.begin(), s->tokens.begin() + block_size_, r->tokens.begin())) return true;
  }
  return false;
}

void ExecutorImpl::register_full_blocks(Sequence* s) {
  const int32_t full = s->num_computed / block_size_;
  while (static_cast<int32_t>(s->block_keys.size()) < full) {
    const size_t i = s->block_keys.size();
    const uint64_t parent = i == 0 ? 0 : s->block_keys[i - 1];
    const uint64_t key = BlockManager::block_key(parent, s->tokens.data() + i * block_size_, block_size_);
    blocks_.register_block(s->blocks[i], key);
    s->block_keys.push_back(key);
  }
}

}  // namespace anvil
