// `anvil bench serve` against servers it can meet: a small in-test httplib server that streams
// the OpenAI completion format with set delays (so TTFT and ITL have known lower bounds, and
// errors, stalls and hang-ups can be staged), and the real anvil HttpServer on a golden model.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <httplib.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <mutex>
#include <set>
#include <thread>

#include "anvil/executor.h"
#include "backend/cpu/cpu_backend.h"
#include "bench/serve_client.h"
#include "bench/workload.h"
#include "runtime/model_loader.h"
#include "server/http_server.h"

namespace anvil::bench {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

// Streams max_tokens one-token chunks: the first after ttft, then one every itl.
class StreamingServer {
 public:
  struct Behaviour {
    std::chrono::milliseconds ttft{20};
    std::chrono::milliseconds itl{5};
    int fail_every = 0;      // > 0: every n-th request (1-based) answers HTTP 500
    bool stall = false;      // send one token, then nothing until stopped
    bool skip_done = false;  // end the stream without [DONE]
  };

  explicit StreamingServer(Behaviour b) : b_(b) {
    http_.Get("/v1/models", [](const httplib::Request&, httplib::Response& res) {
      res.set_content(json{{"object", "list"}, {"data", {{{"id", "fake-model"}, {"object", "model"}}}}}.dump(),
                      "application/json");
    });
    http_.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) { handle(req, res); });
    http_.set_tcp_nodelay(true);  // chunks leave when written, as a serving engine's should
    port_ = http_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { http_.listen_after_bind(); });
    for (int i = 0; i < 2000 && !http_.is_running(); ++i) std::this_thread::sleep_for(1ms);
  }
  ~StreamingServer() {
    stopping_ = true;
    http_.stop();
    thread_.join();
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  std::vector<json> bodies() {
    std::lock_guard<std::mutex> lk(mu_);
    return bodies_;
  }
  int max_in_flight() const { return max_in_flight_; }

 private:
  void handle(const httplib::Request& req, httplib::Response& res) {
    json body = json::parse(req.body, nullptr, false);
    int n = 0;
    {
      std::lock_guard<std::mutex> lk(mu_);
      bodies_.push_back(body);
      n = static_cast<int>(bodies_.size());
    }
    if (body.is_discarded() || !body.contains("max_tokens")) {
      res.status = 400;
      res.set_content(R"({"error":{"message":"bad body"}})", "application/json");
      return;
    }
    if (b_.fail_every > 0 && n % b_.fail_every == 0) {
      res.status = 500;
      res.set_content(R"({"error":{"message":"staged failure"}})", "application/json");
      return;
    }
    const int64_t max_tokens = body["max_tokens"].get<int64_t>();
    const int64_t prompt_tokens = body["prompt"].is_array() ? static_cast<int64_t>(body["prompt"].size()) : 3;
    const int now = ++in_flight_;
    for (int m = max_in_flight_; now > m && !max_in_flight_.compare_exchange_weak(m, now);) {
    }
    res.set_chunked_content_provider("text/event-stream", [this, max_tokens, prompt_tokens](size_t, httplib::DataSink& sink) {
      for (int64_t i = 0; i < max_tokens; ++i) {
        std::this_thread::sleep_for(i == 0 ? b_.ttft : b_.itl);
        if (stopping_) break;
        const std::string ev =
            "data: " + json{{"object", "text_completion"}, {"choices", {{{"index", 0}, {"text", "t" + std::to_string(i)}, {"finish_reason", nullptr}}}}}.dump() + "\n\n";
        if (!sink.write(ev.data(), ev.size())) {
          --in_flight_;
          return false;
        }
        if (b_.stall) {
          while (!stopping_) std::this_thread::sleep_for(5ms);
          break;
        }
      }
      const std::string usage = "data: " + json{{"choices", json::array()}, {"usage", {{"prompt_tokens", prompt_tokens}, {"completion_tokens", max_tokens}}}}.dump() + "\n\n";
      sink.write(usage.data(), usage.size());
      if (!b_.skip_done) sink.write("data: [DONE]\n\n", 14);
      --in_flight_;
      sink.done();
      return true;
    });
  }

  Behaviour b_;
  httplib::Server http_;
  std::thread thread_;
  int port_ = 0;
  std::mutex mu_;
  std::vector<json> bodies_;
  std::atomic<int> in_flight_{0};
  std::atomic<int> max_in_flight_{0};
  std::atomic<bool> stopping_{false};
};

