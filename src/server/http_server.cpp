// HttpServer (http_server.h): listener setup, authentication, and the small routes (health,
// metrics, models, tokenize, detokenize). Generation routes live in generate_routes.cpp.
#include "server/http_server.h"

#include <sys/socket.h>

#include <csignal>
#include <cstring>

#include "server/chat.h"
#include "server/openai_request.h"
#include "server/server_state.h"

namespace anvil::server {
namespace {

using json = nlohmann::json;

constexpr int kMaxJsonDepth = 64;

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(dump_json(body), "application/json");
}

// Constant-time comparison, so the key cannot be guessed byte by byte from response times.
bool same_secret(const std::string& a, const std::string& b) {
  unsigned diff = a.size() == b.size() ? 0u : 1u;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned>(a[i] ^ b[i % (b.empty() ? 1 : b.size())]);
  return diff == 0 && !b.empty();
}

bool needs_auth(const std::string& path) {
  return path.rfind("/v1/", 0) == 0 || path == "/tokenize" || path == "/detokenize";
}

void handle_health(ServerState& s, httplib::Response& res) {
  auto m = s.model();
  if (s.stopping) return send_json(res, 503, json{{"status", "stopping"}});
  if (m == nullptr) return send_json(res, 503, json{{"status", "loading"}});
  ExecutorStats st = m->executor->stats();
  const bool pending = st.num_running + st.num_waiting > 0;
  if (pending && st.seconds_since_last_step > s.options.health_stall_seconds) {
    return send_json(res, 503, json{{"status", "stalled"},
                                    {"seconds_since_last_step", st.seconds_since_last_step},
                                    {"num_running", st.num_running},
                                    {"num_waiting", st.num_waiting}});
  }
  send_json(res, 200, json{{"status", "ok"}, {"num_running", st.num_running}, {"num_waiting", st.num_waiting}});
}

void handle_metrics(ServerState& s, httplib::Response& res) {
  auto m = s.model();
  std::string text;
  if (m != nullptr) {
    ExecutorStats st = m->executor->stats();
    text = s.metrics.render(&st);
  } else {
    text = s.metrics.render(nullptr);
  }
  res.status = 200;
  res.set_content(text, "text/plain; version=0.0.4; charset=utf-8");
}

void handle_models(ServerState& s, httplib::Response& res) {
  auto m = ready_model(s, res);
  if (m == nullptr) return;
  json model{{"id", m->name},
             {"object", "model"},
             {"created", m->created},
             {"owned_by", "anvil"},
             {"root", m->name},
             {"parent", nullptr},
             {"max_model_len", m->executor->max_context_len()}};
  send_json(res, 200, json{{"object", "list"}, {"data", json::array({model})}});
}

void handle_tokenize(ServerState& s, const httplib::Request& req, httplib::Response& res) {
  auto m = ready_model(s, res);
  if (m == nullptr) return;
  RequestJson body;
  if (auto e = parse_json_body(req, &body)) return send_error(res, *e);
  if (auto e = check_model_field(body, *m)) return send_error(res, *e);
  if (m->tokenizer == nullptr) return send_error(res, invalid_param("", "this model has no tokenizer"));
  std::vector<int32_t> ids;
  if (has_field(body, "messages")) {
    std::string text;
    if (auto e = render_chat_prompt(body, *m, &text)) return send_error(res, *e);
    bool add_special = false;  // the template writes BOS itself
    if (auto e = read_bool(body, "add_special_tokens", &add_special)) return send_error(res, *e);
    ids = m->tokenizer->encode(text, add_special);
  } else {
    if (!has_field(body, "prompt")) return send_error(res, invalid_param("prompt", "'prompt' or 'messages' is required"));
    if (!body.at("prompt").is_string()) {
      return send_error(res, invalid_param("prompt", std::string("'prompt' must be a string, got ") +
                                                         json_type_phrase(body.at("prompt"))));
    }
    bool add_special = true;
    if (auto e = read_bool(body, "add_special_tokens", &add_special)) return send_error(res, *e);
    ids = m->tokenizer->encode(body.at("prompt").get<std::string>(), add_special);
  }
  send_json(res, 200, json{{"count", ids.size()}, {"max_model_len", m->executor->max_context_len()}, {"tokens", ids}});
}

void handle_detokenize(ServerState& s, const httplib::Request& req, httplib::Response& res) {
  auto m = ready_model(s, res);
  if (m == nullptr) return;
  RequestJson body;
  if (auto e = parse_json_body(req, &body)) return send_error(res, *e);
  if (auto e = check_model_field(body, *m)) return send_error(res, *e);
  if (m->tokenizer == nullptr) return send_error(res, invalid_param("", "this model has no tokenizer"));
  if (!has_field(body, "tokens") || !body.at("tokens").is_array()) {
    return send_error(res, invalid_param("tokens", "'tokens' must be a list of token ids"));
  }
  std::vector<int32_t> ids;
  const int64_t vocab = m->executor->vocab_size();
  for (const auto& v : body.at("tokens")) {
    auto id = v.is_number() ? json_as_int(v) : std::nullopt;
    if (!id || *id < 0 || *id >= vocab) {
      return send_error(res, invalid_param("tokens", "'tokens' must hold token ids in [0, " + std::to_string(vocab) + ")"));
    }
    ids.push_back(static_cast<int32_t>(*id));
  }
  send_json(res, 200, json{{"prompt", m->tokenizer->decode(ids)}});
}

const char* default_message(int status) {
  switch (status) {
    case 400: return "bad request";
    case 401: return "invalid API key";
    case 404: return "no such route";
    case 405: return "method not allowed";
    case 413: return "request body too large";
    case 414: return "request URI too long";
    default: return status >= 500 ? "internal server error" : "request failed";
  }
}

}  // namespace

