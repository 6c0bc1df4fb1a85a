// WeightOnlyLinear: out[M, N] = x[M, K] @ dequant(w)^T (+ bias[N]) for the weight-only formats of
// backend.h (kInt8WeightOnly per channel, kInt4Group with group 32/64/128), bf16/fp16 x, output
// in the compute dtype or f32. Two paths (bench/cuda_kernels.md, "Weight-only quantized GEMM"):
//   decode  (M <= decode_max_m(), default 16): kernels/quant/weight_only_gemv.cuh streams the
//           packed weights once, dequantizes in registers and multiplies on the tensor cores;
//           split-K across CTAs for long rows (rule in decode_config). One launch, no
//           allocation, PDL on sm_90 (the next kernel may launch after this one's prologue).
//   prefill (larger M): kernels/quant/weight_only_dequant.cuh expands w into a dense scratch
//           matrix, then the dense cuBLASLt GEMM of the backend's LinearRunner runs on it.
// Both only enqueue work. The scratch grows outside CUDA graph capture only: run the largest
// prefill shape once eagerly before capturing; a grow during capture fails with a clear error.
// W8A8 weights (kInt8W8A8, kFp8W8A8: per-channel 8-bit) are accepted at decode sizes only: the
// decode kernel streams them like kInt8WeightOnly (fp8 converted exactly to 16 bits).
// Contract (checked): K % 16 == 0 (int8, fp8), K % group_size == 0 and group_size in {32, 64, 128}
// (int4); x and w.data 16-byte aligned. The split-K workspace (4 MiB) is fixed at creation.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/ops/linear.h"
#include "core/dtype.h"
#include "core/status.h"

namespace anvil::cuda {

struct WeightOnlyArgs {
  const void* x = nullptr;  // [m, w.k] in dtype
  int64_t m = 0;
  DType dtype = DType::kBF16;  // compute dtype of x, bias, and out unless out_f32
  const void* bias = nullptr;  // [w.n] in dtype, or null
  void* out = nullptr;         // [m, w.n] in dtype, or f32 when out_dtype is f32
  DType out_dtype = DType::kBF16;
};

// Decode kernel variant (benchmarks, tests). 0 fields are picked by the measured rule in the .cu.
//   unroll:      16-byte weight chunks per lane per row per K step: 1, 2 or 4
//   row_tiles:   16-row mma tiles per CTA: 1, or 2 (M > 8 only; then unroll is 1)
//   ctas_per_sm: split-K target, K is split across CTAs until the grid has this many CTAs per
//                SM; -1 never splits
struct WeightOnlyVariant {
  int unroll = 0;
  int row_tiles = 0;
  int ctas_per_sm = 0;
};

// What run_decode launches for a shape: the kernel instance and the split-K factor.
struct WeightOnlyDecodeConfig {
  int unroll = 2;
  int row_tiles = 1;
  int splits = 1;
  int64_t steps_per_split = 0;  // CTA K steps (kWoWarps * 4 * unroll chunks) of one split
  int64_t ctas = 0;             // grid size
};

class WeightOnlyLinear {
 public:
  static constexpr int64_t kDecodeMaxMDefault = 16;

  // `dense` runs the prefill GEMM; it must outlive this object.
  static Result<std::unique_ptr<WeightOnlyLinear>> create(cudaStream_t stream, LinearRunner* dense);
  ~WeightOnlyLinear();
  WeightOnlyLinear(const WeightOnlyLinear&) = delete;
  WeightOnlyLinear& operator=(const WeightOnlyLinear&) = delete;

  // Checks the format contract (group size, K multiple, alignment); run() calls it first.
  static Status check(const QuantizedWeight& w, const WeightOnlyArgs& a);

  // Picks the path by M.
  Status run(const QuantizedWeight& w, const WeightOnlyArgs& a);
  // The two paths, forced (benchmarks and tests). run_decode needs M <= 16; splits = 0 picks
  // the split-K factor by the rule in the .cu, > 0 forces one (clamped to whole CTA steps and
  // to the workspace).
  Status run_decode(const QuantizedWeight& w, const WeightOnlyArgs& a, int splits = 0);
  Status run_prefill(const QuantizedWeight& w, const WeightOnlyArgs& a);

  void set_decode_max_m(int64_t m) { decode_max_m_ = m; }
  // Forces decode variant fields (0 fields stay on the rule); set_auto_variant() restores it.
  void set_variant(WeightOnlyVariant v) { variant_ = v; }
  void set_auto_variant() { variant_ = WeightOnlyVariant{}; }
  WeightOnlyVariant variant() const { return variant_; }
  // Benchmarks: launch the decode kernel without programmatic dependent launch (as after a
  // kernel that cannot overlap). Default on where supported (sm_90+).
  void set_pdl(bool on) { pdl_allowed_ = on; }
  // Benchmarks: let the next kernel launch only after the K loop instead of after the prologue.
  void set_early_trigger(bool on) { early_trigger_ = on; }
  // The configuration run_decode would use for this weight at M tokens (splits > 0 forces it).
  WeightOnlyDecodeConfig decode_config(const QuantizedWeight& w, int64_t m, int splits = 0) const;
  int64_t decode_max_m() const { return decode_max_m_; }
  // Bytes of dense scratch held for the prefill path (grows to the largest N x K x 2 seen).
  size_t scratch_bytes() const { return scratch_bytes_; }

 private:
  WeightOnlyLinear(cudaStream_t stream, LinearRunner* dense) : stream_(stream), dense_(dense) {}
  Status reserve_scratch(size_t bytes);

  cudaStream_t stream_;
  LinearRunner* dense_;
  int num_sms_ = 0;
  bool pdl_ = false;  // sm_90+
  bool pdl_allowed_ = true;
  bool early_trigger_ = true;
  int64_t decode_max_m_ = kDecodeMaxMDefault;
  WeightOnlyVariant variant_;
  // Split-K workspace, fixed at creation: partial sums (splits * M * N floats at most) and one
  // arrival counter per CTA row of the grid (zero at rest); larger shapes run unsplit.
  static constexpr size_t kPartialFloats = size_t{1} << 20;
  static constexpr int64_t kNumCounters = 4096;
  float* partials_ = nullptr;
  unsigned* counters_ = nullptr;
  void* scratch_ = nullptr;  // prefill: dense w [N, K]
  size_t scratch_bytes_ = 0;
  std::vector<void*> retired_;  // outgrown scratch, freed at destruction (captured graphs may use it)
};

}  // namespace anvil::cuda
