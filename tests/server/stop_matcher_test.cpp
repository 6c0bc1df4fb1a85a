// StopMatcher and ChoiceStream: stop strings found across piece boundaries and never released;
// held-back text released at the end; incremental detokenization of a real byte-level tokenizer
// (tests/server/data/chat_model) reproduces HF's decode of the fixture's greedy ids, multi-byte
// characters split over tokens included.
#include <gtest/gtest.h>

#include "server/choice_stream.h"
#include "server/stop_matcher.h"
#include "tokenizer/incremental_decoder.h"
#include "server_test_util.h"

namespace anvil::server::test {
namespace {

std::string feed_all(StopMatcher& m, const std::vector<std::string>& pieces, bool* stopped) {
  std::string out;
  *stopped = false;
  for (const auto& p : pieces) {
    auto step = m.add(p);
    out += step.released;
    if (step.stopped) {
      *stopped = true;
      return out;
    }
  }
  return out + m.flush();
}

TEST(StopMatcher, NoStopsReleasesEverythingAtOnce) {
  StopMatcher m({});
  EXPECT_EQ(m.add("abc").released, "abc");
  EXPECT_EQ(m.add("").released, "");
  EXPECT_EQ(m.flush(), "");
}

TEST(StopMatcher, StopSpanningPiecesIsCutAndNotIncluded) {
  StopMatcher m({"END"});
  bool stopped = false;
  EXPECT_EQ(feed_all(m, {"hello E", "N", "D tail"}, &stopped), "hello ");
  EXPECT_TRUE(stopped);
  EXPECT_EQ(m.add("more").released, "");  // ignored after the stop
}

TEST(StopMatcher, HoldsBackOnlyAPossibleStopPrefix) {
  StopMatcher m({"xyz"});
  auto s1 = m.add("abcx");
  EXPECT_EQ(s1.released, "abc");  // "x" may start "xyz"
  auto s2 = m.add("yq");
  EXPECT_EQ(s2.released, "xyq");  // "xyq" cannot
  EXPECT_FALSE(s2.stopped);
  auto s3 = m.add("xy");
  EXPECT_EQ(s3.released, "");
  EXPECT_EQ(m.flush(), "xy");  // end of generation releases the held text
}

TEST(StopMatcher, EarliestOfSeveralStopsWins) {
  StopMatcher m({"world", "lo w"});
  bool stopped = false;
  EXPECT_EQ(feed_all(m, {"hel", "lo wor", "ld"}, &stopped), "hel");
  EXPECT_TRUE(stopped);
}

TEST(StopMatcher, StopInsideOnePieceAndEmptyStopsIgnored) {
  StopMatcher m({"", "\n\n"});
  auto s = m.add("line one\n\nline two");
  EXPECT_TRUE(s.stopped);
  EXPECT_EQ(s.released, "line one");
}

TEST(StopMatcher, MultiByteStopStrings) {
  StopMatcher m({"é!"});
  bool stopped = false;
  // "é" is C3 A9; split mid-character across pieces as a byte-level tokenizer might not, but the
  // matcher works on bytes either way.
  EXPECT_EQ(feed_all(m, {"caf\xC3", "\xA9", "!!"}, &stopped), "caf");
  EXPECT_TRUE(stopped);
}

struct ChatFixture {
  json expected = read_json_file(source_path("tests/server/data/chat_model/expected.json"));
  std::unique_ptr<Tokenizer> tokenizer;
  ChatFixture() {
    auto t = Tokenizer::load(source_path("tests/server/data/chat_model"));
    EXPECT_TRUE(t.is_ok()) << t.status().to_string();
    if (t.is_ok()) tokenizer = std::move(t).value();
  }
};

Output token_output(int32_t token, bool finished) {
  Output o;
  o.tokens = {token};
  o.logprobs = {-0.25f};
  o.finished = finished;
  o.finish_reason = finished ? FinishReason::kLength : FinishReason::kNone;
  return o;
}

TEST(ChoiceStream, IncrementalTextEqualsHfDecode) {
  ChatFixture f;
  ASSERT_NE(f.tokenizer, nullptr);
  auto ids = f.expected.at("greedy_ids").get<std::vector<int32_t>>();
  ChoiceStream c(f.tokenizer.get(), {}, true, true);
  std::string text;
  size_t num_logprobs = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    ChoiceDelta d = c.on_output(token_output(ids[i], i + 1 == ids.size()));
    text += d.text;
    num_logprobs += d.logprobs.size();
    EXPECT_EQ(d.finished, i + 1 == ids.size());
  }
  EXPECT_EQ(text, f.expected.at("greedy_text").get<std::string>());
  EXPECT_EQ(num_logprobs, ids.size());
  EXPECT_EQ(c.finish_reason(), "length");
  EXPECT_EQ(c.num_generated_tokens(), static_cast<int32_t>(ids.size()));
}

// The executor matches stop strings (executor/stop_matcher.h) over the text of the decoder the
// server hands it; ChoiceStream relays the executor's text.
class TestDecoder final : public TextDecoder {
 public:
  explicit TestDecoder(const Tokenizer& t) : d_(t, true) {}
  std::string add(int32_t token) override { return d_.add(token); }
  std::string finish() override { return d_.finish(); }

 private:
  IncrementalDecoder d_;
};

TEST(ChoiceStream, StopStringAcrossTokensEndsTheChoice) {
  ChatFixture f;
  ASSERT_NE(f.tokenizer, nullptr);
  auto ids = f.expected.at("greedy_ids").get<std::vector<int32_t>>();
  const std::string stop = f.expected.at("stop").get<std::string>();
  StopStringChecker checker(std::make_unique<TestDecoder>(*f.tokenizer), {"never-appears", stop});
  ChoiceStream c(f.tokenizer.get(), {stop}, true, false);
  std::string text;
  size_t consumed = 0;
  for (size_t i = 0; i < ids.size() && !c.finished(); ++i) {
    // What the executor sends: the token, its released text, and the end at the stop string.
    StopMatcher::Step step = checker.add(ids[i]);
    Output o = token_output(ids[i], i + 1 == ids.size() || step.stopped);
    o.text = step.released;
    if (step.stopped) {
      o.finish_reason = FinishReason::kStop;
      o.stop_reason = checker.matched();
    }
    ChoiceDelta d = c.on_output(o);
    text += d.text;
    ++consumed;
  }
  EXPECT_EQ(text, f.expected.at("stop_text").get<std::string>());
  EXPECT_EQ(checker.matched(), stop);
  EXPECT_EQ(c.finish_reason(), "stop");
  EXPECT_LT(consumed, ids.size());
  EXPECT_EQ(c.num_generated_tokens(), static_cast<int32_t>(consumed));
  // A later Output (none should come) is ignored.
  Output late;
  late.finished = true;
  late.finish_reason = FinishReason::kCancelled;
  ChoiceDelta d = c.on_output(late);
  EXPECT_FALSE(d.finished);
  EXPECT_TRUE(d.text.empty());
}

}  // namespace
}  // namespace anvil::server::test
