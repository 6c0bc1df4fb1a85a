// Options shared by the subcommands that open a model (run, serve, bench): where the model is,
// which backend, and the runner's sizes; and open_model(), which resolves them into a backend
// and a loaded ModelRunner. A .gguf path is converted once into a cache folder; an HF folder is
// built once into a cached engine (docs/engine.md); --engine FILE loads a built engine directly.
#pragma once

#include <memory>
#include <string>

#include <CLI/CLI.hpp>

#include "backend/backend.h"
#include "runtime/model_runner.h"

namespace anvil::cli {

struct ModelArgs {
  std::string model;            // HF folder or .gguf file; empty: the default model
  std::string backend = "auto";  // auto | cpu | cuda
  std::string dtype = "bf16";   // cuda compute dtype: bf16 | fp16
  int32_t max_seq_len = 0;      // 0: the model's limit
  int32_t max_num_tokens = 2048;
  int32_t max_num_seqs = 64;
  int32_t block_size = 16;
  double gpu_memory_fraction = 0.90;
  std::string engine;             // a built .anvil file; backend, dtype and sizes come from it
  bool engine_cache = true;       // --model DIR: build into / reuse from the engine cache
  bool verify_checksums = true;   // check every weight's XXH64 when loading an engine
};

void add_model_options(CLI::App* cmd, ModelArgs* args);

struct OpenModel {
  std::string model_dir;  // the HF folder actually loaded
  std::unique_ptr<Backend> backend;
  std::unique_ptr<ModelRunner> runner;
};

// `max_logit_rows` > 0 raises the runner's logit rows (for dumps / all-position logits).
Result<OpenModel> open_model(const ModelArgs& args, int32_t max_logit_rows = 0);

// The folder the default model (SmolLM2-135M-Instruct) is imported into, and the GGUF it comes from.
std::string default_model_gguf();
// Cache folder for models converted from GGUF ($ANVIL_CACHE or ~/.cache/anvil).
std::string cache_dir();

}  // namespace anvil::cli
