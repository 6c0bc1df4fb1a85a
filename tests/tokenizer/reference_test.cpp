// Checks anvil's tokenizer against HF `tokenizers` on the committed reference corpus (made by
// tools/tokenizer/make_reference.py): exact ids with and without special tokens, exact decodes,
// and the round trip decode(encode(x)) == x wherever HF's own round trip holds.
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tokenizer_test_util.h"

namespace anvil::test {
namespace {

struct Case {
  std::string input;  // raw bytes (may be invalid UTF-8)
  std::string text;   // input with invalid UTF-8 replaced (what HF saw)
  std::vector<int32_t> ids, plain;
  std::string decode, decode_skip;
  bool roundtrip = false;
};

std::string from_hex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) out += static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
  return out;
}

std::vector<Case> load_cases(const std::string& name) {
  std::vector<Case> cases;
  auto corpus = read_reference_lines("corpus.jsonl");
  auto refs = read_reference_lines(name + ".jsonl");
  EXPECT_GE(corpus.size(), 2000u);
  EXPECT_EQ(corpus.size(), refs.size());
  for (size_t i = 0; i < corpus.size() && i < refs.size(); ++i) {
    auto c = nlohmann::json::parse(corpus[i]);
    auto r = nlohmann::json::parse(refs[i]);
    Case k;
    k.input = c.contains("raw_hex") ? from_hex(c["raw_hex"].get<std::string>()) : c["text"].get<std::string>();
    k.text = c["text"].get<std::string>();
    k.ids = r["ids"].get<std::vector<int32_t>>();
    k.plain = r["plain"].get<std::vector<int32_t>>();
    k.decode = r["decode"].get<std::string>();
    k.decode_skip = r["decode_skip"].get<std::string>();
    k.roundtrip = r["roundtrip"].get<bool>();
    cases.push_back(std::move(k));
  }
  return cases;
}

std::string show(const std::vector<int32_t>& v) {
  return nlohmann::json(v).dump();
}

class ReferenceTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ReferenceTest, EncodeMatchesHf) {
  const Tokenizer* tok = shared_tokenizer(GetParam());
  ASSERT_NE(tok, nullptr);
  auto cases = load_cases(GetParam());
  ASSERT_FALSE(cases.empty());
  int failures = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    auto ids = tok->encode(c.input, true);
    auto plain = tok->encode(c.input, false);
    if (ids != c.ids || plain != c.plain) {
      if (++failures <= 5) {
        ADD_FAILURE() << GetParam() << " case " << i << " text " << nlohmann::json(tok->decode(plain)).dump()
                      << "\n  hf:    " << show(c.plain) << "\n  anvil: " << show(plain);
      }
    }
  }
  EXPECT_EQ(failures, 0) << "of " << cases.size() << " strings";
}

TEST_P(ReferenceTest, DecodeMatchesHf) {
  const Tokenizer* tok = shared_tokenizer(GetParam());
  ASSERT_NE(tok, nullptr);
  auto cases = load_cases(GetParam());
  int failures = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    std::string d = tok->decode(c.ids, false), ds = tok->decode(c.ids, true);
    if (d != c.decode || ds != c.decode_skip) {
      if (++failures <= 5) {
        ADD_FAILURE() << GetParam() << " case " << i << "\n  hf:    " << nlohmann::json(c.decode).dump() << " / "
                      << nlohmann::json(c.decode_skip).dump() << "\n  anvil: " << nlohmann::json(d).dump() << " / "
                      << nlohmann::json(ds).dump();
      }
    }
  }
  EXPECT_EQ(failures, 0) << "of " << cases.size() << " strings";
}

TEST_P(ReferenceTest, RoundTripWhereHfRoundTrips) {
  const Tokenizer* tok = shared_tokenizer(GetParam());
  ASSERT_NE(tok, nullptr);
  auto cases = load_cases(GetParam());
  int checked = 0, failures = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    if (!c.roundtrip) continue;
    ++checked;
    if (tok->decode(tok->encode(c.input, false)) != c.text) {
      if (++failures <= 5) ADD_FAILURE() << GetParam() << " case " << i << ": " << nlohmann::json(c.text).dump();
    }
  }
  EXPECT_GT(checked, 1000) << "too few round-trip cases; the corpus changed?";
  EXPECT_EQ(failures, 0);
}

INSTANTIATE_TEST_SUITE_P(AllTokenizers, ReferenceTest, ::testing::ValuesIn(tokenizer_names()),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace anvil::test
