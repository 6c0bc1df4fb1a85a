// The .anvil engine file: a fixed 64-byte preamble, a JSON header (model spec, build options,
// the graph after passes, the weight table, target backend / GPU arch) and the weight blobs,
// each 256-byte aligned, already in the target dtype and packed, so loading is mmap + one copy
// per weight. The layout is pictured in docs/engine.md; every offset in the header is relative
// to data_offset and every blob lies inside the file (checked on open).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "build/quantize/quant_types.h"
#include "core/mmap_file.h"
#include "core/status.h"
#include "graph/graph.h"
#include "model/model_spec.h"

namespace anvil {

inline constexpr char kEngineMagic[8] = {'A', 'N', 'V', 'I', 'L', 'E', 'N', 'G'};
inline constexpr uint32_t kEngineFormatVersion = 1;
inline constexpr uint64_t kEngineAlignment = 256;  // data_offset and every blob offset
inline constexpr uint64_t kEnginePreambleBytes = 64;

// Preamble (little-endian), bytes:
//   0  magic "ANVILENG"       8   u32 format version   12  u32 reserved (0)
//   16 u64 header_bytes       24  u64 header xxh64     32  u64 data_offset
//   40 u64 file_bytes         48  16 reserved bytes (0)
// then header_bytes of JSON, zero padding to data_offset, the blobs.

struct EngineBuildOptions {
  BackendKind backend = BackendKind::kCpu;
  DType dtype = DType::kF32;   // weights and activations; the CPU backend computes in f32
  int32_t max_batch = 64;      // sequences per step (RunnerOptions::max_num_seqs)
  int32_t max_seq_len = 0;     // 0 in a request: the model's max_position_embeddings; resolved in the file
  int32_t max_num_tokens = 2048;
  int32_t kv_block_size = 16;
  int32_t cuda_arch = 0;       // CUDA targets: 90 for sm_90; 0 = read it from the device
  // Quantization (docs/quantization.md). group_size applies to the int4 methods.
  QuantMethod quant = QuantMethod::kNone;
  int32_t group_size = 128;
  // KV cache element type: resolved to the compute dtype unless kF8E4M3 or kI8 (then the engine
  // holds per-layer, per-KV-head f32 scales "layers.{i}.attn.k_scale" / "layers.{i}.attn.v_scale").
  DType kv_cache_dtype = DType::kF32;
  std::string calib_file;      // calibration text; empty: the bundled sample (data/calib/)
  int32_t calib_samples = 32;  // sequences of calibration text
};

struct EngineWeight {
  std::string name;
  DType dtype = DType::kF32;
  Shape shape;
  uint64_t offset = 0;  // from data_offset; a multiple of kEngineAlignment
  uint64_t bytes = 0;
  uint64_t checksum = 0;  // XXH64 (seed 0) of the blob
  std::vector<std::string> packed_from;  // HF tensors concatenated along dim 0 (2+: a packed weight)
  bool computed = false;                 // made by anvil (rope.inv_freq), not read from the checkpoint
};

// One GEMM shape's autotuning outcome (CUDA targets). cuBLASLt algorithms are timed per M bucket;
// the winner is stored and pinned again at load without timing when the cuBLASLt version
// matches and cuBLASLt accepts it (docs/engine.md); otherwise it is re-timed.
struct GemmTuning {
  int64_t m_bucket = 0, n = 0, k = 0;
  std::string out_dtype;
  bool has_bias = false;
  int candidates = 0;
  double best_us = 0, heuristic_us = 0;
  // The pinned cuBLASLt algorithm (128 hex digits of cublasLtMatmulAlgo_t) and the cuBLASLt
  // version that chose it; empty in engines and cache entries from before it was recorded.
  std::string algo;
  int64_t cublaslt_version = 0;
};

struct EngineHeader {
  std::string anvil_version;
  std::string source_model_dir;  // absolute path of the HF folder built from (tokenizer files live there)
  ModelSpec spec;
  EngineBuildOptions options;
  std::string device_name;  // backend the engine was built beside ("cpu", "cuda:0 (NVIDIA H100 ..., sm_90)")
  std::string gpu_arch;     // "sm_90" for CUDA targets, empty for the CPU
  Graph graph;              // after passes; the runtime executes it as is
  std::vector<EngineWeight> weights;
  // Pass records.
  int32_t dce_ops_removed = 0;
  int32_t dce_tensors_removed = 0;
  std::vector<std::string> dce_weights_removed;
  int64_t plan_max_tokens = 0, plan_max_logit_rows = 0, plan_elem_bytes = 0;
  MemoryPlan plan;
  std::string gemm_tuning_status = "not_tuned";  // "tuned" | "not_tuned: <why>"
  std::vector<GemmTuning> gemm_tuning;
};

const char* backend_kind_name(BackendKind k);

// Writes the engine: assigns blob offsets, streams the blobs (`produce(i, &bytes)` returns weight
// i's bytes, exactly header.weights[i].bytes of them), fills in the checksums and writes the
// header. Writes PATH.partial.PID and renames it to PATH, so a reader never sees half a file.
Status write_engine_file(const std::string& path, EngineHeader header,
                         const std::function<Status(size_t, std::vector<uint8_t>*)>& produce);

// A mapped engine file whose preamble, header checksum and header were validated and whose blobs
// all lie inside the file. Weight checksums are checked on demand (verify_weight).
class EngineFile {
 public:
  static Result<EngineFile> open(const std::string& path);

  const EngineHeader& header() const { return header_; }
  const std::string& path() const { return file_.path(); }
  const uint8_t* weight_data(size_t i) const { return file_.data() + data_offset_ + header_.weights[i].offset; }
  // Recomputes weight i's XXH64 and compares it with the header.
  Status verify_weight(size_t i) const;
  // Every weight's checksum, spread over the thread pool; the first failure in table order.
  Status verify_all_weights() const;
  // Maps the page tables of the weight region up front (MADV_POPULATE_READ where the kernel has
  // it): one call instead of a page fault per 4 KiB during the copy. Best effort.
  void prefault_weights() const;
  uint64_t weight_bytes() const;

 private:
  MmapFile file_;
  EngineHeader header_;
  uint64_t data_offset_ = 0;
};

uint64_t engine_checksum(const void* data, size_t bytes);

}  // namespace anvil
