// The engine cache behind `anvil run|serve --model DIR`: an engine is built once per
// (model files' names + sizes + mtimes, build options, device, anvil and format version) into
// CACHE/<model>-<key>.anvil and reused while none of those change. Builds go through a
// .partial file and a rename, so concurrent processes never read half an engine.
#pragma once

#include <string>

#include "backend/backend.h"
#include "build/engine_file.h"
#include "build/quantize/calibration.h"

namespace anvil {

// The model files that feed the key: config.json, generation_config.json, *.safetensors and
// *.safetensors.index.json directly in DIR (or DIR itself when it is one .safetensors file).
// `device_desc` names the target device ("cpu", or the GPU's name and arch).
Result<std::string> engine_cache_key(const std::string& model_dir, const EngineBuildOptions& options,
                                     const std::string& device_desc);

// The description of `backend` that goes into the key: "cpu", or the CUDA name without its
// device index ("NVIDIA H100 80GB HBM3, sm_90"), so the same GPU model shares engines.
std::string engine_device_desc(const Backend& backend);

struct CachedEngine {
  std::string path;
  bool built = false;  // false: reused from the cache
};

// Returns the cached engine for the key, building it first if absent or unreadable.
// `device` is the backend the engine will run on (its kind must match options.backend); `calib`
// the calibration token sequences a quantized build needs (see build_engine).
Result<CachedEngine> get_or_build_engine(const std::string& cache_root, const std::string& model_dir,
                                         const EngineBuildOptions& options, Backend* device,
                                         const CalibrationData* calib = nullptr);

// $ANVIL_CACHE/engines, else ~/.cache/anvil/engines.
std::string default_engine_cache_dir();

}  // namespace anvil
