// A fixed pool of worker threads with a blocking parallel_for, used by the CPU backend.
// parallel_for splits [0, n) into contiguous chunks, one per thread, and returns when all ran.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace anvil {

class ThreadPool {
 public:
  // num_threads <= 0: hardware concurrency (or ANVIL_NUM_THREADS).
  explicit ThreadPool(int num_threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return static_cast<int>(workers_.size()) + 1; }

  // Calls fn(begin, end) over chunks of [0, n); the calling thread takes a chunk too.
  // Nested calls (fn calling parallel_for) run inline on the calling thread, serially.
  void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn);

  // The process-wide pool.
  static ThreadPool& global();

 private:
  void worker_loop(int index);

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_start_;
  std::condition_variable cv_done_;
  const std::function<void(int64_t, int64_t)>* job_ = nullptr;
  int64_t job_n_ = 0;
  uint64_t generation_ = 0;
  int pending_ = 0;
  bool stop_ = false;
  std::mutex call_mu_;  // serializes parallel_for callers
};

}  // namespace anvil
