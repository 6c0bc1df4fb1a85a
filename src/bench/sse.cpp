// SSE line handling per the WHATWG event-stream rules, limited to what OpenAI streams use.
#include "bench/sse.h"

namespace anvil::bench {

std::vector<std::string> SseParser::feed(std::string_view bytes) {
  buffer_.append(bytes.data(), bytes.size());
  std::vector<std::string> events;
  size_t pos = 0;
  while (true) {
    const size_t nl = buffer_.find('\n', pos);
    if (nl == std::string::npos) break;
    size_t end = nl;
    if (end > pos && buffer_[end - 1] == '\r') --end;
    const std::string_view line(buffer_.data() + pos, end - pos);
    pos = nl + 1;
    if (line.empty()) {  // blank line: dispatch
      if (has_data_) events.push_back(std::move(data_));
      data_.clear();
      has_data_ = false;
      continue;
    }
    if (line.front() == ':') continue;  // comment / keep-alive
    const size_t colon = line.find(':');
    const std::string_view field = line.substr(0, colon);
    std::string_view value = colon == std::string_view::npos ? std::string_view() : line.substr(colon + 1);
    if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
    if (field != "data") continue;
    if (has_data_) data_ += '\n';
    data_.append(value.data(), value.size());
    has_data_ = true;
  }
  buffer_.erase(0, pos);
  return events;
}

}  // namespace anvil::bench
