// Helpers for the server tests: a real model (golden fixture on the CPU backend + the real
// Executor), an in-process HttpServer on a free port, HTTP calls through httplib's client, a raw
// socket client that can hang up mid-stream, and parsers for SSE streams and Prometheus text.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <httplib.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "anvil/executor.h"
#include "backend/cpu/cpu_backend.h"
#include "runtime/model_loader.h"
#include "server/http_server.h"
#include "server/model_assets.h"

namespace anvil::server::test {

using json = nlohmann::json;

inline std::string source_path(const std::string& rel) { return std::string(ANVIL_SOURCE_DIR) + "/" + rel; }

inline json read_json_file(const std::string& path) {
  std::ifstream in(path);
  return json::parse(in);
}

// The golden greedy continuation of prompt `i` of tests/golden/<name> (32 tokens, EOS ignored).
inline std::vector<int32_t> golden_greedy(const std::string& name, size_t i) {
  json g = read_json_file(source_path("tests/golden/" + name + "/golden.json"));
  return g.at("greedy").at(i).get<std::vector<int32_t>>();
}
inline std::vector<int32_t> golden_prompt(const std::string& name, size_t i) {
  json g = read_json_file(source_path("tests/golden/" + name + "/golden.json"));
  return g.at("prompts").at(i).get<std::vector<int32_t>>();
}

// A model folder on the CPU backend with the real Executor, plus its tokenizer / chat template.
struct RealModel {
  CpuBackend backend;
  std::unique_ptr<ModelRunner> runner;
  std::unique_ptr<Executor> executor;
  ModelAssets assets;

  static std::unique_ptr<RealModel> load(const std::string& dir, int32_t max_num_seqs = 16,
                                         int32_t max_queue = 4096, int32_t num_kv_blocks = 0) {
    auto m = std::make_unique<RealModel>();
    RunnerOptions ro;
    ro.max_num_tokens = 256;
    ro.max_num_seqs = max_num_seqs;
    ro.block_size = 16;
    ro.num_kv_blocks = num_kv_blocks;
    ro.max_kv_bytes = 64 << 20;
    auto r = load_model(dir, &m->backend, ro);
    EXPECT_TRUE(r.is_ok()) << r.status().to_string();
    if (!r.is_ok()) return nullptr;
    m->runner = std::move(r).value();
    ExecutorOptions eo;
    eo.max_num_tokens = 256;
    eo.max_num_seqs = max_num_seqs;
    eo.max_queue = max_queue;
    auto e = Executor::create(m->runner.get(), eo);
    EXPECT_TRUE(e.is_ok()) << e.status().to_string();
    if (!e.is_ok()) return nullptr;
    m->executor = std::move(e).value();
    auto a = load_model_assets(dir, "");
    EXPECT_TRUE(a.is_ok()) << a.status().to_string();
    if (a.is_ok()) m->assets = std::move(a).value();
    return m;
  }
  ~RealModel() {
    if (executor) executor->shutdown(false);
  }

  ServingModel serving(const std::string& name) const {
    ServingModel s;
    s.name = name;
    s.executor = executor.get();
    s.tokenizer = assets.tokenizer.get();
    s.chat_template = assets.chat_template.get();
    s.created = 1700000000;
    return s;
  }
};

// tests/golden/llama3_gqa with tests/server/data/chat_model's tokenizer and chat template, in a
// fresh temp folder (removed by the destructor).
struct ChatModelDir {
  std::filesystem::path dir;
  ChatModelDir() {
    namespace fs = std::filesystem;
    dir = fs::temp_directory_path() / ("anvil_server_chat_" + std::to_string(::getpid()) + "_" +
                                       std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()));
    fs::create_directories(dir);
    for (const char* f : {"config.json", "generation_config.json", "model.safetensors"}) {
      fs::copy_file(source_path(std::string("tests/golden/llama3_gqa/") + f), dir / f);
    }
    for (const char* f : {"tokenizer.json", "tokenizer_config.json"}) {
      fs::copy_file(source_path(std::string("tests/server/data/chat_model/") + f), dir / f);
    }
  }
  ~ChatModelDir() {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
};

struct HttpResult {
  int status = 0;  // 0: no response
  std::string error;  // httplib's error when status == 0
  std::string body;
  std::string content_type;
  json body_json() const {
    auto j = json::parse(body, nullptr, false);
    return j;
  }
};

// An HttpServer on 127.0.0.1, port chosen by the OS.
class TestServer {
 public:
  explicit TestServer(const ServingModel* model, ServerOptions o = {}) : server_(with_any_port(std::move(o))) {
    if (model != nullptr) server_.set_model(*model);
    Status s = server_.start();
    EXPECT_TRUE(s.is_ok()) << s.to_string();
  }
  ~TestServer() { server_.stop(); }

  HttpServer& server() { return server_; }
  int port() const { return server_.port(); }

  HttpResult post(const std::string& path, const std::string& body, const httplib::Headers& headers = {}) {
    httplib::Client cli("127.0.0.1", port());
    cli.set_read_timeout(120, 0);
    auto r = cli.Post(path.c_str(), headers, body, "application/json");
    return to_result(r);
  }
  HttpResult post(const std::string& path, const json& body, const httplib::Headers& headers = {}) {
    return post(path, body.dump(), headers);
  }
  HttpResult get(const std::string& path, const httplib::Headers& headers = {}) {
    httplib::Client cli("127.0.0.1", port());
    cli.set_read_timeout(60, 0);
    return to_result(cli.Get(path.c_str(), headers));
  }

