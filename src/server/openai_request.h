// OpenAI request bodies -> a validated GenerateRequest. Every parameter is type- and
// range-checked here, before anything reaches the executor, so a bad request is a 400 naming
// its param and never a 500. Unknown fields are ignored; unsupported ones that would change the
// result silently (logit_bias, suffix, a structured response_format) are refused.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "anvil/request.h"
#include "server/json_params.h"
#include "server/server_options.h"

namespace anvil::server {

enum class ApiKind { kCompletion, kChat };

struct PromptInput {
  std::vector<int32_t> ids;
  std::string text;  // for echo: the prompt as given, or its ids decoded ("" without a tokenizer)
};

struct GenerateRequest {
  ApiKind kind = ApiKind::kCompletion;
  std::vector<PromptInput> prompts;  // chat: exactly one
  SamplingParams sampling;           // seed is the base: choice i runs with seed + i
  int32_t n = 1;
  std::vector<std::string> stop;
  bool stream = false;
  bool include_usage = false;
  bool echo = false;
  int32_t logprobs = -1;  // -1: none; k >= 0: the chosen token's logprob and the top k
  bool return_token_ids = false;
  bool skip_special_tokens = true;
};

// Parses `body` (already known to be a JSON object). Checks "model" against model.name (404).
MaybeError parse_generate_request(const RequestJson& body, ApiKind kind, const ServingModel& model,
                                  const ServerOptions& options, GenerateRequest* out);

// Reads "prompt" of /v1/completions or /tokenize: a string, a list of strings, a list of ids or a
// list of lists of ids. Strings need a tokenizer; ids must lie in [0, vocab_size).
MaybeError parse_prompts(const RequestJson& prompt, const ServingModel& model, const ServerOptions& options,
                         bool add_special_tokens, std::vector<PromptInput>* out);

// Checks "model" if given: a string equal to the served name, else 404 model_not_found.
MaybeError check_model_field(const RequestJson& body, const ServingModel& model);

}  // namespace anvil::server
