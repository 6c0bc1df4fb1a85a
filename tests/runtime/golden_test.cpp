// Golden tests: the CPU backend against HF transformers on the tiny seeded models of
// tests/golden/ (made by tools/golden/make_golden.py). Tolerances: fp32 logits and hidden states
// within 1e-4 relative (‖a-b‖ / ‖b‖ and max|a-b| / max|b|; HF's own fp32-vs-fp64 error is ~1e-6),
// greedy tokens equal, and every decode step's logits (KV cache path) within 1e-4 too.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "backend/cpu/cpu_backend.h"
#include "model/checkpoint/checkpoint.h"
#include "runtime/kv_cache/block_manager.h"
#include "runtime/model_loader.h"

namespace anvil {
namespace {

const char* kModels[] = {"llama3_gqa", "llama2_mha", "mistral", "qwen2", "qwen3"};

struct Golden {
  nlohmann::json meta;
  std::unique_ptr<SafetensorsFile> tensors;
  std::vector<float> get(const std::string& name, Shape* shape = nullptr) const {
    auto it = tensors->tensors().find(name);
    if (it == tensors->tensors().end()) return {};
    const Tensor& v = it->second.view;
    if (shape) *shape = v.shape;
    std::vector<float> out(static_cast<size_t>(v.numel()));
    convert_to_f32(v.dtype, v.data, out.data(), out.size());
    return out;
  }
};

std::string model_dir(const std::string& name) { return std::string(ANVIL_SOURCE_DIR) + "/tests/golden/" + name; }

Golden load_golden(const std::string& name) {
  Golden g;
  std::ifstream in(model_dir(name) + "/golden.json");
  g.meta = nlohmann::json::parse(in);
  auto f = SafetensorsFile::open(model_dir(name) + "/golden.safetensors");
  EXPECT_TRUE(f.is_ok()) << f.status().to_string();
  g.tensors = std::move(f).value();
  return g;
}

// Relative error both as a norm ratio and as max-abs over max-abs.
double rel_err(const float* a, const float* b, size_t n) {
  double num = 0, den = 0, max_diff = 0, max_ref = 0;
  for (size_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(a[i]) - b[i];
    num += d * d;
    den += static_cast<double>(b[i]) * b[i];
    max_diff = std::max(max_diff, std::fabs(d));
    max_ref = std::max(max_ref, std::fabs(static_cast<double>(b[i])));
    if (std::isnan(a[i])) return INFINITY;
  }
  return std::max(std::sqrt(num / std::max(den, 1e-30)), max_diff / std::max(max_ref, 1e-30));
}

struct Seq {
  std::vector<int32_t> tokens;  // all tokens so far
  std::vector<int32_t> blocks;
  int32_t cached = 0;  // tokens already in the KV cache
};

class GoldenCpu : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    RunnerOptions o;
    o.max_num_tokens = 128;
    o.max_num_seqs = 4;
    o.max_logit_rows = 128;
    o.block_size = 4;  // small blocks: several per sequence, so paging is exercised
    o.num_kv_blocks = 160;
    auto r = load_model(model_dir(GetParam()), &backend_, o);
    ASSERT_TRUE(r.is_ok()) << r.status().to_string();
    runner_ = std::move(r).value();
    golden_ = load_golden(GetParam());
  }

  // Builds a step for `seqs`, each contributing its uncached tokens; logits for every new token
  // when all_rows, else the last of each.
  StepInput make_step(std::vector<Seq*> seqs, BlockManager& alloc, bool all_rows) {
    StepInput s;
    s.seq_starts.push_back(0);
    const int32_t bs = runner_->options().block_size;
    for (Seq* q : seqs) {
      const int32_t total = static_cast<int32_t>(q->tokens.size());
      while (static_cast<int32_t>(q->blocks.size()) * bs < total) q->blocks.push_back(alloc.allocate());
      for (int32_t p = q->cached; p < total; ++p) {
        if (all_rows || p == total - 1) s.logit_rows.push_back(static_cast<int32_t>(s.token_ids.size()));
        s.token_ids.push_back(q->tokens[p]);
        s.positions.push_back(p);
        s.slot_map.push_back(q->blocks[p / bs] * bs + p % bs);
      }
      s.seq_starts.push_back(static_cast<int32_t>(s.token_ids.size()));
      s.context_lens.push_back(total);
      s.block_tables.push_back(q->blocks);
      q->cached = total;
    }
    return s;
  }

