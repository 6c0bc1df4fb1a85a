// Launcher of the sampling kernel (kernels/sampling/sample.cuh): one block per row, no host
// sync, no global scratch, so it can be captured in a CUDA graph.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "backend/backend.h"
#include "core/status.h"

namespace anvil::cuda {

// Capacity of the fast path's candidate set (see kernels/sampling/sample_candidates.cuh).
constexpr int kSampleCandidateCap = 4096;

// logits [rows, vocab] f32 (left unmodified); out_ids [rows] i32; out_logprobs [rows] f32 or null.
// candidate_cap: a power of two <= 8192, or 0 to force the radix path (tests drive both).
Status launch_sample(const float* logits, int64_t vocab, const SamplingBatch& params, int32_t* out_ids,
                     float* out_logprobs, cudaStream_t stream, int candidate_cap = kSampleCandidateCap);

}  // namespace anvil::cuda
