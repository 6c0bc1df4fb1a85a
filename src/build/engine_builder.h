// build_engine: a Hugging Face model folder -> one .anvil engine file. Runs the build passes
// (weight packing recorded from the weight table, dead-tensor elimination, activation memory
// planning, GEMM autotuning on a CUDA device when one is given) and writes the weights converted
// to the target dtype. Needs no device for CPU targets, nor for CUDA targets given cuda_arch.
#pragma once

#include <string>

#include "backend/backend.h"
#include "build/engine_file.h"
#include "build/quantize/calibration.h"
#include "model/archs/arch.h"
#include "model/checkpoint/checkpoint.h"

namespace anvil {

struct BuildReport {
  std::string path;
  int64_t num_weights = 0;
  int64_t num_packed_weights = 0;
  uint64_t weight_bytes = 0;
  int32_t ops = 0;
  int32_t ops_removed = 0;
  int32_t tensors_removed = 0;
  std::vector<std::string> weights_removed;
  int64_t activation_peak_bytes = 0;       // planned
  int64_t activation_unplanned_bytes = 0;  // sum of all activations
  std::string gpu_arch;
  std::string gemm_tuning_status;
  int64_t gemm_shapes_tuned = 0;
  int64_t num_quantized_linears = 0;  // projections turned into kQLinear
  int64_t calibration_tokens = 0;     // 0: no calibration ran
  double seconds = 0;
};

// The --dtype spelling of a dtype ("bf16", "fp16", "f32"), for messages that suggest an option.
std::string dtype_option_name(DType t);

// "sm_90" from a CUDA backend name such as "cuda:0 (NVIDIA H100 80GB HBM3, sm_90)"; empty if none.
std::string gpu_arch_from_device_name(const std::string& device_name);

// Fills in defaults (max_seq_len 0 -> the model's limit) and refuses inconsistent options with an
// error naming the option to change.
Status resolve_build_options(const ModelSpec& spec, EngineBuildOptions* options);

// `device`: a backend of the target kind to read the GPU arch from, autotune and calibrate on;
// may be null. `calib`: the calibration token sequences (the caller tokenizes), required when
// calibration_needs(options).any() (AWQ, GPTQ, SmoothQuant, a quantized KV cache).
Result<BuildReport> build_engine(const std::string& model_dir, const EngineBuildOptions& options,
                                 const std::string& out_path, Backend* device = nullptr,
                                 const CalibrationData* calib = nullptr);

// The same from an already defined model (tests use it to add weights the graph never reads).
Result<BuildReport> build_engine_from_definition(ModelDefinition def, const Checkpoint& ckpt, EngineBuildOptions options,
                                                 const std::string& out_path, Backend* device = nullptr,
                                                 const CalibrationData* calib = nullptr);

}  // namespace anvil
