// Names of the backend op set's enums, for messages and the engine file.
#include "backend/backend.h"

namespace anvil {

const char* quant_format_name(QuantFormat f) {
  switch (f) {
    case QuantFormat::kInt8WeightOnly: return "int8_wo";
    case QuantFormat::kInt4Group: return "int4_group";
    case QuantFormat::kInt8W8A8: return "int8_w8a8";
    case QuantFormat::kFp8W8A8: return "fp8_w8a8";
  }
  return "?";
}

}  // namespace anvil
