// GEMM autotuning through CudaBackend::autotune_linear; compiled to "not tuned" records without
// CUDA. M buckets are powers of two: 1, 2, 4, ... up to the one that holds max_num_tokens
// (max_batch for the linears whose rows are logit rows), as LinearRunner pins M rounded up to a
// power of two.
#include "build/passes/gemm_autotune.h"

#include <set>
#include <tuple>

#include "build/passes/tuning_cache.h"
#include "core/logging.h"
#ifdef ANVIL_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "backend/cuda/cuda_backend.h"
#endif

namespace anvil {

namespace {

struct LinearShapeKey {
  int64_t max_m, n, k;
  bool f32_out, has_bias;
  bool operator<(const LinearShapeKey& o) const {
    return std::tie(max_m, n, k, f32_out, has_bias) < std::tie(o.max_m, o.n, o.k, o.f32_out, o.has_bias);
  }
};

std::set<LinearShapeKey> linear_shapes(const EngineHeader& h) {
  std::set<LinearShapeKey> shapes;
  const Graph& g = h.graph;
  for (const Node& n : g.nodes()) {
    if (n.op != OpKind::kLinear) continue;
    const GraphTensor& w = g.tensor(n.inputs[1]);
    const GraphTensor& out = g.tensor(n.outputs[0]);
    const int64_t max_m = out.rows == RowScale::kTokens ? h.options.max_num_tokens : h.options.max_batch;
    shapes.insert({max_m, w.shape[0], w.shape[1], out.force_f32, n.inputs.size() > 2 && n.inputs[2] >= 0});
  }
  return shapes;
}

constexpr double kWinMargin = 0.97;

#ifdef ANVIL_HAVE_CUDA
std::string algo_to_hex(const cuda::LinearAlgoBytes& a) {
  static const char* kHex = "0123456789abcdef";
  std::string s;
  for (uint64_t v : a)
    for (int b = 60; b >= 0; b -= 4) s.push_back(kHex[(v >> b) & 0xf]);
  return s;
}

bool algo_from_hex(const std::string& s, cuda::LinearAlgoBytes* a) {
  if (s.size() != 128) return false;
  for (size_t i = 0; i < 8; ++i) {
    uint64_t v = 0;
    for (size_t j = 0; j < 16; ++j) {
      const char c = s[i * 16 + j];
      const int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
      if (d < 0) return false;
      v = v << 4 | static_cast<uint64_t>(d);
    }
    (*a)[i] = v;
  }
  return true;
}
#endif

}  // namespace

Status autotune_gemms(Backend* device, const std::string& tuning_cache_path, EngineHeader* h) {
  h->gemm_tuning.clear();
  if (h->options.backend == BackendKind::kCpu) {
    h->gemm_tuning_status = "not_tuned: cpu target";
    return Status::ok();
  }
#ifdef ANVIL_HAVE_CUDA
  auto* cuda = dynamic_cast<CudaBackend*>(device);
  if (cuda == nullptr) {
    h->gemm_tuning_status = "not_tuned: no CUDA device at build time";
    return Status::ok();
  }
  int runtime_version = 0;
  if (cudaRuntimeGetVersion(&runtime_version) != cudaSuccess) runtime_version = 0;
  const std::string name = cuda->name();
  const size_t open = name.find('(');
  const std::string gpu = open == std::string::npos ? name : name.substr(open + 1, name.size() - open - 2);
  const std::string device_key = gpu + " | cuda " + std::to_string(runtime_version);
  TuningCache cache = TuningCache::load(tuning_cache_path);
  int timed = 0, cached = 0;
  for (const LinearShapeKey& s : linear_shapes(*h)) {
    const DType out = s.f32_out ? DType::kF32 : cuda->compute_dtype();
    // Up to the bucket that holds max_m (LinearRunner rounds M up to a power of two).
    for (int64_t m = 1; m < 2 * s.max_m; m *= 2) {
      GemmTuning t;
      t.m_bucket = m;
      t.n = s.n;
      t.k = s.k;
      t.out_dtype = std::string(dtype_name(out));
      t.has_bias = s.has_bias;
      std::optional<GemmTuning> hit = cache.find(device_key, t);
      cuda::LinearAlgoBytes algo{};
      if (hit && hit->cublaslt_version == cuda::cublaslt_version() && algo_from_hex(hit->algo, &algo) &&
          cuda->pin_linear_algorithm(m, s.n, s.k, out, s.has_bias, algo).is_ok()) {
        h->gemm_tuning.push_back(*hit);
        ++cached;
        continue;
      }
      Result<cuda::LinearAutotuneResult> r = cuda->autotune_linear(m, s.n, s.k, out, s.has_bias);
      if (!r.is_ok()) {
        return r.status().with_context("autotuning linear M=" + std::to_string(m) + " N=" + std::to_string(s.n) +
                                       " K=" + std::to_string(s.k));
      }
      t.candidates = r->candidates_timed;
      t.best_us = r->best_us;
      t.heuristic_us = r->heuristic_us;
      t.algo = algo_to_hex(r->algo);
      t.cublaslt_version = cuda::cublaslt_version();
      h->gemm_tuning.push_back(t);
      cache.put(device_key, t);
      ++timed;
    }
  }
  if (timed > 0 && !tuning_cache_path.empty()) {
    Status st = cache.save();
    if (!st.is_ok()) ANVIL_LOG_WARN("tuning cache not saved: %s", st.to_string().c_str());
  }
  ANVIL_LOG_INFO("gemm autotune: %d shape buckets timed, %d from the tuning cache (%s)", timed, cached, device_key.c_str());
  h->gemm_tuning_status = "tuned";
  return Status::ok();
#else
  (void)device;
  (void)tuning_cache_path;
  (void)linear_shapes;
  h->gemm_tuning_status = "not_tuned: anvil built without CUDA";
  return Status::ok();
#endif
}

Result<int> apply_gemm_tuning(const EngineHeader& h, Backend* backend, int* retimed_out) {
  if (retimed_out) *retimed_out = 0;
#ifdef ANVIL_HAVE_CUDA
  auto* cuda = dynamic_cast<CudaBackend*>(backend);
  if (cuda == nullptr) return 0;
  int pinned = 0, retimed = 0;
  const int64_t version = cuda::cublaslt_version();
  for (const GemmTuning& t : h.gemm_tuning) {
    if (!(t.best_us < kWinMargin * t.heuristic_us)) continue;  // the heuristic's choice is as good
    auto out = dtype_from_name(t.out_dtype);
    if (!out) return data_loss("gemm tuning entry has unknown out_dtype " + t.out_dtype);
    // The stored algorithm, pinned without timing, when this cuBLASLt produced it and accepts it.
    cuda::LinearAlgoBytes algo{};
    if (t.cublaslt_version == version && algo_from_hex(t.algo, &algo)) {
      Status st = cuda->pin_linear_algorithm(t.m_bucket, t.n, t.k, *out, t.has_bias, algo);
      if (st.is_ok()) {
        ++pinned;
        continue;
      }
      if (st.code() != StatusCode::kUnsupported) return st;
    }
    Result<cuda::LinearAutotuneResult> r = cuda->autotune_linear(t.m_bucket, t.n, t.k, *out, t.has_bias);
    if (!r.is_ok()) return r.status().with_context("re-pinning the tuned GEMM N=" + std::to_string(t.n) + " K=" + std::to_string(t.k));
    ++retimed;
  }
  if (pinned + retimed > 0) {
    ANVIL_LOG_INFO("pinned %d autotuned GEMM algorithms from the engine, re-timed %d (built with cuBLASLt %lld, running %lld)",
                   pinned, retimed, static_cast<long long>(h.gemm_tuning.empty() ? 0 : h.gemm_tuning[0].cublaslt_version),
                   static_cast<long long>(version));
  }
  if (retimed_out) *retimed_out = retimed;
  return pinned + retimed;
#else
  (void)h;
  (void)backend;
  (void)kWinMargin;
  return 0;
#endif
}

}  // namespace anvil
