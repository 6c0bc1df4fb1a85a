// Components the five real tokenizer files do not exercise (every Split behavior and invert,
// Metaspace schemes, Digits, normalizers, added-token lstrip/rstrip/single_word/normalized,
// templates, Strip decoder), each checked against HF on the variants in components.jsonl; plus
// load errors, vocab queries and the invalid-UTF-8 rule.
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tokenizer/tokenizer_json.h"
#include "tokenizer/utf8.h"
#include "tokenizer_test_util.h"

namespace anvil::test {
namespace {

using nlohmann::json;

std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

const json& base_json(const std::string& name) {
  static std::map<std::string, json> cache;
  auto it = cache.find(name);
  if (it == cache.end()) it = cache.emplace(name, json::parse(read_text(tokenizer_dir(name) + "/tokenizer.json"))).first;
  return it->second;
}

// Mirrors apply_patch() in tools/tokenizer/make_reference.py.
json apply_patch(json j, const json& patch) {
  for (auto it = patch.begin(); it != patch.end(); ++it) {
    if (it.key() == "added_tokens+") {
      int64_t next = static_cast<int64_t>(j["model"]["vocab"].size());
      for (const auto& t : j["added_tokens"]) next = std::max<int64_t>(next, t["id"].get<int64_t>() + 1);
      for (json t : it.value()) {
        t["id"] = next++;
        j["added_tokens"].push_back(t);
      }
    } else {
      j[it.key()] = it.value();
    }
  }
  return j;
}

TEST(TokenizerComponents, MatchHfOnPatchedTokenizers) {
  auto lines = read_reference_lines("components.jsonl");
  ASSERT_GE(lines.size(), 40u);
  int failures = 0, cases = 0;
  for (const auto& line : lines) {
    json rec = json::parse(line);
    json j = apply_patch(base_json(rec["base"].get<std::string>()), rec["patch"]);
    auto tok = tokenizer_from_parsed_json(j, json());
    ASSERT_TRUE(tok.is_ok()) << rec["patch"].dump() << ": " << tok.status().to_string();
    for (const auto& c : rec["cases"]) {
      ++cases;
      const std::string text = c["text"].get<std::string>();
      auto ids = (*tok)->encode(text, true);
      auto plain = (*tok)->encode(text, false);
      auto hf_ids = c["ids"].get<std::vector<int32_t>>();
      std::string dec = (*tok)->decode(hf_ids, false), dec_skip = (*tok)->decode(hf_ids, true);
      bool ok = ids == hf_ids && plain == c["plain"].get<std::vector<int32_t>>() &&
                dec == c["decode"].get<std::string>() && dec_skip == c["decode_skip"].get<std::string>();
      if (!ok && ++failures <= 8) {
        ADD_FAILURE() << rec["patch"].dump().substr(0, 300) << "\n  text " << json(text).dump() << "\n  hf ids "
                      << c["ids"].dump() << " decode " << c["decode"].dump() << " / " << c["decode_skip"].dump()
                      << "\n  anvil  " << json(ids).dump() << " decode " << json(dec).dump() << " / "
                      << json(dec_skip).dump();
      }
    }
  }
  EXPECT_GT(cases, 1000);
  EXPECT_EQ(failures, 0);
}

TEST(TokenizerComponents, MergesAsArraysEqualMergesAsStrings) {
  json j = base_json("llama3");
  ASSERT_TRUE(j["model"]["merges"][0].is_string());
  auto as_strings = Tokenizer::from_json(j.dump());
  json arrays = json::array();
  for (const auto& m : j["model"]["merges"]) {
    std::string s = m.get<std::string>();
    size_t sp = s.find(' ');
    arrays.push_back(json::array({s.substr(0, sp), s.substr(sp + 1)}));
  }
  j["model"]["merges"] = arrays;
  auto as_arrays = Tokenizer::from_json(j.dump());
  ASSERT_TRUE(as_strings.is_ok() && as_arrays.is_ok());
  const std::string text = "Merges in either form give the same ids: 12345, naïve, 你好.";
  auto ids = (*as_strings)->encode(text);
  EXPECT_GT(ids.size(), 10u);
  EXPECT_EQ(ids, (*as_arrays)->encode(text));
}

TEST(TokenizerLoad, RejectsCorruptJson) {
  std::string text = read_text(tokenizer_dir("llama2") + "/tokenizer.json");
  auto r = Tokenizer::from_json(text.substr(0, text.size() / 2), {}, "cut/tokenizer.json");
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(r.status().message().find("cut/tokenizer.json"), std::string::npos) << r.status().message();
}

TEST(TokenizerLoad, NamesUnsupportedComponents) {
  const json base = base_json("llama3");
  struct Patch {
    const char* field;
    json value;
    const char* expect;
  };
  const std::vector<Patch> patches = {
      {"pre_tokenizer", json{{"type", "Whitespace"}}, "pre_tokenizer type \"Whitespace\" is not supported"},
      {"normalizer", json{{"type", "Precompiled"}, {"precompiled_charsmap", "AA=="}}, "normalizer type \"Precompiled\" is not supported"},
      {"decoder", json{{"type", "WordPiece"}, {"prefix", "##"}}, "decoder type \"WordPiece\" is not supported"},
      {"post_processor", json{{"type", "RobertaProcessing"}}, "post_processor type \"RobertaProcessing\" is not supported"},
  };
  for (const auto& p : patches) {
    json j = base;
    j[p.field] = p.value;
    auto r = Tokenizer::from_json(j.dump());
    ASSERT_FALSE(r.is_ok()) << p.field;
    EXPECT_EQ(r.status().code(), StatusCode::kUnsupported);
    EXPECT_EQ(r.status().message(), std::string("tokenizer.json: ") + p.expect);
  }
  json j = base;
  j["model"]["type"] = "WordPiece";
  auto r = Tokenizer::from_json(j.dump());
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("model type \"WordPiece\" is not supported"), std::string::npos);
}

TEST(TokenizerLoad, RejectsBadFields) {
  json j = base_json("llama2");
  j["model"]["merges"][5] = "nosuchtoken \xE2\x96\x81t";
  auto r = Tokenizer::from_json(j.dump());
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("model.merges[5]"), std::string::npos) << r.status().message();

