// Row gather for embedding lookups and logit-row selection: out[i] = src[rows[i]], any element
// type, copied in the widest unit (16, 8, 4, 2 or 1 bytes) that the row size and the pointers
// allow. An index outside [0, src_rows) writes a zero row (the executor validates ids first).
#pragma once

#include <cstdint>

namespace anvil::cuda::kern {

struct GatherParams {
  const uint8_t* src = nullptr;  // [src_rows, row_bytes]
  uint8_t* dst = nullptr;        // [num_rows, row_bytes]
  const int32_t* rows = nullptr; // [num_rows]
  int64_t num_rows = 0;
  int64_t src_rows = 0;
  int64_t row_bytes = 0;         // a multiple of sizeof(Unit)
};

// grid.x covers the units of one row, grid.y strides the output rows.
template <typename Unit>
__global__ void gather_rows_kernel(GatherParams p) {
  const int64_t units = p.row_bytes / static_cast<int64_t>(sizeof(Unit));
  const int64_t u = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (u >= units) return;
  for (int64_t i = blockIdx.y; i < p.num_rows; i += gridDim.y) {
    const int32_t r = p.rows[i];
    Unit v{};
    if (r >= 0 && r < p.src_rows) v = reinterpret_cast<const Unit*>(p.src + r * p.row_bytes)[u];
    reinterpret_cast<Unit*>(p.dst + i * p.row_bytes)[u] = v;
  }
}

}  // namespace anvil::cuda::kern
