// The request window loop for the offline benchmarks. Shared state lives in a shared_ptr held by
// every callback, so a callback that arrives after a timed-out run returned touches live memory.
#include "bench/request_driver.h"

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>

namespace anvil::bench {
namespace {

using Clock = std::chrono::steady_clock;

struct Shared {
  std::mutex mu;
  std::condition_variable cv;
  Clock::time_point t0;
  std::vector<RequestRecord> records;
  int64_t num_final = 0;  // final Outputs received (accepted requests only)
  double seconds(Clock::time_point t) const { return std::chrono::duration<double>(t - t0).count(); }
};

constexpr double kCancelGraceSeconds = 30.0;

}  // namespace

DriveResult drive_requests(Executor* executor, std::vector<Request> requests, const DriveOptions& o) {
  auto sh = std::make_shared<Shared>();
  const size_t n = requests.size();
  sh->records.resize(n);
  const int64_t window = o.concurrency > 0 ? o.concurrency : static_cast<int64_t>(n);
  std::vector<RequestId> ids(n, 0);
  std::vector<bool> accepted(n, false);
  sh->t0 = Clock::now();
  const auto deadline = sh->t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.timeout_s));
  const auto poll_every = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.poll_interval_s));

  size_t next = 0;
  int64_t num_accepted = 0;
  DriveResult result;
  std::unique_lock<std::mutex> lk(sh->mu);
  while (true) {
    // Top the window up. enqueue may take the executor's lock; never hold ours while calling it.
    while (next < n && num_accepted - sh->num_final < window) {
      const size_t i = next++;
      sh->records[i].enqueue_s = sh->seconds(Clock::now());
      sh->records[i].prompt_tokens = static_cast<int32_t>(requests[i].prompt.size());
      lk.unlock();
      auto id = executor->enqueue(std::move(requests[i]), [sh, i](const Output& out) {
        const auto now = Clock::now();
        std::lock_guard<std::mutex> g(sh->mu);
        RequestRecord& r = sh->records[i];
        if (!out.tokens.empty()) {
          if (r.first_token_s < 0) r.first_token_s = sh->seconds(now);
          r.output_tokens += static_cast<int32_t>(out.tokens.size());
        }
        if (out.finished) {
          r.finish_s = sh->seconds(now);
          r.finish_reason = out.finish_reason;
          if (out.finish_reason == FinishReason::kError) r.error = out.error.to_string();
          ++sh->num_final;
          sh->cv.notify_all();
        }
      });
      lk.lock();
      if (id.is_ok()) {
        ids[i] = *id;
        accepted[i] = true;
        ++num_accepted;
      } else {  // refused: no callback will come
        sh->records[i].error = id.status().to_string();
        sh->records[i].finish_s = sh->seconds(Clock::now());
      }
    }
    if (next == n && sh->num_final == num_accepted) break;
    if (Clock::now() >= deadline) {
      result.timed_out = true;
      break;
    }
    const int64_t before = sh->num_final;
    sh->cv.wait_until(lk, std::min(deadline, Clock::now() + poll_every), [&] { return sh->num_final != before; });
    if (o.poll) {
      lk.unlock();
      o.poll();
      lk.lock();
    }
  }
  if (result.timed_out) {
    // Cancel what is left and wait (bounded) for the final Outputs the executor promises.
    std::vector<RequestId> left;
    for (size_t i = 0; i < next; ++i) {
      if (accepted[i] && sh->records[i].finish_s < 0) left.push_back(ids[i]);
    }
    lk.unlock();
    for (RequestId id : left) executor->cancel(id);
    lk.lock();
    const auto grace = Clock::now() + std::chrono::seconds(static_cast<int64_t>(kCancelGraceSeconds));
    sh->cv.wait_until(lk, grace, [&] {
      for (size_t i = 0; i < next; ++i) {
        if (accepted[i] && sh->records[i].finish_s < 0) return false;
      }
      return true;
    });
    for (size_t i = 0; i < n; ++i) {
      if (sh->records[i].finish_s < 0 && sh->records[i].error.empty()) sh->records[i].error = "timed out";
    }
  }
  double last = 0;
  for (const RequestRecord& r : sh->records) last = std::max(last, r.finish_s);
  double first = -1;
  for (const RequestRecord& r : sh->records) {
    if (r.enqueue_s >= 0 && (first < 0 || r.enqueue_s < first)) first = r.enqueue_s;
  }
  result.duration_s = first >= 0 ? last - first : 0;
  result.records = sh->records;
  return result;
}

}  // namespace anvil::bench
