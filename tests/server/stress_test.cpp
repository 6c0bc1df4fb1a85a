// Waves of 200 simultaneous streaming clients on one poll() loop against the real Executor (CPU backend,
// tests/golden/llama3_gqa + the tiny chat tokenizer), a seeded share of them hanging up at random
// points. Every stream that runs to its end must be well-formed SSE with the golden greedy
// output; every hang-up must give its KV blocks back; /health must answer 200 throughout.
#include <fcntl.h>

#include <atomic>
#include <random>

#include "raw_http.h"
#include "server_test_util.h"

namespace anvil::server::test {
namespace {

using namespace std::chrono_literals;

enum class Kind { kGreedyCompletion, kGreedyChat, kSampledN2 };
enum class HangUp {
  kNever,
  kAfterSend,         // FIN as soon as the request is out (the request is still served)
  kAfterHeaders,      // FIN once the response headers arrived
  kAfterEvents,       // RST (SO_LINGER 0) after a few data events
  kMidRequest,        // FIN halfway through the request body: never reaches the executor
};

struct Client {
  Kind kind = Kind::kGreedyCompletion;
  HangUp hang_up = HangUp::kNever;
  size_t prompt = 0;          // golden prompt index (completions)
  int events_before_hang_up = 0;
  bool include_usage = false;
  std::string request;
  int fd = -1;
  size_t sent = 0;
  std::string received;
  bool closed_by_us = false;
  bool eof = false;
};

constexpr int kNumClients = 200;
constexpr int kMaxTokens = 8;

std::string make_request(const Client& c, const json& chat_messages) {
  json body;
  switch (c.kind) {
    case Kind::kGreedyCompletion:
      body = json{{"prompt", golden_prompt("llama3_gqa", c.prompt)}, {"max_tokens", kMaxTokens}, {"temperature", 0},
                  {"ignore_eos", true}, {"return_token_ids", true}, {"stream", true}};
      break;
    case Kind::kGreedyChat:
      body = json{{"messages", chat_messages}, {"max_tokens", kMaxTokens}, {"temperature", 0}, {"ignore_eos", true},
                  {"stream", true}};
      break;
    case Kind::kSampledN2:
      body = json{{"prompt", golden_prompt("llama3_gqa", c.prompt)}, {"max_tokens", kMaxTokens - 2}, {"n", 2},
                  {"temperature", 0.9}, {"seed", 7}, {"ignore_eos", true}, {"return_token_ids", true}, {"stream", true}};
      break;
  }
  if (c.include_usage) body["stream_options"] = {{"include_usage", true}};
  return http_request_bytes("POST", c.kind == Kind::kGreedyChat ? "/v1/chat/completions" : "/v1/completions",
                            body.dump());
}

void hang_up(Client& c, bool reset) {
  if (reset) {
    linger l{1, 0};
    ::setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
  }
  ::close(c.fd);
  c.fd = -1;
  c.closed_by_us = true;
}

size_t count_events(const std::string& raw) {
  size_t n = 0;
  for (size_t pos = raw.find("data: "); pos != std::string::npos; pos = raw.find("data: ", pos + 6)) ++n;
  return n;
}

// Checks one stream that ran to its end: framing, one finish_reason per choice, usage, golden output.
void check_complete_stream(const Client& c, const json& expected_chat) {
  RawResponse resp;
  ASSERT_TRUE(parse_http_response(c.received, &resp)) << c.received.substr(0, 300);
  ASSERT_TRUE(resp.complete) << "stream without its last chunk: " << c.received.substr(0, 300);
  ASSERT_EQ(resp.status, 200) << resp.body;
  EXPECT_EQ(resp.headers["content-type"], "text/event-stream");
  std::vector<std::string> events = sse_events(resp.body);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back(), "[DONE]");
  const int num_choices = c.kind == Kind::kSampledN2 ? 2 : 1;
  std::vector<int> finish_reasons(num_choices, 0);
  std::vector<std::vector<int32_t>> ids(num_choices);
  std::string text;
  int usage_chunks = 0;
  std::string id;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    json chunk = json::parse(events[i], nullptr, false);
    ASSERT_TRUE(chunk.is_object()) << events[i];
    EXPECT_EQ(chunk["object"], c.kind == Kind::kGreedyChat ? "chat.completion.chunk" : "text_completion");
    if (id.empty()) id = chunk["id"].get<std::string>();
    EXPECT_EQ(chunk["id"], id) << "one id per stream";
    if (chunk["choices"].empty()) {
      ++usage_chunks;
      EXPECT_EQ(chunk["usage"]["completion_tokens"], num_choices * (c.kind == Kind::kSampledN2 ? kMaxTokens - 2 : kMaxTokens));
      EXPECT_EQ(i + 2, events.size()) << "the usage chunk comes last";
      continue;
    }
    for (const json& choice : chunk["choices"]) {
      const int index = choice["index"].get<int>();
      ASSERT_GE(index, 0);
      ASSERT_LT(index, num_choices);
      if (!choice["finish_reason"].is_null()) {
        EXPECT_EQ(choice["finish_reason"], "length");
        ++finish_reasons[index];
      } else {
        EXPECT_EQ(finish_reasons[index], 0) << "content after finish_reason: " << events[i];
      }
      if (c.kind == Kind::kGreedyChat) {
        text += choice["delta"].value("content", "");
      } else if (choice.contains("token_ids")) {
        for (int32_t t : choice["token_ids"].get<std::vector<int32_t>>()) ids[index].push_back(t);
      }
    }
  }
  for (int i = 0; i < num_choices; ++i) EXPECT_EQ(finish_reasons[i], 1) << "choice " << i;
  EXPECT_EQ(usage_chunks, c.include_usage ? 1 : 0);
  switch (c.kind) {
    case Kind::kGreedyCompletion: {
      std::vector<int32_t> golden = golden_greedy("llama3_gqa", c.prompt);
      golden.resize(kMaxTokens);
      EXPECT_EQ(ids[0], golden);
      break;
    }
    case Kind::kGreedyChat:
      EXPECT_EQ(text, expected_chat["greedy_text"].get<std::string>());
      break;
    case Kind::kSampledN2:
      EXPECT_EQ(ids[0].size(), static_cast<size_t>(kMaxTokens - 2));
      EXPECT_EQ(ids[1].size(), static_cast<size_t>(kMaxTokens - 2));
      break;
  }
}

