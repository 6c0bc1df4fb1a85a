// Pre-quantized copies of a golden model for the import tests, packed here from the formats'
// documented layouts (AutoAWQ GEMM, GPTQ v1, FP8 with weight_scale), independently of anvil's
// importers, plus the "dequantized" copy: the same folder with every quantized projection replaced
// by its exact f32 values. Scales carry at most 7 significant bits, so (q - z) * s, the f16 offset
// -z * s and e4m3 * s are all exact: the two folders describe the very same model.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "model/checkpoint/checkpoint.h"

namespace anvil::test {

enum class PrequantKind { kAwq, kGptqSym, kGptqAsymPermuted, kFp8PerChannel, kFp8PerTensor };

struct PrequantFixtureOptions {
  PrequantKind kind = PrequantKind::kAwq;
  int32_t group_size = 32;                 // packing group (int4); -1: one group per row (GPTQ)
  std::set<std::string> keep_float;        // HF modules left unquantized ("model.layers.2.mlp.down_proj")
  bool zero_biases = false;                // GPTQ: a zero .bias per quantized linear (old AutoGPTQ)
};

// Everything the tests compare against, per quantized HF module.
struct PrequantModule {
  int64_t n = 0, k = 0;
  std::vector<float> dequant;  // [n, k], exact
};

struct PrequantFixture {
  std::string quant_dir;  // config.json with quantization_config + packed model.safetensors
  std::string ref_dir;    // config.json without it + the dequantized f32 projections
  std::map<std::string, PrequantModule> modules;
};

namespace prequant_detail {

constexpr int kAwqOrder[8] = {0, 2, 4, 6, 1, 3, 5, 7};  // nibble i of an AWQ word: column 8j + kAwqOrder[i]

// x rounded up to 7 significant bits (a "nice" scale: products with 4-bit codes stay exact).
inline float nice_up(float x) {
  if (!(x > 0.0f)) return 0x1p-10f;
  int e = 0;
  const float m = std::frexp(x, &e);  // [0.5, 1)
  return std::ldexp(std::ceil(m * 64.0f) / 64.0f, e);
}

struct Owned {
  std::string name;
  DType dtype;
  Shape shape;
  std::vector<uint8_t> bytes;
};

template <typename T>
Owned owned(const std::string& name, DType dt, Shape shape, const std::vector<T>& v) {
  Owned o{name, dt, shape, std::vector<uint8_t>(v.size() * sizeof(T))};
  std::memcpy(o.bytes.data(), v.data(), o.bytes.size());
  return o;
}

// Asymmetric int4 RTN of one row group with the zero point in [zmin, 15]; sym: z = 8.
inline void int4_group(const float* w, int64_t len, bool sym, int zmin, float* scale, int* zero, int* codes) {
  float lo = 0.0f, hi = 0.0f, amax = 0.0f;
  for (int64_t i = 0; i < len; ++i) {
    lo = std::min(lo, w[i]);
    hi = std::max(hi, w[i]);
    amax = std::max(amax, std::fabs(w[i]));
  }
  const float s = sym ? nice_up(amax / 7.0f) : nice_up((hi - lo) / 15.0f);
  const int z = sym ? 8 : std::clamp(static_cast<int>(std::nearbyint(-lo / s)), zmin, 15);
  for (int64_t i = 0; i < len; ++i) codes[i] = std::clamp(static_cast<int>(std::nearbyint(w[i] / s)) + z, 0, 15);
  *scale = s;
  *zero = z;
}

}  // namespace prequant_detail

// Writes both folders under `root` from golden model folder `golden`.
inline PrequantFixture make_prequant_fixture(const std::string& golden, const std::string& root,
                                             const PrequantFixtureOptions& opt) {
  using namespace prequant_detail;
  PrequantFixture fx;
  fx.quant_dir = root + "/quant";
  fx.ref_dir = root + "/ref";
  std::filesystem::create_directories(fx.quant_dir);
  std::filesystem::create_directories(fx.ref_dir);
  std::ifstream in(golden + "/config.json");
  nlohmann::json config = nlohmann::json::parse(in);
  auto ckpt = Checkpoint::open(golden);
  EXPECT_TRUE(ckpt.is_ok()) << ckpt.status().to_string();
  if (!ckpt.is_ok()) return fx;

  const bool int4 = opt.kind == PrequantKind::kAwq || opt.kind == PrequantKind::kGptqSym ||
                    opt.kind == PrequantKind::kGptqAsymPermuted;
  const std::regex projection(R"(model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)\.weight)");
  std::vector<Owned> quant, ref;
  for (const std::string& name : ckpt->names()) {
    auto t = ckpt->get(name);
    const Tensor& v = t->view;
    std::vector<float> w(static_cast<size_t>(v.numel()));
    convert_to_f32(v.dtype, v.data, w.data(), w.size());
    const std::string module = name.substr(0, name.size() - std::string(".weight").size());
    if (!std::regex_match(name, projection) || opt.keep_float.count(module)) {
      quant.push_back(owned(name, DType::kF32, v.shape, w));
      ref.push_back(owned(name, DType::kF32, v.shape, w));
      continue;
    }
    const int64_t n = v.dim(0), k = v.dim(1);
    PrequantModule& pm = fx.modules[module];
    pm.n = n;
    pm.k = k;
    pm.dequant.assign(static_cast<size_t>(n * k), 0.0f);
    if (int4) {
      const int64_t g = opt.group_size > 0 ? opt.group_size : k;
      const int64_t groups = k / g;
      const bool sym = opt.kind == PrequantKind::kGptqSym;
      const int zmin = opt.kind == PrequantKind::kAwq ? 0 : 1;  // GPTQ v1 stores z - 1: z = 0 cannot be stored
      std::vector<int> q(static_cast<size_t>(n * k)), z(static_cast<size_t>(n * groups));
      std::vector<float> s(static_cast<size_t>(n * groups));
      for (int64_t r = 0; r < n; ++r) {
        for (int64_t b = 0; b < groups; ++b) {
          const size_t gi = static_cast<size_t>(r * groups + b);
          int4_group(&w[r * k + b * g], g, sym, zmin, &s[gi], &z[gi], &q[r * k + b * g]);
          for (int64_t c = b * g; c < (b + 1) * g; ++c)
            pm.dequant[r * k + c] = static_cast<float>(q[r * k + c] - z[gi]) * s[gi];
        }
      }
      // Stored group row of block b: the identity, or a fixed permutation (act-order labels).
      std::vector<int64_t> row_of(static_cast<size_t>(groups));
      for (int64_t b = 0; b < groups; ++b)
        row_of[b] = opt.kind == PrequantKind::kGptqAsymPermuted ? (b * 3 + 1) % groups : b;
      if (opt.kind == PrequantKind::kGptqAsymPermuted) {
        std::vector<bool> seen(static_cast<size_t>(groups));
        for (int64_t b = 0; b < groups; ++b) seen[row_of[b]] = true;
        for (int64_t b = 0; b < groups; ++b) EXPECT_TRUE(seen[b]) << "not a permutation for " << groups << " groups";
      }
      std::vector<uint16_t> scales(static_cast<size_t>(groups * n));
      for (int64_t r = 0; r < n; ++r)
        for (int64_t b = 0; b < groups; ++b) scales[row_of[b] * n + r] = f32_to_f16(s[r * groups + b]);
      quant.push_back(owned(module + ".scales", DType::kF16, {groups, n}, scales));
      if (opt.kind == PrequantKind::kAwq) {
        std::vector<uint32_t> qw(static_cast<size_t>(k * (n / 8))), qz(static_cast<size_t>(groups * (n / 8)));
        for (int64_t c = 0; c < k; ++c)
          for (int64_t j = 0; j < n / 8; ++j)
            for (int i = 0; i < 8; ++i) qw[c * (n / 8) + j] |= static_cast<uint32_t>(q[(8 * j + kAwqOrder[i]) * k + c]) << (4 * i);
        for (int64_t b = 0; b < groups; ++b)
          for (int64_t j = 0; j < n / 8; ++j)
            for (int i = 0; i < 8; ++i) qz[b * (n / 8) + j] |= static_cast<uint32_t>(z[(8 * j + kAwqOrder[i]) * groups + b]) << (4 * i);
        quant.push_back(owned(module + ".qweight", DType::kI32, {k, n / 8}, qw));
        quant.push_back(owned(module + ".qzeros", DType::kI32, {groups, n / 8}, qz));
      } else {
        std::vector<uint32_t> qw(static_cast<size_t>((k / 8) * n)), qz(static_cast<size_t>(groups * (n / 8)));
        for (int64_t rr = 0; rr < k / 8; ++rr)
          for (int64_t col = 0; col < n; ++col)
            for (int i = 0; i < 8; ++i) qw[rr * n + col] |= static_cast<uint32_t>(q[col * k + 8 * rr + i]) << (4 * i);
        for (int64_t b = 0; b < groups; ++b)
          for (int64_t j = 0; j < n / 8; ++j)
            for (int i = 0; i < 8; ++i)
              qz[row_of[b] * (n / 8) + j] |= static_cast<uint32_t>(z[(8 * j + i) * groups + b] - 1) << (4 * i);  // v1
        std::vector<int32_t> g_idx(static_cast<size_t>(k));
        for (int64_t c = 0; c < k; ++c) g_idx[c] = static_cast<int32_t>(row_of[c / g]);
        quant.push_back(owned(module + ".qweight", DType::kI32, {k / 8, n}, qw));
        quant.push_back(owned(module + ".qzeros", DType::kI32, {groups, n / 8}, qz));
        quant.push_back(owned(module + ".g_idx", DType::kI32, {k}, g_idx));
        if (opt.zero_biases) quant.push_back(owned(module + ".bias", DType::kF16, {n}, std::vector<uint16_t>(n, 0)));
      }
    } else {
      // FP8: each row's largest |w| becomes code +-448 exactly, so a per-channel re-quantization
      // of the dequantized weights finds the same scale and codes.
      const bool per_tensor = opt.kind == PrequantKind::kFp8PerTensor;
      float amax_all = 0.0f;
      for (float x : w) amax_all = std::max(amax_all, std::fabs(x));
      std::vector<uint8_t> codes(static_cast<size_t>(n * k));
      std::vector<float> row_scale(static_cast<size_t>(n));
      for (int64_t r = 0; r < n; ++r) {
        int64_t arg = 0;
        for (int64_t c = 0; c < k; ++c)
          if (std::fabs(w[r * k + c]) > std::fabs(w[r * k + arg])) arg = c;
        const float s = nice_up((per_tensor ? amax_all : std::fabs(w[r * k + arg])) / 448.0f);
        row_scale[r] = s;
        for (int64_t c = 0; c < k; ++c) codes[r * k + c] = f32_to_f8e4m3(w[r * k + c] / s);
        codes[r * k + arg] = w[r * k + arg] < 0 ? 0xfe : 0x7e;  // -+448
        for (int64_t c = 0; c < k; ++c) pm.dequant[r * k + c] = f8e4m3_to_f32(codes[r * k + c]) * s;
      }
      quant.push_back(owned(module + ".weight", DType::kF8E4M3, {n, k}, codes));
      if (per_tensor) {
        quant.push_back(owned(module + ".weight_scale", DType::kF32, {}, std::vector<float>{row_scale[0]}));
        quant.push_back(owned(module + ".input_scale", DType::kF32, {}, std::vector<float>{0.02f}));
      } else {
        quant.push_back(owned(module + ".weight_scale", DType::kF32, {n, 1}, row_scale));
      }
    }
    ref.push_back(owned(name, DType::kF32, v.shape, pm.dequant));
  }

  nlohmann::json qc;
  switch (opt.kind) {
    case PrequantKind::kAwq:
      qc = {{"quant_method", "awq"}, {"bits", 4}, {"group_size", opt.group_size}, {"zero_point", true}, {"version", "gemm"}};
      qc["modules_to_not_convert"] = nlohmann::json::array();
      for (const std::string& m : opt.keep_float) qc["modules_to_not_convert"].push_back(m);
      break;
    case PrequantKind::kGptqSym:
      qc = {{"quant_method", "gptq"}, {"bits", 4}, {"group_size", opt.group_size}, {"sym", true}, {"desc_act", false}};
      break;
    case PrequantKind::kGptqAsymPermuted:
      qc = {{"quant_method", "gptq"}, {"bits", 4}, {"group_size", opt.group_size}, {"sym", false}, {"desc_act", true},
            {"checkpoint_format", "gptq"}};
      break;
    case PrequantKind::kFp8PerChannel:
      qc = nlohmann::json::parse(R"({"quant_method": "compressed-tensors", "format": "float-quantized",
        "quantization_status": "compressed", "ignore": ["lm_head"], "kv_cache_scheme": null,
        "config_groups": {"group_0": {"targets": ["Linear"],
          "weights": {"num_bits": 8, "type": "float", "strategy": "channel", "symmetric": true, "dynamic": false},
          "input_activations": {"num_bits": 8, "type": "float", "strategy": "token", "symmetric": true, "dynamic": true}}}})");
      break;
    case PrequantKind::kFp8PerTensor:
      qc = {{"quant_method", "fp8"}, {"activation_scheme", "static"}, {"ignored_layers", {"lm_head"}}};
      break;
  }
  auto write = [&](const std::string& dir, const std::vector<Owned>& tensors, bool quantized) {
    std::vector<std::pair<std::string, Tensor>> views;
    for (const Owned& o : tensors) views.emplace_back(o.name, Tensor(const_cast<uint8_t*>(o.bytes.data()), o.dtype, o.shape));
    const Status s = write_safetensors(dir + "/model.safetensors", views);
    EXPECT_TRUE(s.is_ok()) << s.to_string();
    nlohmann::json c = config;
    if (quantized) c["quantization_config"] = qc;
    std::ofstream(dir + "/config.json") << c.dump(2);
  };
  write(fx.quant_dir, quant, true);
  write(fx.ref_dir, ref, false);
  return fx;
}

// Rewrites DIR/config.json's quantization_config with `edit`.
template <typename F>
void edit_quantization_config(const std::string& dir, F edit) {
  nlohmann::json c = nlohmann::json::parse(std::ifstream(dir + "/config.json"));
  edit(c["quantization_config"]);
  std::ofstream(dir + "/config.json") << c.dump(2);
}

}  // namespace anvil::test
