// Leveled stderr logging; the level comes from ANVIL_LOG_LEVEL at first use.
#include "core/logging.h"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace anvil {
namespace {

LogLevel level_from_env() {
  const char* v = std::getenv("ANVIL_LOG_LEVEL");
  if (!v) return LogLevel::kInfo;
  if (!std::strcmp(v, "debug")) return LogLevel::kDebug;
  if (!std::strcmp(v, "warn")) return LogLevel::kWarn;
  if (!std::strcmp(v, "error")) return LogLevel::kError;
  return LogLevel::kInfo;
}

std::atomic<int>& level_ref() {
  static std::atomic<int> level{static_cast<int>(level_from_env())};
  return level;
}

}  // namespace

void set_log_level(LogLevel level) { level_ref() = static_cast<int>(level); }
LogLevel log_level() { return static_cast<LogLevel>(level_ref().load()); }

void log_message(LogLevel level, const char* fmt, ...) {
  if (static_cast<int>(level) < level_ref().load()) return;
  static const char* kTags[] = {"debug", "info", "warn", "error"};
  char body[2048];
  va_list args;
  va_start(args, fmt);
  std::vsnprintf(body, sizeof body, fmt, args);
  va_end(args);
  std::string line = std::string("[anvil ") + kTags[static_cast<int>(level)] + "] " + body + "\n";
  std::fwrite(line.data(), 1, line.size(), stderr);
}

}  // namespace anvil