std::shared_ptr<const ServingModel> ready_model(ServerState& s, httplib::Response& res) {
  auto m = s.model();
  if (s.stopping) {
    send_error(res, ApiError{503, "the server is shutting down", "", "shutting_down", "server_error"});
    return nullptr;
  }
  if (m == nullptr) send_error(res, ApiError{503, "the model is still loading", "", "model_loading", "server_error"});
  return m;
}

void send_error(httplib::Response& res, const ApiError& e) {
  res.status = e.http_status;
  res.set_content(dump_json(e.to_json()), "application/json");
}

MaybeError parse_json_body(const httplib::Request& req, RequestJson* out) {
  // Bound nesting before parsing: nlohmann copies and compares recursively.
  int depth = 0;
  bool in_string = false, escaped = false;
  for (char c : req.body) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxJsonDepth) {
        return invalid_param("", "request body nests deeper than " + std::to_string(kMaxJsonDepth) + " levels");
      }
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  try {
    *out = RequestJson::parse(req.body);
  } catch (const nlohmann::json::exception& e) {  // parse_error, and out_of_range for 1e400
    return ApiError{400, std::string("invalid JSON body: ") + e.what(), "", "invalid_json", "invalid_request_error"};
  }
  if (!out->is_object()) {
    return invalid_param("", std::string("the request body must be a JSON object, got ") + json_type_phrase(*out));
  }
  return std::nullopt;
}

HttpServer::HttpServer(ServerOptions options) : state_(std::make_shared<ServerState>()) {
  state_->options = std::move(options);
}

HttpServer::~HttpServer() { stop(); }

const Metrics& HttpServer::metrics() const { return state_->metrics; }

void HttpServer::set_model(ServingModel model) {
  state_->set_model(std::make_shared<const ServingModel>(std::move(model)));
}

