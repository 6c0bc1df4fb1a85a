// Quantized KV cache (fp8 e4m3 / int8, per-layer per-KV-head scales) on the CPU reference:
// the element round trip of backend.h (kv_quantize / kv_dequantize), the bytes rope_kv_write
// stores and what attention reads back, and the golden models run with an fp8 / int8 cache
// against the same model with an f32 cache. Scales come from the f32 run's per-head K/V maxima
// (amax / 127 for int8, amax / 448 for fp8), as calibration would make them.
// Tolerances (measured values in brackets; these tiny random models have large logits and are
// far more sensitive than trained ones): teacher-forced on the f32 run's tokens, last-token logits
// of 8 decode steps within relative L2 8e-2 of the f32-cache run for int8 [<= 4.7e-2] and 2.5e-1
// for fp8 [<= 1.8e-1]; top-1 equal wherever the f32 top-2 margin exceeds 0.25 (int8) / 1.5 (fp8)
// logits and in >= 23/24 (int8) / 18/24 (fp8) cases [int8 23-24, fp8 19-22]; free-running greedy
// tokens equal for 3 steps on every prompt (int8).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>

#include "backend/cpu/cpu_backend.h"
#include "backend/kv_quant.h"
#include "model/archs/arch.h"
#include "model/checkpoint/checkpoint.h"
#include "model/model_spec.h"
#include "runtime/kv_cache/block_manager.h"
#include "runtime/model_runner.h"
#include "runtime/weights.h"

