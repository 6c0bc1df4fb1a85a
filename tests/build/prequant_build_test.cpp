// anvil build from pre-quantized HF checkpoints (AutoAWQ GEMM, GPTQ v1 sym / asym act-order, FP8
// per-channel compressed-tensors and per-tensor "fp8"), made from the golden models by
// prequant_fixture.h: the engine's kQLinear weights must be bit-identical to the converters'
// output packed q|k|v and gate|up, dequantize to exactly the fixture's values, and give the logits
// of the dequantized model loaded as a plain HF folder. Plus the errors a user meets.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "backend/cpu/cpu_backend.h"
#include "build/engine_builder.h"
#include "build/engine_loader.h"
#include "build/quantize/int4_group_codec.h"
#include "build/quantize/prequant_import.h"
#include "build_test_util.h"
#include "prequant_fixture.h"
#include "quant_test_util.h"
#include "runtime/model_loader.h"

namespace anvil {
namespace {

using test::PrequantFixture;
using test::PrequantFixtureOptions;
using test::PrequantKind;

EngineBuildOptions cpu_options(QuantMethod m = QuantMethod::kNone) {
  EngineBuildOptions o;
  o.backend = BackendKind::kCpu;
  o.dtype = DType::kF32;
  o.max_batch = 2;
  o.max_num_tokens = 64;
  o.max_seq_len = 64;
  o.kv_block_size = 16;
  o.quant = m;
  o.group_size = 128;  // the CLI default: an import ignores it
  return o;
}

template <typename T>
std::vector<T> blob(const EngineFile& f, const std::string& name) {
  for (size_t i = 0; i < f.header().weights.size(); ++i) {
    const EngineWeight& w = f.header().weights[i];
    if (w.name != name) continue;
    std::vector<T> v(w.bytes / sizeof(T));
    std::memcpy(v.data(), f.weight_data(i), w.bytes);
    return v;
  }
  ADD_FAILURE() << "engine has no weight " << name;
  return {};
}

// Table entry -> its HF modules in packing order, for layer `l`.
std::vector<std::pair<std::string, std::vector<std::string>>> layer_projections(int l) {
  const std::string m = "model.layers." + std::to_string(l) + ".", e = "layers." + std::to_string(l) + ".";
  return {{e + "attn.qkv", {m + "self_attn.q_proj", m + "self_attn.k_proj", m + "self_attn.v_proj"}},
          {e + "attn.o", {m + "self_attn.o_proj"}},
          {e + "mlp.gate_up", {m + "mlp.gate_proj", m + "mlp.up_proj"}},
          {e + "mlp.down", {m + "mlp.down_proj"}}};
}

Tensor view_or_empty(const Checkpoint& c, const std::string& name) {
  auto t = c.get(name);
  return t.is_ok() ? t->view : Tensor();
}

// The converter's output for one HF module of the fixture, straight from hf_prequant(_fp8).h.
Result<QuantizedLinear> convert_module(const Checkpoint& c, const PrequantScheme& s, const std::string& m) {
  switch (s.method) {
    case QuantMethod::kInt4Awq:
      return import_awq_gemm(m, view_or_empty(c, m + ".qweight"), view_or_empty(c, m + ".qzeros"),
                             view_or_empty(c, m + ".scales"), s.int4);
    case QuantMethod::kInt4Gptq:
      return import_gptq(m, view_or_empty(c, m + ".qweight"), view_or_empty(c, m + ".qzeros"),
                         view_or_empty(c, m + ".scales"), view_or_empty(c, m + ".g_idx"), s.int4);
    case QuantMethod::kFp8: return import_fp8(m, view_or_empty(c, m + ".weight"), view_or_empty(c, m + ".weight_scale"));
    default: return internal_error("not a pre-quantized method");
  }
}

std::vector<float> prefill(std::unique_ptr<ModelRunner> r, const std::vector<int32_t>& ids) {
  return test::prefill_logits(*r, ids);
}

std::vector<float> engine_logits(const std::string& path, const std::vector<int32_t>& ids) {
  CpuBackend cpu;
  auto r = load_engine(path, &cpu, test::small_runner());
  EXPECT_TRUE(r.is_ok()) << r.status().to_string();
  return r.is_ok() ? prefill(std::move(r).value(), ids) : std::vector<float>{};
}

std::vector<float> folder_logits(const std::string& dir, const std::vector<int32_t>& ids) {
  CpuBackend cpu;
  auto r = load_model(dir, &cpu, test::small_runner());
  EXPECT_TRUE(r.is_ok()) << r.status().to_string();
  return r.is_ok() ? prefill(std::move(r).value(), ids) : std::vector<float>{};
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b, double* scale) {
  EXPECT_EQ(a.size(), b.size());
  double d = 0, s = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    d = std::max(d, std::fabs(static_cast<double>(a[i]) - b[i]));
    s = std::max(s, std::fabs(static_cast<double>(b[i])));
  }
  *scale = s;
  return d;
}

struct Case {
  const char* golden;
  PrequantFixtureOptions opt;
  QuantMethod method;
  int32_t engine_group = 0;  // int4: the engine's group size (0: the fixture's)
};

// Builds the fixture's engine and checks the header, the graph, every projection's bytes against
// the converters and the fixture's values, and the logits against the dequantized folder.
void check_import(const Case& c) {
  const std::string root = test::scratch_dir();
  const PrequantFixture fx = test::make_prequant_fixture(test::golden_dir(c.golden), root, c.opt);
  ASSERT_FALSE(fx.modules.empty());
  const std::string path = root + "/prequant.anvil";
  auto built = build_engine(fx.quant_dir, cpu_options(), path);
  ASSERT_TRUE(built.is_ok()) << built.status().to_string();
  EXPECT_EQ(built->calibration_tokens, 0);
  auto spec = load_model_config(fx.quant_dir);
  ASSERT_TRUE(spec.is_ok());
  const int layers = static_cast<int>(spec->num_layers);
  const int64_t expected_q = 4 * layers - static_cast<int64_t>(c.opt.keep_float.size());
  EXPECT_EQ(built->num_quantized_linears, expected_q);

  auto file = EngineFile::open(path);
  ASSERT_TRUE(file.is_ok()) << file.status().to_string();
  const EngineHeader& h = file->header();
  const bool int4 = c.method != QuantMethod::kFp8;
  EXPECT_EQ(h.options.quant, c.method);
  const int32_t group = int4 ? (c.engine_group > 0 ? c.engine_group : c.opt.group_size) : 0;
  EXPECT_EQ(h.options.group_size, group);
  for (const Node& n : h.graph.nodes()) {
    if (n.op != OpKind::kQLinear) continue;
    EXPECT_EQ(n.attrs.quant, int4 ? QuantFormat::kInt4Group : QuantFormat::kFp8W8A8) << n.name;
    EXPECT_EQ(n.attrs.group_size, group) << n.name;
  }

  auto ckpt = Checkpoint::open(fx.quant_dir);
  ASSERT_TRUE(ckpt.is_ok());
  auto scheme = read_prequant_scheme(fx.quant_dir);
  ASSERT_TRUE(scheme.is_ok() && scheme->has_value()) << scheme.status().to_string();
  int checked = 0;
  for (int l = 0; l < layers; ++l) {
    for (const auto& [entry, modules] : layer_projections(l)) {
      if (c.opt.keep_float.count(modules[0])) {
        // Stored in float: a plain linear over the checkpoint's weight, as is.
        auto stored = ckpt->get(modules[0] + ".weight");
        ASSERT_TRUE(stored.is_ok());
        std::vector<float> values(static_cast<size_t>(stored->view.numel()));
        convert_to_f32(stored->view.dtype, stored->view.data, values.data(), values.size());
        EXPECT_EQ(blob<float>(*file, entry + ".weight"), values) << entry;
        for (const Node& n : h.graph.nodes()) {
          if (n.name == entry) {
            EXPECT_EQ(n.op, OpKind::kLinear) << entry;
          }
        }
        continue;
      }
      // The converters' output, concatenated along N in the table's packing order.
      QuantizedLinear want;
      std::vector<float> want_values;
      for (size_t i = 0; i < modules.size(); ++i) {
        auto part = convert_module(*ckpt, **scheme, modules[i]);
        ASSERT_TRUE(part.is_ok()) << part.status().to_string();
        const test::PrequantModule& pm = fx.modules.at(modules[i]);
        want_values.insert(want_values.end(), pm.dequant.begin(), pm.dequant.end());
        if (i == 0) {
          want = std::move(part).value();
          continue;
        }
        want.n += part->n;
        want.data.insert(want.data.end(), part->data.begin(), part->data.end());
        want.scales.insert(want.scales.end(), part->scales.begin(), part->scales.end());
        want.scales_f16.insert(want.scales_f16.end(), part->scales_f16.begin(), part->scales_f16.end());
        want.offsets_f16.insert(want.offsets_f16.end(), part->offsets_f16.begin(), part->offsets_f16.end());
      }
      QuantizedLinear got = want;  // shape fields; the bytes come from the engine
      got.data = blob<uint8_t>(*file, entry + ".qweight");
      EXPECT_EQ(got.data, want.data) << entry;
      if (int4) {
        got.group_size = group;
        got.scales_f16 = blob<uint16_t>(*file, entry + ".scales");
        got.offsets_f16 = blob<uint16_t>(*file, entry + ".offsets");
        // Engine group b of row r holds the parameters of the converter's group b * group / g.
        const int64_t groups = want.k / group, want_groups = want.k / want.group_size;
        ASSERT_EQ(got.scales_f16.size(), static_cast<size_t>(want.n * groups)) << entry;
        ASSERT_EQ(got.offsets_f16.size(), got.scales_f16.size()) << entry;
        int mismatches = 0;
        for (int64_t r = 0; r < want.n; ++r) {
          for (int64_t b = 0; b < groups; ++b) {
            const size_t gi = static_cast<size_t>(r * groups + b);
            const size_t wi = static_cast<size_t>(r * want_groups + b * group / want.group_size);
            mismatches += got.scales_f16[gi] != want.scales_f16[wi] || got.offsets_f16[gi] != want.offsets_f16[wi];
          }
        }
        EXPECT_EQ(mismatches, 0) << entry;
      } else {
        got.scales = blob<float>(*file, entry + ".scales");
        EXPECT_EQ(got.scales, want.scales) << entry;
      }
      // ...and decode to exactly the values the fixture packed (an independent packing).
      if (got.data.size() == want.data.size() && got.scales.size() == want.scales.size() &&
          got.scales_f16.size() == want.scales_f16.size()) {
        EXPECT_EQ(dequantize(got), want_values) << entry;
      }
      ++checked;
    }
  }
  EXPECT_EQ(checked, expected_q);

  // Logits: the dequantized model, loaded as a plain HF folder.
  const std::vector<int32_t> ids = test::random_tokens(12, spec->vocab_size, 7);
  const std::vector<float> got = engine_logits(path, ids);
  const std::vector<float> ref = folder_logits(fx.ref_dir, ids);
  ASSERT_EQ(got.size(), ref.size());
  ASSERT_FALSE(got.empty());
  double scale = 0;
  const double diff = max_abs_diff(got, ref, &scale);
  if (int4) {
    // Weight-only: the same f32 weights; only the summation order differs.
    EXPECT_LE(diff, 1e-5 * (1.0 + scale)) << "max |logit| " << scale;
  } else {
    // W8A8: anvil also quantizes the activations (e4m3, per token), so the logits differ from
    // the float model's by more than float rounding (on these tiny random models, a KL of
    // 0.05-0.2 nats). The reference is therefore anvil's own fp8 path over the dequantized
    // weights: it re-finds the same codes and scales (every fixture row holds a code of +-448),
    // so its engine must match this one exactly.
    EXPECT_GT(diff, 0.0);  // activation quantization is visible
    const std::string own = root + "/own_fp8.anvil";
    auto rebuilt = build_engine(fx.ref_dir, cpu_options(QuantMethod::kFp8), own);
    ASSERT_TRUE(rebuilt.is_ok()) << rebuilt.status().to_string();
    auto own_file = EngineFile::open(own);
    ASSERT_TRUE(own_file.is_ok());
    EXPECT_EQ(blob<uint8_t>(*own_file, "layers.1.attn.qkv.qweight"), blob<uint8_t>(*file, "layers.1.attn.qkv.qweight"));
    EXPECT_EQ(blob<float>(*own_file, "layers.1.attn.qkv.scales"), blob<float>(*file, "layers.1.attn.qkv.scales"));
    const std::vector<float> own_logits = engine_logits(own, ids);
    double s2 = 0;
    EXPECT_LE(max_abs_diff(got, own_logits, &s2), 1e-6 * (1.0 + s2));
  }
}

TEST(PrequantBuild, AwqGemmGroup32WithAnUnconvertedModule) {
  PrequantFixtureOptions o;
  o.kind = PrequantKind::kAwq;
  o.keep_float = {"model.layers.2.mlp.down_proj"};  // modules_to_not_convert
  check_import({"llama3_gqa", o, QuantMethod::kInt4Awq});
}

TEST(PrequantBuild, GptqSymmetricV1Group32WithZeroBiases) {
  PrequantFixtureOptions o;
  o.kind = PrequantKind::kGptqSym;
  o.zero_biases = true;  // old AutoGPTQ: a zero bias per linear of a bias-free model
  check_import({"qwen3", o, QuantMethod::kInt4Gptq});
}

TEST(PrequantBuild, GptqAsymmetricActOrderWithPermutedGroupLabels) {
  PrequantFixtureOptions o;
  o.kind = PrequantKind::kGptqAsymPermuted;
  check_import({"llama3_gqa", o, QuantMethod::kInt4Gptq});
}

TEST(PrequantBuild, Fp8PerChannelCompressedTensors) {
  PrequantFixtureOptions o;
  o.kind = PrequantKind::kFp8PerChannel;
  check_import({"llama3_gqa", o, QuantMethod::kFp8});
}

TEST(PrequantBuild, Fp8PerTensorWithStaticInputScales) {
  PrequantFixtureOptions o;
  o.kind = PrequantKind::kFp8PerTensor;
  check_import({"qwen3", o, QuantMethod::kFp8});
}

// GPTQ group_size -1 (one group per row) is split into the largest kernel group dividing every K
// (64 and 160 here: 32), each row's scale repeated: the engine decodes to the same values.
TEST(PrequantBuild, PerRowGptqGroupsAreSplitIntoKernelGroups) {
  PrequantFixtureOptions o;
  o.kind = PrequantKind::kGptqAsymPermuted;  // one group: the permutation is the identity
  o.group_size = -1;
  check_import({"llama3_gqa", o, QuantMethod::kInt4Gptq, 32});
}

class PrequantErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = test::scratch_dir();
    PrequantFixtureOptions o;
    o.kind = PrequantKind::kAwq;
    fx_ = test::make_prequant_fixture(test::golden_dir("llama3_gqa"), root_, o);
  }
  std::string build_error(const EngineBuildOptions& o = cpu_options()) {
    auto r = build_engine(fx_.quant_dir, o, root_ + "/e.anvil");
    EXPECT_FALSE(r.is_ok());
    return r.is_ok() ? std::string() : r.status().message();
  }
  std::string root_;
  PrequantFixture fx_;
};

