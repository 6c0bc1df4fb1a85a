// Decoders of HF tokenizer.json ("decoder" field): ByteLevel, Metaspace, ByteFallback, Fuse,
// Strip, Replace and Sequence. A decoder rewrites the list of token strings; the tokenizer joins
// the final list. Output is always valid UTF-8 (invalid bytes become U+FFFD as in HF).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "core/status.h"

namespace anvil::tok {

class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual void decode_chain(std::vector<std::string>& tokens) const = 0;
};

// Builds a decoder from JSON; null gives nullptr. Unknown types are refused by name.
Result<std::unique_ptr<Decoder>> make_decoder(const nlohmann::json& j);

}  // namespace anvil::tok