  json k = base_json("llama3");
  k["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(unclosed";
  r = Tokenizer::from_json(k.dump());
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("(unclosed"), std::string::npos) << r.status().message();

  json m = base_json("llama3");
  m["added_tokens"][0]["id"] = "zero";
  r = Tokenizer::from_json(m.dump());
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("added_tokens"), std::string::npos) << r.status().message();

  auto missing = Tokenizer::load("/nonexistent/dir");
  ASSERT_FALSE(missing.is_ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
}

TEST(TokenizerQueries, VocabAndSpecialTokens) {
  const Tokenizer* llama3 = shared_tokenizer("llama3");
  const Tokenizer* qwen3 = shared_tokenizer("qwen3");
  const Tokenizer* llama2 = shared_tokenizer("llama2");
  const Tokenizer* gemma3 = shared_tokenizer("gemma3");
  ASSERT_TRUE(llama3 && qwen3 && llama2 && gemma3);
  EXPECT_EQ(llama3->vocab_size(), 128256);
  EXPECT_EQ(llama3->bos_id(), 128000);
  EXPECT_EQ(llama3->eos_id(), 128001);
  EXPECT_EQ(llama3->token_to_id("<|eot_id|>"), 128009);
  EXPECT_EQ(llama3->id_to_token(128009), "<|eot_id|>");
  EXPECT_TRUE(llama3->is_special(128009));
  EXPECT_FALSE(llama3->is_special(1000));
  EXPECT_EQ(llama3->token_to_id("no such token"), -1);
  EXPECT_EQ(llama3->id_to_token(-5), "");
  EXPECT_EQ(llama3->special_ids().size(), 256u);
  EXPECT_EQ(qwen3->bos_id(), -1);
  EXPECT_EQ(qwen3->eos_id(), qwen3->token_to_id("<|im_end|>"));
  EXPECT_EQ(qwen3->pad_id(), qwen3->token_to_id("<|endoftext|>"));
  EXPECT_EQ(llama2->vocab_size(), 32000);
  EXPECT_EQ(llama2->bos_id(), 1);
  EXPECT_TRUE(llama2->add_bos_token());
  EXPECT_EQ(llama2->encode("hi", true).front(), 1);
  EXPECT_EQ(gemma3->vocab_size(), 262145);  // HF get_vocab_size(True): <image_soft_token> is 262144
  EXPECT_EQ(gemma3->bos_id(), 2);
  EXPECT_EQ(gemma3->eos_id(), gemma3->token_to_id("<end_of_turn>"));
}

