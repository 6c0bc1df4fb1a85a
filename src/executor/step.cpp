// One step: schedule, run the model, sample (GPU sampler for every row; beam rows are read back
// and selected on the host), append tokens, check stop tokens / stop strings / lengths, emit
// outputs, end finished sequences, and measure KV use (slots held vs slots allocated).
#include <algorithm>
#include <cmath>

#include "core/logging.h"
#include "executor/executor_impl.h"

namespace anvil {

void ExecutorImpl::fail_all(const std::vector<ScheduledSeq>& scheduled, const Status& st) {
  ANVIL_LOG_ERROR("step failed: %s", st.to_string().c_str());
  std::vector<RequestId> ids;
  for (const ScheduledSeq& sc : scheduled) ids.push_back(sc.seq->req->id);
  for (RequestId id : ids) {
    auto it = requests_.find(id);
    if (it != requests_.end()) end_request(it->second.get(), FinishReason::kError, st);
  }
}

bool ExecutorImpl::is_stop_token(const Sequence* s, int32_t tok) const {
  const SamplingParams& p = s->req->request.sampling;
  if (s->num_generated() < p.min_tokens) return false;
  if (!p.ignore_eos) {
    for (int64_t e : runner_->spec().eos_token_ids)
      if (tok == e) return true;
  }
  return std::find(p.stop_token_ids.begin(), p.stop_token_ids.end(), tok) != p.stop_token_ids.end();
}

FinishReason ExecutorImpl::accept_token(Sequence* s, int32_t tok, float logprob, std::vector<TokenLogprob> top) {
  const SamplingParams& p = s->req->request.sampling;
  s->tokens.push_back(tok);
  s->output_counts[tok]++;
  s->pending.tokens.push_back(tok);
  if (p.logprobs >= 0) {
    s->pending.logprobs.push_back(logprob);
    if (p.logprobs > 0) s->pending.top_logprobs.push_back(std::move(top));
  }
  FinishReason reason = FinishReason::kNone;
  if (is_stop_token(s, tok)) {
    reason = FinishReason::kStop;
  } else if (s->num_generated() >= p.max_tokens || static_cast<int32_t>(s->tokens.size()) >= max_context_len()) {
    reason = FinishReason::kLength;
  }
  if (s->stop) {
    // Stop strings count from min_tokens on; before that the text passes through unmatched.
    StopMatcher::Step st = s->num_generated() >= p.min_tokens ? s->stop->add(tok) : s->stop->add_unmatched(tok);
    s->pending.text += st.released;
    if (st.stopped) {
      s->pending.stop_reason = s->stop->matched();
      return FinishReason::kStop;
    }
    if (reason != FinishReason::kNone) {
      st = s->stop->finish();
      s->pending.text += st.released;
      if (st.stopped) {
        s->pending.stop_reason = s->stop->matched();
        reason = FinishReason::kStop;
      }
    }
  }
  return reason;
}

void ExecutorImpl::beam_step(RequestState* rq, const std::vector<Sequence*>& beams,
                             const std::vector<std::vector<float>>& rows) {
  const SamplingParams& p = rq->request.sampling;
  const int64_t vocab = static_cast<int64_t>(rows.front().size());
  std::vector<std::vector<double>> lps;
  std::vector<BeamInput> in;
  for (size_t b = 0; b < beams.size(); ++b) lps.push_back(log_softmax(rows[b].data(), vocab));
  for (size_t b = 0; b < beams.size(); ++b) {
    in.push_back({lps[b].data(), beams[b]->cumulative_logprob, &beams[b]->pending.tokens,
                  p.logprobs >= 0 ? &beams[b]->pending.logprobs : nullptr});
  }
  const BeamStepResult r = rq->beam->step(in, vocab, beams.front()->num_generated());
  rq->forked = true;
  if (r.done) return finish_beams(rq);
  // Map the new beams onto sequences: a parent's first child continues in the parent's own
  // sequence, further children fork from it (before it changes); parents with no child end.
  std::vector<std::vector<int32_t>> children(beams.size());
  for (size_t j = 0; j < r.running.size(); ++j) children[r.running[j].parent].push_back(static_cast<int32_t>(j));
  std::vector<Sequence*> next(r.running.size(), nullptr);
  for (size_t b = 0; b < beams.size(); ++b) {
    for (size_t k = 1; k < children[b].size(); ++k) next[children[b][k]] = fork(beams[b], children[b][k]);
  }
  for (size_t b = 0; b < beams.size(); ++b) {
    if (children[b].empty()) {
      remove_sequence(beams[b]);
    } else {
      next[children[b][0]] = beams[b];
    }
  }
  for (size_t j = 0; j < next.size(); ++j) {
    Sequence* s = next[j];
    const BeamCandidate& c = r.running[j];
    s->index = static_cast<int32_t>(j);
    s->tokens.push_back(c.token);
    s->pending.tokens.push_back(c.token);
    if (p.logprobs >= 0) s->pending.logprobs.push_back(static_cast<float>(c.logprob));
    s->cumulative_logprob = c.cumulative;
  }
  std::sort(rq->seqs.begin(), rq->seqs.end(),
            [](const std::unique_ptr<Sequence>& a, const std::unique_ptr<Sequence>& b) { return a->index < b->index; });
}

void ExecutorImpl::step() {
  const auto t0 = Clock::now();
  ++steps_;
  std::vector<ScheduledSeq> scheduled = schedule();
  if (scheduled.empty()) {
    publish_stats(0);
    return;
  }
  Status st = cow_error_;
  cow_error_ = Status::ok();
  if (!st.is_ok()) {
    fail_all(scheduled, st);
    publish_stats(0);
    return;
  }
  StepInput input = build_step_input(scheduled, block_size_);
  Backend* backend = runner_->backend();
  Tensor logits;
  st = runner_->forward(input, &logits);
  const int32_t rows = static_cast<int32_t>(input.logit_rows.size());
  // The sequence each logits row samples for (a sequence, then its forks).
  std::vector<Sequence*> row_seq;
  for (const ScheduledSeq& sc : scheduled) {
    if (!sc.sample) continue;
    row_seq.push_back(sc.seq);
    for (Sequence* f : sc.forks) row_seq.push_back(f);
  }
  std::vector<int32_t> ids(rows);
  std::vector<float> logprobs(rows);
  std::vector<std::vector<TokenLogprob>> tops(rows);
  std::vector<std::vector<float>> beam_rows(rows);
  if (st.is_ok() && rows > 0) {
    // Top logprobs and beam search need the raw rows before the sampler modifies them.
    const int64_t vocab = logits.dim(1);
    std::vector<float> row_host;
    for (int32_t r = 0; r < rows && st.is_ok(); ++r) {
      const bool beam = row_seq[r]->req->is_beam();
      const int32_t k = row_seq[r]->req->request.sampling.logprobs;
      if (!beam && k <= 0) continue;
      row_host.resize(static_cast<size_t>(vocab));
      st = backend->copy_d2h(row_host.data(), logits.ptr<float>() + static_cast<int64_t>(r) * vocab, vocab * 4);
      if (beam) {
        beam_rows[r] = row_host;
      } else {
        tops[r] = top_logprobs(row_host, k);
      }
    }
    sampling_.build(scheduled, runner_->spec().eos_token_ids);
    Result<SamplingBatch> sb = sampling_.upload(backend, &sampling_device_);
    if (st.is_ok()) st = sb.status();
    if (st.is_ok() && ids_device_.bytes() < static_cast<size_t>(opts_.max_num_seqs) * 8) {
      auto a = DeviceBuffer::create(backend, static_cast<size_t>(opts_.max_num_seqs) * 8);
      if (a.is_ok()) ids_device_ = std::move(a).value(); else st = a.status();
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
  int64_t generated = 0, prompt_tokens = 0;
  std::vector<std::pair<Sequence*, FinishReason>> done;
  // Beam groups: their rows, in beam order, per request (a group's rows are consecutive).
  std::vector<std::pair<RequestState*, std::vector<int32_t>>> groups;
  int32_t r = 0;
  for (const ScheduledSeq& sc : scheduled) {
    Sequence* s = sc.seq;
    if (s->num_computed < s->num_prompt) prompt_tokens += std::min(sc.num_new, s->num_prompt - s->num_computed);
    s->num_computed += sc.num_new;
    register_full_blocks(s);
    for (Sequence* f : sc.forks) {
      f->num_computed = s->num_computed;
      f->block_keys = s->block_keys;
    }
    if (!sc.sample) continue;
    if (s->req->is_beam()) {
      if (groups.empty() || groups.back().first != s->req) groups.push_back({s->req, {}});
      groups.back().second.push_back(r++);
      continue;
    }
    for (size_t i = 0; i <= sc.forks.size(); ++i, ++r) {
      Sequence* q = i == 0 ? s : sc.forks[i - 1];
      ++generated;
      const FinishReason reason = accept_token(q, ids[r], logprobs[r], std::move(tops[r]));
      if (reason != FinishReason::kNone) {
        done.push_back({q, reason});
      } else if (q->req->request.streaming) {
        emit(q);
      }
    }
  }
  for (auto& [rq, group_rows] : groups) {
    std::vector<Sequence*> beams;
    std::vector<std::vector<float>> host;
    for (int32_t row : group_rows) {
      beams.push_back(row_seq[row]);
      host.push_back(std::move(beam_rows[row]));
    }
    generated += static_cast<int64_t>(beams.size());
    beam_step(rq, beams, host);
  }
  for (auto& [s, reason] : done) finish(s, reason);
  measure_kv();
  const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  {
    std::lock_guard<std::mutex> lk(stats_mu_);
    stats_.num_steps++;
    stats_.num_generated_tokens += generated;
    stats_.num_prompt_tokens += prompt_tokens;
  }
  publish_stats(ms);
}

void ExecutorImpl::measure_kv() {
  // A block held by several sequences counts once, with the most rows any of them filled.
  block_fill_.resize(static_cast<size_t>(blocks_.num_blocks()), -1);
  std::vector<int32_t> touched;
  for (const Sequence* s : running_) {
    for (size_t i = 0; i < s->blocks.size(); ++i) {
      const int32_t b = s->blocks[i];
      const int32_t rows = std::clamp(s->num_computed - static_cast<int32_t>(i) * block_size_, 0, block_size_);
      if (block_fill_[b] < 0) touched.push_back(b);
      block_fill_[b] = std::max(block_fill_[b], rows);
    }
  }
  int64_t used = 0;
  for (int32_t b : touched) {
    used += block_fill_[b];
    block_fill_[b] = -1;
  }
  kv_slots_allocated_ = static_cast<int64_t>(touched.size()) * block_size_;
  kv_slots_used_ = used;
  kv_slots_allocated_steps_ += kv_slots_allocated_;
  kv_slots_used_steps_ += kv_slots_used_;
}

std::vector<TokenLogprob> ExecutorImpl::top_logprobs(const std::vector<float>& row, int32_t k) {
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

}  // namespace anvil
