// load_model: a Hugging Face model folder -> a ready ModelRunner on a backend
// (config.json -> ModelSpec -> ModelDefinition; checkpoint -> WeightStore; runner).
#pragma once

#include <memory>
#include <string>

#include "runtime/model_runner.h"

namespace anvil {

Result<std::unique_ptr<ModelRunner>> load_model(const std::string& model_dir, Backend* backend,
                                                const RunnerOptions& options);
// One rank of a tensor x pipeline parallel job: its layers and weight shards only; the
// communicators come in options.comm_*.
Result<std::unique_ptr<ModelRunner>> load_model(const std::string& model_dir, Backend* backend,
                                                const RunnerOptions& options, const dist::ParallelConfig& parallel);

}  // namespace anvil
