// StepWatchdog: wakes at a tenth of the threshold, reports once per threshold of a long step.
#include "dist/watchdog.h"

#include <algorithm>
#include <cstdio>

#include "core/logging.h"

namespace anvil::dist {

StepWatchdog::StepWatchdog(std::string label, double report_after_seconds, std::function<void(const std::string&)> report)
    : label_(std::move(label)), threshold_(std::max(0.01, report_after_seconds)), report_(std::move(report)) {
  if (!report_) report_ = [](const std::string& m) { ANVIL_LOG_WARN("%s", m.c_str()); };
  thread_ = std::thread([this] { loop(); });
}

StepWatchdog::~StepWatchdog() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void StepWatchdog::begin_step(int64_t step) {
  std::lock_guard<std::mutex> lk(mu_);
  in_step_ = true;
  step_ = step;
  started_ = std::chrono::steady_clock::now();
}

void StepWatchdog::end_step() {
  std::lock_guard<std::mutex> lk(mu_);
  in_step_ = false;
}

void StepWatchdog::loop() {
  std::unique_lock<std::mutex> lk(mu_);
  int64_t reported_step = -1;
  double next_report = threshold_;
  const auto tick = std::chrono::duration<double>(threshold_ / 10);
  while (!stop_) {
    cv_.wait_for(lk, tick);
    if (stop_) break;
    if (!in_step_) continue;
    if (step_ != reported_step) {
      reported_step = step_;
      next_report = threshold_;
    }
    const double ran = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
    if (ran < next_report) continue;
    char msg[256];
    std::snprintf(msg, sizeof(msg), "%s: step %lld has run for %.1f s (stuck collective or peer?)", label_.c_str(),
                  static_cast<long long>(step_), ran);
    next_report += threshold_;
    ++reports_;
    const std::string m = msg;
    lk.unlock();
    report_(m);
    lk.lock();
  }
}

}  // namespace anvil::dist
