// load_model_assets (model_assets.h).
#include "server/model_assets.h"

#include <filesystem>

#include "core/mmap_file.h"

namespace anvil::server {

namespace fs = std::filesystem;

Result<ModelAssets> load_model_assets(const std::string& model_dir, const std::string& chat_template_file) {
  ModelAssets a;
  std::error_code ec;
  const fs::path dir(model_dir);
  if (fs::exists(dir / "tokenizer.json", ec)) {
    auto tok = Tokenizer::load(model_dir);
    if (!tok.is_ok()) return tok.status().with_context("loading the tokenizer of " + model_dir);
    a.tokenizer = std::move(tok).value();
  }
  const fs::path config = dir / "tokenizer_config.json";
  const bool have_config = fs::exists(config, ec);
  if (!chat_template_file.empty()) {
    const bool is_config = fs::path(chat_template_file).extension() == ".json";
    Result<ChatTemplate> t = [&]() -> Result<ChatTemplate> {
      if (is_config) return load_chat_template(chat_template_file);
      ANVIL_ASSIGN_OR_RETURN(std::string source, read_file(chat_template_file));
      ANVIL_ASSIGN_OR_RETURN(ChatTemplate parsed, ChatTemplate::parse(source));
      if (have_config) {
        // Keep the model's bos/eos strings for templates that print them.
        auto from_config = load_chat_template(config.string());
        if (from_config.is_ok()) {
          parsed.set_default_tokens(from_config->default_bos_token(), from_config->default_eos_token());
        }
      }
      return parsed;
    }();
    if (!t.is_ok()) return t.status().with_context("--chat-template " + chat_template_file);
    a.chat_template = std::make_unique<ChatTemplate>(std::move(t).value());
    a.chat_template_source = chat_template_file;
  } else if (have_config) {
    auto t = load_chat_template(config.string());
    if (t.is_ok()) {
      a.chat_template = std::make_unique<ChatTemplate>(std::move(t).value());
      a.chat_template_source = config.string();
    } else if (t.status().code() != StatusCode::kNotFound) {
      return t.status().with_context("chat template of " + model_dir);
    }
  }
  return a;
}

}  // namespace anvil::server