Status HttpServer::start() {
  if (http_ != nullptr) return invalid_argument("HttpServer::start called twice");
  // A client that hangs up mid-stream must fail the write, not kill the process.
  std::signal(SIGPIPE, SIG_IGN);
  http_ = std::make_unique<httplib::Server>();
  // Streamed tokens must leave at once: without TCP_NODELAY, Nagle holds small SSE chunks back
  // (measured: TTFT 2 ms in-process vs ~43 ms over HTTP on a tiny model).
  http_->set_tcp_nodelay(true);
  ServerState* s = state_.get();
  const size_t threads = static_cast<size_t>(s->options.http_threads > 0 ? std::max(4, s->options.http_threads) : 256);
  http_->new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  http_->set_payload_max_length(s->options.max_body_bytes);

  http_->set_pre_routing_handler([s](const httplib::Request& req, httplib::Response& res) {
    if (s->options.api_key.empty() || !needs_auth(req.path)) return httplib::Server::HandlerResponse::Unhandled;
    const std::string auth = req.get_header_value("Authorization");
    const std::string prefix = "Bearer ";
    if (auth.rfind(prefix, 0) == 0 && same_secret(auth.substr(prefix.size()), s->options.api_key)) {
      return httplib::Server::HandlerResponse::Unhandled;
    }
    send_error(res, ApiError{401, "Incorrect API key provided (send it as 'Authorization: Bearer KEY')", "",
                             "invalid_api_key", "invalid_request_error"});
    return httplib::Server::HandlerResponse::Handled;
  });
  using HandlerResponse = httplib::Server::HandlerResponse;
  http_->set_error_handler(httplib::Server::HandlerWithResponse(
      [](const httplib::Request&, httplib::Response& res) -> HandlerResponse {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    ApiError e{res.status, default_message(res.status), "", "", res.status >= 500 ? "server_error" : "invalid_request_error"};
    if (res.status == 404) e.code = "not_found";
    send_error(res, e);
    return HandlerResponse::Handled;
  }));
  http_->set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "unknown exception";
    try {
      if (ep) std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    send_error(res, ApiError{500, "internal error: " + what, "", "", "server_error"});
  });
  http_->set_logger([s](const httplib::Request&, const httplib::Response& res) { s->metrics.record_http(res.status); });

  http_->Get("/health", [s](const httplib::Request&, httplib::Response& res) { handle_health(*s, res); });
  http_->Get("/metrics", [s](const httplib::Request&, httplib::Response& res) { handle_metrics(*s, res); });
  http_->Get("/v1/models", [s](const httplib::Request&, httplib::Response& res) { handle_models(*s, res); });
  http_->Post("/tokenize", [s](const httplib::Request& req, httplib::Response& res) { handle_tokenize(*s, req, res); });
  http_->Post("/detokenize",
              [s](const httplib::Request& req, httplib::Response& res) { handle_detokenize(*s, req, res); });
  http_->Post("/v1/completions",
              [s](const httplib::Request& req, httplib::Response& res) { handle_completions(*s, req, res, false); });
  http_->Post("/v1/chat/completions",
              [s](const httplib::Request& req, httplib::Response& res) { handle_completions(*s, req, res, true); });

  // httplib 0.11 listens with a backlog of 5: a burst of clients would see SYNs dropped and
  // retried a second later. Keep the listening socket's fd and raise the backlog after bind
  // (Linux applies a second listen() to a listening socket).
  auto listen_fd = std::make_shared<int>(-1);
  http_->set_socket_options([listen_fd](int sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    *listen_fd = sock;
  });
  const ServerOptions& o = s->options;
  if (o.port == 0) {
    port_ = http_->bind_to_any_port(o.host);
    if (port_ <= 0) return unavailable("cannot bind any port on " + o.host);
  } else {
    if (!http_->bind_to_port(o.host, o.port)) {
      return unavailable("cannot bind " + o.host + ":" + std::to_string(o.port) + ": " + std::strerror(errno));
    }
    port_ = o.port;
  }
  if (*listen_fd >= 0) ::listen(*listen_fd, SOMAXCONN);
  thread_ = std::thread([this] { http_->listen_after_bind(); });
  return Status::ok();
}

void HttpServer::stop() {
  state_->stopping = true;
  if (http_ != nullptr) http_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace anvil::server