 private:
  static ServerOptions with_any_port(ServerOptions o) {
    o.host = "127.0.0.1";
    o.port = 0;
    return o;
  }
  static HttpResult to_result(const httplib::Result& r) {
    HttpResult out;
    if (!r) {
      out.error = httplib::to_string(r.error());
      return out;
    }
    out.status = r->status;
    out.body = r->body;
    out.content_type = r->get_header_value("Content-Type");
    return out;
  }
  HttpServer server_;
};

// Splits an SSE body into its `data:` payloads. Fails the test on framing other than
// "data: <payload>\n\n" (comment lines starting with ':' are allowed and skipped).
inline std::vector<std::string> sse_events(const std::string& body) {
  std::vector<std::string> events;
  size_t pos = 0;
  while (pos < body.size()) {
    size_t end = body.find("\n\n", pos);
    EXPECT_NE(end, std::string::npos) << "unterminated SSE event at byte " << pos;
    if (end == std::string::npos) break;
    std::string ev = body.substr(pos, end - pos);
    pos = end + 2;
    if (!ev.empty() && ev[0] == ':') continue;
    EXPECT_EQ(ev.rfind("data: ", 0), 0u) << "SSE event without 'data: ': " << ev;
    EXPECT_EQ(ev.find('\n'), std::string::npos) << "multi-line SSE event: " << ev;
    events.push_back(ev.substr(6));
  }
  return events;
}

// Parses Prometheus text format 0.0.4: every sample line "name{labels} value" must belong to a
// family declared by "# TYPE"; histograms must have cumulative buckets ending in +Inf == _count.
// Returns "name{labels}" -> value.
inline std::map<std::string, double> parse_prometheus(const std::string& text) {
  std::map<std::string, double> samples;
  std::map<std::string, std::string> types;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    if (line.rfind("# HELP ", 0) == 0) continue;
    if (line.rfind("# TYPE ", 0) == 0) {
      std::istringstream t(line.substr(7));
      std::string name, type;
      t >> name >> type;
      EXPECT_TRUE(type == "counter" || type == "gauge" || type == "histogram") << line;
      EXPECT_EQ(types.count(name), 0u) << "family declared twice: " << name;
      types[name] = type;
      continue;
    }
    EXPECT_NE(line[0], '#') << "unknown comment: " << line;
    size_t sp = line.rfind(' ');
    EXPECT_NE(sp, std::string::npos) << line;
    if (sp == std::string::npos) continue;
    std::string series = line.substr(0, sp);
    std::string value = line.substr(sp + 1);
    double v = value == "+Inf" ? INFINITY : value == "-Inf" ? -INFINITY : std::stod(value);
    std::string name = series.substr(0, series.find('{'));
    for (char c : name) EXPECT_TRUE(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == ':') << line;
    std::string family = name;
    for (const char* suffix : {"_bucket", "_sum", "_count"}) {
      std::string s(suffix);
      if (!types.count(family) && name.size() > s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0) {
        family = name.substr(0, name.size() - s.size());
      }
    }
    EXPECT_TRUE(types.count(family)) << "sample without # TYPE: " << line;
    EXPECT_EQ(samples.count(series), 0u) << "duplicate series: " << series;
    samples[series] = v;
  }
  for (const auto& [family, type] : types) {
    if (type != "histogram") continue;
    double prev = 0;
    bool saw_inf = false;
    for (const auto& [series, v] : samples) {
      if (series.rfind(family + "_bucket{", 0) != 0) continue;
      if (series.find("le=\"+Inf\"") != std::string::npos) {
        saw_inf = true;
        EXPECT_EQ(v, samples[family + "_count"]) << family;
      }
    }
    EXPECT_TRUE(saw_inf) << family;
    // Cumulative in bucket order (the text order): re-read the lines in order.
    std::istringstream again(text);
    while (std::getline(again, line)) {
      if (line.rfind(family + "_bucket{", 0) != 0) continue;
      double v = std::stod(line.substr(line.rfind(' ') + 1));
      EXPECT_GE(v, prev) << "histogram buckets not cumulative: " << line;
      prev = v;
    }
  }
  return samples;
}

// A raw HTTP/1.1 client on a socket, to hang up mid-response the way a browser tab closing does.
class RawClient {
 public:
  explicit RawClient(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
    timeval tv{10, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  }
  ~RawClient() { close(); }
  bool connected() const { return connected_; }
  void send_raw(const std::string& data) {
    size_t off = 0;
    while (off < data.size()) {
      ssize_t n = ::send(fd_, data.data() + off, data.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return;
      off += static_cast<size_t>(n);
    }
  }
  void post(const std::string& path, const std::string& body) {
    send_raw("POST " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: " +
             std::to_string(body.size()) + "\r\n\r\n" + body);
  }
  // Reads until `needle` has been received (or timeout / close); returns all bytes read.
  std::string read_until(const std::string& needle) {
    char buf[4096];
    while (received_.find(needle) == std::string::npos) {
      ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
      if (n <= 0) break;
      received_.append(buf, static_cast<size_t>(n));
    }
    return received_;
  }
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
  std::string received_;
};

// Polls `pred` until true or `timeout`.
template <typename Pred>
bool eventually(Pred pred, std::chrono::milliseconds timeout = std::chrono::milliseconds(10000)) {
  auto end = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return pred();
}

}  // namespace anvil::server::test
