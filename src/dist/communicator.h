// Communicator: the collectives tensor and pipeline parallelism need (all_reduce, all_gather,
// broadcast, send/recv, barrier) over one group of ranks. Implementations: single-rank (no peers),
// MPI (CPU ranks, host memory) and NCCL (GPUs, device memory). Every wait is bounded by
// CommOptions::timeout_seconds: a rank that died or stopped answering turns into an error that
// names it, never a hang. Buffers live in memory() of the communicator (host or device).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "core/dtype.h"
#include "core/status.h"

namespace anvil::dist {

enum class CommMemory { kHost, kDevice };

struct CommOptions {
  // Longest wait of one collective or point-to-point transfer before it fails with an error that
  // names the ranks that did not answer. ANVIL_DIST_TIMEOUT (seconds) overrides the default.
  double timeout_seconds = 120.0;
};
// CommOptions with the timeout from ANVIL_DIST_TIMEOUT when set (an unparsable value is ignored
// with a warning).
CommOptions comm_options_from_env();

// How a receive that may legitimately idle waits: kDeadline fails after timeout_seconds; kIdle
// (a follower waiting for the next step of a server that has no work) waits without limit but
// checks every timeout_seconds that the sender is still alive.
enum class WaitPolicy { kDeadline, kIdle };

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string name() const = 0;  // "single", "mpi", "nccl"
  virtual CommMemory memory() const = 0;
  // The rank of this communicator's member `r` in the world (for error messages).
  virtual int world_rank_of(int r) const = 0;

  // buf [count] elements of dtype (f32, bf16 or f16), summed over the ranks in place. Every rank
  // gets the same bits (the reduction order is the same everywhere).
  virtual Status all_reduce_sum(void* buf, size_t count, DType dtype) = 0;
  // send [bytes] from each rank -> recv [size() * bytes], rank-major.
  virtual Status all_gather(const void* send, void* recv, size_t bytes) = 0;
  virtual Status broadcast(void* buf, size_t bytes, int root, WaitPolicy wait = WaitPolicy::kDeadline) = 0;
  virtual Status send(const void* buf, size_t bytes, int peer) = 0;
  virtual Status recv(void* buf, size_t bytes, int peer) = 0;
  virtual Status barrier() = 0;
  // Ranks passing the same color form a new communicator, ordered by key. Collective over this one.
  virtual Result<std::unique_ptr<Communicator>> split(int color, int key) = 0;
  // Ends every rank of the job (after a failure that leaves the ranks out of step). Never returns.
  [[noreturn]] virtual void abort_job(int exit_code) = 0;
  // Health channel (MPI): answer peers' pings while this rank waits elsewhere (a NCCL wait), and
  // name the peers that do not answer within grace seconds ("" when all answer or unknown).
  virtual void poll_health() {}
  virtual std::string diagnose_peers(double grace) { return ""; }

  // Column-sharded gather: each rank holds x [rows, cols]; out [rows, out_cols] receives rank k's
  // columns at [k * cols, min((k + 1) * cols, out_cols)) (the last shards may be padding that is
  // dropped). scratch holds size() * rows * cols elements. All pointers in memory().
  //
  //   scratch after all_gather:  | rank 0: rows x cols | rank 1: rows x cols | ...
  //   out row r:                 | r of rank 0 | r of rank 1 | ... (out_cols wide)
  Status all_gather_columns(const void* x, void* out, void* scratch, int64_t rows, int64_t cols, int64_t out_cols,
                            size_t elem_bytes);

 protected:
  // Strided copy in memory(): height rows of width bytes, from src (pitch spitch) to dst (dpitch).
  virtual Status copy_2d(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height) = 0;
};

// One rank, no peers: all_reduce and barrier do nothing, all_gather and broadcast copy, send and
// recv fail (there is no one to talk to). Host memory.
std::unique_ptr<Communicator> make_single_rank_communicator();

}  // namespace anvil::dist
