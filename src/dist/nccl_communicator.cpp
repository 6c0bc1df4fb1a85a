// NcclCommunicator: nonblocking NCCL communicators, every call polled against a deadline.
// After a NCCL call returns ncclSuccess or ncclInProgress, the communicator's async state is
// polled until it leaves ncclInProgress (required before the next call on a nonblocking
// communicator), then the stream until the operation is done.
#include "dist/nccl_communicator.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>

#include "core/logging.h"

#ifdef ANVIL_HAVE_NCCL
#include <cuda_runtime.h>
#include <nccl.h>
#endif

namespace anvil::dist {

#ifndef ANVIL_HAVE_NCCL

bool nccl_built() { return false; }
Result<std::unique_ptr<Communicator>> create_nccl_communicator(std::unique_ptr<Communicator>, int, const CommOptions&) {
  return unavailable("this anvil was built without NCCL (a CUDA build with nccl.h and libnccl is needed)");
}

#else

bool nccl_built() { return true; }

namespace {

std::string nccl_error(ncclResult_t r, ncclComm_t comm) {
  std::string s = ncclGetErrorString(r);
  const char* last = comm ? ncclGetLastError(comm) : nullptr;
  if (last && *last) s += std::string(" (") + last + ")";
  return s;
}

Status cuda_check(cudaError_t e, const std::string& what) {
  if (e == cudaSuccess) return Status::ok();
  return internal_error(what + ": " + cudaGetErrorString(e));
}

Result<ncclDataType_t> nccl_type(DType t) {
  if (t == DType::kF32) return ncclFloat32;
  if (t == DType::kBF16) return ncclBfloat16;
  if (t == DType::kF16) return ncclFloat16;
  return unsupported("NCCL all_reduce of " + std::string(dtype_name(t)) + " (f32, bf16 or f16 only)");
}

ncclConfig_t nonblocking_config() {
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  return config;
}

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(std::unique_ptr<Communicator> host, int device, const CommOptions& options)
      : host_(std::move(host)), device_(device), options_(options) {}
  ~NcclCommunicator() override {
    if (comm_) {
      cudaSetDevice(device_);
      if (aborted_) {
        ncclCommAbort(comm_);
      } else {
        ncclCommFinalize(comm_);
        ncclCommDestroy(comm_);
      }
    }
    if (scratch_) cudaFree(scratch_);
    if (stream_) cudaStreamDestroy(stream_);
  }

  // Creates the NCCL communicator: rank 0 makes the unique id, the host communicator carries it.
  Status init(const NcclCommunicator* parent, int color, int key) {
    ANVIL_RETURN_IF_ERROR(cuda_check(cudaSetDevice(device_), "cudaSetDevice(" + std::to_string(device_) + ")"));
    ANVIL_RETURN_IF_ERROR(cuda_check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate"));
    ANVIL_RETURN_IF_ERROR(cuda_check(cudaMalloc(&scratch_, 256), "cudaMalloc (NCCL scratch)"));
    ncclConfig_t config = nonblocking_config();
    if (parent) {
      ANVIL_RETURN_IF_ERROR(issue(ncclCommSplit(parent->comm_, color, key, &comm_, &config), "ncclCommSplit"));
    } else {
      ncclUniqueId id;
      std::memset(&id, 0, sizeof(id));
      if (host_->rank() == 0) ANVIL_RETURN_IF_ERROR(issue(ncclGetUniqueId(&id), "ncclGetUniqueId"));
      ANVIL_RETURN_IF_ERROR(host_->broadcast(&id, sizeof(id), 0).with_context("sending the NCCL unique id"));
      ANVIL_RETURN_IF_ERROR(issue(ncclCommInitRankConfig(&comm_, host_->size(), id, host_->rank(), &config),
                                  "ncclCommInitRankConfig"));
    }
    return wait_ready("NCCL communicator init");
  }

  int rank() const override { return host_->rank(); }
  int size() const override { return host_->size(); }
  std::string name() const override { return "nccl"; }
  CommMemory memory() const override { return CommMemory::kDevice; }
  int world_rank_of(int r) const override { return host_->world_rank_of(r); }

  Status all_reduce_sum(void* buf, size_t count, DType dtype) override {
    ANVIL_ASSIGN_OR_RETURN(ncclDataType_t t, nccl_type(dtype));
    return run([&] { return ncclAllReduce(buf, buf, count, t, ncclSum, comm_, stream_); }, "all_reduce");
  }
  Status all_gather(const void* send, void* recv, size_t bytes) override {
    return run([&] { return ncclAllGather(send, recv, bytes, ncclInt8, comm_, stream_); }, "all_gather");
  }
  Status broadcast(void* buf, size_t bytes, int root, WaitPolicy) override {
    return run([&] { return ncclBroadcast(buf, buf, bytes, ncclInt8, root, comm_, stream_); },
               "broadcast from rank " + std::to_string(world_rank_of(root)));
  }
  Status send(const void* buf, size_t bytes, int peer) override {
    return run([&] { return ncclSend(buf, bytes, ncclInt8, peer, comm_, stream_); },
               "send to rank " + std::to_string(world_rank_of(peer)));
  }
  Status recv(void* buf, size_t bytes, int peer) override {
    return run([&] { return ncclRecv(buf, bytes, ncclInt8, peer, comm_, stream_); },
               "recv from rank " + std::to_string(world_rank_of(peer)));
  }
  Status barrier() override {
    return run([&] { return ncclAllReduce(scratch_, scratch_, 1, ncclInt32, ncclSum, comm_, stream_); }, "barrier");
  }
  Result<std::unique_ptr<Communicator>> split(int color, int key) override {
    ANVIL_ASSIGN_OR_RETURN(std::unique_ptr<Communicator> host, host_->split(color, key));
    auto c = std::make_unique<NcclCommunicator>(std::move(host), device_, options_);
    ANVIL_RETURN_IF_ERROR(c->init(this, color, key));
    return std::unique_ptr<Communicator>(std::move(c));
  }
  [[noreturn]] void abort_job(int exit_code) override {
    if (comm_) ncclCommAbort(comm_);
    comm_ = nullptr;
    host_->abort_job(exit_code);
    std::_Exit(exit_code);  // abort_job does not return; this keeps [[noreturn]] visible to the compiler
  }
  void poll_health() override { host_->poll_health(); }
  std::string diagnose_peers(double grace) override { return host_->diagnose_peers(grace); }

 protected:
  Status copy_2d(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height) override {
    ANVIL_RETURN_IF_ERROR(cuda_check(
        cudaMemcpy2DAsync(dst, dpitch, src, spitch, width, height, cudaMemcpyDeviceToDevice, stream_), "cudaMemcpy2DAsync"));
    return wait_stream("column copy");
  }

 private:
  Status issue(ncclResult_t r, const std::string& what) {
    if (r == ncclSuccess || r == ncclInProgress) return Status::ok();
    return internal_error(what + " failed: " + nccl_error(r, comm_));
  }

  template <typename F>
  Status run(F&& call, const std::string& what) {
    if (aborted_) return unavailable(what + ": this NCCL communicator was aborted after an earlier failure");
    ANVIL_RETURN_IF_ERROR(cuda_check(cudaSetDevice(device_), "cudaSetDevice"));
    ANVIL_RETURN_IF_ERROR(issue(call(), what));
    ANVIL_RETURN_IF_ERROR(wait_ready(what));
    return wait_stream(what);
  }

  double elapsed(std::chrono::steady_clock::time_point start) const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }

  Status timed_out(const std::string& what) {
    aborted_ = true;
    ncclCommAbort(comm_);
    comm_ = nullptr;
    const std::string who = host_->diagnose_peers(std::min(2.0, std::max(0.2, options_.timeout_seconds / 4)));
    return unavailable("rank " + std::to_string(world_rank_of(rank())) + ": NCCL " + what + " did not complete within " +
                       std::to_string(static_cast<int>(options_.timeout_seconds)) + " s (ANVIL_DIST_TIMEOUT): " +
                       (who.empty() ? "every peer answers pings, so a peer is stuck elsewhere in its step" : who));
  }

  // Until the communicator's async state leaves ncclInProgress.
  Status wait_ready(const std::string& what) {
    const auto start = std::chrono::steady_clock::now();
    for (int spins = 0;; ++spins) {
      ncclResult_t state = ncclSuccess;
      ncclResult_t r = ncclCommGetAsyncError(comm_, &state);
      if (r != ncclSuccess) return internal_error(what + ": ncclCommGetAsyncError: " + nccl_error(r, comm_));
      if (state == ncclSuccess) return Status::ok();
      if (state != ncclInProgress) return internal_error(what + " failed: " + nccl_error(state, comm_));
      host_->poll_health();
      if (spins > 64) usleep(50);
      if (elapsed(start) > options_.timeout_seconds) return timed_out(what);
    }
  }

  // Until the stream has run the operation (or the communicator reports an error).
  Status wait_stream(const std::string& what) {
    const auto start = std::chrono::steady_clock::now();
    for (int spins = 0;; ++spins) {
      const cudaError_t q = cudaStreamQuery(stream_);
      if (q == cudaSuccess) return Status::ok();
      if (q != cudaErrorNotReady) return cuda_check(q, what);
      ncclResult_t state = ncclSuccess;
      ncclCommGetAsyncError(comm_, &state);
      if (state != ncclSuccess && state != ncclInProgress) return internal_error(what + " failed: " + nccl_error(state, comm_));
      host_->poll_health();
      if (spins > 256) usleep(20);
      if (elapsed(start) > options_.timeout_seconds) return timed_out(what);
    }
  }

  std::unique_ptr<Communicator> host_;
  int device_ = 0;
  CommOptions options_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  void* scratch_ = nullptr;
  bool aborted_ = false;
};

}  // namespace

Result<std::unique_ptr<Communicator>> create_nccl_communicator(std::unique_ptr<Communicator> host, int device,
                                                              const CommOptions& options) {
  if (!host || host->memory() != CommMemory::kHost) return invalid_argument("NCCL needs a host communicator to bootstrap");
  // NVLink multicast (NVLS) stays off on the machines anvil runs on.
  const char* nvls = std::getenv("NCCL_NVLS_ENABLE");
  if (nvls && std::string(nvls) != "0") ANVIL_LOG_WARN("NCCL_NVLS_ENABLE=%s overridden to 0 (NVLink multicast stays off)", nvls);
  setenv("NCCL_NVLS_ENABLE", "0", 1);
  auto c = std::make_unique<NcclCommunicator>(std::move(host), device, options);
  ANVIL_RETURN_IF_ERROR(c->init(nullptr, 0, 0));
  return std::unique_ptr<Communicator>(std::move(c));
}

#endif  // ANVIL_HAVE_NCCL

}  // namespace anvil::dist
