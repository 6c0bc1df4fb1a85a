// Builds a Tokenizer from already-parsed JSON (tokenizer.json and, if not null, the
// tokenizer_config.json object). For callers that hold the JSON anyway, e.g. tests that patch
// one component; everyone else uses Tokenizer::load / from_json.
#pragma once

#include <memory>
#include <string>

#include <nlohmann/json_fwd.hpp>

#include "tokenizer/tokenizer.h"

namespace anvil {

Result<std::unique_ptr<Tokenizer>> tokenizer_from_parsed_json(const nlohmann::json& tokenizer_json,
                                                              const nlohmann::json& config_json,
                                                              const std::string& source = "tokenizer.json");

}  // namespace anvil
