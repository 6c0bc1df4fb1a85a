// ModelAssets: the text side of a served model, read from its folder: tokenizer.json (optional:
// without it the server speaks token ids only) and the chat template (--chat-template FILE, else
// tokenizer_config.json's "chat_template" or chat_template.jinja; optional too).
#pragma once

#include <memory>
#include <string>

#include "anvil/status.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace anvil::server {

struct ModelAssets {
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<ChatTemplate> chat_template;
  std::string chat_template_source;  // where the template came from, for the log ("" if none)
};

// `chat_template_file`: a Jinja file, or a tokenizer_config.json holding "chat_template"; empty:
// look in model_dir. A given file that fails to load or parse is an error; a model folder without
// a template is not (chat is then refused per request).
Result<ModelAssets> load_model_assets(const std::string& model_dir, const std::string& chat_template_file);

}  // namespace anvil::server
