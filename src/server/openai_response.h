// OpenAI response bodies and stream chunks for /v1/completions ("text_completion") and
// /v1/chat/completions ("chat.completion" / "chat.completion.chunk"). Pure formatting: no I/O.
// Logprobs are clamped to -9999 (JSON has no -inf); tokens show as their decoded text, or as
// "token_id:N" when the model has no tokenizer.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "server/choice_stream.h"
#include "server/openai_request.h"

namespace anvil::server {

struct ResponseContext {
  ApiKind kind = ApiKind::kCompletion;
  std::string id;  // cmpl-... or chatcmpl-...
  int64_t created = 0;
  std::string model;
  const Tokenizer* tokenizer = nullptr;
  bool want_logprobs = false;
  bool return_token_ids = false;
};

struct Usage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  int64_t cached_tokens = 0;
};

// A finished choice (non-streaming).
struct ChoiceResult {
  std::string text;
  std::vector<int32_t> token_ids;
  std::vector<LogprobEntry> logprobs;
  std::string finish_reason;
};

nlohmann::json usage_json(const Usage& u);
// Whole responses. `prefixes[i]` (echo) is prepended to choice i's text.
nlohmann::json completion_response(const ResponseContext& ctx, const std::vector<ChoiceResult>& choices,
                                   const std::vector<std::string>& prefixes, const Usage& usage);
nlohmann::json chat_response(const ResponseContext& ctx, const std::vector<ChoiceResult>& choices, const Usage& usage);

// Stream chunks. text_offset is where this delta's text starts in the choice's full text, in
// characters (completions logprobs report per-token offsets). finish_reason "" -> null.
nlohmann::json completion_chunk(const ResponseContext& ctx, int index, const ChoiceDelta& d, size_t text_offset,
                                const std::string& finish_reason);
// The first chat chunk of a choice: {"role": "assistant", "content": ""}.
nlohmann::json chat_role_chunk(const ResponseContext& ctx, int index);
nlohmann::json chat_chunk(const ResponseContext& ctx, int index, const ChoiceDelta& d, const std::string& finish_reason);
// The closing usage chunk: "choices": [].
nlohmann::json usage_chunk(const ResponseContext& ctx, const Usage& usage);

// Characters (code points) in UTF-8 text.
size_t utf8_num_chars(const std::string& s);
// A random id with the given prefix ("cmpl-" + 24 hex digits).
std::string make_response_id(const char* prefix);

}  // namespace anvil::server
