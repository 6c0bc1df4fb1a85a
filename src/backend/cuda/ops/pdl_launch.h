// A cudaLaunchConfig_t that, when `pdl` is set, lets the kernel start before the previous kernel
// on the stream has finished (programmatic dependent launch; the kernel waits with
// griddepcontrol.wait before reading that kernel's outputs, kernels/common/pdl.cuh). Not
// copyable: cfg points at attr.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdlib>
#include <cstring>
#include <utility>

namespace anvil::cuda {

struct PdlLaunchConfig {
  cudaLaunchConfig_t cfg{};
  cudaLaunchAttribute attr[1]{};
  PdlLaunchConfig(dim3 grid, dim3 block, cudaStream_t stream, bool pdl, size_t smem = 0) {
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = stream;
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = pdl ? 1 : 0;
  }
  PdlLaunchConfig(const PdlLaunchConfig&) = delete;
  PdlLaunchConfig& operator=(const PdlLaunchConfig&) = delete;
};

// Whether the small kernels of a step (norms, RoPE + KV write, attention, gated activation) join
// the PDL chain that the weight-streaming GEMVs already use: on sm_90+, unless ANVIL_PDL_CHAIN=0
// (kept for A/B measurements). Asked once per process (all GPUs of a process are assumed to be of
// one architecture).
inline bool pdl_chain_enabled() {
  static const bool on = [] {
    int dev = 0, major = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) {
      cudaGetLastError();
      return false;
    }
    const char* env = std::getenv("ANVIL_PDL_CHAIN");
    return major >= 9 && !(env != nullptr && std::strcmp(env, "0") == 0);
  }();
  return on;
}

// Launches a kernel that starts with kern::pdl_chain_enter() (or otherwise waits before reading
// its inputs), with programmatic serialization when the chain is enabled.
template <class... Params, class... Args>
cudaError_t launch_chained(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                           Args&&... args) {
  PdlLaunchConfig l(grid, block, stream, pdl_chain_enabled(), smem);
  return cudaLaunchKernelEx(&l.cfg, kernel, std::forward<Args>(args)...);
}

}  // namespace anvil::cuda
