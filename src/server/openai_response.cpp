// Formatting of OpenAI responses and stream chunks (openai_response.h).
#include "server/openai_response.h"

#include <algorithm>
#include <random>

namespace anvil::server {
namespace {

using json = nlohmann::json;

size_t num_chars(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

double clamp_logprob(float lp) { return std::max(static_cast<double>(lp), -9999.0); }

std::string token_text(const ResponseContext& ctx, int32_t id) {
  if (ctx.tokenizer == nullptr) return "token_id:" + std::to_string(id);
  return ctx.tokenizer->decode(std::vector<int32_t>{id}, false);
}

json byte_list(const std::string& s) {
  json b = json::array();
  for (unsigned char c : s) b.push_back(static_cast<int>(c));
  return b;
}

const char* object_name(const ResponseContext& ctx, bool chunk) {
  if (ctx.kind == ApiKind::kCompletion) return "text_completion";
  return chunk ? "chat.completion.chunk" : "chat.completion";
}

json envelope(const ResponseContext& ctx, bool chunk) {
  return json{{"id", ctx.id}, {"object", object_name(ctx, chunk)}, {"created", ctx.created}, {"model", ctx.model}};
}

json null_or(const std::string& s) { return s.empty() ? json(nullptr) : json(s); }

// {"tokens", "token_logprobs", "top_logprobs", "text_offset"}
json completion_logprobs(const ResponseContext& ctx, const std::vector<LogprobEntry>& entries, size_t offset) {
  json tokens = json::array(), lps = json::array(), tops = json::array(), offsets = json::array();
  for (const auto& e : entries) {
    std::string t = token_text(ctx, e.token);
    tokens.push_back(t);
    lps.push_back(clamp_logprob(e.logprob));
    json top = json::object();
    for (const auto& alt : e.top) top[token_text(ctx, alt.token)] = clamp_logprob(alt.logprob);
    tops.push_back(std::move(top));
    offsets.push_back(offset);
    offset += num_chars(t);
  }
  return json{{"tokens", tokens}, {"token_logprobs", lps}, {"top_logprobs", tops}, {"text_offset", offsets}};
}

// {"content": [{"token", "logprob", "bytes", "top_logprobs": [...]}], "refusal": null}
json chat_logprobs(const ResponseContext& ctx, const std::vector<LogprobEntry>& entries) {
  json content = json::array();
  for (const auto& e : entries) {
    std::string t = token_text(ctx, e.token);
    json top = json::array();
    for (const auto& alt : e.top) {
      std::string a = token_text(ctx, alt.token);
      top.push_back(json{{"token", a}, {"logprob", clamp_logprob(alt.logprob)}, {"bytes", byte_list(a)}});
    }
    content.push_back(json{{"token", t}, {"logprob", clamp_logprob(e.logprob)}, {"bytes", byte_list(t)},
                           {"top_logprobs", std::move(top)}});
  }
  return json{{"content", std::move(content)}, {"refusal", nullptr}};
}

}  // namespace

size_t utf8_num_chars(const std::string& s) { return num_chars(s); }

std::string make_response_id(const char* prefix) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  static const char* kHex = "0123456789abcdef";
  std::string id = prefix;
  for (int i = 0; i < 24; ++i) id += kHex[rng() & 15];
  return id;
}

json usage_json(const Usage& u) {
  return json{{"prompt_tokens", u.prompt_tokens},
              {"completion_tokens", u.completion_tokens},
              {"total_tokens", u.prompt_tokens + u.completion_tokens},
              {"prompt_tokens_details", json{{"cached_tokens", u.cached_tokens}}}};
}

json completion_response(const ResponseContext& ctx, const std::vector<ChoiceResult>& choices,
                         const std::vector<std::string>& prefixes, const Usage& usage) {
  json out = envelope(ctx, false);
  json arr = json::array();
  for (size_t i = 0; i < choices.size(); ++i) {
    const ChoiceResult& c = choices[i];
    const std::string& prefix = i < prefixes.size() ? prefixes[i] : std::string();
    json choice{{"index", i}, {"text", prefix + c.text}, {"finish_reason", null_or(c.finish_reason)}};
    choice["logprobs"] = ctx.want_logprobs ? completion_logprobs(ctx, c.logprobs, num_chars(prefix)) : json(nullptr);
    if (ctx.return_token_ids) choice["token_ids"] = c.token_ids;
    arr.push_back(std::move(choice));
  }
  out["choices"] = std::move(arr);
  out["usage"] = usage_json(usage);
  return out;
}

json chat_response(const ResponseContext& ctx, const std::vector<ChoiceResult>& choices, const Usage& usage) {
  json out = envelope(ctx, false);
  json arr = json::array();
  for (size_t i = 0; i < choices.size(); ++i) {
    const ChoiceResult& c = choices[i];
    json choice{{"index", i},
                {"message", json{{"role", "assistant"}, {"content", c.text}, {"refusal", nullptr}}},
                {"finish_reason", null_or(c.finish_reason)}};
    choice["logprobs"] = ctx.want_logprobs ? chat_logprobs(ctx, c.logprobs) : json(nullptr);
    if (ctx.return_token_ids) choice["token_ids"] = c.token_ids;
    arr.push_back(std::move(choice));
  }
  out["choices"] = std::move(arr);
  out["usage"] = usage_json(usage);
  return out;
}

json completion_chunk(const ResponseContext& ctx, int index, const ChoiceDelta& d, size_t text_offset,
                      const std::string& finish_reason) {
  json out = envelope(ctx, true);
  json choice{{"index", index}, {"text", d.text}, {"finish_reason", null_or(finish_reason)}};
  choice["logprobs"] = ctx.want_logprobs ? completion_logprobs(ctx, d.logprobs, text_offset) : json(nullptr);
  if (ctx.return_token_ids) choice["token_ids"] = d.token_ids;
  out["choices"] = json::array({std::move(choice)});
  return out;
}

json chat_role_chunk(const ResponseContext& ctx, int index) {
  json out = envelope(ctx, true);
  out["choices"] = json::array({json{{"index", index},
                                     {"delta", json{{"role", "assistant"}, {"content", ""}}},
                                     {"logprobs", nullptr},
                                     {"finish_reason", nullptr}}});
  return out;
}

json chat_chunk(const ResponseContext& ctx, int index, const ChoiceDelta& d, const std::string& finish_reason) {
  json out = envelope(ctx, true);
  json delta = json::object();
  if (!d.text.empty() || finish_reason.empty()) delta["content"] = d.text;
  json choice{{"index", index}, {"delta", std::move(delta)}, {"finish_reason", null_or(finish_reason)}};
  choice["logprobs"] = ctx.want_logprobs && !d.logprobs.empty() ? chat_logprobs(ctx, d.logprobs) : json(nullptr);
  if (ctx.return_token_ids) choice["token_ids"] = d.token_ids;
  out["choices"] = json::array({std::move(choice)});
  return out;
}

json usage_chunk(const ResponseContext& ctx, const Usage& usage) {
  json out = envelope(ctx, true);
  out["choices"] = json::array();
  out["usage"] = usage_json(usage);
  return out;
}

}  // namespace anvil::server
