// BeamSearch (beam_search.h). Per step: O(beams * vocab * log K) for the per-beam top K, then a
// sort of beams * K candidates; everything in double so equal inputs give equal choices.
#include "executor/beam_search.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace anvil {
namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

bool better(const BeamCandidate& a, const BeamCandidate& b) {
  if (a.cumulative != b.cumulative) return a.cumulative > b.cumulative;
  if (a.parent != b.parent) return a.parent < b.parent;
  return a.token < b.token;
}

}  // namespace

std::vector<double> log_softmax(const float* logits, int64_t vocab) {
  double mx = kNegInf;
  for (int64_t v = 0; v < vocab; ++v) mx = std::max(mx, static_cast<double>(logits[v]));
  double sum = 0;
  for (int64_t v = 0; v < vocab; ++v) sum += std::exp(static_cast<double>(logits[v]) - mx);
  const double lse = mx + std::log(sum);
  std::vector<double> out(static_cast<size_t>(vocab));
  for (int64_t v = 0; v < vocab; ++v) out[v] = static_cast<double>(logits[v]) - lse;
  return out;
}

BeamSearch::BeamSearch(const SamplingParams& p, std::vector<int32_t> stop_ids, int32_t max_tokens)
    : width_(std::max(1, p.beam_width)),
      length_penalty_(p.length_penalty),
      early_(p.early_stopping),
      min_tokens_(p.min_tokens),
      max_tokens_(max_tokens),
      stop_ids_(std::move(stop_ids)) {
  std::sort(stop_ids_.begin(), stop_ids_.end());
  stop_ids_.erase(std::unique(stop_ids_.begin(), stop_ids_.end()), stop_ids_.end());
}

void BeamSearch::reset() {
  finished_.clear();
  improvable_ = true;
}

BeamStepResult BeamSearch::step(const std::vector<BeamInput>& beams, int64_t vocab, int32_t num_generated) {
  BeamStepResult result;
  const bool ban = num_generated < min_tokens_;
  auto is_stop_id = [&](int32_t t) { return std::binary_search(stop_ids_.begin(), stop_ids_.end(), t); };
  const int64_t k_total =
      std::min<int64_t>(static_cast<int64_t>(width_) * (1 + static_cast<int64_t>(stop_ids_.size())),
                        static_cast<int64_t>(beams.size()) * vocab);
  const int64_t k_row = std::min<int64_t>(k_total, vocab);

  std::vector<BeamCandidate> cands;
  std::vector<int32_t> idx(static_cast<size_t>(vocab));
  for (size_t b = 0; b < beams.size(); ++b) {
    const double* row = beams[b].row;
    auto value = [&](int32_t v) { return ban && is_stop_id(v) ? kNegInf : row[v]; };
    for (int64_t v = 0; v < vocab; ++v) idx[v] = static_cast<int32_t>(v);
    std::partial_sort(idx.begin(), idx.begin() + k_row, idx.end(), [&](int32_t x, int32_t y) {
      const double a = value(x), c = value(y);
      return a != c ? a > c : x < y;
    });
    for (int64_t i = 0; i < k_row; ++i) {
      const double lp = value(idx[i]);
      if (!std::isfinite(lp)) break;  // banned (or -inf logit): never a continuation
      cands.push_back({static_cast<int32_t>(b), idx[i], lp, beams[b].cumulative + lp});
    }
  }
  std::sort(cands.begin(), cands.end(), better);
  if (static_cast<int64_t>(cands.size()) > k_total) cands.resize(static_cast<size_t>(k_total));

  const int32_t generated = num_generated + 1;
  auto stops = [&](const BeamCandidate& c) { return is_stop_id(c.token) || generated >= max_tokens_; };
  for (const BeamCandidate& c : cands) {
    if (static_cast<int32_t>(result.running.size()) == width_) break;
    if (!stops(c)) result.running.push_back(c);
  }

  // Only the first `width` candidates may finish; none once the set is closed.
  const bool full_and_early = static_cast<int32_t>(finished_.size()) == width_ && early_ == EarlyStopping::kTrue;
  if (improvable_ && !full_and_early) {
    const double norm = std::pow(static_cast<double>(generated), length_penalty_);
    for (size_t i = 0; i < cands.size() && static_cast<int32_t>(i) < width_; ++i) {
      const BeamCandidate& c = cands[i];
      if (!stops(c)) continue;
      BeamHypothesis h;
      h.tokens = *beams[c.parent].tokens;
      h.tokens.push_back(c.token);
      if (beams[c.parent].logprobs) h.logprobs = *beams[c.parent].logprobs;
      h.logprobs.push_back(static_cast<float>(c.logprob));
      h.cumulative = c.cumulative;
      h.score = c.cumulative / norm;
      h.by_stop = is_stop_id(c.token);
      finished_.push_back(std::move(h));
    }
    // Earlier hypotheses first on equal scores.
    std::stable_sort(finished_.begin(), finished_.end(),
                     [](const BeamHypothesis& a, const BeamHypothesis& b) { return a.score > b.score; });
    if (static_cast<int32_t>(finished_.size()) > width_) finished_.resize(static_cast<size_t>(width_));
  }

  const bool full = static_cast<int32_t>(finished_.size()) == width_;
  if (improvable_) {
    const double len = early_ == EarlyStopping::kNever && length_penalty_ > 0.0 ? max_tokens_ : generated;
    const double best_possible =
        result.running.empty() ? kNegInf : result.running.front().cumulative / std::pow(len, length_penalty_);
    const double worst_finished = full ? finished_.back().score : -1.0e9;
    if (!(best_possible > worst_finished)) improvable_ = false;
  }
  result.done = !improvable_ || (full && early_ == EarlyStopping::kTrue) || result.running.empty();
  return result;
}

}  // namespace anvil