namespace anvil {
namespace {

std::string model_dir(const std::string& name) { return std::string(ANVIL_SOURCE_DIR) + "/tests/golden/" + name; }

// ---- element semantics ----

TEST(KvQuant, Int8RoundsToNearestEvenAndSaturates) {
  const float s = 0.25f;
  EXPECT_EQ(static_cast<int8_t>(kv_quantize(DType::kI8, 1.0f, s)), 4);
  EXPECT_EQ(static_cast<int8_t>(kv_quantize(DType::kI8, -1.0f, s)), -4);
  EXPECT_EQ(static_cast<int8_t>(kv_quantize(DType::kI8, 0.125f, s)), 0);    // 0.5 -> 0 (even)
  EXPECT_EQ(static_cast<int8_t>(kv_quantize(DType::kI8, 0.375f, s)), 2);    // 1.5 -> 2
  EXPECT_EQ(static_cast<int8_t>(kv_quantize(DType::kI8, -0.625f, s)), -2);  // -2.5 -> -2
  EXPECT_EQ(static_cast<int8_t>(kv_quantize(DType::kI8, 0.13f, s)), 1);     // 0.52 -> 1
  EXPECT_EQ(static_cast<int8_t>(kv_quantize(DType::kI8, 100.0f, s)), 127);
  EXPECT_EQ(static_cast<int8_t>(kv_quantize(DType::kI8, -100.0f, s)), -127);  // never -128
  EXPECT_EQ(static_cast<int8_t>(kv_quantize(DType::kI8, INFINITY, s)), 127);
  // Every code round-trips exactly: dequantize(c) quantizes back to c.
  for (int c = -127; c <= 127; ++c) {
    const uint8_t b = static_cast<uint8_t>(static_cast<int8_t>(c));
    const float x = kv_dequantize(DType::kI8, b, 0.0371f);
    EXPECT_EQ(kv_quantize(DType::kI8, x, 0.0371f), b) << c;
    EXPECT_FLOAT_EQ(x, static_cast<float>(c) * 0.0371f);
  }
}

TEST(KvQuant, Fp8IsSatfiniteE4m3OfTheScaledValue) {
  const float s = 0.5f;
  for (int c = 0; c < 256; ++c) {
    const uint8_t b = static_cast<uint8_t>(c);
    if ((b & 0x7f) == 0x7f) continue;  // NaN encodings
    const float x = kv_dequantize(DType::kF8E4M3, b, s);
    EXPECT_EQ(x, f8e4m3_to_f32(b) * s);
    EXPECT_EQ(kv_quantize(DType::kF8E4M3, x, s), b) << c;  // exact round trip of every code
  }
  EXPECT_EQ(kv_quantize(DType::kF8E4M3, 1e6f, s), 0x7e);   // +448
  EXPECT_EQ(kv_quantize(DType::kF8E4M3, -1e6f, s), 0xfe);  // -448
  EXPECT_EQ(kv_quantize(DType::kF8E4M3, 3.3f, 1.0f), f32_to_f8e4m3(3.3f));
  EXPECT_EQ(kv_quantize(DType::kF8E4M3, 3.3f, 2.0f), f32_to_f8e4m3(1.65f));
}

// ---- the CPU ops: rope_kv_write stores quantize(x); attention reads code * scale ----

struct OpFixture {
  static constexpr int kT = 6, kHq = 4, kHkv = 2, kD = 16, kBs = 4, kBlocks = 3;
  std::vector<float> qkv, inv_freq, k_scale = {0.004f, 0.023f}, v_scale = {0.017f, 0.009f};
  std::vector<int32_t> positions, slots, seq_starts = {0, 2, kT}, ctx = {2, 4}, tables = {2, 0, 1, 0};
  BatchView batch;
  OpFixture() {
    std::mt19937 rng(7);
    std::uniform_real_distribution<float> u(-1.5f, 1.5f);
    qkv.resize(kT * (kHq + 2 * kHkv) * kD);
    for (float& x : qkv) x = u(rng);
    for (int i = 0; i < kD / 2; ++i) inv_freq.push_back(std::pow(10000.0f, -2.0f * i / kD));
    // seq 0: two tokens in block 2; seq 1: four tokens in blocks 1, 0 (tables row 1 = {1, 0}).
    positions = {0, 1, 0, 1, 2, 3};
    slots = {2 * kBs + 0, 2 * kBs + 1, 1 * kBs + 0, 1 * kBs + 1, 1 * kBs + 2, 1 * kBs + 3};
    batch.num_tokens = kT;
    batch.num_seqs = 2;
    batch.max_query_len = 4;
    batch.max_context_len = 4;
    batch.max_blocks_per_seq = 2;
    batch.positions = positions.data();
    batch.seq_starts = seq_starts.data();
    batch.context_lens = ctx.data();
    batch.block_tables = tables.data();
    batch.slot_map = slots.data();
  }
  KvCacheLayer layer(DType dt, void* k, void* v) const {
    KvCacheLayer kv;
    kv.k = k;
    kv.v = v;
    kv.dtype = dt;
    kv.num_blocks = kBlocks;
    kv.block_size = kBs;
    kv.num_kv_heads = kHkv;
    kv.head_dim = kD;
    if (kv_dtype_quantized(dt)) {
      kv.k_scale = k_scale.data();
      kv.v_scale = v_scale.data();
    }
    return kv;
  }
};

class KvQuantOps : public ::testing::TestWithParam<DType> {};

TEST_P(KvQuantOps, RopeKvWriteStoresCodesAndAttentionReadsThemBack) {
  const DType dt = GetParam();
  OpFixture f;
  CpuBackend cpu;
  constexpr int n = OpFixture::kBlocks * OpFixture::kHkv * OpFixture::kBs * OpFixture::kD;
  std::vector<float> kf(n, 0.0f), vf(n, 0.0f), q_f(OpFixture::kT * OpFixture::kHq * OpFixture::kD);
  std::vector<uint8_t> kq(n, 0), vq(n, 0);
  std::vector<float> q_q(q_f.size());
  const Tensor qkv(f.qkv.data(), DType::kF32, {OpFixture::kT, static_cast<int64_t>(f.qkv.size() / OpFixture::kT)});
  const Tensor inv(f.inv_freq.data(), DType::kF32, {OpFixture::kD / 2});
  const Shape qs{OpFixture::kT, OpFixture::kHq, OpFixture::kD};
  ASSERT_TRUE(cpu.rope_kv_write(qkv, Tensor(), Tensor(), 1e-6f, inv, 1.0f, f.batch, Tensor(q_f.data(), DType::kF32, qs),
                                f.layer(DType::kF32, kf.data(), vf.data()))
                  .is_ok());
  ASSERT_TRUE(cpu.rope_kv_write(qkv, Tensor(), Tensor(), 1e-6f, inv, 1.0f, f.batch, Tensor(q_q.data(), DType::kF32, qs),
                                f.layer(dt, kq.data(), vq.data()))
                  .is_ok());
  EXPECT_EQ(q_f, q_q);  // q does not depend on the cache dtype
  // Tight scales (from this data's per-head maxima) for a second write, which attention reads.
  const float range = dt == DType::kI8 ? 127.0f : 448.0f;
  std::vector<float> tight_k(OpFixture::kHkv, 0.0f), tight_v(OpFixture::kHkv, 0.0f);
  for (int i = 0; i < n; ++i) {
    const int head = (i / (OpFixture::kBs * OpFixture::kD)) % OpFixture::kHkv;
    tight_k[head] = std::max(tight_k[head], std::fabs(kf[i]) / range);
    tight_v[head] = std::max(tight_v[head], std::fabs(vf[i]) / range);
  }
  // Every written element is exactly quantize(f32 value) with its head's scale; the rest stay 0.
  int written = 0;
  for (int i = 0; i < n; ++i) {
    const int head = (i / (OpFixture::kBs * OpFixture::kD)) % OpFixture::kHkv;
    EXPECT_EQ(kq[i], kv_quantize(dt, kf[i], f.k_scale[head])) << i;
    EXPECT_EQ(vq[i], kv_quantize(dt, vf[i], f.v_scale[head])) << i;
    written += kf[i] != 0.0f;
  }
  EXPECT_EQ(written, OpFixture::kT * OpFixture::kHkv * OpFixture::kD);
  // The fixture's scales are tighter than the data for head 0: its largest K codes saturate.
  const auto top = std::count_if(kq.begin(), kq.end(), [&](uint8_t b) { return std::fabs(kv_dequantize(dt, b, 1.0f)) >= range; });
  EXPECT_GT(top, 0);
  f.k_scale = tight_k;
  f.v_scale = tight_v;
  ASSERT_TRUE(cpu.rope_kv_write(qkv, Tensor(), Tensor(), 1e-6f, inv, 1.0f, f.batch, Tensor(q_q.data(), DType::kF32, qs),
                                f.layer(dt, kq.data(), vq.data()))
                  .is_ok());

  // Attention over the codes equals attention over an f32 cache holding code * scale, exactly.
  std::vector<float> kd(n), vd(n);
  for (int i = 0; i < n; ++i) {
    const int head = (i / (OpFixture::kBs * OpFixture::kD)) % OpFixture::kHkv;
    kd[i] = kv_dequantize(dt, kq[i], f.k_scale[head]);
    vd[i] = kv_dequantize(dt, vq[i], f.v_scale[head]);
  }
  std::vector<float> out_q(q_f.size()), out_d(q_f.size()), out_f(q_f.size());
  const Tensor q(q_f.data(), DType::kF32, qs);
  const float scale = 0.25f;
  ASSERT_TRUE(cpu.attention(q, f.layer(dt, kq.data(), vq.data()), f.batch, scale, Tensor(out_q.data(), DType::kF32, qs)).is_ok());
  ASSERT_TRUE(cpu.attention(q, f.layer(DType::kF32, kd.data(), vd.data()), f.batch, scale, Tensor(out_d.data(), DType::kF32, qs)).is_ok());
  ASSERT_TRUE(cpu.attention(q, f.layer(DType::kF32, kf.data(), vf.data()), f.batch, scale, Tensor(out_f.data(), DType::kF32, qs)).is_ok());
  EXPECT_EQ(out_q, out_d);
  // ... and is close to, but not the same as, the f32 cache's result.
  double num = 0, den = 0;
  for (size_t i = 0; i < out_f.size(); ++i) {
    num += (out_q[i] - out_f[i]) * (out_q[i] - out_f[i]);
    den += out_f[i] * out_f[i];
  }
  EXPECT_GT(num, 0.0);
  std::printf("[kv_quant] %s attention vs f32 cache: rel L2 %.2e\n", std::string(dtype_name(dt)).c_str(), std::sqrt(num / den));
  EXPECT_LT(std::sqrt(num / den), dt == DType::kI8 ? 1e-2 : 5e-2);
}

TEST_P(KvQuantOps, MissingScalesAreAnError) {
  OpFixture f;
  CpuBackend cpu;
  std::vector<uint8_t> k(4096), v(4096);
  KvCacheLayer kv = f.layer(GetParam(), k.data(), v.data());
  kv.v_scale = nullptr;
  std::vector<float> q(OpFixture::kT * OpFixture::kHq * OpFixture::kD, 0.1f), out(q.size());
  const Shape qs{OpFixture::kT, OpFixture::kHq, OpFixture::kD};
  const Status st = cpu.attention(Tensor(q.data(), DType::kF32, qs), kv, f.batch, 1.0f, Tensor(out.data(), DType::kF32, qs));
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.to_string().find("v_scale"), std::string::npos) << st.to_string();
}

INSTANTIATE_TEST_SUITE_P(Dtypes, KvQuantOps, ::testing::Values(DType::kI8, DType::kF8E4M3),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

// ---- golden models with a quantized cache ----

struct Model {
  ModelDefinition def;
  std::vector<std::vector<float>> data;  // f32 host weights, in def.weights order
};

Model read_model(const std::string& name) {
  Model m;
  auto spec = load_model_config(model_dir(name));
  EXPECT_TRUE(spec.is_ok()) << spec.status().to_string();
  auto def = define_model(*spec);
  EXPECT_TRUE(def.is_ok()) << def.status().to_string();
  m.def = std::move(def).value();
  auto ckpt = Checkpoint::open(model_dir(name));
  EXPECT_TRUE(ckpt.is_ok()) << ckpt.status().to_string();
  std::set<std::string> used;
  for (const WeightSource& ws : m.def.weights) {
    auto w = gather_weight_f32(m.def, ws, *ckpt, &used);
    EXPECT_TRUE(w.is_ok()) << w.status().to_string();
    m.data.push_back(std::move(w).value());
  }
  return m;
}

// The model's weights plus per-layer KV scales (empty: none) as one WeightStore.
WeightStore make_store(const Model& m, const std::vector<std::vector<float>>& scales, Backend* be) {
  std::vector<HostWeight> host;
  for (size_t i = 0; i < m.def.weights.size(); ++i) {
    const WeightSource& ws = m.def.weights[i];
    host.push_back({ws.name, DType::kF32, ws.shape, m.data[i].data(), m.data[i].size() * sizeof(float)});
  }
  for (size_t i = 0; i < scales.size(); ++i) {
    const std::string name = "layers." + std::to_string(i / 2) + (i % 2 == 0 ? ".attn.k_scale" : ".attn.v_scale");
    host.push_back({name, DType::kF32, Shape{static_cast<int64_t>(scales[i].size())}, scales[i].data(),
                    scales[i].size() * sizeof(float)});
  }
  auto st = WeightStore::from_host(host, be);
  EXPECT_TRUE(st.is_ok()) << st.status().to_string();
  return std::move(st).value();
}

RunnerOptions options(std::optional<DType> kv) {
  RunnerOptions o;
  o.max_num_tokens = 128;
  o.max_num_seqs = 4;
  o.block_size = 4;
  o.num_kv_blocks = 160;
  o.kv_dtype = kv;
  return o;
}

struct Generated {
  std::vector<std::vector<float>> logits;  // per step: [num_seqs * vocab]
  std::vector<std::vector<int32_t>> tokens;  // per sequence: generated
};

// All prompts prefilled together, then `steps` decode steps. Each step records the greedy token
// (argmax, lowest id on ties) and feeds it back, or feeds force->tokens instead when given
// (teacher forcing: both runs then see the same contexts).
Generated generate(ModelRunner& r, const std::vector<std::vector<int32_t>>& prompts, int steps,
                   const Generated* force = nullptr) {
  Generated out;
  const int32_t bs = r.options().block_size;
  BlockManager alloc(r.kv_cache().num_blocks(), bs);
  std::vector<std::vector<int32_t>> toks = prompts, blocks(prompts.size());
  std::vector<int32_t> cached(prompts.size(), 0);
  out.tokens.resize(prompts.size());
  const int64_t vocab = r.spec().vocab_size;
  for (int k = 0; k < steps; ++k) {
    StepInput s;
    s.seq_starts.push_back(0);
    for (size_t i = 0; i < toks.size(); ++i) {
      const int32_t total = static_cast<int32_t>(toks[i].size());
      while (static_cast<int32_t>(blocks[i].size()) * bs < total) blocks[i].push_back(alloc.allocate());
      for (int32_t p = cached[i]; p < total; ++p) {
        if (p == total - 1) s.logit_rows.push_back(static_cast<int32_t>(s.token_ids.size()));
        s.token_ids.push_back(toks[i][p]);
        s.positions.push_back(p);
        s.slot_map.push_back(blocks[i][p / bs] * bs + p % bs);
      }
      s.seq_starts.push_back(static_cast<int32_t>(s.token_ids.size()));
      s.context_lens.push_back(total);
      s.block_tables.push_back(blocks[i]);
      cached[i] = total;
    }
    Tensor logits;
    const Status st = r.forward(s, &logits);
    EXPECT_TRUE(st.is_ok()) << st.to_string();
    if (!st.is_ok()) return out;
    std::vector<float> host(static_cast<size_t>(logits.numel()));
    EXPECT_TRUE(r.backend()->copy_d2h(host.data(), logits.data, logits.nbytes()).is_ok());
    for (size_t i = 0; i < toks.size(); ++i) {
      const float* row = host.data() + i * vocab;
      const int32_t best = static_cast<int32_t>(std::max_element(row, row + vocab) - row);
      toks[i].push_back(force ? force->tokens[i][k] : best);
      out.tokens[i].push_back(best);
    }
    out.logits.push_back(std::move(host));
  }
  return out;
}

double rel_l2(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
    den += static_cast<double>(b[i]) * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

// Per layer: {k amax per head, v amax per head} over every slot of the f32 cache (unused slots
// are zero), divided into scales for `dt`.
std::vector<std::vector<float>> scales_from(ModelRunner& r, DType dt) {
  const float range = dt == DType::kI8 ? 127.0f : 448.0f;
  std::vector<std::vector<float>> out;
  for (int64_t l = 0; l < r.spec().num_layers; ++l) {
    const KvCacheLayer& kv = r.kv_cache().layer(static_cast<int>(l));
    for (const void* pool : {kv.k, kv.v}) {
      std::vector<float> amax(kv.num_kv_heads, 0.0f);
      const float* p = static_cast<const float*>(pool);
      const size_t per_head = static_cast<size_t>(kv.block_size) * kv.head_dim;
      for (size_t i = 0; i < static_cast<size_t>(kv.num_blocks) * kv.num_kv_heads * per_head; ++i) {
        float& m = amax[(i / per_head) % kv.num_kv_heads];
        m = std::max(m, std::fabs(p[i]));
      }
      for (float& m : amax) m = std::max(m, 1e-6f) / range;
      out.push_back(amax);
    }
  }
  return out;
}

// Top-1 minus top-2 logit of sequence i at step k.
double margin(const Generated& g, int k, size_t i, int64_t vocab) {
  std::vector<float> row(g.logits[k].begin() + static_cast<int64_t>(i) * vocab,
                         g.logits[k].begin() + static_cast<int64_t>(i + 1) * vocab);
  std::partial_sort(row.begin(), row.begin() + 2, row.end(), std::greater<float>());
  return row[0] - row[1];
}

class KvQuantGolden : public ::testing::TestWithParam<const char*> {};

TEST_P(KvQuantGolden, LogitsCloseAndGreedyTokensEqual) {
  std::ifstream in(model_dir(GetParam()) + "/golden.json");
  const nlohmann::json meta = nlohmann::json::parse(in);
  std::vector<std::vector<int32_t>> prompts;
  for (const auto& p : meta["prompts"]) prompts.push_back(p.get<std::vector<int32_t>>());
  const auto& greedy = meta["greedy"];
  constexpr int kSteps = 8, kGreedySteps = 3;
  constexpr double kTolI8 = 8e-2, kTolFp8 = 2.5e-1;   // logits rel L2 (measured <= 4.7e-2 / 1.8e-1)
  constexpr double kMarginI8 = 0.25, kMarginFp8 = 1.5;  // f32 top-2 margins above which top-1 must agree
  CpuBackend cpu;
  const Model m = read_model(GetParam());
  const int64_t vocab = m.def.spec.vocab_size;

  auto base = ModelRunner::create(&cpu, m.def, make_store(m, {}, &cpu), options(std::nullopt));
  ASSERT_TRUE(base.is_ok()) << base.status().to_string();
  EXPECT_EQ((*base)->kv_cache().dtype(), DType::kF32);
  const Generated ref = generate(**base, prompts, kSteps);
  ASSERT_EQ(ref.logits.size(), static_cast<size_t>(kSteps));
  for (size_t i = 0; i < prompts.size(); ++i) {
    const auto want = greedy[i].get<std::vector<int32_t>>();
    ASSERT_EQ(ref.tokens[i], std::vector<int32_t>(want.begin(), want.begin() + kSteps)) << "f32 cache, prompt " << i;
  }

  for (const DType dt : {DType::kI8, DType::kF8E4M3}) {
    const std::string what = std::string(GetParam()) + " " + std::string(dtype_name(dt));
    auto r = ModelRunner::create(&cpu, m.def, make_store(m, scales_from(**base, dt), &cpu), options(dt));
    ASSERT_TRUE(r.is_ok()) << what << ": " << r.status().to_string();
    ASSERT_EQ((*r)->kv_cache().dtype(), dt);
    ASSERT_EQ((*r)->kv_cache().layer(0).dtype, dt);
    ASSERT_NE((*r)->kv_cache().layer(0).k_scale, nullptr);
    // Teacher-forced on the f32 run's tokens: every step sees the same context in both runs.
    const Generated forced = generate(**r, prompts, kSteps, &ref);
    ASSERT_EQ(forced.logits.size(), static_cast<size_t>(kSteps)) << what;
    const double tol = dt == DType::kI8 ? kTolI8 : kTolFp8;
    const double min_margin = dt == DType::kI8 ? kMarginI8 : kMarginFp8;
    double worst = 0;
    int agree = 0, total = 0;
    for (int k = 0; k < kSteps; ++k) {
      const double e = rel_l2(forced.logits[k], ref.logits[k]);
      worst = std::max(worst, e);
      EXPECT_LT(e, tol) << what << " step " << k;
      for (size_t i = 0; i < prompts.size(); ++i) {
        agree += forced.tokens[i][k] == ref.tokens[i][k];
        // A flip is allowed only where the f32 run nearly tied.
        if (margin(ref, k, i, vocab) > min_margin) {
          EXPECT_EQ(forced.tokens[i][k], ref.tokens[i][k]) << what << " step " << k;
        }
        ++total;
      }
    }
    EXPECT_GT(worst, 0.0) << what << ": a quantized cache that changes nothing is not quantizing";
    EXPECT_GE(agree, dt == DType::kI8 ? total - 1 : total * 3 / 4) << what << ": top-1 agreement";
    // Free-running greedy decoding (int8): the f32 run's first kGreedySteps tokens on every
    // prompt. (fp8 is held to the margin-gated top-1 check above only: on these models its logit
    // error is about the size of the f32 top-2 margins of the first steps.)
    if (dt == DType::kI8) {
      const Generated free = generate(**r, prompts, kGreedySteps);
      for (size_t i = 0; i < prompts.size(); ++i) {
        EXPECT_EQ(free.tokens[i], std::vector<int32_t>(ref.tokens[i].begin(), ref.tokens[i].begin() + kGreedySteps))
            << what << " prompt " << i;
      }
    }
    std::printf("[kv_quant] %s: last-token logits rel L2 (teacher-forced, %d steps) worst %.2e (tolerance %.1e); "
                "top-1 agreement %d/%d\n",
                what.c_str(), kSteps, worst, tol, agree, total);
  }
}

INSTANTIATE_TEST_SUITE_P(Models, KvQuantGolden, ::testing::Values("llama3_gqa", "qwen3", "mistral"));

// ---- runner options and errors ----

TEST(KvQuantRunner, MissingScaleWeightIsAClearError) {
  CpuBackend cpu;
  const Model m = read_model("llama3_gqa");
  const int64_t layers = m.def.spec.num_layers, hkv = m.def.spec.num_kv_heads;
  auto none = ModelRunner::create(&cpu, m.def, make_store(m, {}, &cpu), options(DType::kI8));
  ASSERT_FALSE(none.is_ok());
  EXPECT_NE(none.status().to_string().find("layers.0.attn.k_scale"), std::string::npos) << none.status().to_string();
  // All scales but the last layer's v_scale.
  std::vector<std::vector<float>> scales(static_cast<size_t>(2 * layers - 1), std::vector<float>(hkv, 0.01f));
  auto partial = ModelRunner::create(&cpu, m.def, make_store(m, scales, &cpu), options(DType::kF8E4M3));
  ASSERT_FALSE(partial.is_ok());
  EXPECT_NE(partial.status().to_string().find("layers." + std::to_string(layers - 1) + ".attn.v_scale"), std::string::npos)
      << partial.status().to_string();
  // Wrong shape and non-positive values are named too.
  scales.push_back(std::vector<float>(hkv + 1, 0.01f));
  auto shape = ModelRunner::create(&cpu, m.def, make_store(m, scales, &cpu), options(DType::kI8));
  ASSERT_FALSE(shape.is_ok());
  EXPECT_NE(shape.status().to_string().find("must be f32"), std::string::npos) << shape.status().to_string();
  scales.back() = std::vector<float>(hkv, 0.0f);
  auto zero = ModelRunner::create(&cpu, m.def, make_store(m, scales, &cpu), options(DType::kI8));
  ASSERT_FALSE(zero.is_ok());
  EXPECT_NE(zero.status().to_string().find("positive"), std::string::npos) << zero.status().to_string();
  // An unquantized dtype other than the compute dtype is refused.
  auto bf16 = ModelRunner::create(&cpu, m.def, make_store(m, {}, &cpu), options(DType::kBF16));
  ASSERT_FALSE(bf16.is_ok());
  EXPECT_NE(bf16.status().to_string().find("bf16"), std::string::npos) << bf16.status().to_string();
}

TEST(KvQuantRunner, MemoryBudgetCountsOneBytePerElement) {
  CpuBackend cpu;
  const Model m = read_model("llama3_gqa");
  const ModelSpec& spec = m.def.spec;
  std::vector<std::vector<float>> scales(static_cast<size_t>(2 * spec.num_layers),
                                         std::vector<float>(spec.num_kv_heads, 0.01f));
  EXPECT_EQ(KvCache::bytes_per_block(spec, 4, DType::kI8) * 4, KvCache::bytes_per_block(spec, 4, DType::kF32));
  EXPECT_EQ(KvCache::bytes_per_block(spec, 4, DType::kF8E4M3), KvCache::bytes_per_block(spec, 4, DType::kI8));
  auto opts = [&](std::optional<DType> kv) {
    RunnerOptions o = options(kv);
    o.num_kv_blocks = 0;                                             // from the budget
    o.max_num_seqs = 64;                                             // so the per-sequence cap stays out of the way
    o.max_kv_bytes = 40 * KvCache::bytes_per_block(spec, 4, DType::kF32);  // 40 f32 blocks
    return o;
  };
  auto f32 = ModelRunner::create(&cpu, m.def, make_store(m, {}, &cpu), opts(std::nullopt));
  auto i8 = ModelRunner::create(&cpu, m.def, make_store(m, scales, &cpu), opts(DType::kI8));
  ASSERT_TRUE(f32.is_ok()) << f32.status().to_string();
  ASSERT_TRUE(i8.is_ok()) << i8.status().to_string();
  EXPECT_EQ((*f32)->kv_cache().num_blocks(), 40);
  EXPECT_EQ((*i8)->kv_cache().num_blocks(), 160);  // four times the tokens in the same bytes
}

}  // namespace
}  // namespace anvil
