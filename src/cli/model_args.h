// Options shared by the subcommands that open a model (run, serve, bench): where the model is,
// which backend, and the runner's sizes; and open_model(), which resolves them into a backend
// and a loaded ModelRunner. A .gguf path is converted once into a cache folder; an HF folder is
// built once into a cached engine (docs/engine.md); --engine FILE loads a built engine directly.
#pragma once

#include <memory>
#include <string>

#include <CLI/CLI.hpp>

#include "backend/backend.h"
#include "cli/quant_args.h"
#include "dist/launcher.h"
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
  int32_t tp = 1;                 // tensor-parallel ranks
  int32_t pp = 1;                 // pipeline stages
  QuantArgs quant;                // --quant etc.: built through the engine cache
};

void add_model_options(CLI::App* cmd, ModelArgs* args);

struct OpenModel {
  std::unique_ptr<dist::DistContext> dist;  // --tp/--pp: this rank's communicators (outlive the runner)
  std::string model_dir;  // the HF folder actually loaded
  std::unique_ptr<Backend> backend;
  std::unique_ptr<ModelRunner> runner;
};

// `max_logit_rows` > 0 raises the runner's logit rows (for dumps / all-position logits).
Result<OpenModel> open_model(const ModelArgs& args, int32_t max_logit_rows = 0);

// --tp/--pp > 1 on one host without mpirun: replaces this process with `mpirun -np N` running the
// same command (returns only on failure). OK at once otherwise.
Status start_ranks_if_needed(const ModelArgs& args);
// True in a rank other than 0 of a --tp/--pp job: it loads its part and runs follow_model().
bool is_follower_rank(const ModelArgs& args);
// A follower's life: run rank 0's steps until it stops them. A failure ends the whole job.
int follow_model(OpenModel& m);
// Rank 0 at exit: tell the followers to stop (no-op when not distributed).
void stop_followers(OpenModel& m);

// The folder the default model (SmolLM2-135M-Instruct) is imported into, and the GGUF it comes from.
std::string default_model_gguf();
// Cache folder for models converted from GGUF ($ANVIL_CACHE or ~/.cache/anvil).
std::string cache_dir();

}  // namespace anvil::cli