TEST_F(PrequantErrors, QuantFlagMustNameTheCheckpointsFormat) {
  const std::string msg = build_error(cpu_options(QuantMethod::kInt4WeightOnly));
  EXPECT_NE(msg.find("--quant int4-wo"), std::string::npos) << msg;
  EXPECT_NE(msg.find("AutoAWQ GEMM"), std::string::npos) << msg;
  EXPECT_NE(msg.find("--quant int4-awq"), std::string::npos) << msg;
  // Naming the same format is accepted (and needs no calibration); the checkpoint's groups win.
  EngineBuildOptions same = cpu_options(QuantMethod::kInt4Awq);
  same.group_size = 64;
  auto r = build_engine(fx_.quant_dir, same, root_ + "/same.anvil");
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  auto f = EngineFile::open(root_ + "/same.anvil");
  ASSERT_TRUE(f.is_ok());
  EXPECT_EQ(f->header().options.group_size, 32);
  EXPECT_EQ(r->calibration_tokens, 0);
  // A quantized KV cache would need calibration of the float model.
  EngineBuildOptions kv = cpu_options();
  kv.kv_cache_dtype = DType::kF8E4M3;
  EXPECT_NE(build_error(kv).find("--kv-cache fp8"), std::string::npos);
}

TEST_F(PrequantErrors, UnsupportedBits) {
  test::edit_quantization_config(fx_.quant_dir, [](nlohmann::json& q) { q["bits"] = 3; });
  const std::string msg = build_error();
  EXPECT_NE(msg.find("quantization_config.bits is 3"), std::string::npos) << msg;
}

