// Names of the --quant methods and the dequantization of a packed QuantizedLinear back to f32,
// element for element as backend.h's QuantFormat (and the CPU reference) defines it.
#include "build/quantize/quant_types.h"

#include "core/dtype.h"

namespace anvil {

const char* quant_method_name(QuantMethod m) {
  switch (m) {
    case QuantMethod::kNone: return "none";
    case QuantMethod::kInt8WeightOnly: return "int8-wo";
    case QuantMethod::kInt4WeightOnly: return "int4-wo";
    case QuantMethod::kInt4Awq: return "int4-awq";
    case QuantMethod::kInt4Gptq: return "int4-gptq";
    case QuantMethod::kW8A8SmoothQuant: return "w8a8-sq";
    case QuantMethod::kFp8: return "fp8";
    case QuantMethod::kFp8Gptq: return "fp8-gptq";
  }
  return "?";
}

Result<QuantMethod> quant_method_from_name(const std::string& name) {
  static constexpr QuantMethod kAll[] = {QuantMethod::kNone,     QuantMethod::kInt8WeightOnly,  QuantMethod::kInt4WeightOnly,
                                         QuantMethod::kInt4Awq,  QuantMethod::kInt4Gptq,        QuantMethod::kW8A8SmoothQuant,
                                         QuantMethod::kFp8,     QuantMethod::kFp8Gptq};
  std::string choices;
  for (QuantMethod m : kAll) {
    if (name == quant_method_name(m)) return m;
    choices += choices.empty() ? "" : ", ";
    choices += quant_method_name(m);
  }
  return invalid_argument("--quant '" + name + "' is not a quantization method; choose one of " + choices);
}

std::vector<float> dequantize(const QuantizedLinear& q) {
  const int64_t n = q.n, k = q.k;
  std::vector<float> w(static_cast<size_t>(n * k));
  switch (q.format) {
    case QuantFormat::kInt8WeightOnly:
    case QuantFormat::kInt8W8A8:
      for (int64_t r = 0; r < n; ++r)
        for (int64_t c = 0; c < k; ++c) w[r * k + c] = static_cast<float>(static_cast<int8_t>(q.data[r * k + c])) * q.scales[r];
      break;
    case QuantFormat::kFp8W8A8:
      for (int64_t r = 0; r < n; ++r)
        for (int64_t c = 0; c < k; ++c) w[r * k + c] = f8e4m3_to_f32(q.data[r * k + c]) * q.scales[r];
      break;
    case QuantFormat::kInt4Group: {
      const int64_t groups = k / q.group_size;
      for (int64_t r = 0; r < n; ++r) {
        for (int64_t c = 0; c < k; ++c) {
          const int64_t g = r * groups + c / q.group_size;
          const int code = (q.data[r * (k / 2) + c / 2] >> ((c & 1) * 4)) & 0xf;
          w[r * k + c] = static_cast<float>(code) * f16_to_f32(q.scales_f16[g]) + f16_to_f32(q.offsets_f16[g]);
        }
      }
      break;
    }
  }
  return w;
}

}  // namespace anvil
