// load_model: each stage's error gets the folder as context.
#include "runtime/model_loader.h"

#include "core/logging.h"

namespace anvil {

Result<std::unique_ptr<ModelRunner>> load_model(const std::string& model_dir, Backend* backend,
                                                const RunnerOptions& options) {
  return load_model(model_dir, backend, options, dist::ParallelConfig{});
}

Result<std::unique_ptr<ModelRunner>> load_model(const std::string& model_dir, Backend* backend,
                                                const RunnerOptions& options, const dist::ParallelConfig& parallel) {
  ANVIL_ASSIGN_OR_RETURN(ModelSpec spec, load_model_config(model_dir));
  ANVIL_ASSIGN_OR_RETURN(ModelDefinition def, define_model(spec, parallel));
  ANVIL_ASSIGN_OR_RETURN(Checkpoint ckpt, Checkpoint::open(model_dir));
  ANVIL_ASSIGN_OR_RETURN(WeightStore weights, WeightStore::load(def, ckpt, backend));
  ANVIL_LOG_INFO("loaded %s (%s, %lld layers, hidden %lld) on %s: %.1f MiB of weights", model_dir.c_str(),
                 spec.architecture.c_str(), static_cast<long long>(spec.num_layers),
                 static_cast<long long>(spec.hidden_size), backend->name().c_str(), weights.total_bytes() / 1048576.0);
  return ModelRunner::create(backend, std::move(def), std::move(weights), options);
}

}  // namespace anvil
