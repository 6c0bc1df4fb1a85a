// libFuzzer target for the tokenizer. The first input byte picks a mode; the rest is text (any
// bytes, invalid UTF-8 included) or, for decoding, little-endian 16-bit ids. Invariants checked
// (abort on failure): nothing crashes; decode output is valid UTF-8; a byte-level tokenizer
// round-trips decode(encode(x)) == x with invalid UTF-8 replaced; the incremental decoder's
// concatenation equals decode whenever decode holds no U+FFFD. By default two small built-in
// tokenizers are used (byte-level with a GPT-4-style regex, and SentencePiece-style with byte
// fallback); ANVIL_FUZZ_TOKENIZER=<dir or tokenizer.json> adds a real one.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tokenizer/incremental_decoder.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

namespace {

using nlohmann::json;

std::string byte_level_json() {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) {
    std::string s;
    anvil::tok::utf8_append(s, anvil::tok::byte_level_char(static_cast<uint8_t>(b)));
    vocab[s] = b;
  }
  json merges = json::array();
  int next = 256;
  for (const char* m : {"h e", "l l", "he ll", "hell o", "\xC4\xA0 t", "\xC4\xA0t h", "\xC4\xA0th e", "i n", "in g"}) {
    std::string s(m);
    std::string merged = s.substr(0, s.find(' ')) + s.substr(s.find(' ') + 1);
    vocab[merged] = next++;
    merges.push_back(s);
  }
  json j = {{"version", "1.0"},
            {"added_tokens", json::array({json{{"id", next}, {"content", "<|eot|>"}, {"special", true}, {"normalized", false},
                                               {"lstrip", false}, {"rstrip", false}, {"single_word", false}}})},
            {"normalizer", json{{"type", "NFC"}}},
            {"pre_tokenizer",
             {{"type", "Sequence"},
              {"pretokenizers",
               json::array({json{{"type", "Split"},
                                 {"pattern", {{"Regex", R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)"}}},
                                 {"behavior", "Isolated"},
                                 {"invert", false}},
                            json{{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}})}}},
            {"post_processor", json{{"type", "ByteLevel"}}},
            {"decoder", json{{"type", "ByteLevel"}}},
            {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}, {"ignore_merges", true}}}};
  return j.dump();
}

std::string sentencepiece_json() {
  json vocab = json::object();
  vocab["<unk>"] = 0;
  vocab["<s>"] = 1;
  int next = 2;
  for (int b = 0; b < 256; ++b) {
    char buf[8];
    std::snprintf(buf, sizeof(buf), "<0x%02X>", b);
    vocab[buf] = next++;
  }
  json merges = json::array();
  for (const char* c : {"\xE2\x96\x81", "a", "b", "c", "d", "e"}) vocab[c] = next++;
  for (const char* m : {"\xE2\x96\x81 a", "b c", "\xE2\x96\x81" "a bc", "d e", "\xE2\x96\x81 \xE2\x96\x81"}) {
    std::string s(m);
    vocab[s.substr(0, s.find(' ')) + s.substr(s.find(' ') + 1)] = next++;
    merges.push_back(s);
  }
  json tp = {{"type", "TemplateProcessing"},
             {"single", json::array({json{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                                     json{{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
             {"pair", json::array()},
             {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}}}}};
  json j = {{"added_tokens", json::array({json{{"id", 1}, {"content", "<s>"}, {"special", true}, {"normalized", false},
                                               {"lstrip", false}, {"rstrip", false}, {"single_word", false}}})},
            {"normalizer",
             {{"type", "Sequence"},
              {"normalizers", json::array({json{{"type", "Prepend"}, {"prepend", "\xE2\x96\x81"}},
                                           json{{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\xE2\x96\x81"}}})}}},
            {"pre_tokenizer", nullptr},
            {"post_processor", tp},
            {"decoder",
             {{"type", "Sequence"},
              {"decoders", json::array({json{{"type", "Replace"}, {"pattern", {{"String", "\xE2\x96\x81"}}}, {"content", " "}},
                                        json{{"type", "ByteFallback"}}, json{{"type", "Fuse"}},
                                        json{{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}})}}},
            {"model",
             {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}, {"unk_token", "<unk>"}, {"byte_fallback", true}, {"fuse_unk", true}}}};
  return j.dump();
}

struct Fixtures {
  std::vector<std::unique_ptr<anvil::Tokenizer>> toks;
  Fixtures() {
    for (const std::string& js : {byte_level_json(), sentencepiece_json()}) {
      auto r = anvil::Tokenizer::from_json(js);
      if (!r.is_ok()) {
        std::fprintf(stderr, "built-in tokenizer failed: %s\n", r.status().to_string().c_str());
        std::abort();
      }
      toks.push_back(std::move(r).value());
    }
    if (const char* path = std::getenv("ANVIL_FUZZ_TOKENIZER")) {
      auto r = anvil::Tokenizer::load(path);
      if (r.is_ok()) toks.push_back(std::move(r).value());
    }
  }
};

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "invariant failed: %s\n", what);
    std::abort();
  }
}

void check_stream(const anvil::Tokenizer& tok, const std::vector<int32_t>& ids) {
  anvil::IncrementalDecoder dec(tok);
  std::string all;
  for (int32_t id : ids) {
    std::string chunk = dec.add(id);
    check(anvil::tok::utf8_is_valid(chunk), "incremental chunk is valid UTF-8");
    all += chunk;
  }
  all += dec.finish();
  std::string full = tok.decode(ids);
  check(anvil::tok::utf8_is_valid(full), "decode is valid UTF-8");
  if (full.find("\xEF\xBF\xBD") == std::string::npos && all != full) {
    std::fprintf(stderr, "ids %s\ndecode %s\nstream %s\n", json(ids).dump().c_str(),
                 json(full).dump(-1, ' ', false, json::error_handler_t::replace).c_str(),
                 json(all).dump(-1, ' ', false, json::error_handler_t::replace).c_str());
    check(false, "incremental concatenation equals decode");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const Fixtures fx;
  if (size < 1) return 0;
  const uint8_t mode = data[0];
  const anvil::Tokenizer& tok = *fx.toks[mode % fx.toks.size()];
  const std::string text(reinterpret_cast<const char*>(data + 1), size - 1);
  if ((mode >> 4) & 1) {
    std::vector<int32_t> ids;
    for (size_t i = 1; i + 1 < size; i += 2) {
      int32_t id = static_cast<int32_t>(data[i] | (data[i + 1] << 8));
      ids.push_back(static_cast<int32_t>(id % (tok.vocab_size() + 3)) - 1);
    }
    check_stream(tok, ids);
    return 0;
  }
  std::vector<int32_t> ids = tok.encode(text, (mode >> 5) & 1);
  for (int32_t id : ids) check(id >= 0 && id < tok.vocab_size(), "encode ids are in the vocab");
  if (mode % fx.toks.size() == 0) {
    std::string expect = anvil::tok::utf8_sanitize(text);
    // The built-in byte-level tokenizer normalizes with NFC, so compare against NFC'd input only
    // when the input is plain ASCII (NFC-invariant).
    bool ascii = true;
    for (unsigned char c : expect) ascii = ascii && c < 0x80;
    if (ascii) check(tok.decode(tok.encode(text, false)) == expect, "byte-level round trip");
  }
  check_stream(tok, ids);
  return 0;
}
