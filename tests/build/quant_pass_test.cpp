// The quantize pass and calibration on the golden models: graph rewrite and engine layout per
// format (bytes equal to the RTN quantizer's), SmoothQuant folding into the RMSNorm weight,
// KV-cache scales against independently dumped values, calibration statistics against the
// runner's dumps, the engine header's quantization fields (old headers still load), and the
// errors a user sees for impossible options.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "backend/cpu/cpu_backend.h"
#include "build/engine_builder.h"
#include "build/engine_json.h"
#include "build/quantize/quantize_pass.h"
#include "build/quantize/rtn.h"
#include "build_test_util.h"
#include "quant_test_util.h"
#include "runtime/model_loader.h"
#include "runtime/weights.h"

namespace anvil {
namespace {

using test::golden_dir;

EngineBuildOptions options(QuantMethod m, int32_t group_size = 32) {
  EngineBuildOptions o;
  o.backend = BackendKind::kCpu;
  o.dtype = DType::kF32;
  o.max_batch = 2;
  o.max_num_tokens = 64;
  o.max_seq_len = 64;
  o.kv_block_size = 16;
  o.quant = m;
  o.group_size = group_size;
  return o;
}

CalibrationData random_calibration(int64_t vocab, int count = 3, int64_t len = 40) {
  CalibrationData c;
  c.source = "random tokens";
  for (int i = 0; i < count; ++i) c.sequences.push_back(test::random_tokens(len, vocab, 100 + i));
  return c;
}

// The f32 values of one weight-table entry of a golden model, as the builder reads them.
std::vector<float> original_weight(const std::string& dir, const std::string& name) {
  auto spec = load_model_config(dir);
  auto def = define_model(*spec);
  auto ckpt = Checkpoint::open(dir);
  EXPECT_TRUE(def.is_ok() && ckpt.is_ok());
  for (const WeightSource& ws : def->weights) {
    if (ws.name != name) continue;
    auto v = gather_weight_f32(*def, ws, *ckpt, nullptr);
    EXPECT_TRUE(v.is_ok());
    return *v;
  }
  ADD_FAILURE() << "no weight " << name;
  return {};
}

const EngineWeight* find_weight(const EngineHeader& h, const std::string& name, size_t* index = nullptr) {
  for (size_t i = 0; i < h.weights.size(); ++i) {
    if (h.weights[i].name != name) continue;
    if (index) *index = i;
    return &h.weights[i];
  }
  return nullptr;
}

template <typename T>
std::vector<T> blob(const EngineFile& f, const std::string& name) {
  size_t i = 0;
  const EngineWeight* w = find_weight(f.header(), name, &i);
  EXPECT_NE(w, nullptr) << name;
  if (!w) return {};
  std::vector<T> v(w->bytes / sizeof(T));
  std::memcpy(v.data(), f.weight_data(i), w->bytes);
  return v;
}

TEST(QuantPass, Int4RewriteAndEngineBytesEqualTheRtnQuantizer) {
  const std::string dir = golden_dir("llama3_gqa");
  const std::string path = test::scratch_dir() + "/int4.anvil";
  auto built = build_engine(dir, options(QuantMethod::kInt4WeightOnly, 32), path);
  ASSERT_TRUE(built.is_ok()) << built.status().to_string();
  EXPECT_EQ(built->num_quantized_linears, 3 * 4);
  auto file = EngineFile::open(path);
  ASSERT_TRUE(file.is_ok()) << file.status().to_string();
  const EngineHeader& h = file->header();
  EXPECT_EQ(h.options.quant, QuantMethod::kInt4WeightOnly);
  EXPECT_EQ(h.options.group_size, 32);
  int qlinear = 0;
  for (const Node& n : h.graph.nodes()) {
    if (n.op == OpKind::kQLinear) {
      ++qlinear;
      EXPECT_EQ(n.attrs.quant, QuantFormat::kInt4Group);
      EXPECT_EQ(n.attrs.group_size, 32);
      EXPECT_GE(n.inputs[4], 0) << n.name;  // offsets
    }
    if (n.name == "lm_head" || n.name == "embed") {
      EXPECT_NE(n.op, OpKind::kQLinear);  // never quantized
    }
  }
  EXPECT_EQ(qlinear, 12);
  EXPECT_EQ(find_weight(h, "layers.0.attn.qkv.weight"), nullptr);
  EXPECT_LT(h.graph.find("layers.0.attn.qkv.weight"), 0);
  ASSERT_NE(find_weight(h, "lm_head.weight"), nullptr);
  EXPECT_EQ(find_weight(h, "lm_head.weight")->dtype, DType::kF32);

  // qkv: [4 * 64 + 2 * 2 * 64 = 512, 64] -> qweight u8 [512, 32], scales / offsets f16 [512, 2].
  const EngineWeight* qw = find_weight(h, "layers.1.attn.qkv.qweight");
  const EngineWeight* sc = find_weight(h, "layers.1.attn.qkv.scales");
  const EngineWeight* of = find_weight(h, "layers.1.attn.qkv.offsets");
  ASSERT_TRUE(qw && sc && of);
  EXPECT_EQ(qw->dtype, DType::kU8);
  EXPECT_EQ(qw->shape, Shape({512, 32}));
  EXPECT_EQ(sc->dtype, DType::kF16);
  EXPECT_EQ(sc->shape, Shape({512, 2}));
  EXPECT_EQ(of->shape, Shape({512, 2}));
  EXPECT_EQ(qw->packed_from.size(), 3u);  // q | k | v
  const std::vector<float> w = original_weight(dir, "layers.1.attn.qkv.weight");
  auto want = quantize_int4_group(w.data(), 512, 64, 32);
  ASSERT_TRUE(want.is_ok());
  EXPECT_EQ(blob<uint8_t>(*file, "layers.1.attn.qkv.qweight"), want->data);
  EXPECT_EQ(blob<uint16_t>(*file, "layers.1.attn.qkv.scales"), want->scales_f16);
  EXPECT_EQ(blob<uint16_t>(*file, "layers.1.attn.qkv.offsets"), want->offsets_f16);
  // down: K = 160 = 5 groups.
  EXPECT_EQ(find_weight(h, "layers.2.mlp.down.qweight")->shape, Shape({64, 80}));
  EXPECT_EQ(find_weight(h, "layers.2.mlp.down.scales")->shape, Shape({64, 5}));
}

TEST(QuantPass, PerChannelFormatsStoreI8OrE4m3WithF32Scales) {
  const std::string dir = golden_dir("qwen2");  // qkv bias: stays a plain f32 input of kQLinear
  for (QuantMethod m : {QuantMethod::kInt8WeightOnly, QuantMethod::kFp8}) {
    const std::string path = test::scratch_dir() + "/e.anvil";
    auto built = build_engine(dir, options(m), path);
    ASSERT_TRUE(built.is_ok()) << built.status().to_string();
    auto file = EngineFile::open(path);
    ASSERT_TRUE(file.is_ok());
    const EngineHeader& h = file->header();
    EXPECT_EQ(h.options.group_size, 0);
    const EngineWeight* qw = find_weight(h, "layers.0.mlp.down.qweight");
    ASSERT_NE(qw, nullptr);
    EXPECT_EQ(qw->dtype, m == QuantMethod::kFp8 ? DType::kF8E4M3 : DType::kI8);
    EXPECT_EQ(qw->shape, Shape({128, 136}));
    EXPECT_EQ(find_weight(h, "layers.0.mlp.down.scales")->dtype, DType::kF32);
    EXPECT_EQ(find_weight(h, "layers.0.mlp.down.scales")->shape, Shape({128}));
    EXPECT_EQ(find_weight(h, "layers.0.mlp.down.offsets"), nullptr);
    EXPECT_NE(find_weight(h, "layers.0.attn.qkv.bias"), nullptr);
    for (const Node& n : h.graph.nodes()) {
      if (n.name != "layers.0.attn.qkv") continue;
      EXPECT_EQ(n.op, OpKind::kQLinear);
      EXPECT_EQ(h.graph.tensor(n.inputs[2]).name, "layers.0.attn.qkv.bias");
      EXPECT_EQ(n.inputs[4], -1);
    }
    const std::vector<float> w = original_weight(dir, "layers.0.mlp.down.weight");
    auto want = m == QuantMethod::kFp8 ? quantize_fp8_per_channel_searched(w.data(), 128, 136)
                                       : quantize_int8_per_channel(w.data(), 128, 136, QuantFormat::kInt8WeightOnly);
    ASSERT_TRUE(want.is_ok());
    EXPECT_EQ(blob<uint8_t>(*file, "layers.0.mlp.down.qweight"), want->data);
    EXPECT_EQ(blob<float>(*file, "layers.0.mlp.down.scales"), want->scales);
  }
}

// SmoothQuant divides the RMSNorm weight by s and multiplies the qkv / gate_up columns by s, so
// norm'[c] * W'[r, c] == norm[c] * W[r, c] up to the int8 step; down is smoothed through the up
// rows of gate_up; o stays unsmoothed.
TEST(QuantPass, SmoothQuantFoldsFactorsIntoTheNormWeights) {
  const std::string dir = golden_dir("llama3_gqa");
  auto spec = load_model_config(dir);
  ASSERT_TRUE(spec.is_ok());
  const std::string path = test::scratch_dir() + "/sq.anvil";
  const CalibrationData calib = random_calibration(spec->vocab_size);
  auto built = build_engine(dir, options(QuantMethod::kW8A8SmoothQuant), path, nullptr, &calib);
  ASSERT_TRUE(built.is_ok()) << built.status().to_string();
  EXPECT_GT(built->calibration_tokens, 0);
  auto file = EngineFile::open(path);
  ASSERT_TRUE(file.is_ok());
  struct Case {
    const char* norm;
    const char* proj;
    int64_t n;
    int64_t rows_checked;  // gate_up: the gate rows (the up rows also absorb down's factors, below)
  };
  for (const Case& c : {Case{"layers.1.attn_norm.weight", "layers.1.attn.qkv", 512, 512},
                        Case{"layers.1.mlp_norm.weight", "layers.1.mlp.gate_up", 320, 160}}) {
    const std::vector<float> norm0 = original_weight(dir, c.norm);
    const std::vector<float> w0 = original_weight(dir, std::string(c.proj) + ".weight");
    const std::vector<float> norm1 = blob<float>(*file, c.norm);
    const std::vector<uint8_t> q = blob<uint8_t>(*file, std::string(c.proj) + ".qweight");
    const std::vector<float> s = blob<float>(*file, std::string(c.proj) + ".scales");
    ASSERT_EQ(norm1.size(), 64u);
    ASSERT_EQ(q.size(), static_cast<size_t>(c.n * 64));
    double changed = 0;
    for (int64_t k = 0; k < 64; ++k) changed = std::max(changed, std::fabs(static_cast<double>(norm1[k]) / norm0[k] - 1.0));
    EXPECT_GT(changed, 0.01) << c.norm << " was not smoothed";
    for (int64_t r = 0; r < c.rows_checked; ++r) {
      for (int64_t k = 0; k < 64; ++k) {
        const double deq = static_cast<int8_t>(q[r * 64 + k]) * static_cast<double>(s[r]);
        const double got = norm1[k] * deq, want = static_cast<double>(norm0[k]) * w0[r * 64 + k];
        EXPECT_NEAR(got, want, 0.5001 * s[r] * std::fabs(norm1[k]) + 1e-6) << c.proj << " r" << r << " c" << k;
      }
    }
  }
  // down: its input act = silu(gate) * up is divided by s through the up rows of gate_up, and
  // down's columns are multiplied by s. With the mlp_norm fold of gate_up's own factors undone
  // (times the norm weight), max|down'[:, c]| * max|up'[c, :] * norm'| stays
  // max|down[:, c]| * max|up[c, :] * norm| (up to int8 rounding), while the factors vary.
  {
    const int64_t h = 64, f = 160;
    const std::vector<float> down0 = original_weight(dir, "layers.1.mlp.down.weight");   // [h, f]
    const std::vector<float> gu0 = original_weight(dir, "layers.1.mlp.gate_up.weight");  // [2f, h]
    const std::vector<uint8_t> dq = blob<uint8_t>(*file, "layers.1.mlp.down.qweight");
    const std::vector<float> ds = blob<float>(*file, "layers.1.mlp.down.scales");
    const std::vector<uint8_t> gq = blob<uint8_t>(*file, "layers.1.mlp.gate_up.qweight");
    const std::vector<float> gs = blob<float>(*file, "layers.1.mlp.gate_up.scales");
    const std::vector<float> n0 = original_weight(dir, "layers.1.mlp_norm.weight");
    const std::vector<float> n1 = blob<float>(*file, "layers.1.mlp_norm.weight");
    float s_min = INFINITY, s_max = 0;
    for (int64_t ch = 0; ch < f; ++ch) {
      double d0 = 0, d1 = 0, u0 = 0, u1 = 0;
      for (int64_t r = 0; r < h; ++r) {
        d0 = std::max(d0, std::fabs(static_cast<double>(down0[r * f + ch])));
        d1 = std::max(d1, std::fabs(static_cast<int8_t>(dq[r * f + ch]) * static_cast<double>(ds[r])));
      }
      for (int64_t j = 0; j < h; ++j) {
        u0 = std::max(u0, std::fabs(static_cast<double>(gu0[(f + ch) * h + j]) * n0[j]));
        u1 = std::max(u1, std::fabs(static_cast<int8_t>(gq[(f + ch) * h + j]) * static_cast<double>(gs[f + ch]) * n1[j]));
      }
      EXPECT_NEAR(d1 * u1, d0 * u0, 0.03 * d0 * u0) << "channel " << ch;
      s_min = std::min(s_min, static_cast<float>(d1 / d0));
      s_max = std::max(s_max, static_cast<float>(d1 / d0));
    }
    EXPECT_GT(s_max / s_min, 1.5f) << "down was not smoothed";
  }
  // o: plain per-channel int8 of the original weight.
  const std::vector<float> wo = original_weight(dir, "layers.1.attn.o.weight");
  auto want = quantize_int8_per_channel(wo.data(), 64, 256, QuantFormat::kInt8W8A8);
  ASSERT_TRUE(want.is_ok());
  EXPECT_EQ(blob<uint8_t>(*file, "layers.1.attn.o.qweight"), want->data);
}

// KV scales: v_scale[h] = max |V| / 448 (fp8) or / 127 (int8) over the calibration tokens, checked
// against V read from a separate run's qkv dumps (V is not rotated). K is rotated by RoPE, which
// keeps each pair's norm: max |K_rotated| lies between max |K| at position 0 and the largest pair norm.
TEST(QuantPass, KvCacheScalesFromCalibration) {
  const std::string dir = golden_dir("llama3_gqa");
  auto spec = load_model_config(dir);
  ASSERT_TRUE(spec.is_ok());
  const int64_t q_size = spec->num_heads * spec->head_dim, kv = spec->num_kv_heads, d = spec->head_dim;
  const CalibrationData calib = random_calibration(spec->vocab_size);

  CpuBackend cpu;
  RunnerOptions ro;
  ro.max_num_tokens = 64;
  ro.max_num_seqs = 1;
  ro.max_logit_rows = 64;
  ro.max_seq_len = 64;
  ro.num_kv_blocks = 4;
  auto runner = load_model(dir, &cpu, ro);
  ASSERT_TRUE(runner.is_ok());
  std::vector<std::vector<float>> v_max(3, std::vector<float>(kv, 0.0f)), k0_max = v_max, k_pair = v_max;
  for (const auto& seq : calib.sequences) {
    (*runner)->set_dump_names({"layers.0.attn.qkv", "layers.1.attn.qkv", "layers.2.attn.qkv"});
    test::prefill_logits(**runner, seq);
    for (int l = 0; l < 3; ++l) {
      const DumpedTensor& t = (*runner)->dumps().at("layers." + std::to_string(l) + ".attn.qkv");
      const int64_t cols = q_size + 2 * kv * d;
      for (size_t p = 0; p < seq.size(); ++p) {
        for (int64_t h = 0; h < kv; ++h) {
          for (int64_t i = 0; i < d; ++i) {
            const float kx = t.data[p * cols + q_size + h * d + i];
            const float vx = t.data[p * cols + q_size + kv * d + h * d + i];
            v_max[l][h] = std::max(v_max[l][h], std::fabs(vx));
            if (p == 0) k0_max[l][h] = std::max(k0_max[l][h], std::fabs(kx));
            const float partner = t.data[p * cols + q_size + h * d + (i + d / 2) % d];
            k_pair[l][h] = std::max(k_pair[l][h], std::sqrt(kx * kx + partner * partner));
          }
        }
      }
    }
  }
  for (DType kv_dtype : {DType::kF8E4M3, DType::kI8}) {
    const float qmax = kv_dtype == DType::kF8E4M3 ? 448.0f : 127.0f;
    EngineBuildOptions o = options(QuantMethod::kNone);
    o.kv_cache_dtype = kv_dtype;
    const std::string path = test::scratch_dir() + "/kv.anvil";
    EXPECT_FALSE(build_engine(dir, o, path).is_ok());  // needs calibration text
    auto built = build_engine(dir, o, path, nullptr, &calib);
    ASSERT_TRUE(built.is_ok()) << built.status().to_string();
    auto file = EngineFile::open(path);
    ASSERT_TRUE(file.is_ok());
    EXPECT_EQ(file->header().options.kv_cache_dtype, kv_dtype);
    for (int l = 0; l < 3; ++l) {
      const std::string p = "layers." + std::to_string(l) + ".attn.";
      const EngineWeight* ks = find_weight(file->header(), p + "k_scale");
      ASSERT_NE(ks, nullptr);
      EXPECT_EQ(ks->dtype, DType::kF32);
      EXPECT_EQ(ks->shape, Shape({kv}));
      const std::vector<float> k = blob<float>(*file, p + "k_scale"), v = blob<float>(*file, p + "v_scale");
      for (int64_t h = 0; h < kv; ++h) {
        EXPECT_FLOAT_EQ(v[h], v_max[l][h] / qmax) << p << h;
        EXPECT_GE(k[h] * qmax, k0_max[l][h] * 0.9999f) << p << h;
        EXPECT_LE(k[h] * qmax, k_pair[l][h] * 1.0001f) << p << h;
      }
    }
  }
}

// Sequential GPTQ's passes stop once the layer's inputs are dumped: the dumps equal a full run's,
// and the stopped forward returns no logits.
TEST(QuantPass, CalibrationRunStopsAfterItsDumps) {
  const std::string dir = golden_dir("mistral");
  auto spec = load_model_config(dir);
  auto def = define_model(*spec);
  auto ckpt = Checkpoint::open(dir);
  ASSERT_TRUE(def.is_ok() && ckpt.is_ok());
  const CalibrationData calib = random_calibration(spec->vocab_size, 2, 24);
  auto run = CalibrationRun::create(*def, *ckpt, nullptr, calib);
  ASSERT_TRUE(run.is_ok()) << run.status().to_string();
  std::vector<std::vector<float>> full, stopped;
  for (bool stop : {false, true}) {
    auto& out = stop ? stopped : full;
    Status st = run->run({"layers.0.mlp.act"}, [&](const std::vector<int32_t>& seq) -> Status {
      ANVIL_ASSIGN_OR_RETURN(const float* x, run->dumped("layers.0.mlp.act"));
      out.emplace_back(x, x + seq.size() * spec->intermediate_size);
      return Status::ok();
    }, stop);
    ASSERT_TRUE(st.is_ok()) << st.to_string();
  }
  ASSERT_EQ(full.size(), 2u);
  EXPECT_EQ(full, stopped);
  // The runner really stopped: a forward with the stop on yields no logits, without it logits.
  Tensor logits;
  StepInput s;
  s.token_ids = calib.sequences[0];
  const int32_t t = static_cast<int32_t>(s.token_ids.size());
  s.seq_starts = {0, t};
  s.context_lens = {t};
  s.logit_rows = {t - 1};
  s.block_tables = {{0, 1}};
  for (int32_t p = 0; p < t; ++p) {
    s.positions.push_back(p);
    s.slot_map.push_back(p);
  }
  run->runner().set_dump_names({"layers.0.mlp.act"}, true);
  ASSERT_TRUE(run->runner().forward(s, &logits).is_ok());
  EXPECT_EQ(logits.data, nullptr);
  run->runner().set_dump_names({"layers.0.mlp.act"}, false);
  ASSERT_TRUE(run->runner().forward(s, &logits).is_ok());
  EXPECT_NE(logits.data, nullptr);
}

TEST(QuantPass, CalibrationStatisticsMatchTheDumpedInputs) {
  const std::string dir = golden_dir("mistral");
  auto spec = load_model_config(dir);
  auto def = define_model(*spec);
  auto ckpt = Checkpoint::open(dir);
  ASSERT_TRUE(def.is_ok() && ckpt.is_ok());
  const CalibrationData calib = random_calibration(spec->vocab_size, 3, 40);
  CalibrationNeeds needs;
  needs.linear_inputs = true;
  needs.hessian = true;
  needs.sample_rows = 30;
  auto stats = collect_calibration_stats(*def, *ckpt, nullptr, calib, needs);
  ASSERT_TRUE(stats.is_ok()) << stats.status().to_string();
  EXPECT_EQ(stats->tokens, 120);
  EXPECT_EQ(stats->linear_inputs.size(), static_cast<size_t>(4 * spec->num_layers));
  EXPECT_TRUE(stats->k_abs_max.empty());

  // The same inputs, dumped by an independent runner: layers.1.mlp.act feeds layers.1.mlp.down.
  CpuBackend cpu;
  RunnerOptions ro;
  ro.max_num_tokens = 64;
  ro.max_num_seqs = 1;
  ro.max_logit_rows = 64;
  ro.max_seq_len = 64;
  ro.num_kv_blocks = 4;
  auto runner = load_model(dir, &cpu, ro);
  ASSERT_TRUE(runner.is_ok());
  std::vector<float> rows;
  for (const auto& seq : calib.sequences) {
    (*runner)->set_dump_names({"layers.1.mlp.act"});
    test::prefill_logits(**runner, seq);
    const DumpedTensor& t = (*runner)->dumps().at("layers.1.mlp.act");
    rows.insert(rows.end(), t.data.begin(), t.data.end());
  }
  const LinearInputStats& s = stats->linear_inputs.at("layers.1.mlp.down.weight");
  const int64_t k = spec->intermediate_size, t = 120;
  ASSERT_EQ(s.k, k);
  ASSERT_EQ(rows.size(), static_cast<size_t>(t * k));
  for (int64_t c = 0; c < k; ++c) {
    float mx = 0;
    double sum = 0;
    for (int64_t r = 0; r < t; ++r) {
      mx = std::max(mx, std::fabs(rows[r * k + c]));
      sum += std::fabs(rows[r * k + c]);
    }
    EXPECT_EQ(s.abs_max[c], mx) << c;
    EXPECT_NEAR(s.abs_mean[c], sum / t, 1e-6 + 1e-5 * sum / t) << c;
  }
  ASSERT_EQ(s.hessian.size(), static_cast<size_t>(k * k));
  for (int64_t i = 0; i < k; i += 7) {
    for (int64_t j = 0; j < k; j += 5) {
      double h = 0, scale = 0;
      for (int64_t r = 0; r < t; ++r) {
        h += static_cast<double>(rows[r * k + i]) * rows[r * k + j];
        scale += std::fabs(static_cast<double>(rows[r * k + i]) * rows[r * k + j]);
      }
      EXPECT_NEAR(s.hessian[i * k + j], h, 1e-5 * scale + 1e-9) << i << "," << j;
      EXPECT_EQ(s.hessian[i * k + j], s.hessian[j * k + i]);
    }
  }
  // 30 sample rows: 10 per sequence, each a real input row.
  ASSERT_EQ(s.sample_rows.size(), static_cast<size_t>(30 * k));
  for (int64_t i = 0; i < 30; ++i) {
    bool found = false;
    for (int64_t r = 0; r < t && !found; ++r) found = std::equal(rows.begin() + r * k, rows.begin() + (r + 1) * k, s.sample_rows.begin() + i * k);
    EXPECT_TRUE(found) << "sample row " << i;
  }
}

TEST(QuantPass, SplitCalibrationTokens) {
  std::vector<int32_t> ids(1000);
  for (int32_t i = 0; i < 1000; ++i) ids[i] = i;
  auto s = split_calibration_tokens(ids, 8, 64);
  ASSERT_EQ(s.size(), 8u);
  for (const auto& q : s) EXPECT_EQ(q.size(), 64u);
  EXPECT_EQ(s.front().front(), 0);
  EXPECT_EQ(s.back().back(), 999);  // spread over the whole text
  s = split_calibration_tokens(ids, 100, 512);  // short text: 62 sequences of 16
  EXPECT_EQ(s.size(), 62u);
  EXPECT_EQ(s[0].size(), 16u);
  EXPECT_EQ(split_calibration_tokens({1, 2, 3}, 4).size(), 1u);
  EXPECT_TRUE(split_calibration_tokens({}, 4).empty());
}

TEST(QuantPass, ImpossibleOptionsAreClearErrors) {
  // int4 groups must divide every projection's K: llama2_mha's MLP is 176 wide.
  auto r = build_engine(golden_dir("llama2_mha"), options(QuantMethod::kInt4WeightOnly, 32), test::scratch_dir() + "/x.anvil");
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("--group-size 32"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("K=176"), std::string::npos) << r.status().message();
  // qwen3 (K = 64, 160): g128 fails and the message names the group size that fits.
  r = build_engine(golden_dir("qwen3"), options(QuantMethod::kInt4WeightOnly, 128), test::scratch_dir() + "/x.anvil");
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("use --group-size 32"), std::string::npos) << r.status().message();
  r = build_engine(golden_dir("qwen3"), options(QuantMethod::kInt4WeightOnly, 48), test::scratch_dir() + "/x.anvil");
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("32, 64 or 128"), std::string::npos) << r.status().message();
  // Activation-aware methods need calibration text.
  r = build_engine(golden_dir("qwen3"), options(QuantMethod::kInt4Awq, 32), test::scratch_dir() + "/x.anvil");
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("calibration"), std::string::npos) << r.status().message();
  // Token ids outside the vocabulary (another model's tokenizer).
  CalibrationData bad;
  bad.source = "test";
  bad.sequences = {{1, 2, 100000}};
  r = build_engine(golden_dir("qwen3"), options(QuantMethod::kW8A8SmoothQuant), test::scratch_dir() + "/x.anvil", nullptr, &bad);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("100000"), std::string::npos) << r.status().message();
}

