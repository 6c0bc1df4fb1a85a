// Communicator helpers shared by every implementation, and the single-rank communicator.
#include "dist/communicator.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "core/logging.h"

namespace anvil::dist {

CommOptions comm_options_from_env() {
  CommOptions o;
  if (const char* t = std::getenv("ANVIL_DIST_TIMEOUT")) {
    char* end = nullptr;
    const double v = std::strtod(t, &end);
    if (end != t && *end == '\0' && v > 0) {
      o.timeout_seconds = v;
    } else {
      ANVIL_LOG_WARN("ANVIL_DIST_TIMEOUT='%s' is not a positive number of seconds; using %.0f", t, o.timeout_seconds);
    }
  }
  return o;
}

Status Communicator::all_gather_columns(const void* x, void* out, void* scratch, int64_t rows, int64_t cols,
                                        int64_t out_cols, size_t elem_bytes) {
  if (rows < 0 || cols <= 0 || out_cols <= 0 || out_cols > cols * size()) {
    return invalid_argument("all_gather_columns: bad sizes rows=" + std::to_string(rows) + " cols=" + std::to_string(cols) +
                            " out_cols=" + std::to_string(out_cols) + " ranks=" + std::to_string(size()));
  }
  if (rows == 0) return Status::ok();
  const size_t shard_bytes = static_cast<size_t>(rows * cols) * elem_bytes;
  ANVIL_RETURN_IF_ERROR(all_gather(x, scratch, shard_bytes));
  for (int k = 0; k < size(); ++k) {
    const int64_t begin = k * cols;
    const int64_t valid = std::min(cols, out_cols - begin);
    if (valid <= 0) break;
    ANVIL_RETURN_IF_ERROR(copy_2d(static_cast<uint8_t*>(out) + begin * elem_bytes, out_cols * elem_bytes,
                                  static_cast<const uint8_t*>(scratch) + k * shard_bytes, cols * elem_bytes,
                                  valid * elem_bytes, static_cast<size_t>(rows)));
  }
  return Status::ok();
}

namespace {

class SingleRankCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string name() const override { return "single"; }
  CommMemory memory() const override { return CommMemory::kHost; }
  int world_rank_of(int r) const override { return r; }
  Status all_reduce_sum(void*, size_t, DType) override { return Status::ok(); }
  Status all_gather(const void* send, void* recv, size_t bytes) override {
    if (send != recv) std::memmove(recv, send, bytes);
    return Status::ok();
  }
  Status broadcast(void*, size_t, int root, WaitPolicy) override {
    return root == 0 ? Status::ok() : invalid_argument("broadcast from rank " + std::to_string(root) + " of 1");
  }
  Status send(const void*, size_t, int peer) override {
    return invalid_argument("send to rank " + std::to_string(peer) + ": a single-rank communicator has no peers");
  }
  Status recv(void*, size_t, int peer) override {
    return invalid_argument("recv from rank " + std::to_string(peer) + ": a single-rank communicator has no peers");
  }
  Status barrier() override { return Status::ok(); }
  Result<std::unique_ptr<Communicator>> split(int, int) override { return make_single_rank_communicator(); }
  [[noreturn]] void abort_job(int exit_code) override { std::_Exit(exit_code); }

 protected:
  Status copy_2d(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height) override {
    for (size_t r = 0; r < height; ++r) {
      std::memcpy(static_cast<uint8_t*>(dst) + r * dpitch, static_cast<const uint8_t*>(src) + r * spitch, width);
    }
    return Status::ok();
  }
};

}  // namespace

std::unique_ptr<Communicator> make_single_rank_communicator() { return std::make_unique<SingleRankCommunicator>(); }

}  // namespace anvil::dist
