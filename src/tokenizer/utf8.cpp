// UTF-8 helpers: validation follows Unicode Table 3-7 exactly so that the U+FFFD substitution of
// invalid input matches Python's bytes.decode("utf-8", errors="replace") byte for byte.
#include "tokenizer/utf8.h"

#include <array>

namespace anvil::tok {

size_t utf8_valid_len(std::string_view s, size_t i) {
  const size_t n = s.size();
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char c = b(i);
  if (c < 0x80) return 1;
  if (c < 0xC2) return 0;
  if (c < 0xE0) return (i + 1 < n && (b(i + 1) & 0xC0) == 0x80) ? 2 : 0;
  if (c < 0xF0) {
    if (i + 1 >= n) return 0;
    unsigned char c1 = b(i + 1);
    unsigned char lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    if (c1 < lo || c1 > hi) return 0;
    return (i + 2 < n && (b(i + 2) & 0xC0) == 0x80) ? 3 : 0;
  }
  if (c < 0xF5) {
    if (i + 1 >= n) return 0;
    unsigned char c1 = b(i + 1);
    unsigned char lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    if (c1 < lo || c1 > hi) return 0;
    if (i + 2 >= n || (b(i + 2) & 0xC0) != 0x80) return 0;
    return (i + 3 < n && (b(i + 3) & 0xC0) == 0x80) ? 4 : 0;
  }
  return 0;
}

// Length of the maximal subpart of an ill-formed sequence at s[i] (>= 1): the longest prefix of
// a well-formed sequence that is present before the input breaks off.
static size_t maximal_subpart_len(std::string_view s, size_t i) {
  const size_t n = s.size();
  unsigned char c = static_cast<unsigned char>(s[i]);
  if (c < 0xC2 || c > 0xF4) return 1;
  size_t need = c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
  size_t k = 1;
  for (; k < need && i + k < n; ++k) {
    unsigned char ck = static_cast<unsigned char>(s[i + k]);
    unsigned char lo = 0x80, hi = 0xBF;
    if (k == 1) {
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    }
    if (ck < lo || ck > hi) break;
  }
  return k;
}

char32_t utf8_next(std::string_view s, size_t& i) {
  unsigned char c = static_cast<unsigned char>(s[i]);
  size_t len = utf8_lead_len(c);
  if (i + len > s.size()) len = 1;
  char32_t cp;
  switch (len) {
    case 2: cp = c & 0x1F; break;
    case 3: cp = c & 0x0F; break;
    case 4: cp = c & 0x07; break;
    default: ++i; return c;
  }
  for (size_t k = 1; k < len; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  i += len;
  return cp;
}

void utf8_append(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

bool utf8_is_valid(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    if (static_cast<unsigned char>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    size_t len = utf8_valid_len(s, i);
    if (len == 0) return false;
    i += len;
  }
  return true;
}

std::string utf8_sanitize(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 8);
  for (size_t i = 0; i < s.size();) {
    size_t len = utf8_valid_len(s, i);
    if (len > 0) {
      out.append(s.data() + i, len);
      i += len;
    } else {
      utf8_append(out, kReplacementChar);
      i += maximal_subpart_len(s, i);
    }
  }
  return out;
}

bool is_unicode_whitespace(char32_t c) {
  if (c <= 0x20) return c == 0x20 || (c >= 0x09 && c <= 0x0D);
  return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 ||
         c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

namespace {
struct ByteLevelTables {
  std::array<char32_t, 256> to_char{};
  std::array<std::string, 256> to_utf8;
  std::array<int16_t, 256 + 68> from_char{};
  ByteLevelTables() {
    from_char.fill(-1);
    int extra = 0;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      to_char[b] = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + extra++);
      utf8_append(to_utf8[b], to_char[b]);
      from_char[to_char[b]] = static_cast<int16_t>(b);
    }
  }
};
const ByteLevelTables& byte_tables() {
  static const ByteLevelTables t;
  return t;
}
}  // namespace

char32_t byte_level_char(uint8_t b) { return byte_tables().to_char[b]; }
std::string_view byte_level_utf8(uint8_t b) { return byte_tables().to_utf8[b]; }
int byte_level_byte(char32_t cp) {
  const auto& t = byte_tables();
  return cp < t.from_char.size() ? t.from_char[cp] : -1;
}

}  // namespace anvil::tok
