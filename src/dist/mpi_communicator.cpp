// MpiCommunicator: non-blocking MPI calls polled against a deadline, plus a health channel (a
// duplicate of the world communicator) on which every waiting rank answers pings, so a timeout can
// name the ranks that are gone or stuck instead of just saying "timed out".
#include "dist/mpi_communicator.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <vector>

#include "core/logging.h"

#ifdef ANVIL_HAVE_MPI
// The C API only (OpenMPI and MPICH otherwise pull in their deprecated C++ bindings).
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#endif

namespace anvil::dist {

namespace {
int env_int(const char* const* names) {
  for (const char* const* n = names; *n; ++n) {
    if (const char* v = std::getenv(*n)) return std::atoi(v);
  }
  return -1;
}
}  // namespace

int launcher_world_size() {
  static const char* const kNames[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", nullptr};
  return env_int(kNames);
}
int launcher_world_rank() {
  static const char* const kNames[] = {"OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", nullptr};
  return env_int(kNames);
}
int launcher_local_rank() {
  static const char* const kNames[] = {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", nullptr};
  return env_int(kNames);
}
bool launched_by_mpi() { return launcher_world_size() > 0; }

#ifndef ANVIL_HAVE_MPI

bool mpi_built() { return false; }
Status mpi_init() { return unavailable("this anvil was built without MPI (install libopenmpi-dev and reconfigure)"); }
void mpi_finalize() {}
Result<std::unique_ptr<Communicator>> create_mpi_world(const CommOptions&) { return mpi_init(); }

#else

bool mpi_built() { return true; }

namespace {

bool g_initialized_here = false;

std::string mpi_error(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(code, text, &len) != MPI_SUCCESS) return "MPI error " + std::to_string(code);
  return std::string(text, static_cast<size_t>(len));
}

Status check(int code, const std::string& what) {
  if (code == MPI_SUCCESS) return Status::ok();
  return internal_error(what + ": " + mpi_error(code));
}

std::string host_name() {
  char h[256] = {};
  gethostname(h, sizeof(h) - 1);
  return h;
}

// True when process `pid` exists on this host and is not a zombie.
bool process_alive(int pid) {
  if (pid <= 0 || ::kill(pid, 0) != 0) return false;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return true;
  const size_t close = line.rfind(')');
  return close == std::string::npos || close + 2 >= line.size() || line[close + 2] != 'Z';
}

// 16-bit float sums for all_reduce: MPI has no bf16/f16, so both travel as 2-byte types of their
// own and this op adds them through f32.
MPI_Datatype g_bf16 = MPI_DATATYPE_NULL, g_f16 = MPI_DATATYPE_NULL;
MPI_Op g_half_sum = MPI_OP_NULL;

void half_sum(void* in, void* inout, int* len, MPI_Datatype* type) {
  auto* a = static_cast<const uint16_t*>(in);
  auto* b = static_cast<uint16_t*>(inout);
  const bool bf = *type == g_bf16;
  for (int i = 0; i < *len; ++i) {
    b[i] = bf ? f32_to_bf16(bf16_to_f32(a[i]) + bf16_to_f32(b[i])) : f32_to_f16(f16_to_f32(a[i]) + f16_to_f32(b[i]));
  }
}

constexpr int kTagData = 7, kTagPing = 1, kTagPong = 2;

// World-wide liveness: every rank's pid and host, and the ping channel.
class Health {
 public:
  static Result<std::shared_ptr<Health>> create() {
    auto h = std::make_shared<Health>();
    ANVIL_RETURN_IF_ERROR(check(MPI_Comm_dup(MPI_COMM_WORLD, &h->comm_), "MPI_Comm_dup"));
    MPI_Comm_set_errhandler(h->comm_, MPI_ERRORS_RETURN);
    MPI_Comm_rank(h->comm_, &h->rank_);
    MPI_Comm_size(h->comm_, &h->size_);
    h->host_ = host_name();
    char mine[64] = {};
    std::snprintf(mine, sizeof(mine), "%d", static_cast<int>(::getpid()));
    std::strncpy(mine + 16, h->host_.c_str(), sizeof(mine) - 17);
    std::vector<char> all(static_cast<size_t>(h->size_) * sizeof(mine));
    ANVIL_RETURN_IF_ERROR(check(MPI_Allgather(mine, sizeof(mine), MPI_CHAR, all.data(), sizeof(mine), MPI_CHAR, h->comm_),
                                "exchanging rank pids"));
    for (int r = 0; r < h->size_; ++r) {
      const char* p = all.data() + r * sizeof(mine);
      h->pids_.push_back(std::atoi(p));
      h->hosts_.emplace_back(p + 16);
    }
    return h;
  }
  ~Health() {
    if (comm_ != MPI_COMM_NULL) {
      int finalized = 0;
      MPI_Finalized(&finalized);
      if (!finalized) MPI_Comm_free(&comm_);
    }
  }

  // Answers every ping that has arrived.
  void service() {
    for (;;) {
      int flag = 0;
      MPI_Status st;
      if (MPI_Iprobe(MPI_ANY_SOURCE, kTagPing, comm_, &flag, &st) != MPI_SUCCESS || !flag) return;
      int nonce = 0;
      MPI_Recv(&nonce, 1, MPI_INT, st.MPI_SOURCE, kTagPing, comm_, MPI_STATUS_IGNORE);
      MPI_Request req;
      pong_ = nonce;
      if (MPI_Isend(&pong_, 1, MPI_INT, st.MPI_SOURCE, kTagPong, comm_, &req) == MPI_SUCCESS) MPI_Request_free(&req);
    }
  }

  // True when world rank r's process is known to be gone (same host only).
  bool gone(int r) const { return hosts_[r] == host_ && !process_alive(pids_[r]); }

  // Pings the world ranks in `peers` and returns a description of those that do not answer
  // within `grace` seconds ("" when all answer).
  std::string diagnose(const std::vector<int>& peers, double grace) {
    std::vector<int> nonce(peers.size(), 0);
    std::vector<bool> answered(peers.size(), false);
    std::vector<MPI_Request> sends(peers.size(), MPI_REQUEST_NULL);
    for (size_t i = 0; i < peers.size(); ++i) {
      nonce[i] = ++next_nonce_;
      MPI_Isend(&nonce[i], 1, MPI_INT, peers[i], kTagPing, comm_, &sends[i]);
    }
    const auto start = std::chrono::steady_clock::now();
    size_t left = peers.size();
    while (left > 0 && std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() < grace) {
      service();
      for (size_t i = 0; i < peers.size(); ++i) {
        if (answered[i]) continue;
        int flag = 0;
        MPI_Iprobe(peers[i], kTagPong, comm_, &flag, MPI_STATUS_IGNORE);
        if (!flag) continue;
        int v = 0;
        MPI_Recv(&v, 1, MPI_INT, peers[i], kTagPong, comm_, MPI_STATUS_IGNORE);
        answered[i] = true;
        --left;
      }
      usleep(1000);
    }
    std::string out;
    for (size_t i = 0; i < peers.size(); ++i) {
      if (answered[i]) continue;
      const int r = peers[i];
      if (!out.empty()) out += "; ";
      out += "rank " + std::to_string(r) + " (pid " + std::to_string(pids_[r]) + " on " + hosts_[r] + ") ";
      if (hosts_[r] == host_) {
        out += process_alive(pids_[r]) ? "is alive but not answering (stuck)" : "has exited";
      } else {
        out += "did not answer";
      }
    }
    // Pings to dead ranks may never complete; they are abandoned, not waited for.
    for (MPI_Request& s : sends)
      if (s != MPI_REQUEST_NULL) MPI_Request_free(&s);
    return out;
  }

  int world_rank() const { return rank_; }

 private:
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 0;
  std::string host_;
  std::vector<int> pids_;
  std::vector<std::string> hosts_;
  int pong_ = 0;
  int next_nonce_ = 0;
};

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator(MPI_Comm comm, std::shared_ptr<Health> health, const CommOptions& options)
      : comm_(comm), health_(std::move(health)), options_(options) {
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
    MPI_Group mine, world;
    MPI_Comm_group(comm_, &mine);
    MPI_Comm_group(MPI_COMM_WORLD, &world);
    std::vector<int> local(size_), global(size_);
    for (int i = 0; i < size_; ++i) local[i] = i;
    MPI_Group_translate_ranks(mine, size_, local.data(), world, global.data());
    world_ranks_ = global;
    MPI_Group_free(&mine);
    MPI_Group_free(&world);
  }
  ~MpiCommunicator() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized && comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string name() const override { return "mpi"; }
  CommMemory memory() const override { return CommMemory::kHost; }
  int world_rank_of(int r) const override { return world_ranks_[r]; }

  Status all_reduce_sum(void* buf, size_t count, DType dtype) override {
    MPI_Datatype t = MPI_FLOAT;
    MPI_Op op = MPI_SUM;
    if (dtype == DType::kBF16 || dtype == DType::kF16) {
      t = dtype == DType::kBF16 ? g_bf16 : g_f16;
      op = g_half_sum;
    } else if (dtype != DType::kF32) {
      return unsupported("all_reduce of " + std::string(dtype_name(dtype)) + " (f32, bf16 or f16 only)");
    }
    ANVIL_RETURN_IF_ERROR(fits(count, "all_reduce"));
    MPI_Request req;
    ANVIL_RETURN_IF_ERROR(check(MPI_Iallreduce(MPI_IN_PLACE, buf, static_cast<int>(count), t, op, comm_, &req), "MPI_Iallreduce"));
    return wait(&req, "all_reduce", WaitPolicy::kDeadline, -1);
  }
  Status all_gather(const void* send, void* recv, size_t bytes) override {
    ANVIL_RETURN_IF_ERROR(fits(bytes, "all_gather"));
    const int n = static_cast<int>(bytes);
    MPI_Request req;
    ANVIL_RETURN_IF_ERROR(check(MPI_Iallgather(send, n, MPI_BYTE, recv, n, MPI_BYTE, comm_, &req), "MPI_Iallgather"));
    return wait(&req, "all_gather", WaitPolicy::kDeadline, -1);
  }
  Status broadcast(void* buf, size_t bytes, int root, WaitPolicy policy) override {
    ANVIL_RETURN_IF_ERROR(fits(bytes, "broadcast"));
    MPI_Request req;
    ANVIL_RETURN_IF_ERROR(check(MPI_Ibcast(buf, static_cast<int>(bytes), MPI_BYTE, root, comm_, &req), "MPI_Ibcast"));
    return wait(&req, "broadcast from rank " + std::to_string(world_rank_of(root)), policy, root);
  }
  Status send(const void* buf, size_t bytes, int peer) override {
    ANVIL_RETURN_IF_ERROR(fits(bytes, "send"));
    MPI_Request req;
    ANVIL_RETURN_IF_ERROR(check(MPI_Isend(buf, static_cast<int>(bytes), MPI_BYTE, peer, kTagData, comm_, &req), "MPI_Isend"));
    return wait(&req, "send to rank " + std::to_string(world_rank_of(peer)), WaitPolicy::kDeadline, -1);
  }
  Status recv(void* buf, size_t bytes, int peer) override {
    ANVIL_RETURN_IF_ERROR(fits(bytes, "recv"));
    MPI_Request req;
    ANVIL_RETURN_IF_ERROR(check(MPI_Irecv(buf, static_cast<int>(bytes), MPI_BYTE, peer, kTagData, comm_, &req), "MPI_Irecv"));
    return wait(&req, "recv from rank " + std::to_string(world_rank_of(peer)), WaitPolicy::kDeadline, -1);
  }
  Status barrier() override {
    MPI_Request req;
    ANVIL_RETURN_IF_ERROR(check(MPI_Ibarrier(comm_, &req), "MPI_Ibarrier"));
    return wait(&req, "barrier", WaitPolicy::kDeadline, -1);
  }
  Result<std::unique_ptr<Communicator>> split(int color, int key) override {
    MPI_Comm sub = MPI_COMM_NULL;
    ANVIL_RETURN_IF_ERROR(check(MPI_Comm_split(comm_, color, key, &sub), "MPI_Comm_split"));
    return std::unique_ptr<Communicator>(new MpiCommunicator(sub, health_, options_));
  }
  [[noreturn]] void abort_job(int exit_code) override {
    MPI_Abort(MPI_COMM_WORLD, exit_code);
    std::_Exit(exit_code);
  }
  void poll_health() override { health_->service(); }
  std::string diagnose_peers(double grace) override {
    std::vector<int> peers;
    for (int r = 0; r < size_; ++r)
      if (r != rank_) peers.push_back(world_rank_of(r));
    return health_->diagnose(peers, grace);
  }

 protected:
  Status copy_2d(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height) override {
    for (size_t r = 0; r < height; ++r) {
      std::memcpy(static_cast<uint8_t*>(dst) + r * dpitch, static_cast<const uint8_t*>(src) + r * spitch, width);
    }
    return Status::ok();
  }

 private:
  static Status fits(size_t n, const char* what) {
    if (n > static_cast<size_t>(INT_MAX)) return unsupported(std::string(what) + " of more than 2^31-1 elements over MPI");
    return Status::ok();
  }

  // Polls req until it completes or the deadline passes. Spins briefly, then sleeps between
  // tests so oversubscribed ranks leave the cores to the ranks that compute.
  Status wait(MPI_Request* req, const std::string& what, WaitPolicy policy, int idle_peer) {
    auto start = std::chrono::steady_clock::now();
    for (int spins = 0;; ++spins) {
      int done = 0;
      const int rc = MPI_Test(req, &done, MPI_STATUS_IGNORE);
      if (rc != MPI_SUCCESS) return internal_error(what + " failed: " + mpi_error(rc));
      if (done) return Status::ok();
      health_->service();
      if (spins > 64) usleep(spins > 4096 ? 200 : 10);
      const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (waited < options_.timeout_seconds) continue;
      if (policy == WaitPolicy::kIdle) {
        // Idle is normal (no work); only a root that has exited ends the wait.
        const int root = world_rank_of(idle_peer);
        if (health_->gone(root)) {
          return unavailable("rank " + std::to_string(root) + " has exited while rank " +
                             std::to_string(health_->world_rank()) + " waited for its " + what);
        }
        start = std::chrono::steady_clock::now();
        continue;
      }
      const std::string who = diagnose_peers(std::min(2.0, std::max(0.2, options_.timeout_seconds / 4)));
      return unavailable("rank " + std::to_string(health_->world_rank()) + ": " + what + " did not complete within " +
                         std::to_string(static_cast<int>(options_.timeout_seconds)) + " s (ANVIL_DIST_TIMEOUT): " +
                         (who.empty() ? "every peer answers pings, so a peer is stuck elsewhere in its step" : who));
    }
  }

  MPI_Comm comm_ = MPI_COMM_NULL;
  std::shared_ptr<Health> health_;
  CommOptions options_;
  int rank_ = 0, size_ = 1;
  std::vector<int> world_ranks_;
};

}  // namespace

Status mpi_init() {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (initialized) return Status::ok();
  int provided = 0;
  const int rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided);
  if (rc != MPI_SUCCESS) return unavailable("MPI_Init_thread failed: " + mpi_error(rc));
  if (provided < MPI_THREAD_SERIALIZED) {
    return unavailable("this MPI library does not provide MPI_THREAD_SERIALIZED (anvil calls MPI from its step thread)");
  }
  g_initialized_here = true;
  MPI_Type_contiguous(2, MPI_BYTE, &g_bf16);
  MPI_Type_commit(&g_bf16);
  MPI_Type_contiguous(2, MPI_BYTE, &g_f16);
  MPI_Type_commit(&g_f16);
  MPI_Op_create(&half_sum, /*commute=*/1, &g_half_sum);
  return Status::ok();
}

void mpi_finalize() {
  if (!g_initialized_here) return;
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  MPI_Op_free(&g_half_sum);
  MPI_Type_free(&g_bf16);
  MPI_Type_free(&g_f16);
  MPI_Finalize();
}

Result<std::unique_ptr<Communicator>> create_mpi_world(const CommOptions& options) {
  ANVIL_RETURN_IF_ERROR(mpi_init());
  ANVIL_ASSIGN_OR_RETURN(std::shared_ptr<Health> health, Health::create());
  MPI_Comm comm = MPI_COMM_NULL;
  ANVIL_RETURN_IF_ERROR(check(MPI_Comm_dup(MPI_COMM_WORLD, &comm), "MPI_Comm_dup"));
  return std::unique_ptr<Communicator>(new MpiCommunicator(comm, std::move(health), options));
}

#endif  // ANVIL_HAVE_MPI

}  // namespace anvil::dist
