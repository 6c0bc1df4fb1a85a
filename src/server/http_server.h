// HttpServer: anvil's OpenAI-compatible HTTP front end (cpp-httplib, one thread per open
// connection). Routes: POST /v1/completions, /v1/chat/completions, /tokenize, /detokenize;
// GET /v1/models, /health, /metrics. It can listen before the model is ready (/health answers
// 503 "loading" until set_model). The served model must outlive stop().
#pragma once

#include <memory>
#include <thread>

#include "anvil/status.h"
#include "server/metrics.h"
#include "server/server_options.h"

namespace httplib {
class Server;
}

namespace anvil::server {

struct ServerState;

class HttpServer {
 public:
  explicit HttpServer(ServerOptions options);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds host:port (port 0: a free one) and serves on a background thread.
  Status start();
  // The bound port (valid after start).
  int port() const { return port_; }
  // Makes the model servable. Called once, after start or before it.
  void set_model(ServingModel model);
  // Ends open streams (their requests are cancelled), stops listening and joins. Idempotent.
  void stop();

  const Metrics& metrics() const;

 private:
  std::shared_ptr<ServerState> state_;
  std::unique_ptr<httplib::Server> http_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace anvil::server
