// Backend::sample on CUDA against sample_row_reference (the CPU semantics): greedy is exactly the
// CPU argmax, seeded sampling picks the same ids for the same (seed, step) on well-separated
// distributions, penalties change the same tokens, log-probs agree to 1e-4.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>

#include "backend/cuda/ops/sample.h"
#include "cuda_test_util.h"

namespace anvil::test {
namespace {

// Host-side parameters of one batch, uploaded to the device as a SamplingBatch.
struct HostParams {
  std::vector<float> temperature, top_p, min_p, rep, pres, freq;
  std::vector<int32_t> top_k, offsets, pen_ids, pen_counts;
  std::vector<uint64_t> seeds;
  std::vector<int64_t> steps;
  bool any_penalty = false;
  bool all_greedy = false;

  explicit HostParams(int rows)
      : temperature(rows, 1.0f), top_p(rows, 1.0f), min_p(rows, 0.0f), rep(rows, 1.0f), pres(rows, 0.0f),
        freq(rows, 0.0f), top_k(rows, 0), offsets(rows + 1, 0), seeds(rows), steps(rows) {
    for (int r = 0; r < rows; ++r) {
      seeds[r] = 1000003ull * (r + 1);
      steps[r] = r * 3 + 1;
    }
  }
  SamplingBatch host_view(int rows) {
    SamplingBatch b;
    b.num_rows = rows;
    b.all_greedy = all_greedy;
    b.any_penalty = any_penalty;
    b.temperature = temperature.data();
    b.top_k = top_k.data();
    b.top_p = top_p.data();
    b.min_p = min_p.data();
    b.repetition_penalty = rep.data();
    b.presence_penalty = pres.data();
    b.frequency_penalty = freq.data();
    b.seeds = seeds.data();
    b.steps = steps.data();
    b.penalty_offsets = offsets.data();
    b.penalty_token_ids = pen_ids.empty() ? nullptr : pen_ids.data();
    b.penalty_output_counts = pen_counts.empty() ? nullptr : pen_counts.data();
    return b;
  }
};

struct DeviceParams {
  std::vector<DevBuf> bufs;
  SamplingBatch view;
  template <typename T>
  const T* up(Backend* be, const std::vector<T>& v) {
    if (v.empty()) return nullptr;
    bufs.push_back(DevBuf::of(be, v));
    return static_cast<const T*>(bufs.back().buf.get());
  }
  DeviceParams(Backend* be, HostParams& h, int rows) {
    view = h.host_view(rows);
    view.temperature = up(be, h.temperature);
    view.top_k = up(be, h.top_k);
    view.top_p = up(be, h.top_p);
    view.min_p = up(be, h.min_p);
    view.repetition_penalty = up(be, h.rep);
    view.presence_penalty = up(be, h.pres);
    view.frequency_penalty = up(be, h.freq);
    view.seeds = up(be, h.seeds);
    view.steps = up(be, h.steps);
    view.penalty_offsets = up(be, h.offsets);
    view.penalty_token_ids = up(be, h.pen_ids);
    view.penalty_output_counts = up(be, h.pen_counts);
  }
};

struct Outcome {
  std::vector<int32_t> ids;
  std::vector<float> logprobs;
};

// Which kernel path runs: the backend's default (candidates first, radix fallback) or the radix
// selects alone (candidate_cap = 0), so both paths meet the reference.
enum class Path { kDefault, kRadixOnly };

Outcome run_gpu(Backend* gpu, const std::vector<float>& logits, int rows, int64_t vocab, HostParams& h,
                Path path = Path::kDefault) {
  DeviceParams dp(gpu, h, rows);
  auto d_logits = DevBuf::of(gpu, logits);
  auto d_ids = DevBuf::poison(gpu, rows * 4);
  auto d_lp = DevBuf::poison(gpu, rows * 4);
  Status st;
  if (path == Path::kDefault) {
    st = gpu->sample(d_logits.t(DType::kF32, {rows, vocab}), dp.view, d_ids.t(DType::kI32, {rows}),
                     d_lp.t(DType::kF32, {rows}));
  } else {
    st = cuda::launch_sample(static_cast<const float*>(d_logits.buf.get()), vocab, dp.view,
                             static_cast<int32_t*>(d_ids.buf.get()), static_cast<float*>(d_lp.buf.get()),
                             static_cast<CudaBackend*>(gpu)->stream(), 0);
  }
  EXPECT_TRUE(st.is_ok()) << st.to_string();
  // The logits must come back untouched (the log-prob is taken from the raw row).
  EXPECT_EQ(d_logits.read<float>(rows * vocab), logits);
  return {d_ids.read<int32_t>(rows), d_lp.read<float>(rows)};
}

// The reference: sample_row_reference's ids; log-probs from an independent float64
// log_softmax of the raw rows (the contract: before penalties and temperature).
Outcome run_cpu(std::vector<float> logits, int rows, int64_t vocab, HostParams& h) {
  Outcome o;
  const std::vector<float> raw = logits;
  SamplingBatch b = h.host_view(rows);
  if (h.all_greedy) std::fill(h.temperature.begin(), h.temperature.end(), 0.0f);
  for (int r = 0; r < rows; ++r) {
    float lp = 0;
    const int32_t id = sample_row_reference(logits.data() + r * vocab, vocab, b, r, &lp);
    o.ids.push_back(id);
    const float* row = raw.data() + r * vocab;
    const double mx = *std::max_element(row, row + vocab);
    double sum = 0;
    for (int64_t i = 0; i < vocab; ++i) sum += std::exp(static_cast<double>(row[i]) - mx);
    o.logprobs.push_back(static_cast<float>(row[id] - mx - std::log(sum)));
  }
  return o;
}

// Logits whose sorted probabilities are well separated: a random permutation of the ranks,
// logit = -gap * rank, plus a long flat tail far below.
std::vector<float> separated_logits(int rows, int64_t vocab, uint32_t seed, int head, float gap) {
  std::mt19937 rng(seed);
  std::vector<float> l(rows * vocab);
  for (int r = 0; r < rows; ++r) {
    std::vector<int32_t> perm(vocab);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    for (int64_t i = 0; i < vocab; ++i) {
      const int64_t rank = perm[i];
      l[r * vocab + i] = rank < head ? 5.0f - gap * static_cast<float>(rank) : -30.0f - 1e-4f * static_cast<float>(rank);
    }
  }
  return l;
}

void expect_same(const Outcome& g, const Outcome& c, const char* what) {
  ASSERT_EQ(g.ids.size(), c.ids.size());
  for (size_t r = 0; r < g.ids.size(); ++r) {
    EXPECT_EQ(g.ids[r], c.ids[r]) << what << " row " << r;
    EXPECT_NEAR(g.logprobs[r], c.logprobs[r], 1e-4f + 1e-5f * std::fabs(c.logprobs[r])) << what << " row " << r;
  }
}

TEST(CudaSample, GreedyEqualsCpuArgmax) {
  ANVIL_REQUIRE_GPU();
  auto gpu = make_gpu(DType::kBF16);
  ASSERT_TRUE(gpu);
  for (int64_t vocab : {int64_t{1}, int64_t{97}, int64_t{128256}}) {
    const int rows = 9;
    auto logits = random_floats(rows * vocab, 7 + vocab, -8.0f, 8.0f);
    // A tie in row 0: the lowest id must win.
    if (vocab > 50) logits[10] = logits[40] = 100.0f;
    HostParams h(rows);
    h.all_greedy = true;
    expect_same(run_gpu(gpu.get(), logits, rows, vocab, h), run_cpu(logits, rows, vocab, h), "all_greedy");
    if (vocab > 50) {
      EXPECT_EQ(run_gpu(gpu.get(), logits, rows, vocab, h).ids[0], 10);
    }
    // Per-row greedy (temperature 0) in a sampling batch.
    HostParams h2(rows);
    std::fill(h2.temperature.begin(), h2.temperature.end(), 0.0f);
    expect_same(run_gpu(gpu.get(), logits, rows, vocab, h2), run_cpu(logits, rows, vocab, h2), "temperature 0");
  }
}

// One row (the batch-1 decode case) splits its first sweep over many blocks: ties between blocks
// still go to the lowest id, the log-prob is the whole row's, and the same launch repeated (the
// arrival counters are reset by the last block) gives the same answer. The split count itself is
// the launcher's rule.
TEST(CudaSample, SplitFirstSweepKeepsTheWholeRowAnswer) {
  ANVIL_REQUIRE_GPU();
  auto gpu = make_gpu(DType::kBF16);
  ASSERT_TRUE(gpu);
  const int64_t vocab = 128256;
  ASSERT_GT(cuda::sample_splits(vocab, 1, false, true), 16);
  EXPECT_EQ(cuda::sample_splits(vocab, 1, true, true), 1);
  EXPECT_EQ(cuda::sample_splits(vocab, 1, false, false), 1);
  EXPECT_EQ(cuda::sample_splits(vocab, 4096, false, true), 1);
  for (int rows : {1, 3}) {
    auto logits = random_floats(rows * vocab, 31 + rows, -8.0f, 8.0f);
    logits[100000] = logits[70001] = 50.0f;  // equal maxima far apart: 70001 wins
    if (rows > 1) logits[vocab + vocab - 1] = 60.0f;  // the last id of row 1
    HostParams h(rows);
    h.all_greedy = true;
    const Outcome c = run_cpu(logits, rows, vocab, h);
    EXPECT_EQ(c.ids[0], 70001);
    for (int rep = 0; rep < 3; ++rep) expect_same(run_gpu(gpu.get(), logits, rows, vocab, h), c, "split greedy");
    // Sampling rows whose draw does not sit near a mass boundary (rows 0 and 1: one or two
    // dominant ids; a flat row's draw depends on the summation order, as in every other test
    // here); row 2 stays greedy.
    HostParams h2(rows);
    for (int r = 0; r < rows; ++r) h2.temperature[r] = r < 2 ? 0.8f : 0.0f;
    const Outcome c2 = run_cpu(logits, rows, vocab, h2);
    expect_same(run_gpu(gpu.get(), logits, rows, vocab, h2), c2, "split sampling");
  }
}

TEST(CudaSample, SeededSamplingMatchesCpu) {
  ANVIL_REQUIRE_GPU();
  auto gpu = make_gpu(DType::kBF16);
  ASSERT_TRUE(gpu);
  const int rows = 48;
  for (int64_t vocab : {int64_t{1000}, int64_t{128256}}) {
    auto logits = separated_logits(rows, vocab, 11, 80, 0.1f);
    struct Filter {
      const char* name;
      float temp, top_p, min_p;
      int top_k;
    };
    const Filter filters[] = {{"plain", 1.0f, 1.0f, 0.0f, 0},      {"temp 0.7", 0.7f, 1.0f, 0.0f, 0},
                              {"top_k 50", 1.0f, 1.0f, 0.0f, 50},  {"top_p 0.8", 1.0f, 0.8f, 0.0f, 0},
                              {"min_p 0.1", 1.0f, 1.0f, 0.1f, 0},  {"all", 1.3f, 0.9f, 0.02f, 40},
                              {"top_k 1", 2.0f, 1.0f, 0.0f, 1},    {"top_p 0", 1.0f, 0.0f, 0.0f, 0}};
    for (const Filter& f : filters) {
      HostParams h(rows);
      std::fill(h.temperature.begin(), h.temperature.end(), f.temp);
      std::fill(h.top_p.begin(), h.top_p.end(), f.top_p);
      std::fill(h.min_p.begin(), h.min_p.end(), f.min_p);
      std::fill(h.top_k.begin(), h.top_k.end(), f.top_k);
      const Outcome g = run_gpu(gpu.get(), logits, rows, vocab, h);
      const Outcome c = run_cpu(logits, rows, vocab, h);
      expect_same(g, c, f.name);
      expect_same(run_gpu(gpu.get(), logits, rows, vocab, h, Path::kRadixOnly), c, f.name);
      // Same (seed, step) -> same ids, independent of the batch: run row 5 alone.
      HostParams one(1);
      one.temperature[0] = f.temp;
      one.top_p[0] = f.top_p;
      one.min_p[0] = f.min_p;
      one.top_k[0] = f.top_k;
      one.seeds[0] = h.seeds[5];
      one.steps[0] = h.steps[5];
      std::vector<float> row5(logits.begin() + 5 * vocab, logits.begin() + 6 * vocab);
      EXPECT_EQ(run_gpu(gpu.get(), row5, 1, vocab, one).ids[0], g.ids[5]) << f.name;
    }
  }
}

TEST(CudaSample, TiesAtTheTopKBoundaryFollowIdOrder) {
  ANVIL_REQUIRE_GPU();
  auto gpu = make_gpu(DType::kF16);
  ASSERT_TRUE(gpu);
  // Many equal logits: top-k cuts inside the tie group, and the draw lands among the ties.
  const int rows = 16;
  const int64_t vocab = 5000;
  std::vector<float> logits(rows * vocab, -20.0f);
  for (int r = 0; r < rows; ++r)
    for (int64_t i = 0; i < vocab; i += 7) logits[r * vocab + i] = 1.0f;
  HostParams h(rows);
  std::fill(h.top_k.begin(), h.top_k.end(), 37);
  const Outcome c = run_cpu(logits, rows, vocab, h);
  expect_same(run_gpu(gpu.get(), logits, rows, vocab, h), c, "ties");
  expect_same(run_gpu(gpu.get(), logits, rows, vocab, h, Path::kRadixOnly), c, "ties, radix");
}

TEST(CudaSample, PenaltiesChangeTheSameTokens) {
  ANVIL_REQUIRE_GPU();
  auto gpu = make_gpu(DType::kBF16);
  ASSERT_TRUE(gpu);
  const int rows = 6;
  const int64_t vocab = 128256;
  auto logits = separated_logits(rows, vocab, 21, 300, 0.04f);
  HostParams h(rows);
  h.any_penalty = true;
  std::mt19937 rng(5);
  for (int r = 0; r < rows; ++r) {
    // Penalize the row's current argmax and a spread of other tokens.
    const float* row = logits.data() + r * vocab;
    const int32_t top = static_cast<int32_t>(std::max_element(row, row + vocab) - row);
    std::vector<int32_t> ids = {top};
    for (int i = 0; i < 50 + 40 * r; ++i) {
      const int32_t id = static_cast<int32_t>(rng() % vocab);
      if (std::find(ids.begin(), ids.end(), id) == ids.end()) ids.push_back(id);
    }
    for (int32_t id : ids) {
      h.pen_ids.push_back(id);
      h.pen_counts.push_back(static_cast<int32_t>(rng() % 4));  // 0: prompt only
    }
    h.offsets[r + 1] = static_cast<int32_t>(h.pen_ids.size());
    h.rep[r] = 1.0f + 0.3f * static_cast<float>(r % 3);
    h.pres[r] = r % 2 ? 0.5f : 0.0f;
    h.freq[r] = r >= 3 ? 0.4f : 0.0f;
  }
  // Greedy first: the penalized argmax must move where the CPU moves it.
  std::fill(h.temperature.begin(), h.temperature.end(), 0.0f);
  const Outcome g = run_gpu(gpu.get(), logits, rows, vocab, h);
  expect_same(g, run_cpu(logits, rows, vocab, h), "greedy + penalties");
  int moved = 0;
  for (int r = 0; r < rows; ++r) moved += g.ids[r] != h.pen_ids[h.offsets[r]];
  EXPECT_GE(moved, 3);
  // Then sampling with filters on top of the penalties.
  std::fill(h.temperature.begin(), h.temperature.end(), 0.8f);
  std::fill(h.top_k.begin(), h.top_k.end(), 64);
  std::fill(h.top_p.begin(), h.top_p.end(), 0.95f);
  const Outcome c = run_cpu(logits, rows, vocab, h);
  expect_same(run_gpu(gpu.get(), logits, rows, vocab, h), c, "sampling + penalties");
  expect_same(run_gpu(gpu.get(), logits, rows, vocab, h, Path::kRadixOnly), c, "sampling + penalties, radix");
}

TEST(CudaSample, FlatDistributionTakesTheRadixPathAndMatches) {
  ANVIL_REQUIRE_GPU();
  auto gpu = make_gpu(DType::kBF16);
  ASSERT_TRUE(gpu);
  // 20000 tokens of nearly equal mass: more candidates than the fast path holds, so the default
  // path falls back to the radix selects. Steps of 1e-3 keep the order well defined.
  const int rows = 8;
  const int64_t vocab = 20000;
  std::vector<float> logits(rows * vocab);
  std::mt19937 rng(3);
  for (int r = 0; r < rows; ++r) {
    std::vector<int32_t> perm(vocab);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    for (int64_t i = 0; i < vocab; ++i) logits[r * vocab + i] = -1e-4f * static_cast<float>(perm[i]);
  }
  HostParams h(rows);
  std::fill(h.top_p.begin(), h.top_p.end(), 0.5f);
  const Outcome c = run_cpu(logits, rows, vocab, h);
  const Outcome g = run_gpu(gpu.get(), logits, rows, vocab, h);
  // Neighbouring tokens differ by 1e-4 in probability ratio; float and double sums over ~10^4
  // terms may differ by that much, so allow a neighbour in the sorted order (same rank +- 2).
  for (int r = 0; r < rows; ++r) {
    const float* row = logits.data() + r * vocab;
    EXPECT_NEAR(row[g.ids[r]], row[c.ids[r]], 2.5e-4f) << "row " << r;
  }
}

}  // namespace
}  // namespace anvil::test
