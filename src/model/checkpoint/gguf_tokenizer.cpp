// GGUF tokenizer metadata -> HF tokenizer.json. Mirrors transformers' GGUF import (vocabulary,
// merges, added tokens, post-processor, decoder) except where transformers departs from the
// model's own tokenizer: "smollm" splits digits one by one, as llama.cpp and SmolLM2's
// tokenizer.json do (transformers' GGUF import leaves them grouped).
#include "model/checkpoint/gguf_tokenizer.h"

#include <algorithm>
#include <map>
#include <set>
#include <unordered_map>

#include <nlohmann/json.hpp>

namespace anvil::gguf {
namespace {

using Json = nlohmann::ordered_json;

// llama.cpp token types (tokenizer.ggml.token_type).
constexpr int64_t kTokenControl = 3;
constexpr int64_t kTokenUserDefined = 4;

// Code points of a UTF-8 string; false on malformed input.
bool utf8_decode(const std::string& s, std::vector<uint32_t>* cps, std::vector<size_t>* starts) {
  cps->clear();
  if (starts) starts->clear();
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<uint8_t>(s[i]);
    int len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
    if (len == 0 || i + len > s.size()) return false;
    uint32_t cp = len == 1 ? c : len == 2 ? (c & 0x1f) : len == 3 ? (c & 0x0f) : (c & 0x07);
    for (int k = 1; k < len; ++k) {
      const auto cc = static_cast<uint8_t>(s[i + k]);
      if ((cc >> 6) != 0x2) return false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    static constexpr uint32_t kMin[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMin[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    if (starts) starts->push_back(i);
    cps->push_back(cp);
    i += len;
  }
  return true;
}

void utf8_append(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xc0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xe0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else {
    out->push_back(static_cast<char>(0xf0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3f)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  }
}

// GPT-2's byte -> code point table: printable bytes map to themselves, the other 68 to U+0100...
std::vector<uint32_t> byte_to_code_point() {
  std::vector<uint32_t> table(256);
  uint32_t next = 256;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    table[b] = printable ? b : next++;
  }
  return table;
}

const std::string kLlama3Split =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}"
    "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const std::string kQwen2Split =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}"
    "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const std::string kGpt4oSplit =
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    "|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    "|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

Json byte_level(bool use_regex) {
  return Json{{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", use_regex}};
}

// The pre-tokenizer for a byte-level vocabulary named `pre` (tokenizer.ggml.pre).
Result<Json> byte_level_pre_tokenizer(const std::string& pre, const std::string& file) {
  static const std::map<std::string, const std::string*> kSplits = {
      {"llama3", &kLlama3Split},    {"llama-v3", &kLlama3Split}, {"llama-bpe", &kLlama3Split},
      {"falcon3", &kLlama3Split},   {"pixtral", &kLlama3Split},  {"dbrx", &kLlama3Split},
      {"smaug-bpe", &kLlama3Split}, {"qwen2", &kQwen2Split},     {"deepseek-r1-qwen", &kQwen2Split},
      {"megrez", &kQwen2Split},     {"gpt-4o", &kGpt4oSplit},    {"llama4", &kGpt4oSplit},
  };
  if (auto it = kSplits.find(pre); it != kSplits.end()) {
    Json split{{"type", "Split"},
               {"pattern", Json{{"Regex", *it->second}}},
               {"behavior", "Isolated"},
               {"invert", false}};
    return Json{{"type", "Sequence"}, {"pretokenizers", Json::array({split, byte_level(false)})}};
  }
  // GPT-2's own regex, applied by ByteLevel itself.
  if (pre == "default" || pre == "gpt2" || pre == "gpt-2" || pre == "mpt" || pre == "olmo") return byte_level(true);
  // StarCoder-style vocabularies (SmolLM's included): each digit alone, then GPT-2's regex.
  if (pre == "smollm" || pre == "starcoder" || pre == "refact" || pre == "codeshell") {
    Json digits{{"type", "Digits"}, {"individual_digits", true}};
    return Json{{"type", "Sequence"}, {"pretokenizers", Json::array({digits, byte_level(true)})}};
  }
  return unsupported(file + ": tokenizer.ggml.pre '" + pre +
                     "' is not supported (known: default, gpt2, smollm, starcoder, llama-bpe, llama3, qwen2, "
                     "gpt-4o, llama4, ...)");
}

Json post_processor(bool add_bos, bool add_eos, const std::string& bos, int64_t bos_id, const std::string& eos,
                    int64_t eos_id) {
  auto special = [](const std::string& tok, int type_id) {
    return Json{{"SpecialToken", Json{{"id", tok}, {"type_id", type_id}}}};
  };
  auto seq = [](const char* id, int type_id) { return Json{{"Sequence", Json{{"id", id}, {"type_id", type_id}}}}; };
  Json single = Json::array(), pair = Json::array(), specials = Json::object();
  if (add_bos) single.push_back(special(bos, 0));
  single.push_back(seq("A", 0));
  if (add_eos) single.push_back(special(eos, 0));
  if (add_bos) pair.push_back(special(bos, 0));
  pair.push_back(seq("A", 0));
  if (add_eos) pair.push_back(special(eos, 0));
  if (add_bos) pair.push_back(special(bos, 1));
  pair.push_back(seq("B", 1));
  if (add_eos) pair.push_back(special(eos, 1));
  if (add_bos) specials[bos] = Json{{"id", bos}, {"ids", Json::array({bos_id})}, {"tokens", Json::array({bos})}};
  if (add_eos) specials[eos] = Json{{"id", eos}, {"ids", Json::array({eos_id})}, {"tokens", Json::array({eos})}};
  return Json{{"type", "TemplateProcessing"}, {"single", single}, {"pair", pair}, {"special_tokens", specials}};
}

Json added_token(int64_t id, const std::string& content, bool special) {
  return Json{{"id", id},          {"content", content}, {"single_word", false}, {"lstrip", false},
              {"rstrip", false},   {"normalized", false}, {"special", special}};
}

// An optional token id key; -1 when absent. Errors when present but out of range.
Result<int64_t> optional_token_id(const GgufFile& f, const std::string& key, size_t vocab) {
  if (!f.contains(key)) return int64_t{-1};
  ANVIL_ASSIGN_OR_RETURN(int64_t id, f.get_int(key));
  if (id < 0 || static_cast<size_t>(id) >= vocab) {
    return invalid_argument(f.path() + ": metadata '" + key + "' = " + std::to_string(id) +
                            " is outside the vocabulary of " + std::to_string(vocab) + " tokens");
  }
  return id;
}

Result<bool> optional_bool(const GgufFile& f, const std::string& key, bool fallback) {
  if (!f.contains(key)) return fallback;
  return f.get_bool(key);
}

}  // namespace

std::vector<std::pair<std::string, std::string>> merges_from_vocab(const std::vector<std::string>& tokens,
                                                                   const std::vector<double>* scores) {
  std::unordered_map<std::string, int64_t> vocab;  // later duplicates win, as in a Python dict
  for (size_t i = 0; i < tokens.size(); ++i) vocab[tokens[i]] = static_cast<int64_t>(i);
  // Iteration follows first occurrence (Python dict order), the value the last occurrence's.
  std::unordered_map<std::string, double> score_of;
  std::vector<std::string> order;
  for (size_t i = 0; i < tokens.size(); ++i) {
    auto [it, inserted] = score_of.try_emplace(tokens[i], 0.0);
    if (inserted) order.push_back(tokens[i]);
    it->second = scores ? (*scores)[i] : static_cast<double>(i);
  }
  struct Merge {
    std::string l, r;
    double score;
    size_t len_l, len_r;
  };
  std::vector<Merge> merges;
  std::vector<uint32_t> cps;
  std::vector<size_t> starts;
  for (const std::string& tok : order) {
    if (!utf8_decode(tok, &cps, &starts)) continue;
    std::vector<Merge> local;
    for (size_t k = 1; k < cps.size(); ++k) {
      std::string l = tok.substr(0, starts[k]), r = tok.substr(starts[k]);
      if (vocab.count(l) && vocab.count(r)) local.push_back({std::move(l), std::move(r), score_of[tok], k, cps.size() - k});
    }
    std::stable_sort(local.begin(), local.end(), [&](const Merge& a, const Merge& b) {
      const int64_t al = vocab[a.l], bl = vocab[b.l];
      return al != bl ? al < bl : vocab[a.r] < vocab[b.r];
    });
    for (Merge& m : local) merges.push_back(std::move(m));
  }
  const bool descending = scores != nullptr;
  std::stable_sort(merges.begin(), merges.end(), [descending](const Merge& a, const Merge& b) {
    auto key_a = std::make_tuple(a.score, a.len_l, a.len_r);
    auto key_b = std::make_tuple(b.score, b.len_l, b.len_r);
    return descending ? key_b < key_a : key_a < key_b;
  });
  std::vector<std::pair<std::string, std::string>> out;
  out.reserve(merges.size());
  for (Merge& m : merges) out.emplace_back(std::move(m.l), std::move(m.r));
  return out;
}

Result<HfTokenizer> build_hf_tokenizer(const GgufFile& f, int64_t model_max_length) {
  const std::string& file = f.path();
  ANVIL_ASSIGN_OR_RETURN(std::string model, f.get_string("tokenizer.ggml.model"));
  const bool byte_level_bpe = model == "gpt2";
  if (!byte_level_bpe && model != "llama") {
    return unsupported(file + ": tokenizer.ggml.model '" + model +
                       "' is not supported (anvil converts 'gpt2' byte-level BPE and 'llama' SentencePiece BPE)");
  }
  ANVIL_ASSIGN_OR_RETURN(std::vector<std::string> tokens, f.get_string_array("tokenizer.ggml.tokens"));
  if (tokens.empty()) return invalid_argument(file + ": tokenizer.ggml.tokens is empty");
  std::vector<int64_t> types;
  if (f.contains("tokenizer.ggml.token_type")) {
    ANVIL_ASSIGN_OR_RETURN(types, f.get_int_array("tokenizer.ggml.token_type"));
    if (types.size() != tokens.size()) {
      return invalid_argument(file + ": tokenizer.ggml.token_type has " + std::to_string(types.size()) +
                              " entries for " + std::to_string(tokens.size()) + " tokens");
    }
  }
  std::vector<uint32_t> cps;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (!utf8_decode(tokens[i], &cps, nullptr)) {
      return invalid_argument(file + ": tokenizer.ggml.tokens[" + std::to_string(i) + "] is not valid UTF-8");
    }
  }

  HfTokenizer out;
  out.vocab_size = static_cast<int64_t>(tokens.size());
  ANVIL_ASSIGN_OR_RETURN(out.bos_token_id, optional_token_id(f, "tokenizer.ggml.bos_token_id", tokens.size()));
  ANVIL_ASSIGN_OR_RETURN(out.eos_token_id, optional_token_id(f, "tokenizer.ggml.eos_token_id", tokens.size()));
  ANVIL_ASSIGN_OR_RETURN(out.unk_token_id, optional_token_id(f, "tokenizer.ggml.unknown_token_id", tokens.size()));
  ANVIL_ASSIGN_OR_RETURN(out.pad_token_id, optional_token_id(f, "tokenizer.ggml.padding_token_id", tokens.size()));
  // llama.cpp adds BOS to SentencePiece vocabularies unless told otherwise, never to byte-level.
  ANVIL_ASSIGN_OR_RETURN(bool add_bos, optional_bool(f, "tokenizer.ggml.add_bos_token", !byte_level_bpe));
  ANVIL_ASSIGN_OR_RETURN(bool add_eos, optional_bool(f, "tokenizer.ggml.add_eos_token", false));
  ANVIL_ASSIGN_OR_RETURN(bool add_space_prefix, optional_bool(f, "tokenizer.ggml.add_space_prefix", true));
  if (add_bos && out.bos_token_id < 0) {
    return invalid_argument(file + ": tokenizer.ggml.add_bos_token is set but tokenizer.ggml.bos_token_id is missing");
  }
  if (add_eos && out.eos_token_id < 0) {
    return invalid_argument(file + ": tokenizer.ggml.add_eos_token is set but tokenizer.ggml.eos_token_id is missing");
  }
  auto token_or_null = [&](int64_t id) { return id < 0 ? Json(nullptr) : Json(tokens[static_cast<size_t>(id)]); };

  // Vocabulary. Byte-level: tokens not written in the byte alphabet are re-spelled byte by byte.
  std::vector<std::string> spelled = tokens;
  std::set<uint32_t> alphabet;
  if (byte_level_bpe) {
    std::vector<uint32_t> table = byte_to_code_point();
    alphabet.insert(table.begin(), table.end());
    for (std::string& t : spelled) {
      utf8_decode(t, &cps, nullptr);
      if (std::all_of(cps.begin(), cps.end(), [&](uint32_t c) { return alphabet.count(c) > 0; })) continue;
      std::string respelled;
      for (char c : t) utf8_append(table[static_cast<uint8_t>(c)], &respelled);
      t = std::move(respelled);
    }
  }
  Json vocab = Json::object();
  for (size_t i = 0; i < spelled.size(); ++i) vocab[spelled[i]] = static_cast<int64_t>(i);

  // Merges: from the file, or recovered from the vocabulary (and scores).
  Json merges = Json::array();
  if (f.contains("tokenizer.ggml.merges")) {
    ANVIL_ASSIGN_OR_RETURN(std::vector<std::string> raw, f.get_string_array("tokenizer.ggml.merges"));
    for (size_t i = 0; i < raw.size(); ++i) {
      const size_t sp = raw[i].find(' ');
      if (sp == std::string::npos || raw[i].find(' ', sp + 1) != std::string::npos) {
        return invalid_argument(file + ": tokenizer.ggml.merges[" + std::to_string(i) + "] '" + raw[i] +
                                "' is not two pieces separated by one space");
      }
      merges.push_back(Json::array({raw[i].substr(0, sp), raw[i].substr(sp + 1)}));
    }
  } else {
    std::vector<double> scores;
    const bool have_scores = f.contains("tokenizer.ggml.scores");
    if (have_scores) {
      ANVIL_ASSIGN_OR_RETURN(scores, f.get_float_array("tokenizer.ggml.scores"));
      if (scores.size() != tokens.size()) {
        return invalid_argument(file + ": tokenizer.ggml.scores has " + std::to_string(scores.size()) +
                                " entries for " + std::to_string(tokens.size()) + " tokens");
      }
    }
    for (auto& [l, r] : merges_from_vocab(tokens, have_scores ? &scores : nullptr)) {
      merges.push_back(Json::array({l, r}));
    }
  }

  // Added tokens: control tokens and the named special tokens as special (for byte-level, only
  // those spelled in the byte alphabet: others are llama.cpp mislabels), user-defined as plain.
  std::set<int64_t> special_ids;
  for (size_t i = 0; i < types.size(); ++i) {
    if (types[i] != kTokenControl) continue;
    if (byte_level_bpe) {
      utf8_decode(tokens[i], &cps, nullptr);
      if (!std::all_of(cps.begin(), cps.end(), [&](uint32_t c) { return alphabet.count(c) > 0; })) continue;
    }
    special_ids.insert(static_cast<int64_t>(i));
  }
  for (int64_t id : {out.bos_token_id, out.eos_token_id, out.unk_token_id, out.pad_token_id}) {
    if (id >= 0 && spelled[static_cast<size_t>(id)] == tokens[static_cast<size_t>(id)]) special_ids.insert(id);
  }
  std::map<int64_t, Json> added;
  for (int64_t id : special_ids) added[id] = added_token(id, tokens[static_cast<size_t>(id)], true);
  for (size_t i = 0; i < types.size(); ++i) {
    if (types[i] == kTokenUserDefined && !added.count(static_cast<int64_t>(i)) && spelled[i] == tokens[i]) {
      added[static_cast<int64_t>(i)] = added_token(static_cast<int64_t>(i), tokens[i], false);
    }
  }
  Json added_tokens = Json::array();
  for (auto& [id, tok] : added) added_tokens.push_back(std::move(tok));

  Json tj = Json::object();
  tj["version"] = "1.0";
  tj["truncation"] = nullptr;
  tj["padding"] = nullptr;
  tj["added_tokens"] = std::move(added_tokens);
  tj["normalizer"] = nullptr;
  const std::string bos = out.bos_token_id >= 0 ? tokens[static_cast<size_t>(out.bos_token_id)] : "";
  const std::string eos = out.eos_token_id >= 0 ? tokens[static_cast<size_t>(out.eos_token_id)] : "";
  if (byte_level_bpe) {
    std::string pre = "default";
    if (f.contains("tokenizer.ggml.pre")) {
      ANVIL_ASSIGN_OR_RETURN(pre, f.get_string("tokenizer.ggml.pre"));
    }
    ANVIL_ASSIGN_OR_RETURN(tj["pre_tokenizer"], byte_level_pre_tokenizer(pre, file));
    tj["post_processor"] = post_processor(add_bos, add_eos, bos, out.bos_token_id, eos, out.eos_token_id);
    tj["decoder"] = Json{{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};
    tj["model"] = Json{{"type", "BPE"},          {"dropout", nullptr},
                       {"unk_token", nullptr},   {"continuing_subword_prefix", ""},
                       {"end_of_word_suffix", ""}, {"fuse_unk", false},
                       {"byte_fallback", false}, {"ignore_merges", false},
                       {"vocab", std::move(vocab)}, {"merges", std::move(merges)}};
  } else {
    tj["pre_tokenizer"] = Json{{"type", "Metaspace"},
                               {"replacement", "\u2581"},
                               {"prepend_scheme", add_space_prefix ? "first" : "never"},
                               {"split", false}};
    tj["post_processor"] = post_processor(add_bos, add_eos, bos, out.bos_token_id, eos, out.eos_token_id);
    Json decoders = Json::array({Json{{"type", "Replace"}, {"pattern", Json{{"String", "\u2581"}}}, {"content", " "}},
                                 Json{{"type", "ByteFallback"}}, Json{{"type", "Fuse"}}});
    if (add_space_prefix) decoders.push_back(Json{{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});
    tj["decoder"] = Json{{"type", "Sequence"}, {"decoders", std::move(decoders)}};
    tj["model"] = Json{{"type", "BPE"},           {"dropout", nullptr},
                       {"unk_token", nullptr},    {"continuing_subword_prefix", nullptr},
                       {"end_of_word_suffix", nullptr}, {"fuse_unk", true},
                       {"byte_fallback", true},   {"ignore_merges", false},
                       {"vocab", std::move(vocab)}, {"merges", std::move(merges)}};
  }
  out.tokenizer_json = tj.dump(2, ' ', false, Json::error_handler_t::replace);

  Json cfg = Json::object();
  cfg["tokenizer_class"] = "PreTrainedTokenizerFast";
  cfg["add_bos_token"] = add_bos;
  cfg["add_eos_token"] = add_eos;
  cfg["bos_token"] = token_or_null(out.bos_token_id);
  cfg["eos_token"] = token_or_null(out.eos_token_id);
  cfg["unk_token"] = token_or_null(out.unk_token_id);
  cfg["pad_token"] = token_or_null(out.pad_token_id);
  cfg["clean_up_tokenization_spaces"] = false;
  if (model_max_length > 0) cfg["model_max_length"] = model_max_length;
  if (f.contains("tokenizer.chat_template")) {
    ANVIL_ASSIGN_OR_RETURN(std::string tmpl, f.get_string("tokenizer.chat_template"));
    cfg["chat_template"] = tmpl;
  }
  out.tokenizer_config_json = cfg.dump(2, ' ', false, Json::error_handler_t::replace);
  return out;
}

}  // namespace anvil::gguf