TEST(TokenizerInput, InvalidUtf8IsReplacedNotFatal) {
  // Each invalid input encodes exactly as its errors="replace" decoding does.
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"a\xFF" "b", "a\xEF\xBF\xBD" "b"},
      {"\xE4\xBD", "\xEF\xBF\xBD"},                                   // truncated 3-byte sequence: one U+FFFD
      {"\xED\xA0\x80", "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"},       // surrogate: three
      {"\xF0\x9F\x98", "\xEF\xBF\xBD"},                               // truncated emoji
      {"\xC0\xAF", "\xEF\xBF\xBD\xEF\xBF\xBD"},                       // overlong
      {std::string("x\0y", 3), std::string("x\0y", 3)},                 // NUL is valid
  };
  for (const auto& name : tokenizer_names()) {
    const Tokenizer* tok = shared_tokenizer(name);
    ASSERT_NE(tok, nullptr);
    for (const auto& [raw, fixed] : cases) {
      EXPECT_EQ(tok::utf8_sanitize(raw), fixed);
      EXPECT_EQ(tok->encode(raw), tok->encode(fixed)) << name;
      EXPECT_TRUE(tok::utf8_is_valid(tok->decode(tok->encode(raw)))) << name;
    }
  }
}

TEST(TokenizerThreads, ConcurrentEncodesMatchSerial) {
  const Tokenizer* tok = shared_tokenizer("qwen3");
  ASSERT_NE(tok, nullptr);
  std::vector<std::string> texts;
  for (const auto& line : read_reference_lines("corpus.jsonl")) texts.push_back(json::parse(line)["text"].get<std::string>());
  ASSERT_FALSE(texts.empty());
  std::vector<std::vector<int32_t>> serial;
  for (const auto& t : texts) serial.push_back(tok->encode(t));
  std::vector<int> mismatches(4, 0);
  std::vector<std::thread> threads;
  for (int w = 0; w < 4; ++w) {
    threads.emplace_back([&, w] {
      for (size_t i = static_cast<size_t>(w); i < texts.size() * 2; i += 3) {
        size_t k = (i * 7919) % texts.size();
        if (tok->encode(texts[k]) != serial[k]) ++mismatches[static_cast<size_t>(w)];
      }
    });
  }
  for (auto& t : threads) t.join();
  for (int w = 0; w < 4; ++w) EXPECT_EQ(mismatches[static_cast<size_t>(w)], 0) << "thread " << w;
}

TEST(TokenizerDecode, ArbitraryIdsNeverBreakUtf8) {
  for (const auto& name : tokenizer_names()) {
    const Tokenizer* tok = shared_tokenizer(name);
    ASSERT_NE(tok, nullptr);
    uint64_t state = 12345;
    for (int round = 0; round < 200; ++round) {
      std::vector<int32_t> ids;
      for (int k = 0; k < 16; ++k) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        ids.push_back(static_cast<int32_t>((state >> 33) % static_cast<uint64_t>(tok->vocab_size() + 10)) - 5);
      }
      EXPECT_TRUE(tok::utf8_is_valid(tok->decode(ids))) << name;
    }
  }
}

}  // namespace
}  // namespace anvil::test