TEST_F(PrequantErrors, GroupSizeThatDoesNotDivideK) {
  test::edit_quantization_config(fx_.quant_dir, [](nlohmann::json& q) { q["group_size"] = 64; });
  const std::string msg = build_error();
  EXPECT_NE(msg.find("group_size 64 does not divide the input size K=160"), std::string::npos) << msg;
}

TEST_F(PrequantErrors, GroupSizeTheKernelsCannotTake) {
  test::edit_quantization_config(fx_.quant_dir, [](nlohmann::json& q) { q["group_size"] = 16; });
  const std::string msg = build_error();
  EXPECT_NE(msg.find("groups of 32, 64 or 128"), std::string::npos) << msg;
}

TEST_F(PrequantErrors, MissingQzeros) {
  auto ckpt = Checkpoint::open(fx_.quant_dir);
  ASSERT_TRUE(ckpt.is_ok());
  std::vector<std::pair<std::string, Tensor>> kept;
  for (const std::string& n : ckpt->names())
    if (n != "model.layers.1.self_attn.k_proj.qzeros") kept.emplace_back(n, ckpt->get(n)->view);
  const std::string dir = root_ + "/no_qzeros";
  std::filesystem::create_directories(dir);
  ASSERT_TRUE(write_safetensors(dir + "/model.safetensors", kept).is_ok());
  std::filesystem::copy_file(fx_.quant_dir + "/config.json", dir + "/config.json");
  auto r = build_engine(dir, cpu_options(), root_ + "/e.anvil");
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("model.layers.1.self_attn.k_proj.qzeros is missing"), std::string::npos)
      << r.status().message();
}

