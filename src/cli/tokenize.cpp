// `anvil tokenize --model DIR [--decode] [--no-special]`: JSON lines in, JSON lines out.
// Encode reads {"text": "..."} and prints {"ids": [...]}; --decode reads {"ids": [...]} and prints
// {"text": "..."}. A bad line prints "line N: ..." on stderr and processing continues; the exit
// code is 1 if any line failed. Blank lines are skipped.
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "cli/command.h"
#include "tokenizer/tokenizer.h"

namespace anvil::cli {
namespace {

struct TokenizeOptions {
  std::string model;
  bool decode = false;
  bool no_special = false;
};

// Handles one input line; returns an error message or "".
std::string process_line(const Tokenizer& tok, const TokenizeOptions& o, const std::string& line, std::string& out) {
  nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return "not valid JSON";
  if (!j.is_object()) return "expected a JSON object";
  if (o.decode) {
    if (!j.contains("ids") || !j["ids"].is_array()) return "missing array field \"ids\"";
    std::vector<int32_t> ids;
    ids.reserve(j["ids"].size());
    for (const auto& v : j["ids"]) {
      if (!v.is_number_integer()) return "\"ids\" must hold integers, got " + v.dump();
      int64_t id = v.get<int64_t>();
      if (id < 0 || id >= tok.vocab_size())
        return "id " + std::to_string(id) + " is outside the vocab [0, " + std::to_string(tok.vocab_size()) + ")";
      ids.push_back(static_cast<int32_t>(id));
    }
    out = nlohmann::json{{"text", tok.decode(ids, o.no_special)}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  } else {
    if (!j.contains("text") || !j["text"].is_string()) return "missing string field \"text\"";
    out = nlohmann::json{{"ids", tok.encode(j["text"].get_ref<const std::string&>(), !o.no_special)}}.dump();
  }
  return {};
}

int run_tokenize(const TokenizeOptions& o) {
  auto loaded = Tokenizer::load(o.model);
  if (!loaded.is_ok()) {
    std::fprintf(stderr, "anvil tokenize: %s\n", loaded.status().to_string().c_str());
    return 2;
  }
  const Tokenizer& tok = **loaded;
  std::ios::sync_with_stdio(false);
  std::string line, out;
  int64_t line_no = 0;
  int failed = 0;
  while (std::getline(std::cin, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    std::string err = process_line(tok, o, line, out);
    if (!err.empty()) {
      ++failed;
      std::cout.flush();
      std::fprintf(stderr, "line %lld: %s\n", static_cast<long long>(line_no), err.c_str());
      continue;
    }
    std::cout << out << '\n';
  }
  std::cout.flush();
  return failed ? 1 : 0;
}

void setup(CLI::App& app) {
  auto* cmd = app.add_subcommand("tokenize", "Encode JSON lines {\"text\"} to {\"ids\"} (or decode with --decode)");
  auto opts = std::make_shared<TokenizeOptions>();
  cmd->add_option("--model", opts->model, "Folder with tokenizer.json (and tokenizer_config.json), or the file")->required();
  cmd->add_flag("--decode", opts->decode, "Read {\"ids\": [...]} lines and print {\"text\": ...}");
  cmd->add_flag("--no-special", opts->no_special,
                "Encode without the post-processor's special tokens; decode skipping special tokens");
  cmd->callback([opts] { set_exit_code(run_tokenize(*opts)); });
}

CommandRegistrar reg("tokenize", setup);

}  // namespace
}  // namespace anvil::cli
