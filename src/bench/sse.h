// Incremental Server-Sent Events parser for streaming completions: bytes arrive in arbitrary
// pieces; each complete event (terminated by a blank line) yields its data payload, with the
// data lines of one event joined by '\n'. CRLF and LF line ends both work; comments (":...")
// and fields other than "data" are skipped. Holds at most one partial event.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace anvil::bench {

class SseParser {
 public:
  // Appends bytes; returns the data payloads of the events they completed, in order.
  std::vector<std::string> feed(std::string_view bytes);
  // Bytes held for an incomplete event.
  size_t pending_bytes() const { return buffer_.size(); }

 private:
  std::string buffer_;  // unconsumed bytes, starting at a line start
  std::string data_;    // data of the event being assembled
  bool has_data_ = false;
};

}  // namespace anvil::bench
