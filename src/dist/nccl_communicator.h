// NCCL: moves GPU ranks' tensors (device memory). Communicators are created nonblocking
// (ncclConfig_t::blocking = 0) and every operation is polled (cudaStreamQuery +
// ncclCommGetAsyncError) against CommOptions::timeout_seconds; a timeout aborts the NCCL
// communicator and names the peers that the host channel finds gone or stuck. NVLink multicast
// (NVLS) is turned off before init (NCCL_NVLS_ENABLE=0). Operations run on the communicator's own
// stream and return when they are complete, so callers synchronize their stream before calling.
#pragma once

#include <memory>

#include "dist/communicator.h"

namespace anvil::dist {

// True when anvil was built with NCCL (ANVIL_HAVE_NCCL: a CUDA build that found nccl.h).
bool nccl_built();

// A NCCL communicator over the same ranks as `host` (an MPI communicator, which carries the
// unique id from its rank 0, maps ranks to world ranks and answers health pings), on CUDA device
// `device`. Collective over `host`.
Result<std::unique_ptr<Communicator>> create_nccl_communicator(std::unique_ptr<Communicator> host, int device,
                                                              const CommOptions& options);

}  // namespace anvil::dist
