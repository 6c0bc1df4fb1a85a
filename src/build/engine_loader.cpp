// load_engine: validate, then mmap -> backend, one copy per weight; the graph comes from the
// header as built (no re-derivation from config.json). Logs the load rate from the page cache.
#include "build/engine_loader.h"

#include <chrono>
#include <cstdio>

#include "build/engine_builder.h"
#include "build/passes/gemm_autotune.h"
#include "core/logging.h"
#include "runtime/weights.h"

namespace anvil {

Status check_engine_target(const EngineHeader& h, Device device, DType compute_dtype, const std::string& device_name,
                           const std::string& path) {
  const char* want = backend_kind_name(h.options.backend);
  const bool kind_ok = (h.options.backend == BackendKind::kCpu && device == Device::kCpu) ||
                       (h.options.backend == BackendKind::kCuda && device == Device::kCuda);
  if (!kind_ok) {
    return invalid_argument(path + " was built for the " + std::string(want) + " backend; this backend is " + device_name +
                            ": rebuild with anvil build --backend " + (device == Device::kCpu ? "cpu" : "cuda"));
  }
  if (h.options.dtype != compute_dtype) {
    return invalid_argument(path + " holds " + dtype_option_name(h.options.dtype) + " weights; this backend computes in " +
                            dtype_option_name(compute_dtype) + ": rebuild with anvil build --dtype " +
                            dtype_option_name(compute_dtype) + " or run with --dtype " + dtype_option_name(h.options.dtype));
  }
  if (device == Device::kCuda) {
    const std::string have = gpu_arch_from_device_name(device_name);
    if (h.gpu_arch.empty() || have.empty()) {
      return invalid_argument(path + ": cannot compare GPU architectures (engine '" + h.gpu_arch + "', device '" + device_name +
                              "'): rebuild with anvil build");
    }
    if (have != h.gpu_arch) {
      return invalid_argument(path + " was built for " + h.gpu_arch + ", this GPU is " + have + ": rebuild with anvil build");
    }
  }
  return Status::ok();
}

Status check_engine_memory(uint64_t weight_bytes, const MemoryInfo& mem, const std::string& device_name,
                           const std::string& path) {
  if (weight_bytes <= mem.free_bytes) return Status::ok();
  return out_of_memory(path + " needs " + std::to_string(weight_bytes >> 20) + " MiB for its weights; " + device_name + " has " +
                       std::to_string(mem.free_bytes >> 20) +
                       " MiB free: free device memory, or build a smaller model or a lower-precision engine");
}

Result<std::unique_ptr<ModelRunner>> load_engine(const std::string& path, Backend* backend, RunnerOptions runner,
                                                 const EngineLoadOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  ANVIL_ASSIGN_OR_RETURN(EngineFile file, EngineFile::open(path));
  const EngineHeader& h = file.header();
  ANVIL_RETURN_IF_ERROR(check_engine_target(h, backend->device(), backend->compute_dtype(), backend->name(), path));
  const uint64_t weight_bytes = file.weight_bytes();
  ANVIL_ASSIGN_OR_RETURN(MemoryInfo mem, backend->memory_info());
  // Host "free" memory excludes the page cache (which holds this very file and is reclaimable), so
  // on the CPU only the total is a sound bound.
  if (backend->device() == Device::kCpu) mem.free_bytes = mem.total_bytes;
  ANVIL_RETURN_IF_ERROR(check_engine_memory(weight_bytes, mem, backend->name(), path));
  const auto t_verify = std::chrono::steady_clock::now();
  file.prefault_weights();
  if (options.verify_checksums) ANVIL_RETURN_IF_ERROR(file.verify_all_weights());
  const double verify_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_verify).count();
  // The graph must read exactly the weights the table holds, with the same shapes.
  std::vector<HostWeight> host;
  ModelDefinition def;
  def.spec = h.spec;
  def.graph = h.graph;
  for (size_t i = 0; i < h.weights.size(); ++i) {
    const EngineWeight& w = h.weights[i];
    host.push_back({w.name, w.dtype, w.shape, file.weight_data(i), static_cast<size_t>(w.bytes)});
    WeightSource ws;
    ws.name = w.name;
    ws.shape = w.shape;
    ws.hf_names = w.packed_from;
    ws.computed = w.computed;
    ws.keep_f32 = w.dtype == DType::kF32 && h.options.dtype != DType::kF32;
    def.weights.push_back(std::move(ws));
  }
  const auto t_copy = std::chrono::steady_clock::now();
  ANVIL_ASSIGN_OR_RETURN(WeightStore weights, WeightStore::from_host(host, backend));
  const double copy_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_copy).count();
  ANVIL_ASSIGN_OR_RETURN(const int repinned, apply_gemm_tuning(h, backend));

  runner.max_num_tokens = h.options.max_num_tokens;
  runner.max_num_seqs = h.options.max_batch;
  runner.max_seq_len = h.options.max_seq_len;
  runner.block_size = h.options.kv_block_size;
  // The build resolves kv_cache_dtype to the compute dtype unless it is fp8 / int8 (whose scales
  // the engine then holds as weights).
  if (h.options.kv_cache_dtype == DType::kF8E4M3 || h.options.kv_cache_dtype == DType::kI8) {
    runner.kv_dtype = h.options.kv_cache_dtype;
  } else {
    runner.kv_dtype.reset();
  }
  Result<std::unique_ptr<ModelRunner>> r = ModelRunner::create(backend, std::move(def), std::move(weights), runner);
  if (!r.is_ok()) return r.status().with_context(path);
  const double total_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  auto rate = [&](double s) { return s > 0 ? static_cast<double>(weight_bytes) / s / 1e9 : 0.0; };
  char verify[96] = "checksums not verified";  // map+verify includes prefaulting the mapping
  if (options.verify_checksums) std::snprintf(verify, sizeof verify, "map+verify %.3f s (%.2f GB/s)", verify_s, rate(verify_s));
  ANVIL_LOG_INFO("loaded engine %s (%s, %lld layers) on %s: %.1f MiB of weights, copy %.3f s (%.2f GB/s), %s; "
                 "%d tuned GEMM shapes pinned; %.3f s total",
                 path.c_str(), h.spec.architecture.c_str(), static_cast<long long>(h.spec.num_layers),
                 backend->name().c_str(), weight_bytes / 1048576.0, copy_s, rate(copy_s), verify, repinned, total_s);
  return r;
}

}  // namespace anvil
