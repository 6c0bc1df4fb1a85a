// ApiError: an OpenAI-style error returned to an HTTP client. Rendered as
// {"error": {"message", "type", "param", "code"}}; param and code are null when empty.
// Client mistakes are 4xx with type "invalid_request_error"; only anvil's own faults are 5xx.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace anvil::server {

struct ApiError {
  int http_status = 400;
  std::string message;
  std::string param;  // the request field at fault ("" -> null)
  std::string code;   // machine-readable reason ("" -> null)
  std::string type = "invalid_request_error";

  nlohmann::json to_json() const {
    nlohmann::json e = {{"message", message}, {"type", type}};
    e["param"] = param.empty() ? nlohmann::json(nullptr) : nlohmann::json(param);
    e["code"] = code.empty() ? nlohmann::json(nullptr) : nlohmann::json(code);
    return nlohmann::json{{"error", std::move(e)}};
  }
};

inline ApiError invalid_param(std::string param, std::string message) {
  return ApiError{400, std::move(message), std::move(param), "", "invalid_request_error"};
}

// JSON text of `j` for the wire: never throws on invalid UTF-8 (replaced with U+FFFD).
inline std::string dump_json(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace anvil::server
