// Server behaviours that need a controllable executor (tests/server/fake_executor.h): a client
// hanging up mid-stream cancels its request; a full queue answers 429; /health reports loading,
// stalls and recovery; n > 1 runs each choice with seed + i; stopping the server ends open
// streams. Plus the real Executor: a dropped stream frees its KV blocks.
#include "fake_executor.h"
#include "server_test_util.h"

namespace anvil::server::test {
namespace {

using namespace std::chrono_literals;

ServingModel fake_serving(FakeExecutor* fake) {
  ServingModel m;
  m.name = "fake";
  m.executor = fake;
  return m;
}

std::string stream_body(int max_tokens) {
  return json{{"prompt", {1, 2, 3}}, {"max_tokens", max_tokens}, {"stream", true}, {"return_token_ids", true}}.dump();
}

TEST(Lifecycle, ClientDisconnectCancelsTheRequest) {
  FakeExecutor fake(100, 20ms);  // 100 tokens take 2 s unless cancelled
  ServingModel m = fake_serving(&fake);
  TestServer server(&m);
  RawClient client(server.port());
  ASSERT_TRUE(client.connected());
  client.post("/v1/completions", stream_body(100));
  std::string got = client.read_until("data: {");
  ASSERT_NE(got.find("200 OK"), std::string::npos) << got;
  ASSERT_NE(got.find("text/event-stream"), std::string::npos) << got;
  client.close();
  // The next token's write fails and the server cancels: well before the 2 s of generation.
  EXPECT_TRUE(eventually([&] { return fake.cancelled().size() == 1; }, 1500ms));
  EXPECT_TRUE(eventually([&] { return fake.num_active() == 0; }, 1500ms));
  EXPECT_TRUE(eventually([&] {
    auto s = parse_prometheus(server.get("/metrics").body);
    return s["anvil_requests_finished_total{finish_reason=\"abort\"}"] == 1;
  }));
  // The server is fine afterwards.
  HttpResult r = server.post("/v1/completions", json{{"prompt", {7}}, {"max_tokens", 3}, {"return_token_ids", true}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body_json()["choices"][0]["token_ids"], json({8, 9, 10}));
}

TEST(Lifecycle, FullQueueAnswers429) {
  FakeExecutor fake(1, 20ms);
  ServingModel m = fake_serving(&fake);
  TestServer server(&m);
  RawClient first(server.port());
  first.post("/v1/completions", stream_body(100));
  first.read_until("data: {");
  HttpResult r = server.post("/v1/completions", json{{"prompt", {1}}, {"max_tokens", 3}});
  EXPECT_EQ(r.status, 429) << r.body;
  EXPECT_EQ(r.body_json()["error"]["code"], "queue_full");
  // n = 2 needs two slots: the first choice is taken back when the second is refused.
  first.close();
  ASSERT_TRUE(eventually([&] { return fake.num_active() == 0; }));
  HttpResult two = server.post("/v1/completions", json{{"prompt", {1}}, {"max_tokens", 3}, {"n", 2}});
  EXPECT_EQ(two.status, 429) << two.body;
  EXPECT_TRUE(eventually([&] { return fake.num_active() == 0; }));
  EXPECT_EQ(server.post("/v1/completions", json{{"prompt", {1}}, {"max_tokens", 3}}).status, 200);
}

TEST(Lifecycle, HealthLoadingStalledRecovered) {
  FakeExecutor fake(100, 5ms);
  TestServer server(nullptr);
  HttpResult loading = server.get("/health");
  EXPECT_EQ(loading.status, 503);
  EXPECT_EQ(loading.body_json()["status"], "loading");
  EXPECT_EQ(server.get("/v1/models").status, 503);
  EXPECT_EQ(server.post("/v1/completions", json{{"prompt", {1}}}).status, 503);
  EXPECT_EQ(server.get("/metrics").status, 200);  // scrapers get the server's own metrics meanwhile

  server.server().set_model(fake_serving(&fake));
  EXPECT_EQ(server.get("/health").status, 200);
  // A stuck step loop with work pending: 503 until it moves again.
  RawClient c(server.port());
  c.post("/v1/completions", stream_body(50));
  c.read_until("data: {");
  fake.stall(3600);
  HttpResult stalled = server.get("/health");
  EXPECT_EQ(stalled.status, 503);
  EXPECT_EQ(stalled.body_json()["status"], "stalled");
  fake.stall(0);
  EXPECT_EQ(server.get("/health").status, 200);
}

TEST(Lifecycle, ChoicesGetConsecutiveSeeds) {
  FakeExecutor fake(100, 1ms);
  ServingModel m = fake_serving(&fake);
  TestServer server(&m);
  ASSERT_EQ(server.post("/v1/completions", json{{"prompt", {1}}, {"max_tokens", 2}, {"n", 3}, {"seed", 41}}).status, 200);
  ASSERT_EQ(server.post("/v1/completions", json{{"prompt", {1}}, {"max_tokens", 2}, {"n", 2}}).status, 200);
  auto seeds = fake.seeds();
  ASSERT_EQ(seeds.size(), 5u);
  EXPECT_EQ(seeds[0], 41u);
  EXPECT_EQ(seeds[1], 42u);
  EXPECT_EQ(seeds[2], 43u);
  EXPECT_FALSE(seeds[3].has_value());  // no seed given: the executor draws one per request
  EXPECT_FALSE(seeds[4].has_value());
}

TEST(Lifecycle, StoppingTheServerEndsOpenStreams) {
  FakeExecutor fake(100, 20ms);
  ServingModel m = fake_serving(&fake);
  auto server = std::make_unique<TestServer>(&m);
  RawClient c(server->port());
  c.post("/v1/completions", stream_body(100));
  c.read_until("data: {");
  const auto t0 = std::chrono::steady_clock::now();
  server.reset();  // stop(): must not wait for the 2 s of generation
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1500ms);
  EXPECT_TRUE(eventually([&] { return fake.cancelled().size() == 1; }));
}

TEST(Lifecycle, RealExecutorFreesKvBlocksOfADroppedStream) {
  auto model = RealModel::load(source_path("tests/golden/llama3_gqa"));
  ASSERT_NE(model, nullptr);
  ServingModel serving = model->serving("tiny");
  TestServer server(&serving);
  for (int i = 0; i < 4; ++i) {
    RawClient c(server.port());
    json body{{"prompt", golden_prompt("llama3_gqa", 2)}, {"max_tokens", 100}, {"stream", true}, {"ignore_eos", true}};
    c.post("/v1/completions", body.dump());
    c.read_until("data: {");
    c.close();
  }
  EXPECT_TRUE(eventually([&] {
    ExecutorStats st = model->executor->stats();
    return st.num_running + st.num_waiting == 0 && st.kv_blocks_free == st.kv_blocks_total;
  }));
  auto s = parse_prometheus(server.get("/metrics").body);
  // Each dropped stream either was cancelled or had finished before the hang-up was noticed.
  EXPECT_EQ(s["anvil_requests_finished_total{finish_reason=\"abort\"}"] +
                s["anvil_requests_finished_total{finish_reason=\"length\"}"],
            4);
}

}  // namespace
}  // namespace anvil::server::test
