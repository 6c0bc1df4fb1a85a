// Helpers of the quantization tests: all-position logits of one prefill, and the accuracy
// measures the gates use (mean KL divergence of the next-token distributions against a
// reference, top-1 agreement, perplexity of the sequence's own next tokens).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "runtime/model_runner.h"

namespace anvil::test {

// Logits [ids.size(), vocab] of one prefill of `ids` with a logit row at every position.
inline std::vector<float> prefill_logits(ModelRunner& r, const std::vector<int32_t>& ids) {
  const int32_t bs = r.options().block_size;
  const int32_t t = static_cast<int32_t>(ids.size());
  StepInput s;
  s.token_ids = ids;
  s.seq_starts = {0, t};
  s.context_lens = {t};
  std::vector<int32_t> table;
  for (int32_t b = 0; b * bs < t; ++b) table.push_back(b);
  s.block_tables = {table};
  for (int32_t p = 0; p < t; ++p) {
    s.positions.push_back(p);
    s.slot_map.push_back(p);
    s.logit_rows.push_back(p);
  }
  Tensor logits;
  Status st = r.forward(s, &logits);
  EXPECT_TRUE(st.is_ok()) << st.to_string();
  if (!st.is_ok()) return {};
  std::vector<float> host(static_cast<size_t>(logits.numel()));
  EXPECT_TRUE(r.backend()->copy_d2h(host.data(), logits.data, logits.nbytes()).is_ok());
  return host;
}

struct Accuracy {
  double kl = 0;          // mean over positions of KL(ref || test), nats
  double top1 = 0;        // fraction of positions whose argmax agrees
  double ppl_ref = 0;     // perplexity of ids[1:] under the reference
  double ppl = 0;         // ... and under the model tested
  double ppl_delta() const { return ppl / ppl_ref - 1.0; }
};

inline void log_softmax(const float* x, int64_t v, std::vector<double>* out) {
  out->resize(static_cast<size_t>(v));
  double mx = -INFINITY;
  for (int64_t i = 0; i < v; ++i) mx = std::max(mx, static_cast<double>(x[i]));
  double sum = 0;
  for (int64_t i = 0; i < v; ++i) sum += std::exp(x[i] - mx);
  const double lse = mx + std::log(sum);
  for (int64_t i = 0; i < v; ++i) (*out)[i] = x[i] - lse;
}

// ref / got: [ids.size(), vocab].
inline Accuracy compare_logits(const std::vector<float>& ref, const std::vector<float>& got, const std::vector<int32_t>& ids,
                               int64_t vocab) {
  Accuracy a;
  const int64_t t = static_cast<int64_t>(ids.size());
  EXPECT_EQ(ref.size(), static_cast<size_t>(t * vocab));
  EXPECT_EQ(got.size(), ref.size());
  if (got.size() != ref.size() || ref.size() != static_cast<size_t>(t * vocab)) return a;
  std::vector<double> lp, lq;
  double nll_ref = 0, nll = 0;
  for (int64_t p = 0; p < t; ++p) {
    log_softmax(ref.data() + p * vocab, vocab, &lp);
    log_softmax(got.data() + p * vocab, vocab, &lq);
    double kl = 0;
    for (int64_t v = 0; v < vocab; ++v) kl += std::exp(lp[v]) * (lp[v] - lq[v]);
    a.kl += kl;
    const auto am = [&](const std::vector<double>& x) { return std::max_element(x.begin(), x.end()) - x.begin(); };
    a.top1 += am(lp) == am(lq);
    if (p + 1 < t) {
      nll_ref -= lp[ids[p + 1]];
      nll -= lq[ids[p + 1]];
    }
  }
  a.kl /= static_cast<double>(t);
  a.top1 /= static_cast<double>(t);
  a.ppl_ref = std::exp(nll_ref / static_cast<double>(t - 1));
  a.ppl = std::exp(nll / static_cast<double>(t - 1));
  return a;
}

// Deterministic pseudo-random token ids (tests on the golden models, which have no tokenizer).
inline std::vector<int32_t> random_tokens(int64_t n, int64_t vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> d(0, static_cast<int32_t>(vocab - 1));
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (int32_t& x : ids) x = d(rng);
  return ids;
}

}  // namespace anvil::test