TEST_F(PrequantErrors, Fp8BlockWiseScalesAreRejected) {
  test::edit_quantization_config(fx_.quant_dir, [](nlohmann::json& q) {
    q = {{"quant_method", "fp8"}, {"activation_scheme", "dynamic"}, {"weight_block_size", {128, 128}}};
  });
  const std::string msg = build_error();
  EXPECT_NE(msg.find("weight_block_size"), std::string::npos) << msg;
}

TEST_F(PrequantErrors, GptqQuantizedLmHeadIsNotSupported) {
  test::edit_quantization_config(fx_.quant_dir, [](nlohmann::json& q) {
    q = {{"quant_method", "gptq"}, {"bits", 4}, {"group_size", 32}, {"lm_head", true}};
  });
  const std::string msg = build_error();
  EXPECT_NE(msg.find("quantization_config.lm_head is true"), std::string::npos) << msg;
}

TEST_F(PrequantErrors, PartlyQuantizedPackedWeight) {
  // v_proj stored in float beside quantized q_proj / k_proj: qkv cannot be packed.
  PrequantFixtureOptions o;
  o.kind = PrequantKind::kAwq;
  o.keep_float = {"model.layers.0.self_attn.v_proj"};
  const PrequantFixture fx = test::make_prequant_fixture(test::golden_dir("llama3_gqa"), root_ + "/mixed", o);
  auto r = build_engine(fx.quant_dir, cpu_options(), root_ + "/e.anvil");
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("layers.0.attn.qkv.weight packs"), std::string::npos) << r.status().message();
}

