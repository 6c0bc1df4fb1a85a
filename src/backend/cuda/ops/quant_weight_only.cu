// WeightOnlyLinear (see quant_weight_only.h): contract checks, the split-K rule and the dtype /
// format / token-tile dispatch of the decode kernel, and the dequantize + cuBLASLt prefill path.
#include <algorithm>
#include <string>
#include <utility>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels/quant/weight_only_dequant.cuh"
#include "backend/cuda/kernels/quant/weight_only_gemv.cuh"
#include "backend/cuda/ops/pdl_launch.h"
#include "backend/cuda/ops/quant_weight_only.h"

namespace anvil::cuda {
namespace {

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

std::string what(const QuantizedWeight& w) {
  return std::string("linear_quantized (") + quant_format_name(w.format) + ", N=" + std::to_string(w.n) +
         " K=" + std::to_string(w.k) + ")";
}

bool is_int4(const QuantizedWeight& w) { return w.format == QuantFormat::kInt4Group; }

// log2(group_size / 32) for group sizes 32, 64, 128 (check() admits only those).
int group_shift(int group_size) { return group_size == 128 ? 2 : group_size == 64 ? 1 : 0; }

template <class E, class F, int NT, int U, int R>
cudaError_t launch_gemv(const kern::WoGemvParams& p, dim3 grid, bool pdl, cudaStream_t stream) {
  PdlLaunchConfig l(grid, dim3(kern::kWoThreads), stream, pdl);
  return cudaLaunchKernelEx(&l.cfg, kern::weight_only_gemv_kernel<E, F, NT, U, R>, p);
}

// Compiled instances: M <= 8 (NT = 1): U 2 or 4; M <= 16 (NT = 2): U 2 or 4, or 2 row tiles
// with U = 1. decode_config() only returns these.
template <class E, class F>
cudaError_t launch_gemv_config(const kern::WoGemvParams& p, const WeightOnlyDecodeConfig& c, dim3 grid, bool pdl,
                               cudaStream_t stream) {
  if (p.m <= 8) {
    return c.unroll == 4 ? launch_gemv<E, F, 1, 4, 1>(p, grid, pdl, stream) : launch_gemv<E, F, 1, 2, 1>(p, grid, pdl, stream);
  }
  if (c.row_tiles == 2) return launch_gemv<E, F, 2, 1, 2>(p, grid, pdl, stream);
  return c.unroll == 4 ? launch_gemv<E, F, 2, 4, 1>(p, grid, pdl, stream) : launch_gemv<E, F, 2, 2, 1>(p, grid, pdl, stream);
}

template <class E>
cudaError_t launch_gemv_dtype(const kern::WoGemvParams& p, QuantFormat f, const WeightOnlyDecodeConfig& c, dim3 grid,
                              bool pdl, cudaStream_t stream) {
  switch (f) {
    case QuantFormat::kInt4Group: return launch_gemv_config<E, kern::Int4Fmt>(p, c, grid, pdl, stream);
    case QuantFormat::kFp8W8A8: return launch_gemv_config<E, kern::Fp8Fmt>(p, c, grid, pdl, stream);
    case QuantFormat::kInt8WeightOnly:
    case QuantFormat::kInt8W8A8: return launch_gemv_config<E, kern::Int8Fmt>(p, c, grid, pdl, stream);
  }
  return cudaErrorInvalidValue;
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

Result<std::unique_ptr<WeightOnlyLinear>> WeightOnlyLinear::create(cudaStream_t stream, LinearRunner* dense) {
  if (!dense) return invalid_argument("WeightOnlyLinear: no dense LinearRunner for the prefill path");
  std::unique_ptr<WeightOnlyLinear> r(new WeightOnlyLinear(stream, dense));
  int dev = 0, major = 0;
  ANVIL_CUDA_RETURN_IF_ERROR(cudaGetDevice(&dev), "weight-only linear: current device");
  ANVIL_CUDA_RETURN_IF_ERROR(cudaDeviceGetAttribute(&r->num_sms_, cudaDevAttrMultiProcessorCount, dev),
                             "weight-only linear: SM count");
  ANVIL_CUDA_RETURN_IF_ERROR(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev),
                             "weight-only linear: compute capability");
  r->pdl_ = major >= 9;
  ANVIL_CUDA_RETURN_IF_ERROR(cudaMalloc(&r->partials_, kPartialFloats * sizeof(float)),
                             "weight-only linear: allocating the split-K workspace");
  ANVIL_CUDA_RETURN_IF_ERROR(cudaMalloc(&r->counters_, kNumCounters * sizeof(unsigned)),
                             "weight-only linear: allocating the split-K counters");
  ANVIL_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(r->counters_, 0, kNumCounters * sizeof(unsigned), stream),
                             "weight-only linear: zeroing the split-K counters");
  return std::unique_ptr<WeightOnlyLinear>(std::move(r));
}

WeightOnlyLinear::~WeightOnlyLinear() {
  if (stream_) cudaStreamSynchronize(stream_);
  if (partials_) cudaFree(partials_);
  if (counters_) cudaFree(counters_);
  if (scratch_) cudaFree(scratch_);
  for (void* p : retired_) cudaFree(p);
}

Status WeightOnlyLinear::check(const QuantizedWeight& w, const WeightOnlyArgs& a) {
  if (a.dtype != DType::kBF16 && a.dtype != DType::kF16) {
    return invalid_argument(what(w) + ": x must be bf16 or f16, got " + std::string(dtype_name(a.dtype)));
  }
  if (a.out_dtype != a.dtype && a.out_dtype != DType::kF32) {
    return invalid_argument(what(w) + ": out must be " + std::string(dtype_name(a.dtype)) + " or f32, got " +
                            std::string(dtype_name(a.out_dtype)));
  }
  if (!w.data || !w.scales || w.n <= 0 || w.k <= 0) return invalid_argument(what(w) + ": weight data or scales missing");
  switch (w.format) {
    case QuantFormat::kInt8WeightOnly:
      if (w.k % 16 != 0) {
        return invalid_argument(what(w) + ": K must be a multiple of 16 for int8 weight-only (16-byte weight loads)");
      }
      break;
    case QuantFormat::kInt4Group:
      if (!w.offsets) return invalid_argument(what(w) + ": int4 offsets missing");
      if (w.group_size != 32 && w.group_size != 64 && w.group_size != 128) {
        return invalid_argument(what(w) + ": group_size must be 32, 64 or 128, got " + std::to_string(w.group_size));
      }
      if (w.k % w.group_size != 0) {
        return invalid_argument(what(w) + ": K is not a multiple of group_size " + std::to_string(w.group_size));
      }
      break;
    case QuantFormat::kInt8W8A8:
    case QuantFormat::kFp8W8A8:
      // Decode only: the per-channel 8-bit weights streamed against unquantized activations.
      if (a.m > 16) {
        return invalid_argument(what(w) + ": W8A8 weights run here only at decode sizes (M <= 16), got M=" +
                                std::to_string(a.m));
      }
      if (w.k % 16 != 0) return unsupported(what(w) + ": K must be a multiple of 16 (16-byte weight loads)");
      break;
  }
  // 32-bit chunk indices in the kernels: fewer than 2^31 16-byte chunks.
  if (w.n * w.k >= (int64_t{1} << 35)) return invalid_argument(what(w) + ": N x K too large (>= 2^35 elements)");
  if (!aligned16(w.data)) return invalid_argument(what(w) + ": weight data must be 16-byte aligned");
  if (a.m > 0 && (!a.x || !aligned16(a.x))) return invalid_argument(what(w) + ": x must be 16-byte aligned");
  if (a.m > 0 && !a.out) return invalid_argument(what(w) + ": out is null");
  return Status::ok();
}

Status WeightOnlyLinear::run(const QuantizedWeight& w, const WeightOnlyArgs& a) {
  ANVIL_RETURN_IF_ERROR(check(w, a));
  if (a.m == 0) return Status::ok();
  if (a.m <= std::min(decode_max_m_, int64_t{16})) return run_decode(w, a);
  return run_prefill(w, a);
}

WeightOnlyDecodeConfig WeightOnlyLinear::decode_config(const QuantizedWeight& w, int64_t m, int splits) const {
  // Rule, read off the H100 variant sweep (bench/cuda_kernels.md, "Weight-only quantized GEMM",
  // graph-timed): short rows (int8 K <= 4096, int4 K <= 8192) never split K: the split-K
  // reduction (workspace round trip, arrival atomic, re-read) costs ~3 us of tail, more than a
  // second wave saves. M <= 8 takes 4 chunks per lane (both prologue stages cover a whole
  // int4 K = 4096 row), except int4 long rows (down_proj: 2 chunks, 8 CTAs per SM). M > 8 takes
  // two row tiles per CTA when N is large (each x fragment feeds twice the weights: gate_up
  // -25% int4), else 2 chunks (int8) / 4 (int4); long rows split to 8 (int8) / 4 (int4) CTAs
  // per SM with 2 chunks.
  const bool int4 = is_int4(w);
  const int64_t num_chunks = (int4 ? w.k / 2 : w.k) / 16;
  const bool many_tiles = ceil_div(w.n, kern::kWoTileRows) >= int64_t{8} * num_sms_;
  const bool long_rows = num_chunks > 256;
  WeightOnlyDecodeConfig c;
  int ctas_per_sm = -1;
  if (m <= 8) {
    c.unroll = int4 && long_rows ? 2 : 4;
    if (long_rows) ctas_per_sm = int4 ? 8 : 2;
  } else {
    c.row_tiles = many_tiles ? 2 : 1;
    c.unroll = long_rows || !int4 ? 2 : 4;
    if (long_rows) ctas_per_sm = int4 ? 4 : 8;
  }
  if (variant_.unroll > 0) c.unroll = variant_.unroll >= 4 ? 4 : 2;
  if (variant_.row_tiles > 0) c.row_tiles = variant_.row_tiles >= 2 ? 2 : 1;
  if (variant_.ctas_per_sm != 0) ctas_per_sm = variant_.ctas_per_sm;
  // Compiled instances only (launch_gemv_config): 2 row tiles need M > 8 and run U = 1.
  if (m <= 8) c.row_tiles = 1;
  if (c.row_tiles == 2) c.unroll = 1;
  const int64_t rows = int64_t{kern::kWoTileRows} * c.row_tiles;
  const int64_t tiles = ceil_div(w.n, rows);
  const int64_t cta_step = int64_t{kern::kWoWarps} * 4 * c.unroll;
  const int64_t cta_steps = ceil_div(num_chunks, cta_step);  // CTA steps of one unsplit row
  int64_t want = 1;
  if (splits > 0) {
    want = splits;
  } else if (ctas_per_sm > 0) {
    const int64_t target = int64_t{ctas_per_sm} * num_sms_;
    want = tiles >= target ? 1 : ceil_div(target, tiles);
  }
  // Whole CTA steps per split; the workspace bounds the rest (larger shapes run unsplit).
  want = std::clamp<int64_t>(want, 1, cta_steps);
  if (tiles > kNumCounters) want = 1;
  while (want > 1 && static_cast<size_t>(want * m * w.n) > kPartialFloats) --want;
  // The factor actually launched: splits of whole CTA steps, none empty.
  c.steps_per_split = ceil_div(cta_steps, want);
  c.splits = static_cast<int>(ceil_div(cta_steps, c.steps_per_split));
  c.ctas = tiles * c.splits;
  return c;
}

Status WeightOnlyLinear::run_decode(const QuantizedWeight& w, const WeightOnlyArgs& a, int splits) {
  ANVIL_RETURN_IF_ERROR(check(w, a));
  if (a.m == 0) return Status::ok();
  if (a.m < 0 || a.m > 16) return invalid_argument(what(w) + ": the decode kernel takes M <= 16, got " + std::to_string(a.m));
  const bool int4 = is_int4(w);
  kern::WoGemvParams p;
  p.x = static_cast<const uint16_t*>(a.x);
  p.w = static_cast<const uint8_t*>(w.data);
  p.scales = w.scales;
  p.offsets = static_cast<const uint16_t*>(w.offsets);
  p.bias = static_cast<const uint16_t*>(a.bias);
  p.out = a.out;
  p.m = static_cast<int>(a.m);
  p.n = w.n;
  p.k = w.k;
  p.groups = int4 ? static_cast<int>(w.k / w.group_size) : 0;
  p.group_shift = int4 ? group_shift(w.group_size) : 0;
  p.num_chunks = static_cast<int>((int4 ? w.k / 2 : w.k) / 16);
  p.out_f32 = a.out_dtype == DType::kF32;
  p.early_trigger = early_trigger_;

  const WeightOnlyDecodeConfig c = decode_config(w, a.m, splits);
  const int64_t cta_step = int64_t{kern::kWoWarps} * 4 * c.unroll;
  p.chunks_per_split = static_cast<int>(c.steps_per_split * cta_step);
  p.splits = c.splits;
  p.partials = partials_;
  p.counters = counters_;
  const dim3 grid(static_cast<unsigned>(ceil_div(w.n, int64_t{kern::kWoTileRows} * c.row_tiles)),
                  static_cast<unsigned>(c.splits));
  const bool pdl = pdl_ && pdl_allowed_;
  const cudaError_t err = a.dtype == DType::kBF16 ? launch_gemv_dtype<kern::Bf16>(p, w.format, c, grid, pdl, stream_)
                                                  : launch_gemv_dtype<kern::F16>(p, w.format, c, grid, pdl, stream_);
  ANVIL_CUDA_RETURN_IF_ERROR(err, "weight_only_gemv_kernel launch");
  return check_launch("weight_only_gemv_kernel");
}

Status WeightOnlyLinear::reserve_scratch(size_t bytes) {
  if (bytes <= scratch_bytes_) return Status::ok();
  cudaStreamCaptureStatus cap = cudaStreamCaptureStatusNone;
  ANVIL_CUDA_RETURN_IF_ERROR(cudaStreamIsCapturing(stream_, &cap), "weight-only linear: capture status");
  if (cap != cudaStreamCaptureStatusNone) {
    return invalid_argument("linear_quantized: the prefill path needs " + std::to_string(bytes) +
                            " bytes of dequantization scratch (has " + std::to_string(scratch_bytes_) +
                            ") during CUDA graph capture; run the largest quantized linear once before begin_capture()");
  }
  if (scratch_) {
    // Kept until destruction: a captured CUDA graph may still point into it.
    retired_.push_back(scratch_);
    scratch_ = nullptr;
    scratch_bytes_ = 0;
  }
  ANVIL_CUDA_RETURN_IF_ERROR(cudaMalloc(&scratch_, bytes), "linear_quantized: allocating the dequantization scratch");
  scratch_bytes_ = bytes;
  return Status::ok();
}

Status WeightOnlyLinear::run_prefill(const QuantizedWeight& w, const WeightOnlyArgs& a) {
  ANVIL_RETURN_IF_ERROR(check(w, a));
  if (a.m == 0) return Status::ok();
  ANVIL_RETURN_IF_ERROR(reserve_scratch(static_cast<size_t>(w.n * w.k) * 2));
  const bool int4 = is_int4(w);
  kern::WoDequantParams d;
  d.w = static_cast<const uint8_t*>(w.data);
  d.scales = w.scales;
  d.offsets = static_cast<const uint16_t*>(w.offsets);
  d.out = static_cast<uint16_t*>(scratch_);
  d.n = w.n;
  d.k = w.k;
  d.group_size = int4 ? w.group_size : 0;
  d.groups = int4 ? static_cast<int>(w.k / w.group_size) : 0;
  d.group_shift = int4 ? group_shift(w.group_size) : 0;
  d.int4 = int4;
  const int64_t chunks = w.n * (int4 ? w.k / 2 : w.k) / 16;
  const int threads = 256;
  const int64_t blocks = std::clamp<int64_t>((chunks + threads - 1) / threads, 1, int64_t{num_sms_} * 16);
  if (a.dtype == DType::kBF16) {
    kern::weight_only_dequant_kernel<kern::Bf16><<<static_cast<unsigned>(blocks), threads, 0, stream_>>>(d);
  } else {
    kern::weight_only_dequant_kernel<kern::F16><<<static_cast<unsigned>(blocks), threads, 0, stream_>>>(d);
  }
  ANVIL_RETURN_IF_ERROR(check_launch("weight_only_dequant_kernel"));

  LinearShape s;
  s.m = a.m;
  s.n = w.n;
  s.k = w.k;
  s.in_dtype = a.dtype;
  s.out_dtype = a.out_dtype;
  s.has_bias = a.bias != nullptr;
  s.bias_dtype = a.dtype;
  // The scratch was written by the kernel just above: the dense runner's skinny kernel must not
  // read it early (PDL), so keep small M on cuBLASLt for this call.
  const int64_t skinny_max = dense_->skinny_max_m();
  dense_->set_skinny_max_m(0);
  Status st = dense_->run(s, a.x, scratch_, a.bias, a.out);
  dense_->set_skinny_max_m(skinny_max);
  return st;
}

}  // namespace anvil::cuda