void expect_ordered(const json& s, const std::string& what) {
  EXPECT_LE(s["p50"].get<double>(), s["p90"].get<double>()) << what;
  EXPECT_LE(s["p90"].get<double>(), s["p99"].get<double>()) << what;
}

TEST(BenchServe, StreamsAndTimesEveryRequest) {
  StreamingServer::Behaviour b;
  b.ttft = 30ms;
  b.itl = 10ms;
  StreamingServer srv(b);
  ServeConfig c;
  c.url = srv.url();
  c.num_requests = 12;
  c.concurrency = 4;
  c.isl = 17;
  c.osl = 6;
  c.vocab_size = 50;
  c.slo_ttft_ms = 10000;
  c.slo_itl_ms = 10000;
  auto out = run_serve(c);
  ASSERT_TRUE(out.is_ok()) << out.status().to_string();
  const json& r = out->doc["results"];
  EXPECT_EQ(r["num_requests_completed"], 12) << out->doc["errors"].dump();
  EXPECT_EQ(r["num_errors"], 0);
  EXPECT_EQ(r["num_output_tokens"], 12 * 6);
  EXPECT_EQ(r["num_prompt_tokens"], 12 * 17);
  EXPECT_EQ(r["ttft_ms"]["count"], 12);
  EXPECT_EQ(r["itl_ms"]["count"], 12 * 5);
  EXPECT_EQ(out->doc["itl_ms_samples"].size(), 12u * 5);
  EXPECT_GE(r["ttft_ms"]["min"].get<double>(), 29.0);
  EXPECT_GE(r["itl_ms"]["p50"].get<double>(), 9.0);
  EXPECT_GE(r["e2e_ms"]["min"].get<double>(), 30.0 + 5 * 10.0 - 1.0);
  expect_ordered(r["ttft_ms"], "ttft");
  expect_ordered(r["itl_ms"], "itl");
  expect_ordered(r["e2e_ms"], "e2e");
  EXPECT_EQ(r["num_good"], 12);
  EXPECT_EQ(srv.max_in_flight(), 4) << "the concurrency cap holds and is reached";
  // What went over the wire: exact-length token-id prompts, streaming, ignore_eos, the model id
  // found at /v1/models.
  auto bodies = srv.bodies();
  ASSERT_EQ(bodies.size(), 12u);
  std::set<std::vector<int32_t>> distinct;
  for (const json& body : bodies) {
    ASSERT_TRUE(body["prompt"].is_array());
    EXPECT_EQ(body["prompt"].size(), 17u);
    for (const json& t : body["prompt"]) EXPECT_LT(t.get<int>(), 50);
    distinct.insert(body["prompt"].get<std::vector<int32_t>>());
    EXPECT_EQ(body["max_tokens"], 6);
    EXPECT_EQ(body["stream"], true);
    EXPECT_EQ(body["ignore_eos"], true);
    EXPECT_EQ(body["model"], "fake-model");
  }
  EXPECT_EQ(distinct.size(), 12u);
  // Per-request records agree with the totals.
  int64_t tokens = 0;
  for (const json& pr : out->doc["requests"]) tokens += pr["output_tokens"].get<int64_t>();
  EXPECT_EQ(tokens, 72);
}

TEST(BenchServe, PoissonArrivalsAreFollowed) {
  StreamingServer::Behaviour b;
  b.ttft = 1ms;
  b.itl = 1ms;
  StreamingServer srv(b);
  ServeConfig c;
  c.url = srv.url();
  c.num_requests = 15;
  c.rate = 40;
  c.isl = 4;
  c.osl = 2;
  c.seed = 11;
  auto out = run_serve(c);
  ASSERT_TRUE(out.is_ok()) << out.status().to_string();
  EXPECT_EQ(out->doc["results"]["num_requests_completed"], 15);
  const auto want = arrival_times(15, 40, 11);
  ASSERT_EQ(out->records.size(), 15u);
  for (size_t i = 0; i < 15; ++i) {
    EXPECT_GE(out->records[i].send_s, want[i] - 1e-4) << i;
    EXPECT_LT(out->records[i].send_s, want[i] + 0.25) << i;  // generous: CI machines are busy
  }
  EXPECT_GT(out->records[14].send_s, 0.05) << "arrivals are spread, not all at once";
}