  std::vector<float> logits_host(const Tensor& t) {
    std::vector<float> v(static_cast<size_t>(t.numel()));
    EXPECT_TRUE(backend_.copy_d2h(v.data(), t.data, t.nbytes()).is_ok());
    return v;
  }

  CpuBackend backend_;
  std::unique_ptr<ModelRunner> runner_;
  Golden golden_;
};

TEST_P(GoldenCpu, PrefillLogitsAndHiddenStates) {
  const int64_t layers = runner_->spec().num_layers, hidden = runner_->spec().hidden_size;
  const int64_t vocab = runner_->spec().vocab_size;
  std::set<std::string> names = {"final_norm"};
  for (int64_t i = 0; i < layers; ++i) names.insert("hidden." + std::to_string(i));
  runner_->set_dump_names(names);
  const auto& prompts = golden_.meta["prompts"];
  for (size_t p = 0; p < prompts.size(); ++p) {
    BlockManager alloc(runner_->kv_cache().num_blocks(), runner_->options().block_size);
    Seq seq;
    seq.tokens = prompts[p].get<std::vector<int32_t>>();
    StepInput step = make_step({&seq}, alloc, true);
    Tensor logits;
    ASSERT_TRUE(runner_->forward(step, &logits).is_ok());
    const std::string pre = "prompt" + std::to_string(p) + ".";
    auto want = golden_.get(pre + "logits");
    auto got = logits_host(logits);
    ASSERT_EQ(got.size(), want.size());
    EXPECT_LT(rel_err(got.data(), want.data(), want.size()), 1e-4) << GetParam() << " prompt " << p;
    auto hs = golden_.get(pre + "hidden_states");
    const size_t n = seq.tokens.size() * hidden;
    for (int64_t i = 0; i <= layers; ++i) {
      const std::string name = i < layers ? "hidden." + std::to_string(i) : "final_norm";
      ASSERT_TRUE(runner_->dumps().count(name)) << name;
      const auto& d = runner_->dumps().at(name).data;
      ASSERT_EQ(d.size(), n);
      EXPECT_LT(rel_err(d.data(), hs.data() + i * n, n), 1e-4) << GetParam() << " prompt " << p << " " << name;
    }
    (void)vocab;
  }
}

TEST_P(GoldenCpu, GreedyDecodeMatchesHfBatched) {
  // All prompts run together: one mixed prefill step, then batched decode steps, with the
  // blocks of the sequences interleaved in the pool (fragmented block tables).
  const int64_t vocab = runner_->spec().vocab_size;
  const auto& prompts = golden_.meta["prompts"];
  const auto& greedy = golden_.meta["greedy"];
  const int steps = golden_.meta["max_new_tokens"].get<int>();
  auto want_logits = golden_.get("prompt0.greedy_logits");
  BlockManager alloc(runner_->kv_cache().num_blocks(), runner_->options().block_size);
  std::vector<Seq> seqs(prompts.size());
  std::vector<Seq*> ptrs;
  for (size_t i = 0; i < prompts.size(); ++i) {
    seqs[i].tokens = prompts[i].get<std::vector<int32_t>>();
    ptrs.push_back(&seqs[i]);
  }
  std::vector<std::vector<int32_t>> generated(prompts.size());
  for (int k = 0; k < steps; ++k) {
    StepInput step = make_step(ptrs, alloc, false);
    Tensor logits;
    ASSERT_TRUE(runner_->forward(step, &logits).is_ok());
    auto host = logits_host(logits);
    EXPECT_LT(rel_err(host.data(), want_logits.data() + k * vocab, vocab), 1e-4) << GetParam() << " step " << k;
    // Greedy through the backend's sampler (temperature 0).
    SamplingBatch sb;
    sb.num_rows = static_cast<int32_t>(ptrs.size());
    std::vector<int32_t> ids(ptrs.size());
    ASSERT_TRUE(backend_.sample(logits, sb, Tensor(ids.data(), DType::kI32, {sb.num_rows}), Tensor()).is_ok());
    for (size_t i = 0; i < ptrs.size(); ++i) {
      generated[i].push_back(ids[i]);
      ptrs[i]->tokens.push_back(ids[i]);
    }
  }
  for (size_t i = 0; i < prompts.size(); ++i) EXPECT_EQ(generated[i], greedy[i].get<std::vector<int32_t>>()) << GetParam() << " prompt " << i;
}

INSTANTIATE_TEST_SUITE_P(Models, GoldenCpu, ::testing::ValuesIn(kModels));

}  // namespace
}  // namespace anvil