// One wave: kNumClients connections, then every request at once, then the poll() loop until all
// are closed. Adds what reached the executor and how the clients ended to the counters.
void run_wave(int port, uint32_t seed, const json& expected_chat, int64_t* sequences_sent, int* completed,
              int* hung_up) {
  std::mt19937 rng(seed);
  std::vector<Client> clients(kNumClients);
  for (Client& c : clients) {
    const int kind = static_cast<int>(rng() % 10);
    c.kind = kind < 6 ? Kind::kGreedyCompletion : kind < 9 ? Kind::kGreedyChat : Kind::kSampledN2;
    c.prompt = rng() % 3;
    c.include_usage = rng() % 2 == 0;
    const int h = static_cast<int>(rng() % 100);
    c.hang_up = h < 60 ? HangUp::kNever : h < 70 ? HangUp::kAfterSend : h < 80 ? HangUp::kAfterHeaders
              : h < 95 ? HangUp::kAfterEvents : HangUp::kMidRequest;
    c.events_before_hang_up = 1 + static_cast<int>(rng() % 4);
    c.request = make_request(c, expected_chat["messages"]);
    if (c.hang_up != HangUp::kMidRequest) *sequences_sent += c.kind == Kind::kSampledN2 ? 2 : 1;
  }
  for (Client& c : clients) {
    c.fd = connect_loopback(port);
    ASSERT_GE(c.fd, 0) << std::strerror(errno);
    ::fcntl(c.fd, F_SETFL, ::fcntl(c.fd, F_GETFL) | O_NONBLOCK);
  }
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  for (;;) {
    std::vector<pollfd> fds;
    std::vector<Client*> owners;
    for (Client& c : clients) {
      if (c.fd < 0) continue;
      const size_t limit = c.hang_up == HangUp::kMidRequest ? c.request.size() / 2 : c.request.size();
      fds.push_back(pollfd{c.fd, static_cast<short>(c.sent < limit ? POLLOUT : POLLIN), 0});
      owners.push_back(&c);
    }
    if (fds.empty() || std::chrono::steady_clock::now() > deadline) break;
    ASSERT_GE(::poll(fds.data(), fds.size(), 100), 0);
    for (size_t i = 0; i < fds.size(); ++i) {
      Client& c = *owners[i];
      if (fds[i].revents == 0) continue;
      const size_t limit = c.hang_up == HangUp::kMidRequest ? c.request.size() / 2 : c.request.size();
      if (c.sent < limit) {
        ssize_t n = ::send(c.fd, c.request.data() + c.sent, limit - c.sent, MSG_NOSIGNAL);
        ASSERT_GT(n, 0) << "send failed: " << std::strerror(errno);
        c.sent += static_cast<size_t>(n);
        if (c.sent == limit && (c.hang_up == HangUp::kMidRequest || c.hang_up == HangUp::kAfterSend)) {
          hang_up(c, false);
        }
        continue;
      }
      char buf[16384];
      ssize_t n = ::recv(c.fd, buf, sizeof(buf), 0);
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) continue;
      if (n <= 0) {
        ::close(c.fd);
        c.fd = -1;
        c.eof = true;
        continue;
      }
      c.received.append(buf, static_cast<size_t>(n));
      if (c.hang_up == HangUp::kAfterHeaders && c.received.find("\r\n\r\n") != std::string::npos) {
        hang_up(c, false);
      } else if (c.hang_up == HangUp::kAfterEvents &&
                 count_events(c.received) >= static_cast<size_t>(c.events_before_hang_up)) {
        hang_up(c, true);
      }
    }
  }
  for (Client& c : clients) {
    EXPECT_LT(c.fd, 0) << "a client still waits after 20 s";
    if (c.fd >= 0) ::close(c.fd);
    if (c.closed_by_us) {
      ++*hung_up;
      continue;
    }
    ASSERT_TRUE(c.eof);
    SCOPED_TRACE("client kind " + std::to_string(static_cast<int>(c.kind)) + ", prompt " + std::to_string(c.prompt));
    check_complete_stream(c, expected_chat);
    ++*completed;
  }
}

