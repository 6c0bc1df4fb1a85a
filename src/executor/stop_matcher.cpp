// StopMatcher (see stop_matcher.h). Invariant: released text never contains the start of a stop
// string, so a search over `pending_` alone finds every match.
#include "executor/stop_matcher.h"

#include <algorithm>

namespace anvil {

StopMatcher::StopMatcher(std::vector<std::string> stops) : stops_(std::move(stops)) {
  stops_.erase(std::remove_if(stops_.begin(), stops_.end(), [](const std::string& s) { return s.empty(); }),
               stops_.end());
}

size_t StopMatcher::held_suffix_len() const {
  size_t best = 0;
  for (const std::string& s : stops_) {
    size_t max_k = std::min(pending_.size(), s.size() - 1);
    for (size_t k = max_k; k > best; --k) {
      if (std::string_view(pending_).substr(pending_.size() - k) == std::string_view(s).substr(0, k)) {
        best = k;
        break;
      }
    }
  }
  return best;
}

StopMatcher::Step StopMatcher::add(std::string_view piece) {
  Step step;
  if (stopped_) return step;
  pending_.append(piece);
  if (stops_.empty()) {
    step.released.swap(pending_);
    return step;
  }
  size_t first = std::string::npos;
  for (const std::string& s : stops_) {
    const size_t at = pending_.find(s);
    if (at < first) {
      first = at;
      matched_ = s;
    }
  }
  if (first != std::string::npos) {
    step.released = pending_.substr(0, first);
    step.stopped = true;
    stopped_ = true;
    pending_.clear();
    return step;
  }
  size_t keep = held_suffix_len();
  step.released = pending_.substr(0, pending_.size() - keep);
  pending_.erase(0, pending_.size() - keep);
  return step;
}

std::string StopMatcher::flush() {
  std::string out;
  if (!stopped_) out.swap(pending_);
  return out;
}

}  // namespace anvil
