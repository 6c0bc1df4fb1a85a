// libFuzzer target for the chat-template Jinja subset: the input is a template source, optionally
// followed by '\0' and a JSON list of messages. Parsing and rendering must never crash, hang or
// leak; every failure must come back as a Status. Render limits are tightened so a slow input
// shows up as an error instead of a fuzzer timeout.
#include <cstddef>
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "tokenizer/jinja/interpreter.h"
#include "tokenizer/jinja/parser.h"

namespace {

const char* const kDefaultMessages = R"([
  {"role": "system", "content": "sys"},
  {"role": "user", "content": "héllo <tool_response>x</tool_response>"},
  {"role": "assistant", "content": "<think>r</think>ok", "tool_calls": [
     {"type": "function", "function": {"name": "f", "arguments": {"a": [1, 2.5, null, true]}}}]},
  {"role": "tool", "content": "42"}])";

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  const size_t split = input.find('\0');
  const std::string source = input.substr(0, split);
  nlohmann::ordered_json messages = nlohmann::ordered_json::parse(kDefaultMessages);
  if (split != std::string::npos) {
    auto parsed = nlohmann::ordered_json::parse(input.substr(split + 1), nullptr, /*allow_exceptions=*/false);
    if (!parsed.is_discarded()) messages = std::move(parsed);
  }

  anvil::Result<anvil::jinja::ParsedTemplate> parsed = anvil::jinja::parse_template(source);
  if (!parsed.is_ok()) return 0;
  anvil::jinja::RenderLimits limits;
  limits.max_steps = 20000;
  limits.max_output_bytes = 1 << 20;
  limits.max_macro_depth = 16;
  std::vector<std::pair<std::string, anvil::jinja::Value>> globals;
  globals.emplace_back("messages", anvil::jinja::from_json(messages));
  globals.emplace_back("add_generation_prompt", anvil::jinja::Value::boolean(true));
  globals.emplace_back("bos_token", anvil::jinja::Value::string("<s>"));
  globals.emplace_back("tools", anvil::jinja::from_json(nlohmann::ordered_json::parse(
                                    R"([{"type": "function", "function": {"name": "f", "parameters": {}}}])")));
  anvil::Result<std::string> out = anvil::jinja::render_template(parsed->body, std::move(globals), limits);
  (void)out;
  return 0;
}
