// Launcher for kernels/gather: picks the widest copy unit the row size and pointers allow.
#include <algorithm>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels/gather/gather_rows.cuh"
#include "backend/cuda/ops/elementwise.h"

namespace anvil::cuda {
namespace {

template <typename Unit>
Status launch_unit(const kern::GatherParams& p, cudaStream_t stream) {
  const int64_t units = p.row_bytes / static_cast<int64_t>(sizeof(Unit));
  const int threads = static_cast<int>(std::min<int64_t>(256, (units + 31) / 32 * 32));
  const unsigned gx = static_cast<unsigned>((units + threads - 1) / threads);
  const unsigned gy = static_cast<unsigned>(std::min<int64_t>(p.num_rows, 65535));
  kern::gather_rows_kernel<Unit><<<dim3(gx, gy), threads, 0, stream>>>(p);
  return check_launch("gather_rows_kernel");
}

}  // namespace

Status launch_gather_rows(const void* src, int64_t src_rows, int64_t row_bytes, const int32_t* rows,
                          int64_t num_rows, void* dst, cudaStream_t stream) {
  if (num_rows == 0 || row_bytes == 0) return Status::ok();
  kern::GatherParams p;
  p.src = static_cast<const uint8_t*>(src);
  p.dst = static_cast<uint8_t*>(dst);
  p.rows = rows;
  p.num_rows = num_rows;
  p.src_rows = src_rows;
  p.row_bytes = row_bytes;
  const uintptr_t bits = reinterpret_cast<uintptr_t>(src) | reinterpret_cast<uintptr_t>(dst) |
                         static_cast<uintptr_t>(row_bytes);
  if (bits % 16 == 0) return launch_unit<uint4>(p, stream);
  if (bits % 8 == 0) return launch_unit<uint2>(p, stream);
  if (bits % 4 == 0) return launch_unit<uint32_t>(p, stream);
  if (bits % 2 == 0) return launch_unit<uint16_t>(p, stream);
  return launch_unit<uint8_t>(p, stream);
}

}  // namespace anvil::cuda
