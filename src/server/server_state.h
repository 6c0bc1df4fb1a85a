// ServerState: what every route handler shares: options, metrics, the served model (absent while
// loading) and the stopping flag that ends long-running handlers. Internal to src/server/.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>

#include <httplib.h>

#include "server/api_error.h"
#include "server/json_params.h"
#include "server/metrics.h"
#include "server/server_options.h"

namespace anvil::server {

struct ServerState {
  ServerOptions options;
  Metrics metrics;
  std::atomic<bool> stopping{false};

  std::shared_ptr<const ServingModel> model() const {
    std::lock_guard<std::mutex> lock(mu);
    return model_;
  }
  void set_model(std::shared_ptr<const ServingModel> m) {
    std::lock_guard<std::mutex> lock(mu);
    model_ = std::move(m);
  }

 private:
  mutable std::mutex mu;
  std::shared_ptr<const ServingModel> model_;
};

// Writes `e` as the JSON error body with its status.
void send_error(httplib::Response& res, const ApiError& e);
// The served model, or nullptr after writing a 503 to `res` (loading or shutting down).
std::shared_ptr<const ServingModel> ready_model(ServerState& s, httplib::Response& res);
// Parses the request body as a JSON object; 400 with the parser's message otherwise (invalid
// JSON, invalid UTF-8, nesting deeper than 64).
MaybeError parse_json_body(const httplib::Request& req, RequestJson* out);

// POST /v1/completions and /v1/chat/completions (generate_routes.cpp).
void handle_completions(ServerState& state, const httplib::Request& req, httplib::Response& res, bool chat);

}  // namespace anvil::server
