// create_backend: the one place that knows which backends this build has.
#include "backend/backend.h"
#include "backend/cpu/cpu_backend.h"
#ifdef ANVIL_HAVE_CUDA
#include "backend/cuda/cuda_backend.h"
#endif

namespace anvil {

bool cuda_available() {
#ifdef ANVIL_HAVE_CUDA
  return cuda_device_present();
#else
  return false;
#endif
}

Result<std::unique_ptr<Backend>> create_backend(const BackendOptions& options) {
  switch (options.kind) {
    case BackendKind::kCpu: return std::unique_ptr<Backend>(new CpuBackend());
    case BackendKind::kCuda:
#ifdef ANVIL_HAVE_CUDA
      return create_cuda_backend(options);
#else
      return unavailable("this anvil was built without CUDA (configure with -DANVIL_CUDA=ON where nvcc exists)");
#endif
  }
  return invalid_argument("unknown backend kind");
}

}  // namespace anvil
