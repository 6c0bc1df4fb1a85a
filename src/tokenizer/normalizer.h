// Normalizers of HF tokenizer.json ("normalizer" field): NFC, NFD, NFKC, NFKD (utf8proc), Replace,
// Prepend, Lowercase, Strip and Sequence. A normalizer rewrites one piece of valid UTF-8 in place
// and keeps it valid UTF-8.
#pragma once

#include <memory>
#include <string>

#include <nlohmann/json_fwd.hpp>

#include "core/status.h"

namespace anvil::tok {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual void normalize(std::string& text) const = 0;
};

// Builds a normalizer from its JSON object; a null JSON gives nullptr (no normalization).
// Unknown types are refused: `normalizer type "X" is not supported`.
Result<std::unique_ptr<Normalizer>> make_normalizer(const nlohmann::json& j);

}  // namespace anvil::tok
