// The quantization options shared by `anvil build` and the commands that build through the
// engine cache (run, serve, bench with --model DIR): --quant, --group-size, --kv-cache, --calib,
// --calib-samples. The CLI owns tokenization: calibration text is tokenized here with the
// model's own tokenizer and handed to build_engine as token ids (docs/quantization.md).
#pragma once

#include <string>

#include <CLI/CLI.hpp>

#include "build/engine_file.h"
#include "build/quantize/calibration.h"

namespace anvil::cli {

struct QuantArgs {
  std::string quant = "none";
  int32_t group_size = 128;
  std::string kv_cache = "auto";  // auto | bf16 | fp16 | f32 (unquantized: the compute dtype) | fp8 | int8
  std::string calib;              // calibration text file; empty: the bundled sample
  int32_t calib_samples = 32;
};

void add_quant_options(CLI::App* cmd, QuantArgs* args);

// True when any option asks for quantization (the weights or the KV cache).
bool quantization_requested(const QuantArgs& args);

// data/calib/calibration.txt of the source tree ($ANVIL_CALIB_FILE overrides).
std::string bundled_calibration_file();

// Sets o's quantization fields from args and, when the options need calibration, reads the
// calibration text, tokenizes it with model_dir's tokenizer and cuts it into *calib. The resolved
// file path goes into o->calib_file (so the engine cache key follows the file).
Status apply_quant_args(const QuantArgs& args, const std::string& model_dir, EngineBuildOptions* o, CalibrationData* calib);

}  // namespace anvil::cli
