// load_model: a Hugging Face model folder -> a ready ModelRunner on a backend
// (config.json -> ModelSpec -> ModelDefinition; checkpoint -> WeightStore; runner).
#pragma once

#include <memory>
#include <string>

#include "runtime/model_runner.h"

namespace anvil {

Result<std::unique_ptr<ModelRunner>> load_model(const std::string& model_dir, Backend* backend,
                                                const RunnerOptions& options);

}  // namespace anvil
