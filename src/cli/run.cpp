// `anvil run`: generate from one prompt (token ids, text, or a chat message) and print the result
// as it streams; `--dump NAME` writes named intermediate tensors of the prompt's forward pass
// to a safetensors file (TensorRT-LLM's "mark as output", without a rebuild).
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <set>
#include <sstream>

#include "anvil/executor.h"
#include "cli/command.h"
#include "cli/model_args.h"
#include "model/checkpoint/checkpoint.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/incremental_decoder.h"
#include "tokenizer/tokenizer.h"

namespace anvil::cli {
namespace {

struct RunOptions {
  ModelArgs model;
  std::string prompt_ids;
  std::string prompt;
  std::string chat;
  std::string system;
  int32_t max_tokens = 64;
  float temperature = 0.0f;
  int32_t top_k = 0;
  float top_p = 1.0f;
  float min_p = 0.0f;
  float repetition_penalty = 1.0f;
  int64_t seed = -1;
  bool ignore_eos = false;
  std::vector<std::string> dump;
  std::string dump_file = "anvil_dump.safetensors";
  bool quiet = false;
};

Result<std::vector<int32_t>> parse_ids(const std::string& s) {
  std::vector<int32_t> ids;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    try {
      size_t used = 0;
      long v = std::stol(item, &used);
      if (used != item.size() || v < 0 || v > INT32_MAX) throw std::invalid_argument(item);
      ids.push_back(static_cast<int32_t>(v));
    } catch (const std::exception&) {
      return invalid_argument("--prompt-ids: '" + item + "' is not a token id");
    }
  }
  if (ids.empty()) return invalid_argument("--prompt-ids: no ids given");
  return ids;
}

// One forward over the prompt with dumps enabled; writes every requested tensor.
Status write_dumps(ModelRunner* runner, const std::vector<int32_t>& prompt, const RunOptions& o) {
  const int32_t bs = runner->options().block_size;
  if (static_cast<int32_t>(prompt.size()) > runner->options().max_num_tokens) return invalid_argument("--dump: prompt longer than --max-num-tokens");
  StepInput s;
  s.token_ids = prompt;
  s.seq_starts = {0, static_cast<int32_t>(prompt.size())};
  s.context_lens = {static_cast<int32_t>(prompt.size())};
  std::vector<int32_t> table;
  for (int32_t b = 0; b * bs < static_cast<int32_t>(prompt.size()); ++b) table.push_back(b);
  s.block_tables = {table};
  for (int32_t p = 0; p < static_cast<int32_t>(prompt.size()); ++p) {
    s.positions.push_back(p);
    s.slot_map.push_back(p);
  }
  s.logit_rows = {static_cast<int32_t>(prompt.size()) - 1};
  std::set<std::string> names(o.dump.begin(), o.dump.end());
  for (const std::string& n : names) {
    if (runner->definition().graph.find(n) < 0) {
      return invalid_argument("--dump: no tensor named '" + n + "' (names look like hidden.3, layers.3.attn.q, final_norm, logits)");
    }
  }
  runner->set_dump_names(names);
  Tensor logits;
  ANVIL_RETURN_IF_ERROR(runner->forward(s, &logits));
  runner->set_dump_names({});
  std::vector<std::pair<std::string, Tensor>> out;
  for (const auto& [name, d] : runner->dumps()) {
    out.emplace_back(name, Tensor(const_cast<float*>(d.data.data()), DType::kF32, d.shape));
  }
  ANVIL_RETURN_IF_ERROR(write_safetensors(o.dump_file, out));
  std::fprintf(stderr, "wrote %zu tensors to %s\n", out.size(), o.dump_file.c_str());
  return Status::ok();
}

int run(const RunOptions& o) {
  auto fail = [](const Status& s) {
    std::fprintf(stderr, "anvil run: %s\n", s.to_string().c_str());
    return 1;
  };
  auto opened = open_model(o.model);
  if (!opened.is_ok()) return fail(opened.status());
  OpenModel& m = *opened;
  if (m.runner->is_follower()) return follow_model(m);  // --tp/--pp: rank 0 drives, prints and exits
  struct StopFollowers {
    OpenModel& m;
    ~StopFollowers() { stop_followers(m); }
  } stop_on_exit{m};
  std::unique_ptr<Tokenizer> tok;
  if (std::filesystem::exists(m.model_dir + "/tokenizer.json")) {
    auto t = Tokenizer::load(m.model_dir);
    if (!t.is_ok()) return fail(t.status());
    tok = std::move(t).value();
  }
  std::vector<int32_t> prompt;
  const int given = !o.prompt_ids.empty() + !o.prompt.empty() + !o.chat.empty();
  if (given != 1) return fail(invalid_argument("give exactly one of --prompt-ids, --prompt, --chat"));
  if (!o.prompt_ids.empty()) {
    auto ids = parse_ids(o.prompt_ids);
    if (!ids.is_ok()) return fail(ids.status());
    prompt = *ids;
  } else {
    if (!tok) return fail(not_found("--prompt/--chat need a tokenizer.json in " + m.model_dir));
    std::string text = o.prompt;
    if (!o.chat.empty()) {
      auto tmpl = load_chat_template(m.model_dir + "/tokenizer_config.json");
      if (!tmpl.is_ok()) return fail(tmpl.status());
      nlohmann::json messages = nlohmann::json::array();
      if (!o.system.empty()) messages.push_back({{"role", "system"}, {"content", o.system}});
      messages.push_back({{"role", "user"}, {"content", o.chat}});
      ChatTemplateOptions co;
      co.add_generation_prompt = true;
      auto rendered = tmpl->render(messages, co);
      if (!rendered.is_ok()) return fail(rendered.status());
      text = *rendered;
      prompt = tok->encode(text, /*add_special_tokens=*/false);
    } else {
      prompt = tok->encode(text, true);
    }
  }
  if (!o.dump.empty()) {
    Status s = write_dumps(m.runner.get(), prompt, o);
    if (!s.is_ok()) return fail(s);
  }
  auto ex = Executor::create(m.runner.get(), {});
  if (!ex.is_ok()) return fail(ex.status());
  Request req;
  req.prompt = prompt;
  req.sampling.max_tokens = o.max_tokens;
  req.sampling.temperature = o.temperature;
  req.sampling.top_k = o.top_k;
  req.sampling.top_p = o.top_p;
  req.sampling.min_p = o.min_p;
  req.sampling.repetition_penalty = o.repetition_penalty;
  if (o.seed >= 0) req.sampling.seed = static_cast<uint64_t>(o.seed);
  req.sampling.ignore_eos = o.ignore_eos;

  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  Output final_out;
  std::vector<int32_t> generated;
  std::unique_ptr<IncrementalDecoder> dec;
  if (tok) dec = std::make_unique<IncrementalDecoder>(*tok, /*skip_special_tokens=*/true);
  const auto t0 = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point t_first;
  auto id = (*ex)->enqueue(req, [&](const Output& out) {
    std::lock_guard<std::mutex> lk(mu);
    if (generated.empty() && !out.tokens.empty()) t_first = std::chrono::steady_clock::now();
    for (int32_t t : out.tokens) {
      generated.push_back(t);
      if (dec && !o.quiet) {
        std::string piece = dec->add(t);
        std::fwrite(piece.data(), 1, piece.size(), stdout);
        std::fflush(stdout);
      }
    }
    if (out.finished) {
      if (dec && !o.quiet) {
        std::string rest = dec->finish();
        std::fwrite(rest.data(), 1, rest.size(), stdout);
      }
      final_out = out;
      done = true;
      cv.notify_all();
    }
  });
  if (!id.is_ok()) return fail(id.status());
  {
    std::unique_lock<std::mutex> lk(mu);
    cv.wait(lk, [&] { return done; });
  }
  const auto t1 = std::chrono::steady_clock::now();
  if (final_out.finish_reason == FinishReason::kError) return fail(final_out.error);
  if (dec && !o.quiet) std::printf("\n");
  std::printf("ids:");
  for (size_t i = 0; i < generated.size(); ++i) std::printf("%s%d", i ? "," : " ", generated[i]);
  std::printf("\n");
  std::fflush(stdout);
  const double total = std::chrono::duration<double>(t1 - t0).count();
  const double ttft = generated.empty() ? 0 : std::chrono::duration<double>(t_first - t0).count();
  const double decode_tps = generated.size() > 1 ? (generated.size() - 1) / std::max(1e-9, total - ttft) : 0;
  std::fprintf(stderr, "[%s] prompt %zu tokens, generated %zu (%s), first token %.1f ms, decode %.1f tok/s on %s\n",
               m.model_dir.c_str(), prompt.size(), generated.size(), finish_reason_name(final_out.finish_reason),
               ttft * 1e3, decode_tps, m.backend->name().c_str());
  return 0;
}

void setup(CLI::App& app) {
  auto* cmd = app.add_subcommand("run", "Generate from one prompt and print the output as it streams");
  auto o = std::make_shared<RunOptions>();
  add_model_options(cmd, &o->model);
  cmd->add_option("--prompt-ids", o->prompt_ids, "Prompt as comma-separated token ids, e.g. 1,2,3");
  cmd->add_option("--prompt", o->prompt, "Prompt text (needs a tokenizer)");
  cmd->add_option("--chat", o->chat, "A user message, rendered with the model's chat template");
  cmd->add_option("--system", o->system, "System message for --chat");
  cmd->add_option("--max-tokens", o->max_tokens, "Tokens to generate")->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--temperature", o->temperature, "0 = greedy")->check(CLI::Range(0.0, 100.0));
  cmd->add_option("--top-k", o->top_k, "0 = off")->check(CLI::NonNegativeNumber);
  cmd->add_option("--top-p", o->top_p, "1 = off")->check(CLI::Range(0.000001, 1.0));
  cmd->add_option("--min-p", o->min_p, "0 = off")->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--repetition-penalty", o->repetition_penalty, "1 = off")->check(CLI::Range(0.01, 100.0));
  cmd->add_option("--seed", o->seed, "Sampling seed");
  cmd->add_flag("--ignore-eos", o->ignore_eos, "Keep generating past EOS");
  cmd->add_option("--dump", o->dump, "Write this named tensor of the prompt's forward pass (repeatable)");
  cmd->add_option("--dump-file", o->dump_file, "Where --dump writes (safetensors)");
  cmd->add_flag("--quiet", o->quiet, "Print only the ids line");
  cmd->callback([o] { set_exit_code(run(*o)); });
}

CommandRegistrar reg("run", setup);

}  // namespace
}  // namespace anvil::cli
