// `anvil serve`: the OpenAI-compatible HTTP server. Listens first (so /health answers 503
// "loading" while the model loads), then loads the model, starts the executor and serves until
// SIGINT/SIGTERM; a second signal exits at once. See docs/serving.md.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <thread>
#include <unistd.h>

#include "anvil/executor.h"
#include "cli/command.h"
#include "cli/model_args.h"
#include "core/logging.h"
#include "server/http_server.h"
#include "server/model_assets.h"

namespace anvil::cli {
namespace {

struct ServeOptions {
  ModelArgs model;
  server::ServerOptions http;
  std::string served_model_name;
  std::string chat_template;
  int32_t max_queue = 4096;
  int64_t seed = 0;
  bool disable_prefix_cache = false;
};

std::atomic<int> g_signals{0};

void on_signal(int) {
  if (g_signals.fetch_add(1) >= 1) _exit(130);  // second Ctrl-C: give up on a graceful stop
}

std::string default_served_name(const ServeOptions& o, const std::string& model_dir) {
  if (!o.served_model_name.empty()) return o.served_model_name;
  std::string name = o.model.model.empty() ? model_dir : o.model.model;
  while (name.size() > 1 && name.back() == '/') name.pop_back();
  if (o.model.model.empty()) name = std::filesystem::path(name).filename().string();
  return name;
}

int serve(ServeOptions o) {
  auto fail = [](const Status& s) {
    std::fprintf(stderr, "anvil serve: %s\n", s.to_string().c_str());
    return 1;
  };
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);

  // --tp/--pp: start the ranks first (before any socket is open); ranks other than 0 serve no HTTP.
  Status ranks = start_ranks_if_needed(o.model);
  if (!ranks.is_ok()) return fail(ranks);
  if (is_follower_rank(o.model)) {
    auto follower = open_model(o.model);
    if (!follower.is_ok()) return fail(follower.status());
    return follow_model(*follower);
  }
  if (o.http.http_threads == 0) o.http.http_threads = std::max(256, 2 * o.model.max_num_seqs);
  server::HttpServer http(o.http);
  Status started = http.start();
  if (!started.is_ok()) return fail(started);
  ANVIL_LOG_INFO("listening on http://%s:%d (loading the model)", o.http.host.c_str(), http.port());

  auto opened = open_model(o.model);
  if (!opened.is_ok()) return fail(opened.status());
  OpenModel& m = *opened;
  auto assets = server::load_model_assets(m.model_dir, o.chat_template);
  if (!assets.is_ok()) return fail(assets.status());
  ExecutorOptions eo;
  eo.max_num_tokens = o.model.max_num_tokens;
  eo.max_num_seqs = o.model.max_num_seqs;
  eo.max_queue = o.max_queue;
  eo.seed = static_cast<uint64_t>(o.seed);
  eo.enable_prefix_cache = !o.disable_prefix_cache;
  auto executor = Executor::create(m.runner.get(), eo);
  if (!executor.is_ok()) return fail(executor.status());

  server::ServingModel sm;
  sm.name = default_served_name(o, m.model_dir);
  sm.executor = executor->get();
  sm.tokenizer = assets->tokenizer.get();
  sm.chat_template = assets->chat_template.get();
  sm.created = static_cast<int64_t>(std::time(nullptr));
  http.set_model(sm);
  ANVIL_LOG_INFO("serving '%s' from %s on %s at http://%s:%d (context %d tokens, tokenizer: %s, chat template: %s)",
                 sm.name.c_str(), m.model_dir.c_str(), m.backend->name().c_str(), o.http.host.c_str(), http.port(),
                 (*executor)->max_context_len(), sm.tokenizer ? "yes" : "none (token ids only)",
                 assets->chat_template_source.empty() ? "none" : assets->chat_template_source.c_str());

  while (g_signals.load() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ANVIL_LOG_INFO("shutting down");
  http.stop();  // ends open streams; their requests are cancelled
  (*executor)->shutdown(/*drain=*/false);
  stop_followers(m);
  return 0;
}

void setup(CLI::App& app) {
  auto* cmd = app.add_subcommand("serve", "OpenAI-compatible HTTP server (/v1/completions, /v1/chat/completions, ...)");
  auto o = std::make_shared<ServeOptions>();
  add_model_options(cmd, &o->model);
  cmd->add_option("--host", o->http.host, "Address to listen on");
  cmd->add_option("--port", o->http.port, "Port to listen on (0: any free port)")->check(CLI::Range(0, 65535));
  cmd->add_option("--api-key", o->http.api_key, "Require 'Authorization: Bearer KEY' on /v1/* (default: $ANVIL_API_KEY)")
      ->envname("ANVIL_API_KEY");
  cmd->add_option("--served-model-name", o->served_model_name, "Model id clients pass as \"model\" (default: --model)");
  cmd->add_option("--chat-template", o->chat_template, "Jinja chat template file (or a tokenizer_config.json)");
  cmd->add_option("--max-queue", o->max_queue, "Waiting requests beyond this are refused with 429")
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--seed", o->seed, "Base seed for requests that give none");
  cmd->add_flag("--disable-prefix-cache", o->disable_prefix_cache, "Do not share KV blocks between equal prompt prefixes");
  cmd->add_option("--max-body-bytes", o->http.max_body_bytes, "Largest request body accepted (413 beyond)")
      ->check(CLI::Range(size_t{1024}, size_t{1} << 30));
  cmd->add_option("--http-threads", o->http.http_threads,
                  "Connection threads; each open stream holds one (default: max(256, 2 x --max-num-seqs))")
      ->check(CLI::Range(4, 65536));
  cmd->add_option("--health-stall-seconds", o->http.health_stall_seconds,
                  "/health answers 503 when pending work saw no step for this long")
      ->check(CLI::PositiveNumber);
  cmd->callback([o] { set_exit_code(serve(*o)); });
}

CommandRegistrar reg("serve", setup);

}  // namespace
}  // namespace anvil::cli
