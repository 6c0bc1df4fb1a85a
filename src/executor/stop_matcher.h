// StopMatcher: finds OpenAI `stop` strings in generated text that arrives piece by piece, so a
// stop string split across tokens is still found. Text is released only once no stop string can
// start in it: the longest suffix that is a proper prefix of some stop string is held back.
// The stop string itself and everything after it are never released.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "anvil/request.h"

namespace anvil {

class StopMatcher {
 public:
  explicit StopMatcher(std::vector<std::string> stops);

  struct Step {
    std::string released;  // text now safe to send
    bool stopped = false;  // a stop string was found; `released` ends just before it
  };
  // Appends a piece of text. After a stop, further pieces are ignored.
  Step add(std::string_view piece);
  // End of generation without a stop: releases the held-back text.
  std::string flush();

  bool stopped() const { return stopped_; }
  const std::string& matched() const { return matched_; }
  bool empty() const { return stops_.empty(); }

 private:
  size_t held_suffix_len() const;

  std::vector<std::string> stops_;
  std::string pending_;  // unreleased text; no stop string starts before its held-back suffix
  std::string matched_;   // the stop string found
  bool stopped_ = false;
};

// The executor's stop-string state of one sequence: its detokenizer feeding a StopMatcher.
// Only sequences whose request has stop strings get one.
class StopStringChecker {
 public:
  StopStringChecker(std::unique_ptr<TextDecoder> decoder, std::vector<std::string> stops)
      : decoder_(std::move(decoder)), matcher_(std::move(stops)) {}
  // Feeds a generated token: text now safe to release, and whether a stop string completed.
  StopMatcher::Step add(int32_t token) { return matcher_.add(decoder_->add(token)); }
  // Feeds a token whose text is not searched (before min_tokens): all of it is released.
  StopMatcher::Step add_unmatched(int32_t token) {
    StopMatcher::Step s;
    s.released = decoder_->add(token);
    return s;
  }
  // End of the sequence without a stop string so far: the held-back text (which may still
  // complete a stop string, then `stopped` is set and the text ends before it).
  StopMatcher::Step finish() {
    StopMatcher::Step s = matcher_.add(decoder_->finish());
    if (!s.stopped) s.released += matcher_.flush();
    return s;
  }
  // The stop string that matched (valid once stopped).
  const std::string& matched() const { return matcher_.matched(); }

 private:
  std::unique_ptr<TextDecoder> decoder_;
  StopMatcher matcher_;
};

}  // namespace anvil
