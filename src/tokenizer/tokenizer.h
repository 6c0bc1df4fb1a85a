// Tokenizer: a Hugging Face tokenizer.json (BPE model; byte-level or SentencePiece-style) plus the
// optional tokenizer_config.json next to it. encode() matches HF `tokenizers`
// Tokenizer.encode(text, add_special_tokens) id for id; decode() matches Tokenizer.decode.
// Invalid UTF-8 input is first rewritten with U+FFFD per maximal ill-formed subpart (the result of
// Python's bytes.decode("utf-8", errors="replace")). Immutable after load; thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

#include <nlohmann/json_fwd.hpp>

namespace anvil {

class Tokenizer;
Result<std::unique_ptr<Tokenizer>> tokenizer_from_parsed_json(const nlohmann::json& tokenizer_json,
                                                              const nlohmann::json& config_json,
                                                              const std::string& source);

class Tokenizer {
 public:
  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // `dir_or_file` is a folder holding tokenizer.json (and optionally tokenizer_config.json), or
  // the path of a tokenizer.json file. Unsupported components are refused with an error naming
  // them, e.g. `tokenizer.json: pre_tokenizer type "Whitespace" is not supported`.
  static Result<std::unique_ptr<Tokenizer>> load(const std::string& dir_or_file);
  // From in-memory JSON texts; `config_json` may be empty. `source` names the file in errors.
  static Result<std::unique_ptr<Tokenizer>> from_json(std::string_view tokenizer_json,
                                                      std::string_view config_json = {},
                                                      const std::string& source = "tokenizer.json");

  // add_special_tokens applies the file's post-processor (e.g. a TemplateProcessing BOS).
  // Special-token strings in `text` always map to their ids.
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = true) const;
  // Unknown ids are skipped, as HF does.
  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens = false) const;
  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const {
    return decode(std::span<const int32_t>(ids), skip_special_tokens);
  }

  int32_t token_to_id(std::string_view token) const;  // -1 if none
  std::string id_to_token(int32_t id) const;          // "" if none
  // One past the largest id of the vocab and the added tokens.
  int64_t vocab_size() const;

  // From tokenizer_config.json (-1 when unset or not in the vocab).
  int32_t bos_id() const;
  int32_t eos_id() const;
  int32_t pad_id() const;
  bool add_bos_token() const;  // tokenizer_config.json "add_bos_token" (false when absent)
  bool add_eos_token() const;
  // Added tokens flagged "special": true.
  bool is_special(int32_t id) const;
  std::vector<int32_t> special_ids() const;

  // Number of cached BPE words (for tests and metrics).
  size_t cache_size() const;

 private:
  struct Impl;
  friend Result<std::unique_ptr<Tokenizer>> tokenizer_from_parsed_json(const nlohmann::json&, const nlohmann::json&,
                                                                      const std::string&);
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace anvil
