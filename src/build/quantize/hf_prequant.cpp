// Pre-quantized HF checkpoint import (see hf_prequant.h): config parsing, shape/dtype checks that
// name the offending tensor, and the nibble unpacking of the AutoAWQ GEMM and GPTQ layouts.
// Tensor data may sit unaligned in a mapped file, so words are read with memcpy.
#include "build/quantize/hf_prequant.h"

#include <cmath>
#include <cstring>

#include "build/quantize/int4_group_codec.h"
#include "core/dtype.h"

namespace anvil {
namespace {

// Nibble position of output column 8j + c inside an AWQ word: the inverse of {0, 2, 4, 6, 1, 3, 5, 7}.
constexpr int kAwqNibbleOfColumn[8] = {0, 4, 1, 5, 2, 6, 3, 7};

uint32_t word_at(const Tensor& t, int64_t i) {
  uint32_t v;
  std::memcpy(&v, static_cast<const uint8_t*>(t.data) + i * 4, 4);
  return v;
}

std::string shape_of(const Tensor& t) { return t.shape.to_string(); }

Status expect_tensor(const std::string& what, const Tensor& t, std::initializer_list<DType> dtypes, int64_t d0,
                     int64_t d1) {
  if (!t.defined()) return invalid_argument(what + " is missing");
  if (t.device != Device::kCpu) return invalid_argument(what + " must be in host memory");
  bool dtype_ok = false;
  for (DType d : dtypes) dtype_ok |= t.dtype == d;
  if (!dtype_ok) {
    std::string want;
    for (DType d : dtypes) want += (want.empty() ? "" : " or ") + std::string(dtype_name(d));
    return invalid_argument(what + " has dtype " + std::string(dtype_name(t.dtype)) + ", expected " + want);
  }
  if (t.rank() != 2 || t.dim(0) != d0 || t.dim(1) != d1) {
    return invalid_argument(what + " has shape " + shape_of(t) + ", expected [" + std::to_string(d0) + ", " +
                            std::to_string(d1) + "]");
  }
  return Status::ok();
}

// Group size from the tensors (K / rows of qzeros), checked against the config.
Result<int32_t> group_size_of(const std::string& name, int64_t k, const Tensor& qzeros, const PrequantConfig& config) {
  if (!qzeros.defined() || qzeros.rank() != 2 || qzeros.dim(0) <= 0 || k % qzeros.dim(0) != 0) {
    return invalid_argument(name + ".qzeros has shape " + shape_of(qzeros) + ": its rows must divide K=" +
                            std::to_string(k));
  }
  const int64_t g = k / qzeros.dim(0);
  if (config.group_size > 0 ? g != config.group_size : g != k) {
    return invalid_argument(name + ".qzeros has " + std::to_string(qzeros.dim(0)) + " group rows for K=" +
                            std::to_string(k) + " (group size " + std::to_string(g) +
                            "), but quantization_config.group_size is " + std::to_string(config.group_size));
  }
  if (g % 2 != 0) {
    return unsupported(name + ": group size " + std::to_string(g) + " is odd; int4 groups must pack whole bytes");
  }
  return static_cast<int32_t>(g);
}

// scales [groups, N] of any float dtype -> f16 bits, row-major; rejects values f16 cannot hold.
Result<std::vector<uint16_t>> scales_as_f16(const std::string& what, const Tensor& scales) {
  const size_t count = static_cast<size_t>(scales.numel());
  std::vector<uint16_t> out(count);
  if (scales.dtype == DType::kF16) {
    std::memcpy(out.data(), scales.data, count * 2);
  } else {
    std::vector<float> f(count);
    convert_to_f32(scales.dtype, scales.data, f.data(), count);
    for (size_t i = 0; i < count; ++i) out[i] = f32_to_f16(f[i]);
  }
  for (size_t i = 0; i < count; ++i) {
    if (!std::isfinite(f16_to_f32(out[i]))) {
      return invalid_argument(what + "[" + std::to_string(i / scales.dim(1)) + ", " + std::to_string(i % scales.dim(1)) +
                              "] is not a finite f16 value");
    }
  }
  return out;
}

Status store_params(const std::string& name, QuantizedLinear& q, int64_t n, int64_t g, uint16_t scale_f16, int zero) {
  const float s = f16_to_f32(scale_f16);
  const float offset = -static_cast<float>(zero) * s;  // exact in f32: 5-bit zero times an 11-bit mantissa
  const uint16_t offset_f16 = f32_to_f16(offset);
  if (!std::isfinite(f16_to_f32(offset_f16))) {
    return invalid_argument(name + ": zero point " + std::to_string(zero) + " times scale " + std::to_string(s) +
                            " (output " + std::to_string(n) + ", group " + std::to_string(g) +
                            ") overflows the f16 offset");
  }
  const size_t i = static_cast<size_t>(n * (q.k / q.group_size) + g);
  q.scales_f16[i] = scale_f16;
  q.offsets_f16[i] = offset_f16;
  return Status::ok();
}

Status check_common(const std::string& name, const Tensor& qweight, const PrequantConfig& config,
                    PrequantMethod expected) {
  if (config.method != expected) {
    return invalid_argument(name + ": the checkpoint's quant_method is " +
                            std::string(prequant_method_name(config.method)) + ", not " +
                            prequant_method_name(expected));
  }
  if (config.bits != 4) {
    return unsupported(name + ": quantization_config.bits is " + std::to_string(config.bits) + "; only 4 is supported");
  }
  if (!qweight.defined() || qweight.rank() != 2 || qweight.dim(0) <= 0 || qweight.dim(1) <= 0) {
    return invalid_argument(name + ".qweight has shape " + shape_of(qweight) + ", expected a non-empty 2-d tensor");
  }
  return Status::ok();
}

}  // namespace

const char* prequant_method_name(PrequantMethod m) {
  switch (m) {
    case PrequantMethod::kAwq: return "awq";
    case PrequantMethod::kGptq: return "gptq";
  }
  return "?";
}

Result<PrequantConfig> parse_quantization_config(const nlohmann::json& config) {
  const nlohmann::json* qc = &config;
  if (config.is_object() && config.contains("quantization_config")) qc = &config["quantization_config"];
  if (!qc->is_object() || !qc->contains("quant_method") || !(*qc)["quant_method"].is_string()) {
    return invalid_argument("config.json: quantization_config.quant_method is missing (expected \"awq\" or \"gptq\")");
  }
  const nlohmann::json& j = *qc;
  auto field = [&](const char* key) { return std::string("config.json: quantization_config.") + key; };
  auto get_int = [&](const char* key, const char* alt, int64_t fallback) -> Result<int64_t> {
    const char* found = j.contains(key) ? key : (alt && j.contains(alt) ? alt : nullptr);
    if (!found) return fallback;
    if (!j[found].is_number_integer()) return invalid_argument(field(found) + " must be an integer, got " + j[found].dump());
    return j[found].get<int64_t>();
  };
  auto get_bool = [&](const char* key, bool fallback) -> Result<bool> {
    if (!j.contains(key) || j[key].is_null()) return fallback;
    if (!j[key].is_boolean()) return invalid_argument(field(key) + " must be true or false, got " + j[key].dump());
    return j[key].get<bool>();
  };

  PrequantConfig out;
  const std::string method = j["quant_method"].get<std::string>();
  if (method == "awq") {
    out.method = PrequantMethod::kAwq;
  } else if (method == "gptq") {
    out.method = PrequantMethod::kGptq;
  } else {
    return unsupported(field("quant_method") + " is \"" + method + "\"; supported: awq, gptq");
  }
  ANVIL_ASSIGN_OR_RETURN(int64_t bits, get_int("bits", "w_bit", 4));
  const char* bits_key = j.contains("bits") ? "bits" : "w_bit";
  if (bits != 4) return unsupported(field(bits_key) + " is " + std::to_string(bits) + "; only 4-bit is supported");
  out.bits = 4;
  ANVIL_ASSIGN_OR_RETURN(int64_t group, get_int("group_size", "q_group_size", 128));
  if (group != -1 && (group <= 0 || group % 2 != 0 || group > (int64_t{1} << 30))) {
    return unsupported(field(j.contains("group_size") ? "group_size" : "q_group_size") + " is " + std::to_string(group) + "; expected -1 or a positive even size");
  }
  out.group_size = static_cast<int32_t>(group);

  if (out.method == PrequantMethod::kAwq) {
    ANVIL_ASSIGN_OR_RETURN(out.zero_point, get_bool("zero_point", true));
    if (!out.zero_point) {
      return unsupported(field("zero_point") + " is false; the AWQ GEMM format read here stores zero points");
    }
    if (j.contains("version") && !j["version"].is_null()) {
      if (!j["version"].is_string()) return invalid_argument(field("version") + " must be a string");
      out.version = j["version"].get<std::string>();
      for (char& c : out.version) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    if (out.version != "gemm") {
      return unsupported(field("version") + " is \"" + out.version +
                         "\"; only the AutoAWQ \"gemm\" layout is supported (re-export with version=gemm)");
    }
    if (j.contains("modules_to_not_convert") && j["modules_to_not_convert"].is_array()) {
      for (const auto& m : j["modules_to_not_convert"]) {
        if (!m.is_string()) return invalid_argument(field("modules_to_not_convert") + " must list strings");
        out.modules_not_converted.push_back(m.get<std::string>());
      }
    }
  } else {
    ANVIL_ASSIGN_OR_RETURN(out.desc_act, get_bool("desc_act", false));
    ANVIL_ASSIGN_OR_RETURN(out.sym, get_bool("sym", true));
    ANVIL_ASSIGN_OR_RETURN(out.lm_head, get_bool("lm_head", false));
    std::string format = "gptq";
    if (j.contains("checkpoint_format") && !j["checkpoint_format"].is_null()) {
      if (!j["checkpoint_format"].is_string()) return invalid_argument(field("checkpoint_format") + " must be a string");
      format = j["checkpoint_format"].get<std::string>();
    }
    if (format == "gptq") {
      out.zeros_minus_one = true;
    } else if (format == "gptq_v2") {
      out.zeros_minus_one = false;
    } else {
      return unsupported(field("checkpoint_format") + " is \"" + format + "\"; supported: gptq, gptq_v2");
    }
    if (j.contains("dynamic") && !j["dynamic"].is_null() && !j["dynamic"].empty()) {
      return unsupported(field("dynamic") + " sets per-module quantization overrides, which are not supported");
    }
  }
  return out;
}

Result<QuantizedLinear> import_awq_gemm(const std::string& name, const Tensor& qweight, const Tensor& qzeros,
                                        const Tensor& scales, const PrequantConfig& config) {
  ANVIL_RETURN_IF_ERROR(check_common(name, qweight, config, PrequantMethod::kAwq));
  const int64_t k = qweight.dim(0), n = qweight.dim(1) * 8;
  ANVIL_RETURN_IF_ERROR(expect_tensor(name + ".qweight", qweight, {DType::kI32}, k, n / 8));
  ANVIL_ASSIGN_OR_RETURN(int32_t g, group_size_of(name, k, qzeros, config));
  const int64_t groups = k / g;
  ANVIL_RETURN_IF_ERROR(expect_tensor(name + ".qzeros", qzeros, {DType::kI32}, groups, n / 8));
  ANVIL_RETURN_IF_ERROR(
      expect_tensor(name + ".scales", scales, {DType::kF16, DType::kBF16, DType::kF32}, groups, n));
  ANVIL_ASSIGN_OR_RETURN(std::vector<uint16_t> s16, scales_as_f16(name + ".scales", scales));

  QuantizedLinear q = quant_detail::make_int4_group(n, k, g);
  for (int64_t r = 0; r < k; ++r) {
    for (int64_t j = 0; j < n / 8; ++j) {
      const uint32_t word = word_at(qweight, r * (n / 8) + j);
      for (int c = 0; c < 8; ++c)
        quant_detail::int4_store_code(q, 8 * j + c, r, static_cast<int>((word >> (4 * kAwqNibbleOfColumn[c])) & 0xf));
    }
  }
  for (int64_t gi = 0; gi < groups; ++gi) {
    for (int64_t j = 0; j < n / 8; ++j) {
      const uint32_t word = word_at(qzeros, gi * (n / 8) + j);
      for (int c = 0; c < 8; ++c) {
        const int64_t col = 8 * j + c;
        const int zero = static_cast<int>((word >> (4 * kAwqNibbleOfColumn[c])) & 0xf);
        ANVIL_RETURN_IF_ERROR(store_params(name, q, col, gi, s16[static_cast<size_t>(gi * n + col)], zero));
      }
    }
  }
  return q;
}

Result<QuantizedLinear> import_gptq(const std::string& name, const Tensor& qweight, const Tensor& qzeros,
                                    const Tensor& scales, const Tensor& g_idx, const PrequantConfig& config) {
  ANVIL_RETURN_IF_ERROR(check_common(name, qweight, config, PrequantMethod::kGptq));
  const int64_t k = qweight.dim(0) * 8, n = qweight.dim(1);
  ANVIL_RETURN_IF_ERROR(expect_tensor(name + ".qweight", qweight, {DType::kI32}, k / 8, n));
  if (n % 8 != 0) {
    return invalid_argument(name + ".qweight has " + std::to_string(n) + " output columns; GPTQ packs qzeros 8 per word");
  }
  ANVIL_ASSIGN_OR_RETURN(int32_t g, group_size_of(name, k, qzeros, config));
  const int64_t groups = k / g;
  ANVIL_RETURN_IF_ERROR(expect_tensor(name + ".qzeros", qzeros, {DType::kI32}, groups, n / 8));
  ANVIL_RETURN_IF_ERROR(
      expect_tensor(name + ".scales", scales, {DType::kF16, DType::kBF16, DType::kF32}, groups, n));
  ANVIL_ASSIGN_OR_RETURN(std::vector<uint16_t> s16, scales_as_f16(name + ".scales", scales));

  // Which stored group row serves each run of g consecutive input columns.
  std::vector<int64_t> row_of_block(static_cast<size_t>(groups));
  for (int64_t b = 0; b < groups; ++b) row_of_block[b] = b;
  if (g_idx.defined()) {
    if (g_idx.device != Device::kCpu || (g_idx.dtype != DType::kI32 && g_idx.dtype != DType::kI64) ||
        g_idx.rank() != 1 || g_idx.dim(0) != k) {
      return invalid_argument(name + ".g_idx has dtype " + std::string(dtype_name(g_idx.dtype)) + " and shape " +
                              shape_of(g_idx) + ", expected I32 or I64 [" + std::to_string(k) + "]");
    }
    auto label = [&](int64_t c) -> int64_t {
      if (g_idx.dtype == DType::kI32) {
        int32_t v;
        std::memcpy(&v, static_cast<const uint8_t*>(g_idx.data) + c * 4, 4);
        return v;
      }
      int64_t v;
      std::memcpy(&v, static_cast<const uint8_t*>(g_idx.data) + c * 8, 8);
      return v;
    };
    for (int64_t c = 0; c < k; ++c) {
      const int64_t v = label(c), b = c / g;
      if (v < 0 || v >= groups) {
        return invalid_argument(name + ".g_idx[" + std::to_string(c) + "] = " + std::to_string(v) +
                                " is outside [0, " + std::to_string(groups) + ")");
      }
      if (c % g == 0) {
        row_of_block[b] = v;
      } else if (v != row_of_block[b]) {
        return unsupported(name + ".g_idx: input column " + std::to_string(c) + " is in group " + std::to_string(v) +
                           " but column " + std::to_string(b * g) + " is in group " +
                           std::to_string(row_of_block[b]) +
                           ": act-order (desc_act) groups that are not runs of consecutive columns cannot be stored "
                           "as int4 groups; re-quantize with desc_act=false or static_groups=true");
      }
    }
  }

  QuantizedLinear q = quant_detail::make_int4_group(n, k, g);
  for (int64_t r = 0; r < k / 8; ++r) {
    for (int64_t col = 0; col < n; ++col) {
      const uint32_t word = word_at(qweight, r * n + col);
      for (int i = 0; i < 8; ++i) quant_detail::int4_store_code(q, col, 8 * r + i, static_cast<int>((word >> (4 * i)) & 0xf));
    }
  }
  const int zero_bias = config.zeros_minus_one ? 1 : 0;
  for (int64_t b = 0; b < groups; ++b) {
    const int64_t row = row_of_block[b];
    for (int64_t j = 0; j < n / 8; ++j) {
      const uint32_t word = word_at(qzeros, row * (n / 8) + j);
      for (int i = 0; i < 8; ++i) {
        const int64_t col = 8 * j + i;
        const int zero = static_cast<int>((word >> (4 * i)) & 0xf) + zero_bias;
        ANVIL_RETURN_IF_ERROR(store_params(name, q, col, b, s16[static_cast<size_t>(row * n + col)], zero));
      }
    }
  }
  return q;
}

}  // namespace anvil
