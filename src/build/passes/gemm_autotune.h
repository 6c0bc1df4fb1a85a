// GEMM autotuning pass (CUDA targets): times cuBLASLt's candidate algorithms for every linear of
// the graph at each power-of-two M bucket up to the build's limits and records the outcome in
// the engine. cuBLASLt algorithms are opaque to anvil's LinearRunner API (it pins by timing, it
// cannot export or import a choice), so at load the shapes where tuning beat the heuristic are
// re-timed and re-pinned; shapes where the heuristic won cost nothing at load.
#pragma once

#include "backend/backend.h"
#include <string>

#include "build/engine_file.h"

namespace anvil {

// Fills header->gemm_tuning and gemm_tuning_status. `device` may be null or a non-CUDA backend,
// in which case the status says why nothing was tuned. Shapes found in the tuning cache at
// `tuning_cache_path` (keyed by GPU name + CUDA runtime version) are not re-timed; new results are
// added to it. An empty path disables the cache.
Status autotune_gemms(Backend* device, const std::string& tuning_cache_path, EngineHeader* header);

// Pins the recorded algorithm of each shape where tuning won (best_us < 0.97 * heuristic_us) on
// `backend`, without timing when the engine's cuBLASLt version matches and cuBLASLt accepts it;
// otherwise that shape is re-timed. A no-op on the CPU backend and for untuned engines. Returns
// the number of shapes pinned; *retimed (optional) gets how many of them had to be re-timed.
Result<int> apply_gemm_tuning(const EngineHeader& header, Backend* backend, int* retimed = nullptr);

}  // namespace anvil