TEST(Stress, TwoHundredStreamsWithRandomHangUps) {
  ChatModelDir dir;
  auto model = RealModel::load(dir.dir.string(), /*max_num_seqs=*/32);
  ASSERT_NE(model, nullptr);
  ServingModel serving = model->serving("tiny");
  TestServer server(&serving);
  const json expected_chat = read_json_file(source_path("tests/server/data/chat_model/expected.json"));
  ASSERT_EQ(expected_chat["max_tokens"], kMaxTokens);

  // /health polled over one keep-alive connection for the whole run.
  std::atomic<bool> polling{true};
  std::atomic<int> health_ok{0}, health_bad{0};
  std::string health_failure;
  std::thread poller([&] {
    httplib::Client cli("127.0.0.1", server.port());
    cli.set_keep_alive(true);
    cli.set_read_timeout(5, 0);
    while (polling) {
      auto r = cli.Get("/health");
      if (r && r->status == 200) {
        ++health_ok;
      } else {
        if (health_bad++ == 0) health_failure = r ? std::to_string(r->status) + " " + r->body : httplib::to_string(r.error());
      }
      std::this_thread::sleep_for(5ms);
    }
  });

  constexpr int kWaves = 3;
  int64_t sequences_sent = 0;
  int completed = 0, hung_up = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (int wave = 0; wave < kWaves; ++wave) {
    SCOPED_TRACE("wave " + std::to_string(wave));
    run_wave(server.port(), 20261125u + static_cast<uint32_t>(wave), expected_chat, &sequences_sent, &completed,
             &hung_up);
    if (HasFatalFailure()) break;
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_GE(completed, kWaves * kNumClients / 2);
  EXPECT_GE(hung_up, kWaves * kNumClients / 4);

  // Every hang-up gives its sequences and KV blocks back; nothing is left running or waiting.
  EXPECT_TRUE(eventually([&] {
    ExecutorStats st = model->executor->stats();
    return st.num_running + st.num_waiting == 0 && st.kv_blocks_free == st.kv_blocks_total;
  }));
  ExecutorStats st = model->executor->stats();
  EXPECT_EQ(st.kv_blocks_free, st.kv_blocks_total);
  // Each sequence that reached the executor ended exactly once: ran out its length or was aborted.
  EXPECT_TRUE(eventually([&] {
    auto m = parse_prometheus(server.get("/metrics").body);
    return m["anvil_requests_finished_total{finish_reason=\"length\"}"] +
               m["anvil_requests_finished_total{finish_reason=\"abort\"}"] ==
           static_cast<double>(sequences_sent);
  })) << "sequences sent: " << sequences_sent;
  auto m = parse_prometheus(server.get("/metrics").body);
  for (const auto& [series, value] : m) {
    if (series.rfind("anvil_http_responses_total{", 0) == 0) {
      EXPECT_EQ(series.find("code=\"5"), std::string::npos) << series << " " << value;
    }
  }
  EXPECT_EQ(m["anvil_requests_finished_total{finish_reason=\"error\"}"], 0);
  const double aborted = m["anvil_requests_finished_total{finish_reason=\"abort\"}"];
  EXPECT_GT(aborted, 0) << "no hang-up reached the cancel path";

  polling = false;
  poller.join();
  EXPECT_EQ(health_bad.load(), 0) << "first failure: " << health_failure;
  EXPECT_GE(health_ok.load(), 3) << "the poller must have seen the run";

  // The server still serves the golden greedy tokens.
  HttpResult r = server.post("/v1/completions", json{{"prompt", golden_prompt("llama3_gqa", 2)}, {"max_tokens", 32},
                                                     {"temperature", 0}, {"ignore_eos", true}, {"return_token_ids", true}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body_json()["choices"][0]["token_ids"].get<std::vector<int32_t>>(), golden_greedy("llama3_gqa", 2));
  std::printf("[stress] %d waves of %d streams: %d completed, %d hung up (%.0f sequences aborted), %.2f s; "
              "/health polled %d times\n", kWaves, kNumClients, completed, hung_up, aborted, seconds, health_ok.load());
}

}  // namespace
}  // namespace anvil::server::test
