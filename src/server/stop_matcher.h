// StopMatcher: finds OpenAI `stop` strings in generated text that arrives piece by piece, so a
// stop string split across tokens is still found. Text is released only once no stop string can
// start in it: the longest suffix that is a proper prefix of some stop string is held back.
// The stop string itself and everything after it are never released.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace anvil::server {

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
  bool empty() const { return stops_.empty(); }

 private:
  size_t held_suffix_len() const;

  std::vector<std::string> stops_;
  std::string pending_;  // unreleased text; no stop string starts before its held-back suffix
  bool stopped_ = false;
};

}  // namespace anvil::server