TEST(PrequantScheme, UnquantizedConfigHasNoScheme) {
  auto s = read_prequant_scheme(test::golden_dir("llama3_gqa"));
  ASSERT_TRUE(s.is_ok());
  EXPECT_FALSE(s->has_value());
  auto bnb = parse_prequant_scheme(nlohmann::json::parse(R"({"quantization_config":{"quant_method":"bitsandbytes"}})"));
  ASSERT_FALSE(bnb.is_ok());
  EXPECT_NE(bnb.status().message().find("bitsandbytes"), std::string::npos);
  auto int_ct = parse_prequant_scheme(nlohmann::json::parse(R"({"quantization_config":{
      "quant_method":"compressed-tensors","format":"pack-quantized",
      "config_groups":{"group_0":{"weights":{"num_bits":4,"type":"int","strategy":"group","group_size":128}}}}})"));
  ASSERT_FALSE(int_ct.is_ok());
  EXPECT_NE(int_ct.status().message().find("format"), std::string::npos) << int_ct.status().message();
  auto group_fp8 = parse_prequant_scheme(nlohmann::json::parse(R"({"quantization_config":{
      "quant_method":"compressed-tensors","format":"float-quantized",
      "config_groups":{"group_0":{"weights":{"num_bits":8,"type":"float","strategy":"block","block_structure":[128,128]}}}}})"));
  ASSERT_FALSE(group_fp8.is_ok());
  EXPECT_NE(group_fp8.status().message().find("config_groups.group_0.weights.strategy"), std::string::npos)
      << group_fp8.status().message();
}

