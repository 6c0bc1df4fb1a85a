// IncrementalDecoder: streaming the reference corpus id by id must reproduce Tokenizer::decode,
// every chunk must be valid UTF-8, and split characters must be held back until complete.
#include "tokenizer/incremental_decoder.h"

#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tokenizer/utf8.h"
#include "tokenizer_test_util.h"

namespace anvil::test {
namespace {

class IncrementalTest : public ::testing::TestWithParam<std::string> {};

TEST_P(IncrementalTest, ConcatenationEqualsDecodeOnCorpus) {
  const Tokenizer* tok = shared_tokenizer(GetParam());
  ASSERT_NE(tok, nullptr);
  auto refs = read_reference_lines(GetParam() + ".jsonl");
  ASSERT_GE(refs.size(), 2000u);
  int checked = 0, failures = 0;
  for (size_t i = 0; i < refs.size(); ++i) {
    auto ids = nlohmann::json::parse(refs[i])["ids"].get<std::vector<int32_t>>();
    for (bool skip : {false, true}) {
      IncrementalDecoder dec(*tok, skip);
      std::string all;
      for (int32_t id : ids) {
        std::string chunk = dec.add(id);
        ASSERT_TRUE(tok::utf8_is_valid(chunk)) << "case " << i << " emitted broken UTF-8";
        all += chunk;
      }
      all += dec.finish();
      std::string expect = tok->decode(ids, skip);
      if (expect.find("\xEF\xBF\xBD") != std::string::npos) continue;  // incomplete bytes in the ids
      ++checked;
      if (all != expect && ++failures <= 5) {
        ADD_FAILURE() << GetParam() << " case " << i << " skip=" << skip << "\n  decode: " << nlohmann::json(expect).dump()
                      << "\n  stream: " << nlohmann::json(all).dump();
      }
    }
  }
  EXPECT_GT(checked, 3000);
  EXPECT_EQ(failures, 0);
}

INSTANTIATE_TEST_SUITE_P(AllTokenizers, IncrementalTest, ::testing::ValuesIn(tokenizer_names()),
                         [](const auto& info) { return info.param; });

TEST(IncrementalDecoder, HoldsBackByteFallbackPiecesUntilTheCharacterCompletes) {
  const Tokenizer* tok = shared_tokenizer("llama2");
  ASSERT_NE(tok, nullptr);
  auto ids = tok->encode("ok 🤖!", false);
  // llama2 has no token for U+1F916, so it is spelled with four byte-fallback tokens.
  size_t first_byte = 0;
  while (first_byte < ids.size() && tok->id_to_token(ids[first_byte]).rfind("<0x", 0) != 0) ++first_byte;
  ASSERT_LE(first_byte + 4, ids.size());
  EXPECT_EQ(tok->id_to_token(ids[first_byte]), "<0xF0>");
  IncrementalDecoder dec(*tok);
  std::vector<std::string> chunks;
  for (int32_t id : ids) chunks.push_back(dec.add(id));
  chunks.push_back(dec.finish());
  for (size_t k = first_byte; k < first_byte + 3; ++k) EXPECT_EQ(chunks[k], "") << "token " << k;
  EXPECT_EQ(chunks[first_byte + 3], "🤖");
  EXPECT_EQ(dec.text(), "ok 🤖!");
}

TEST(IncrementalDecoder, KeepsMetaspaceSpacesBetweenWords) {
  for (const char* name : {"llama2", "gemma3"}) {
    const Tokenizer* tok = shared_tokenizer(name);
    ASSERT_NE(tok, nullptr);
    const std::string text = "Hello  world, how are you?";
    auto ids = tok->encode(text, false);
    IncrementalDecoder dec(*tok);
    std::string all;
    for (int32_t id : ids) all += dec.add(id);
    all += dec.finish();
    EXPECT_EQ(all, tok->decode(ids)) << name;
    EXPECT_EQ(all, text) << name;
  }
}

TEST(IncrementalDecoder, MultiTokenCharactersInByteLevelVocab) {
  const Tokenizer* tok = shared_tokenizer("llama3");
  ASSERT_NE(tok, nullptr);
  const std::string text = "家族👨‍👩‍👧‍👦 and 𝔘𝔫𝔦";
  auto ids = tok->encode(text, false);
  IncrementalDecoder dec(*tok);
  std::string all;
  int empty_chunks = 0;
  for (int32_t id : ids) {
    std::string c = dec.add(id);
    EXPECT_TRUE(tok::utf8_is_valid(c));
    if (c.empty()) ++empty_chunks;
    all += c;
  }
  all += dec.finish();
  EXPECT_EQ(all, text);
  EXPECT_GT(empty_chunks, 0) << "expected some characters to span several byte-level tokens";
}

TEST(IncrementalDecoder, UnknownAndSkippedIdsDoNotForceOutPartialCharacters) {
  // Found by tests/fuzz/tokenizer_fuzz.cpp: ids that decode to nothing must not count toward
  // the pending-token limit, or a split character is emitted as U+FFFD too early.
  for (const char* name : {"llama2", "llama3"}) {
    const Tokenizer* tok = shared_tokenizer(name);
    ASSERT_NE(tok, nullptr);
    const bool byte_level = std::string(name) == "llama3";
    // U+0319 (2 bytes: CC 99) as two raw byte tokens.
    int32_t lead = tok->token_to_id(byte_level ? std::string(tok::byte_level_utf8(0xCC)) : "<0xCC>");
    int32_t tail = tok->token_to_id(byte_level ? std::string(tok::byte_level_utf8(0x99)) : "<0x99>");
    ASSERT_GE(lead, 0);
    ASSERT_GE(tail, 0);
    const int32_t unknown = static_cast<int32_t>(tok->vocab_size() + 7);
    const int32_t special = byte_level ? 128000 : 1;
    std::vector<int32_t> ids = {lead, unknown, -1, special, special, special, special, unknown, tail};
    for (bool skip : {true, false}) {
      IncrementalDecoder dec(*tok, skip);
      std::string all;
      for (int32_t id : ids) all += dec.add(id);
      all += dec.finish();
      std::string expect = tok->decode(ids, skip);
      if (skip) {
        EXPECT_EQ(expect, "\xCC\x99") << name;
        EXPECT_EQ(all, expect) << name;
      }
      EXPECT_TRUE(tok::utf8_is_valid(all));
    }
  }
}

TEST(IncrementalDecoder, InvalidBytesAreReleasedAfterTheLimit) {
  const Tokenizer* tok = shared_tokenizer("llama2");
  ASSERT_NE(tok, nullptr);
  int32_t lone = tok->token_to_id("<0xE4>");
  int32_t a = tok->token_to_id("a");
  ASSERT_GE(lone, 0);
  ASSERT_GE(a, 0);
  IncrementalDecoder dec(*tok);
  std::string all;
  for (int k = 0; k < 6; ++k) all += dec.add(lone);
  all += dec.add(a);
  all += dec.finish();
  EXPECT_EQ(all, tok->decode(std::vector<int32_t>{lone, lone, lone, lone, lone, lone, a}));
}

}  // namespace
}  // namespace anvil::test