TEST(BenchServe, CountsErrorsAndGoodput) {
  StreamingServer::Behaviour b;
  b.ttft = 25ms;
  b.itl = 1ms;
  b.fail_every = 3;
  StreamingServer srv(b);
  ServeConfig c;
  c.url = srv.url();
  c.model = "given";
  c.num_requests = 12;
  c.concurrency = 1;  // sequential, so the 3rd, 6th, 9th, 12th fail
  c.isl = 3;
  c.osl = 3;
  c.slo_ttft_ms = 5;  // nobody meets it: the server waits 25 ms before the first token
  auto out = run_serve(c);
  ASSERT_TRUE(out.is_ok()) << out.status().to_string();
  const json& r = out->doc["results"];
  EXPECT_EQ(r["num_requests_completed"], 8);
  EXPECT_EQ(r["num_errors"], 4);
  EXPECT_EQ(r["num_output_tokens"], 8 * 3);
  EXPECT_EQ(r["num_good"], 0);
  EXPECT_EQ(r["goodput_req_s"].get<double>(), 0.0);
  ASSERT_FALSE(out->doc["errors"].empty());
  EXPECT_NE(out->doc["errors"][0].get<std::string>().find("HTTP 500"), std::string::npos);
  for (const json& body : srv.bodies()) EXPECT_EQ(body["model"], "given");
}

TEST(BenchServe, StalledServerTimesOutInsteadOfHanging) {
  StreamingServer::Behaviour b;
  b.ttft = 1ms;
  b.stall = true;
  StreamingServer srv(b);
  ServeConfig c;
  c.url = srv.url();
  c.num_requests = 3;
  c.isl = 2;
  c.osl = 4;
  c.request_timeout_s = 0.4;
  const auto t0 = std::chrono::steady_clock::now();
  auto out = run_serve(c);
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(out.is_ok()) << out.status().to_string();
  EXPECT_EQ(out->doc["results"]["num_errors"], 3);
  EXPECT_NE(out->doc["errors"][0].get<std::string>().find("timed out"), std::string::npos) << out->doc["errors"].dump();
  EXPECT_LT(took, 5.0);
}

TEST(BenchServe, MaxDurationBoundsTheRun) {
  StreamingServer::Behaviour b;
  b.ttft = 100ms;
  b.itl = 100ms;
  StreamingServer srv(b);
  ServeConfig c;
  c.url = srv.url();
  c.num_requests = 40;
  c.rate = 20;  // arrivals spread over ~2 s
  c.isl = 2;
  c.osl = 20;   // each request would stream for ~2 s
  c.max_duration_s = 0.6;
  const auto t0 = std::chrono::steady_clock::now();
  auto out = run_serve(c);
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(out.is_ok()) << out.status().to_string();
  const json& r = out->doc["results"];
  EXPECT_LT(took, 2.0);
  EXPECT_GT(r["num_not_sent"].get<int64_t>(), 0);
  EXPECT_GT(r["num_errors"].get<int64_t>(), 0) << "requests cut off at the deadline count as errors";
  EXPECT_EQ(r["num_not_sent"].get<int64_t>() + r["num_errors"].get<int64_t>() + r["num_requests_completed"].get<int64_t>(), 40);
}

TEST(BenchServe, StreamWithoutDoneIsAnError) {
  StreamingServer::Behaviour b;
  b.ttft = 1ms;
  b.itl = 1ms;
  b.skip_done = true;
  StreamingServer srv(b);
  ServeConfig c;
  c.url = srv.url();
  c.num_requests = 2;
  c.isl = 2;
  c.osl = 2;
  auto out = run_serve(c);
  ASSERT_TRUE(out.is_ok());
  EXPECT_EQ(out->doc["results"]["num_errors"], 2);
  EXPECT_NE(out->doc["errors"][0].get<std::string>().find("[DONE]"), std::string::npos);
}

