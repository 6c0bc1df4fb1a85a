// StepWatchdog: a thread that reports a step running longer than a threshold (a stuck collective,
// a hung kernel) with the rank and the step number, and again every threshold while it lasts.
// It only reports; the collectives' own timeouts turn a dead peer into an error.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace anvil::dist {

class StepWatchdog {
 public:
  // report(message) is called from the watchdog thread; the default logs a warning.
  StepWatchdog(std::string label, double report_after_seconds, std::function<void(const std::string&)> report = nullptr);
  ~StepWatchdog();
  StepWatchdog(const StepWatchdog&) = delete;
  StepWatchdog& operator=(const StepWatchdog&) = delete;

  void begin_step(int64_t step);
  void end_step();
  int64_t reports() const { return reports_.load(); }

 private:
  void loop();

  std::string label_;
  double threshold_;
  std::function<void(const std::string&)> report_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  bool in_step_ = false;
  int64_t step_ = 0;
  std::chrono::steady_clock::time_point started_;
  std::atomic<int64_t> reports_{0};
  std::thread thread_;
};

}  // namespace anvil::dist
