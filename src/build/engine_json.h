// JSON form of an engine header: every ModelSpec field, the build options, the graph (tensors and
// ops with ids as written, so the runtime executes exactly what was built), the weight table and
// the pass records. Parsing validates kinds, dtypes and every tensor id a node or alias refers to.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "build/engine_file.h"

namespace anvil {

nlohmann::json model_spec_to_json(const ModelSpec& spec);
Result<ModelSpec> model_spec_from_json(const nlohmann::json& j, const std::string& origin);

nlohmann::json graph_to_json(const Graph& g);
Result<Graph> graph_from_json(const nlohmann::json& j, const std::string& origin);

nlohmann::json build_options_to_json(const EngineBuildOptions& o);

nlohmann::json engine_header_to_json(const EngineHeader& h);
// `origin` names the file in errors.
Result<EngineHeader> engine_header_from_json(const nlohmann::json& j, const std::string& origin);

}  // namespace anvil