TEST(BenchServe, NoServerMeansErrorsNotAHang) {
  // A port that was free a moment ago and has nobody listening: bind, read the port, close.
  int port = 0;
  {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    socklen_t len = sizeof(addr);
    ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
    port = ntohs(addr.sin_port);
    ::close(fd);
  }
  ServeConfig c;
  c.url = "http://127.0.0.1:" + std::to_string(port);
  c.num_requests = 3;
  c.connect_timeout_s = 1;
  c.request_timeout_s = 2;
  auto out = run_serve(c);
  ASSERT_TRUE(out.is_ok()) << out.status().to_string();
  EXPECT_EQ(out->doc["results"]["num_requests_completed"], 0);
  EXPECT_EQ(out->doc["results"]["num_errors"], 3);
  EXPECT_NE(out->doc["errors"][0].get<std::string>().find("connection"), std::string::npos) << out->doc["errors"].dump();
  EXPECT_FALSE(run_serve([] { ServeConfig bad; bad.url = "gopher://x"; return bad; }()).is_ok());
}

TEST(BenchServe, DatasetPromptsAreSentAsText) {
  StreamingServer::Behaviour b;
  b.ttft = 1ms;
  b.itl = 1ms;
  StreamingServer srv(b);
  const std::string path = ::testing::TempDir() + "/bench_serve_ds.jsonl";
  std::ofstream(path) << "{\"prompt\": \"first prompt\", \"output_len\": 5}\n{\"prompt\": \"second\"}\n";
  ServeConfig c;
  c.url = srv.url();
  c.num_requests = 4;
  c.osl = 2;
  c.dataset = path;
  auto out = run_serve(c);
  ASSERT_TRUE(out.is_ok()) << out.status().to_string();
  EXPECT_EQ(out->doc["results"]["num_requests_completed"], 4);
  EXPECT_EQ(out->doc["results"]["num_output_tokens"], 5 + 5 + 2 + 2);
  for (const json& body : srv.bodies()) {
    ASSERT_TRUE(body["prompt"].is_string());
    EXPECT_EQ(body["max_tokens"], body["prompt"] == "first prompt" ? 5 : 2);
  }
}

TEST(BenchServe, AgainstTheRealAnvilServer) {
  CpuBackend backend;
  RunnerOptions ro;
  ro.max_num_tokens = 256;
  ro.max_num_seqs = 8;
  ro.max_kv_bytes = 64 << 20;
  auto runner = load_model(std::string(ANVIL_SOURCE_DIR) + "/tests/golden/llama3_gqa", &backend, ro);
  ASSERT_TRUE(runner.is_ok()) << runner.status().to_string();
  ExecutorOptions eo;
  eo.max_num_tokens = 256;
  eo.max_num_seqs = 8;
  auto ex = Executor::create(runner->get(), eo);
  ASSERT_TRUE(ex.is_ok());
  server::ServerOptions so;
  so.host = "127.0.0.1";
  so.port = 0;
  server::HttpServer http(so);
  server::ServingModel sm;
  sm.name = "golden-llama3";
  sm.executor = ex->get();
  http.set_model(sm);
  ASSERT_TRUE(http.start().is_ok());

  ServeConfig c;
  c.url = "http://127.0.0.1:" + std::to_string(http.port());
  c.num_requests = 6;
  c.concurrency = 3;
  c.isl = 20;
  c.osl = 8;
  c.vocab_size = 384;
  c.request_timeout_s = 60;
  auto out = run_serve(c);
  http.stop();
  (*ex)->shutdown(false);
  ASSERT_TRUE(out.is_ok()) << out.status().to_string();
  const json& r = out->doc["results"];
  EXPECT_EQ(out->doc["model"], "golden-llama3");
  EXPECT_EQ(r["num_requests_completed"], 6) << out->doc["errors"].dump();
  EXPECT_EQ(r["num_output_tokens"], 6 * 8);
  EXPECT_EQ(r["num_prompt_tokens"], 6 * 20);
  EXPECT_GT(r["ttft_ms"]["p50"].get<double>(), 0.0);
  expect_ordered(r["e2e_ms"], "e2e");
  // Every token after the first arrives in some chunk: at most 7 gaps per request, and the server
  // streams (more than one chunk per request in all).
  const int64_t gaps = r["itl_ms"]["count"].get<int64_t>();
  EXPECT_LE(gaps, 6 * 7);
  EXPECT_GT(gaps, 0);
  for (const StreamRecord& rec : out->records) EXPECT_EQ(rec.output_tokens, 8);
}

}  // namespace
}  // namespace anvil::bench
