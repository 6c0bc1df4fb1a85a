// load_engine: an .anvil file -> a ready ModelRunner. Everything is checked before the first
// allocation: magic, format version, header checksum, target backend and dtype, GPU architecture,
// free memory against the weight bytes, and (unless turned off) every weight's checksum. Then
// each weight is one copy from the mmap'd file to the backend.
#pragma once

#include <memory>
#include <string>

#include "backend/backend.h"
#include "build/engine_file.h"
#include "runtime/model_runner.h"

namespace anvil {

struct EngineLoadOptions {
  bool verify_checksums = true;  // XXH64 of every weight blob (~10 GB/s a core); off for speed
};

// `runner`: the run-time knobs (kv_memory_fraction, num_kv_blocks, max_logit_rows, use_graphs,
// max_kv_bytes). max_num_tokens, max_num_seqs, max_seq_len and block_size are replaced by the
// engine's build options (max_batch is max_num_seqs): they are fixed when the engine is built.
Result<std::unique_ptr<ModelRunner>> load_engine(const std::string& path, Backend* backend, RunnerOptions runner,
                                                 const EngineLoadOptions& options = {});

// The checks load_engine makes against the backend, callable on their own. `device_name` is
// Backend::name() ("cuda:0 (NVIDIA H100 80GB HBM3, sm_90)").
Status check_engine_target(const EngineHeader& h, Device device, DType compute_dtype, const std::string& device_name,
                           const std::string& path);
// Refuses to allocate `weight_bytes` when `mem` shows less free.
Status check_engine_memory(uint64_t weight_bytes, const MemoryInfo& mem, const std::string& device_name,
                           const std::string& path);

}  // namespace anvil
