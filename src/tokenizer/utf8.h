// UTF-8 helpers shared by the tokenizer: decoding one code point, validation, replacement of
// invalid sequences by U+FFFD (maximal-subpart rule, as Python's errors="replace" and Rust's
// from_utf8_lossy do), and the GPT-2 byte <-> printable-character table used by ByteLevel.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace anvil::tok {

inline constexpr char32_t kReplacementChar = 0xFFFD;

// Length in bytes of the well-formed UTF-8 sequence starting at s[i], or 0 if it is ill-formed
// or truncated. Follows Unicode Table 3-7 (no overlongs, no surrogates, <= U+10FFFF).
size_t utf8_valid_len(std::string_view s, size_t i);

// Decodes the code point at s[i] (which must start a well-formed sequence) and advances i.
char32_t utf8_next(std::string_view s, size_t& i);

// Byte length of a code point's lead byte for valid UTF-8 (1 for continuation bytes).
inline size_t utf8_lead_len(unsigned char c) {
  return c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 1;
}

void utf8_append(std::string& out, char32_t cp);

bool utf8_is_valid(std::string_view s);

// Returns s with every maximal ill-formed subpart replaced by U+FFFD.
std::string utf8_sanitize(std::string_view s);

// Unicode White_Space property (what Rust's char::is_whitespace tests).
bool is_unicode_whitespace(char32_t cp);

// GPT-2 byte-level alphabet: byte b is shown as the code point byte_to_char(b); char_to_byte
// inverts it (-1 for code points outside the alphabet).
char32_t byte_level_char(uint8_t b);
int byte_level_byte(char32_t cp);
// UTF-8 encoding of byte_level_char(b), precomputed.
std::string_view byte_level_utf8(uint8_t b);

}  // namespace anvil::tok
