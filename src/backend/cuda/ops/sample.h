// Launcher of the sampling kernel (kernels/sampling/sample.cuh): one block per row (and, given a
// workspace, several blocks sharing the first sweep of a row without penalties), no host sync, so
// it can be captured in a CUDA graph.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "backend/backend.h"
#include "core/status.h"

namespace anvil::cuda {

// Capacity of the fast path's candidate set (see kernels/sampling/sample_candidates.cuh).
constexpr int kSampleCandidateCap = 4096;

// Device scratch for the split first sweep: partials for up to kSampleMaxPartials (row, split)
// pairs and one arrival counter per row for up to kSampleMaxRows rows, zeroed once at allocation
// (the kernel leaves the counters at zero). One workspace serves one stream at a time.
constexpr int kSampleMaxPartials = 8192;
constexpr int kSampleMaxRows = 4096;
struct SampleWorkspace {
  float* partials = nullptr;    // [kSampleMaxPartials][6]
  unsigned* counters = nullptr;  // [kSampleMaxRows], zero
  static size_t bytes() { return size_t{kSampleMaxPartials} * 6 * 4 + size_t{kSampleMaxRows} * 4; }
  // Carves a zeroed allocation of bytes() (256-byte aligned) into the two arrays.
  static SampleWorkspace over(void* zeroed);
};

// Blocks per row for the first sweep: enough blocks in all to fill the GPU when rows are few, at
// least 2048 ids a block, within the workspace; 1 without a workspace or with penalties.
int sample_splits(int64_t vocab, int rows, bool penalties, bool have_workspace);

// logits [rows, vocab] f32 (left unmodified); out_ids [rows] i32; out_logprobs [rows] f32 or null.
// candidate_cap: a power of two <= 8192, or 0 to force the radix path (tests drive both).
// ws: null keeps one block per row.
Status launch_sample(const float* logits, int64_t vocab, const SamplingBatch& params, int32_t* out_ids,
                     float* out_logprobs, cudaStream_t stream, int candidate_cap = kSampleCandidateCap,
                     const SampleWorkspace* ws = nullptr);

}  // namespace anvil::cuda