TEST(QuantPass, HeaderCarriesQuantOptionsAndOldHeadersDefaultToNone) {
  EngineHeader h;
  h.options.quant = QuantMethod::kInt4Gptq;
  h.options.group_size = 64;
  h.options.kv_cache_dtype = DType::kI8;
  h.options.calib_file = "/tmp/calib.txt";
  h.options.calib_samples = 12;
  h.graph.input("token_ids", {}, RowScale::kTokens, true);
  h.graph.mark_output(0);
  nlohmann::json j = engine_header_to_json(h);
  auto back = engine_header_from_json(j, "test");
  ASSERT_TRUE(back.is_ok()) << back.status().to_string();
  EXPECT_EQ(back->options.quant, QuantMethod::kInt4Gptq);
  EXPECT_EQ(back->options.group_size, 64);
  EXPECT_EQ(back->options.kv_cache_dtype, DType::kI8);
  EXPECT_EQ(back->options.calib_file, "/tmp/calib.txt");
  EXPECT_EQ(back->options.calib_samples, 12);
  // An engine written before quantization existed.
  for (const char* f : {"quant", "group_size", "kv_cache_dtype", "calib_file", "calib_samples"}) j["build_options"].erase(f);
  j["build_options"]["dtype"] = "bf16";
  back = engine_header_from_json(j, "old");
  ASSERT_TRUE(back.is_ok()) << back.status().to_string();
  EXPECT_EQ(back->options.quant, QuantMethod::kNone);
  EXPECT_EQ(back->options.kv_cache_dtype, DType::kBF16);
  j["build_options"]["quant"] = "int3";
  EXPECT_FALSE(engine_header_from_json(j, "bad").is_ok());
}

}  // namespace
}  // namespace anvil
