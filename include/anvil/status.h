// Status and Result<T>: errors as values at module boundaries. A Status names what went wrong
// (the file, field, tensor or knob) so a user can act on it; nothing here throws.
#pragma once

#include <cassert>
#include <string>
#include <utility>
#include <variant>

namespace anvil {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,  // the caller passed something out of range or malformed
  kNotFound,         // a file, tensor or field that must exist does not
  kUnsupported,      // a valid input anvil does not handle (yet)
  kDataLoss,         // a file is truncated or corrupt
  kOutOfMemory,
  kInternal,         // a bug or a failed device call
  kCancelled,
  kUnavailable,      // e.g. queue full, no GPU
};

const char* status_code_name(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status ok() { return Status(); }
  bool is_ok() const { return code_ == StatusCode::kOk; }
  explicit operator bool() const { return is_ok(); }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "invalid argument: <message>"
  std::string to_string() const;
  // Prefixes context to the message: "loading x.safetensors: <old message>".
  Status with_context(const std::string& context) const {
    if (is_ok()) return *this;
    return Status(code_, context + ": " + message_);
  }

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

inline Status invalid_argument(std::string m) { return {StatusCode::kInvalidArgument, std::move(m)}; }
inline Status not_found(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
inline Status unsupported(std::string m) { return {StatusCode::kUnsupported, std::move(m)}; }
inline Status data_loss(std::string m) { return {StatusCode::kDataLoss, std::move(m)}; }
inline Status internal_error(std::string m) { return {StatusCode::kInternal, std::move(m)}; }
inline Status out_of_memory(std::string m) { return {StatusCode::kOutOfMemory, std::move(m)}; }
inline Status unavailable(std::string m) { return {StatusCode::kUnavailable, std::move(m)}; }

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}                // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {         // NOLINT: implicit by design
    assert(!std::get<Status>(v_).is_ok() && "Result built from an ok Status");
  }
  bool is_ok() const { return std::holds_alternative<T>(v_); }
  explicit operator bool() const { return is_ok(); }
  const Status& status() const {
    static const Status kOkStatus;
    return is_ok() ? kOkStatus : std::get<Status>(v_);
  }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace anvil

#define ANVIL_CONCAT_INNER(a, b) a##b
#define ANVIL_CONCAT(a, b) ANVIL_CONCAT_INNER(a, b)

// Returns the Status from the enclosing function if `expr` (a Status) is not ok.
#define ANVIL_RETURN_IF_ERROR(expr)                  \
  do {                                               \
    ::anvil::Status anvil_status_ = (expr);          \
    if (!anvil_status_.is_ok()) return anvil_status_; \
  } while (0)

// ANVIL_ASSIGN_OR_RETURN(auto x, make_x()); unwraps a Result or returns its Status.
#define ANVIL_ASSIGN_OR_RETURN(lhs, expr) \
  ANVIL_ASSIGN_OR_RETURN_IMPL(ANVIL_CONCAT(anvil_result_, __LINE__), lhs, expr)
#define ANVIL_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                \
  if (!tmp.is_ok()) return tmp.status();            \
  lhs = std::move(tmp).value()
