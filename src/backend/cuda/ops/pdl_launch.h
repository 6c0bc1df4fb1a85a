// A cudaLaunchConfig_t that, when `pdl` is set, lets the kernel start before the previous kernel
// on the stream has finished (programmatic dependent launch; the kernel waits with
// griddepcontrol.wait before reading that kernel's outputs). Not copyable: cfg points at attr.
#pragma once

#include <cuda_runtime_api.h>

namespace anvil::cuda {

struct PdlLaunchConfig {
  cudaLaunchConfig_t cfg{};
  cudaLaunchAttribute attr[1]{};
  PdlLaunchConfig(dim3 grid, dim3 block, cudaStream_t stream, bool pdl) {
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.stream = stream;
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = pdl ? 1 : 0;
  }
  PdlLaunchConfig(const PdlLaunchConfig&) = delete;
  PdlLaunchConfig& operator=(const PdlLaunchConfig&) = delete;
};

}  // namespace anvil::cuda