// import_fp8 on its own: scale shapes, broadcast, and the errors that name the tensor.
TEST(PrequantScheme, Fp8ImportScalesAndErrors) {
  std::vector<uint8_t> w = {0x38, 0xb8, 0x7e, 0x00, 0x40, 0x01};  // [2, 3]: 1, -1, 448, 0, 2, 2^-9
  float one = 0.5f;
  std::vector<float> rows = {0.25f, 4.0f};
  const Tensor tw(w.data(), DType::kF8E4M3, {2, 3});
  auto t = import_fp8("m", tw, Tensor(&one, DType::kF32, {}));
  ASSERT_TRUE(t.is_ok()) << t.status().to_string();
  EXPECT_EQ(t->scales, std::vector<float>({0.5f, 0.5f}));
  EXPECT_EQ(dequantize(*t), std::vector<float>({0.5f, -0.5f, 224.0f, 0.0f, 1.0f, 0x1p-10f}));
  auto c = import_fp8("m", tw, Tensor(rows.data(), DType::kF32, {2, 1}));
  ASSERT_TRUE(c.is_ok());
  EXPECT_EQ(c->scales, rows);
  EXPECT_EQ(dequantize(*c)[4], 8.0f);
  auto blockwise = import_fp8("m", tw, Tensor(rows.data(), DType::kF32, {1, 2}));
  ASSERT_FALSE(blockwise.is_ok());
  EXPECT_NE(blockwise.status().message().find("m.weight_scale has shape [1, 2]"), std::string::npos);
  w[1] = 0xff;  // NaN
  auto nan = import_fp8("m", tw, Tensor(&one, DType::kF32, {1}));
  ASSERT_FALSE(nan.is_ok());
  EXPECT_NE(nan.status().message().find("m.weight[0, 1] is an e4m3 NaN"), std::string::npos);
  auto missing = import_fp8("m", tw, Tensor());
  ASSERT_FALSE(missing.is_ok());
  EXPECT_NE(missing.status().message().find("m.weight_scale is missing"), std::string::npos);
}

}  // namespace
}  // namespace anvil
