// Minimal leveled logging to stderr. printf-style, thread-safe (one write per line).
// ANVIL_LOG_LEVEL=debug|info|warn|error sets the threshold (default info).
#pragma once

#include <cstdarg>

namespace anvil {

enum class LogLevel { kDebug = 0, kInfo, kWarn, kError };

void set_log_level(LogLevel level);
LogLevel log_level();
void log_message(LogLevel level, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

}  // namespace anvil

#define ANVIL_LOG_DEBUG(...) ::anvil::log_message(::anvil::LogLevel::kDebug, __VA_ARGS__)
#define ANVIL_LOG_INFO(...) ::anvil::log_message(::anvil::LogLevel::kInfo, __VA_ARGS__)
#define ANVIL_LOG_WARN(...) ::anvil::log_message(::anvil::LogLevel::kWarn, __VA_ARGS__)
#define ANVIL_LOG_ERROR(...) ::anvil::log_message(::anvil::LogLevel::kError, __VA_ARGS__)
