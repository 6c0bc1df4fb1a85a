// Launcher for kernels/sampling/sample.cuh. Dynamic shared memory holds the penalty bitmap
// (vocab / 8 bytes) and the fast path's candidates (12 bytes each): penalties are supported for
// vocabularies up to ~1.2M ids.
#include <algorithm>
#include <atomic>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels/sampling/sample.cuh"
#include "backend/cuda/ops/sample.h"

namespace anvil::cuda {

static_assert(kern::kSamplePartial == 6, "SampleWorkspace::bytes() counts 6 floats a partial");

SampleWorkspace SampleWorkspace::over(void* zeroed) {
  SampleWorkspace w;
  w.partials = static_cast<float*>(zeroed);
  w.counters = reinterpret_cast<unsigned*>(w.partials + size_t{kSampleMaxPartials} * kern::kSamplePartial);
  return w;
}

int sample_splits(int64_t vocab, int rows, bool penalties, bool have_workspace) {
  if (!have_workspace || penalties || rows <= 0 || rows > kSampleMaxRows) return 1;
  constexpr int64_t kMinIds = 2048;  // below this a block's sweep is mostly start-up
  constexpr int kMaxSplits = 64;
  constexpr int kTargetBlocks = 256;  // ~2 per SM on an H100
  int64_t s = std::min<int64_t>({(kTargetBlocks + rows - 1) / rows, vocab / kMinIds, kMaxSplits,
                                 kSampleMaxPartials / rows});
  return static_cast<int>(std::max<int64_t>(1, s));
}

Status launch_sample(const float* logits, int64_t vocab, const SamplingBatch& b, int32_t* out_ids,
                     float* out_logprobs, cudaStream_t stream, int candidate_cap, const SampleWorkspace* ws) {
  if (b.num_rows == 0) return Status::ok();
  if (vocab <= 0 || vocab > 0x7fffffff) return invalid_argument("sample: vocab " + std::to_string(vocab));
  if (!b.all_greedy && (!b.temperature)) return invalid_argument("sample: temperature is required unless all_greedy");
  kern::SampleParams p;
  p.logits = logits;
  p.vocab = vocab;
  p.num_rows = b.num_rows;
  p.temperature = b.all_greedy ? nullptr : b.temperature;
  p.top_k = b.top_k;
  p.top_p = b.top_p;
  p.min_p = b.min_p;
  p.seeds = b.seeds;
  p.steps = b.steps;
  p.out_ids = out_ids;
  p.out_logprobs = out_logprobs;
  if (candidate_cap < 0 || candidate_cap > 8192 || (candidate_cap & (candidate_cap - 1)) != 0) {
    return invalid_argument("sample: candidate_cap must be 0 or a power of two <= 8192");
  }
  p.candidate_cap = b.all_greedy ? 0 : candidate_cap;
  if (b.any_penalty && b.penalty_offsets) {
    if (!b.penalty_token_ids || !b.penalty_output_counts) {
      return invalid_argument("sample: penalty_offsets given without penalty_token_ids / penalty_output_counts");
    }
    p.repetition_penalty = b.repetition_penalty;
    p.presence_penalty = b.presence_penalty;
    p.frequency_penalty = b.frequency_penalty;
    p.penalty_offsets = b.penalty_offsets;
    p.penalty_token_ids = b.penalty_token_ids;
    p.penalty_output_counts = b.penalty_output_counts;
    p.bitmap_words = static_cast<int>((vocab + 31) / 32);
  }
  p.splits = sample_splits(vocab, b.num_rows, p.penalty_offsets != nullptr, ws != nullptr);
  if (p.splits > 1) {
    p.ids_per_split = (vocab + p.splits - 1) / p.splits;
    p.ids_per_split = (p.ids_per_split + 3) / 4 * 4;  // slices keep the rows' 16-byte alignment
    p.splits = static_cast<int>((vocab + p.ids_per_split - 1) / p.ids_per_split);
    p.split_partials = ws->partials;
    p.split_counters = ws->counters;
  }
  const size_t smem = kern::sample_smem_bytes(p.bitmap_words, p.candidate_cap);
  constexpr size_t kMaxDynamic = 200 * 1024;
  if (smem > kMaxDynamic) return unsupported("sample: penalties over a vocabulary of " + std::to_string(vocab));
  // Raise the opt-in limit once to the largest size seen (a host-side attribute: capture-safe).
  static std::atomic<size_t> raised{0};
  if (smem > 40 * 1024 && smem > raised) {
    ANVIL_CUDA_RETURN_IF_ERROR(
        cudaFuncSetAttribute(kern::sample_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)),
        "sample: raising the shared-memory limit");
    raised = smem;
  }
  kern::sample_kernel<<<dim3(b.num_rows, p.splits), kern::kSampleThreads, smem, stream>>>(p);
  return check_launch("sample_kernel");
}

}  // namespace anvil::cuda
