// Template lexer (see lexer.h). Mirrors jinja2/lexer.py: a tag's `-` strips all whitespace on
// that side; lstrip_blocks removes the indentation before {% and {# when only whitespace precedes
// the tag on its line; trim_blocks drops one newline after %} and #}, never after }}.
#include "tokenizer/jinja/lexer.h"

#include <cctype>

#include "tokenizer/jinja/py_string.h"

namespace anvil::jinja {

std::string describe(const SourcePos& pos) {
  return "line " + std::to_string(pos.line) + ", column " + std::to_string(pos.column);
}

namespace {

// Python's str.rstrip() / `\s` over UTF-8 text.
size_t rstrip_whitespace_end(const std::string& s) {
  const std::u32string cps = decode_utf8(s);
  size_t e = cps.size();
  while (e > 0 && py_isspace(cps[e - 1])) --e;
  return encode_utf8(std::u32string_view(cps).substr(0, e)).size();
}
bool all_whitespace(std::string_view s) {
  for (char32_t c : decode_utf8(s))
    if (!py_isspace(c)) return false;
  return true;
}

class Lexer {
 public:
  Lexer(std::string src, LexOptions opts) : src_(std::move(src)), opts_(opts) {
    line_starts_.push_back(0);
    for (size_t i = 0; i < src_.size(); ++i)
      if (src_[i] == '\n') line_starts_.push_back(i + 1);
  }

  Result<std::vector<Segment>> run() {
    size_t pos = 0;
    bool line_starting = true;
    while (pos < src_.size()) {
      const size_t tag = find_tag(pos);
      std::string text = src_.substr(pos, (tag == std::string::npos ? src_.size() : tag) - pos);
      if (tag == std::string::npos) {
        add_text(std::move(text), pos);
        break;
      }
      const char kind = src_[tag + 1];  // '{', '%' or '#'
      const char sign = tag + 2 < src_.size() ? src_[tag + 2] : '\0';
      if (sign == '-') {
        text.resize(rstrip_whitespace_end(text));
      } else if (sign != '+' && opts_.lstrip_blocks && kind != '{') {
        const size_t nl = text.rfind('\n');
        const size_t l_pos = nl == std::string::npos ? 0 : nl + 1;
        if ((l_pos > 0 || line_starting) && l_pos < text.size() && all_whitespace(std::string_view(text).substr(l_pos)))
          text.resize(l_pos);
      }
      add_text(std::move(text), pos);
      size_t body = tag + 2 + ((sign == '-' || sign == '+') ? 1 : 0);
      size_t end = 0;
      if (kind == '#') {
        ANVIL_ASSIGN_OR_RETURN(end, lex_comment(tag, body));
      } else if (kind == '%' && is_raw_begin(body)) {
        ANVIL_ASSIGN_OR_RETURN(end, lex_raw(tag, body));
      } else {
        ANVIL_ASSIGN_OR_RETURN(end, lex_tag(tag, body, kind == '{'));
      }
      line_starting = end > 0 && src_[end - 1] == '\n';
      pos = end;
    }
    return std::move(segments_);
  }

 private:
  SourcePos pos_of(size_t offset) const {
    size_t lo = 0;
    size_t hi = line_starts_.size();
    while (hi - lo > 1) {
      const size_t mid = (lo + hi) / 2;
      if (line_starts_[mid] <= offset) {
        lo = mid;
      } else {
        hi = mid;
      }
    }
    return SourcePos{static_cast<int>(lo + 1), static_cast<int>(offset - line_starts_[lo] + 1)};
  }
  Status error(size_t offset, const std::string& what) const {
    return invalid_argument("chat template syntax error at " + describe(pos_of(offset)) + ": " + what);
  }

  size_t find_tag(size_t from) const {
    for (size_t i = from; i + 1 < src_.size(); ++i)
      if (src_[i] == '{' && (src_[i + 1] == '{' || src_[i + 1] == '%' || src_[i + 1] == '#')) return i;
    return std::string::npos;
  }

  void add_text(std::string text, size_t offset) {
    if (text.empty()) return;
    Segment seg;
    seg.kind = SegmentKind::kText;
    seg.text = std::move(text);
    seg.pos = pos_of(offset);
    segments_.push_back(std::move(seg));
  }

  // After a block/comment end: `-` eats all following whitespace, `+` nothing, else trim_blocks
  // eats one newline.
  size_t after_block_end(size_t end, char sign) const {
    if (sign == '-') {
      while (end < src_.size()) {
        const size_t start = end;
        // Whitespace may be multi-byte; decode one code point at a time.
        const auto b = static_cast<unsigned char>(src_[end]);
        const size_t len = b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
        if (end + len > src_.size()) break;
        const std::u32string cp = decode_utf8(std::string_view(src_).substr(end, len));
        if (cp.size() != 1 || !py_isspace(cp[0])) break;
        end = start + len;
      }
      return end;
    }
    if (sign != '+' && opts_.trim_blocks && end < src_.size() && src_[end] == '\n') return end + 1;
    return end;
  }

  Result<size_t> lex_comment(size_t tag, size_t body) {
    const size_t close = src_.find("#}", body);
    if (close == std::string::npos) return error(tag, "missing end of comment tag '#}'");
    const char sign = close > body ? src_[close - 1] : '\0';
    return after_block_end(close + 2, sign == '-' || sign == '+' ? sign : '\0');
  }

  bool is_raw_begin(size_t body) const {
    size_t i = body;
    while (i < src_.size() && std::isspace(static_cast<unsigned char>(src_[i]))) ++i;
    if (src_.compare(i, 3, "raw") != 0) return false;
    i += 3;
    while (i < src_.size() && std::isspace(static_cast<unsigned char>(src_[i]))) ++i;
    return src_.compare(i, 2, "%}") == 0 || src_.compare(i, 3, "-%}") == 0;
  }

  Result<size_t> lex_raw(size_t tag, size_t body) {
    size_t i = src_.find("%}", body);
    const bool strip_after_begin = src_[i - 1] == '-';
    size_t content = i + 2;
    if (strip_after_begin) content = after_block_end(content, '-');
    // Find {% endraw %} with optional signs.
    for (size_t at = src_.find("{%", content); at != std::string::npos; at = src_.find("{%", at + 2)) {
      size_t j = at + 2;
      const char sign = j < src_.size() ? src_[j] : '\0';
      if (sign == '-' || sign == '+') ++j;
      while (j < src_.size() && std::isspace(static_cast<unsigned char>(src_[j]))) ++j;
      if (src_.compare(j, 6, "endraw") != 0) continue;
      j += 6;
      while (j < src_.size() && std::isspace(static_cast<unsigned char>(src_[j]))) ++j;
      char end_sign = '\0';
      if (j < src_.size() && (src_[j] == '-' || src_[j] == '+')) end_sign = src_[j++];
      if (src_.compare(j, 2, "%}") != 0) continue;
      std::string text = src_.substr(content, at - content);
      if (sign == '-') {
        text.resize(rstrip_whitespace_end(text));
      } else if (sign != '+' && opts_.lstrip_blocks) {
        const size_t nl = text.rfind('\n');
        const size_t l_pos = nl == std::string::npos ? text.size() : nl + 1;
        if (l_pos < text.size() && all_whitespace(std::string_view(text).substr(l_pos))) text.resize(l_pos);
      }
      add_text(std::move(text), content);
      return after_block_end(j + 2, end_sign);
    }
    return error(tag, "missing '{% endraw %}' for '{% raw %}'");
  }

  static bool is_name_start(char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_'; }
  static bool is_name_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }

  Result<size_t> lex_tag(size_t tag, size_t i, bool is_output) {
    Segment seg;
    seg.kind = is_output ? SegmentKind::kOutput : SegmentKind::kStatement;
    seg.pos = pos_of(tag);
    std::vector<char> brackets;
    while (true) {
      while (i < src_.size() && std::isspace(static_cast<unsigned char>(src_[i]))) ++i;
      if (i >= src_.size()) return error(tag, std::string("unclosed '") + (is_output ? "{{" : "{%") + "'");
      if (brackets.empty()) {
        if (is_output) {
          if (src_.compare(i, 3, "-}}") == 0) return finish(std::move(seg), after_block_end(i + 3, '-'), i);
          if (src_.compare(i, 2, "}}") == 0) return finish(std::move(seg), i + 2, i);
        } else {
          if (src_.compare(i, 3, "-%}") == 0) return finish(std::move(seg), after_block_end(i + 3, '-'), i);
          if (src_.compare(i, 3, "+%}") == 0) return finish(std::move(seg), i + 3, i);
          if (src_.compare(i, 2, "%}") == 0) return finish(std::move(seg), after_block_end(i + 2, '\0'), i);
        }
      }
      Token tok;
      tok.pos = pos_of(i);
      const char c = src_[i];
      if (c == '\'' || c == '"') {
        ANVIL_ASSIGN_OR_RETURN(i, lex_string(i, tok));
      } else if (std::isdigit(static_cast<unsigned char>(c))) {
        i = lex_number(i, tok);
      } else if (is_name_start(c)) {
        size_t j = i;
        while (j < src_.size() && is_name_char(src_[j])) ++j;
        tok.kind = TokenKind::kName;
        tok.text = src_.substr(i, j - i);
        i = j;
      } else {
        static const char* kTwo[] = {"//", "**", "==", "!=", "<=", ">="};
        tok.kind = TokenKind::kOperator;
        for (const char* op : kTwo) {
          if (src_.compare(i, 2, op) == 0) {
            tok.text = op;
            break;
          }
        }
        if (tok.text.empty()) {
          if (std::string_view("+-/*%~[](){}=<>.:|,").find(c) == std::string_view::npos) {
            return error(i, std::string("unexpected character '") + c + "'");
          }
          tok.text = std::string(1, c);
        }
        if (c == '(' || c == '[' || c == '{') {
          brackets.push_back(c == '(' ? ')' : c == '[' ? ']' : '}');
        } else if (c == ')' || c == ']' || c == '}') {
          if (brackets.empty()) return error(i, std::string("unexpected '") + c + "'");
          if (brackets.back() != c) {
            return error(i, std::string("unexpected '") + c + "', expected '" + brackets.back() + "'");
          }
          brackets.pop_back();
        }
        i += tok.text.size();
      }
      seg.tokens.push_back(std::move(tok));
    }
  }

  Result<size_t> finish(Segment seg, size_t end, size_t end_tag) {
    Token eof;
    eof.kind = TokenKind::kEnd;
    eof.pos = pos_of(end_tag);
    seg.tokens.push_back(std::move(eof));
    segments_.push_back(std::move(seg));
    return end;
  }

  static int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }

  // Python string literal with unicode-escape semantics; unknown escapes stay verbatim.
  Result<size_t> lex_string(size_t i, Token& tok) {
    const char quote = src_[i];
    std::string out;
    size_t j = i + 1;
    while (true) {
      if (j >= src_.size()) return error(i, "unterminated string literal");
      const char c = src_[j];
      if (c == quote) break;
      if (c != '\\') {
        out.push_back(c);
        ++j;
        continue;
      }
      if (j + 1 >= src_.size()) return error(i, "unterminated string literal");
      const char e = src_[j + 1];
      j += 2;
      switch (e) {
        case '\n':
          break;
        case '\\':
          out.push_back('\\');
          break;
        case '\'':
          out.push_back('\'');
          break;
        case '"':
          out.push_back('"');
          break;
        case 'a':
          out.push_back('\a');
          break;
        case 'b':
          out.push_back('\b');
          break;
        case 'f':
          out.push_back('\f');
          break;
        case 'n':
          out.push_back('\n');
          break;
        case 'r':
          out.push_back('\r');
          break;
        case 't':
          out.push_back('\t');
          break;
        case 'v':
          out.push_back('\v');
          break;
        case 'x':
        case 'u':
        case 'U': {
          const int digits = e == 'x' ? 2 : e == 'u' ? 4 : 8;
          uint32_t cp = 0;
          for (int k = 0; k < digits; ++k) {
            const int h = j + k < src_.size() ? hex_value(src_[j + k]) : -1;
            if (h < 0) return error(j - 2, std::string("truncated \\") + e + " escape in string literal");
            cp = cp * 16 + static_cast<uint32_t>(h);
          }
          if (cp > 0x10FFFF) return error(j - 2, "escape out of the Unicode range in string literal");
          append_utf8(out, cp);
          j += digits;
          break;
        }
        default:
          if (e >= '0' && e <= '7') {
            uint32_t cp = static_cast<uint32_t>(e - '0');
            for (int k = 0; k < 2 && j < src_.size() && src_[j] >= '0' && src_[j] <= '7'; ++k, ++j)
              cp = cp * 8 + static_cast<uint32_t>(src_[j] - '0');
            append_utf8(out, cp);
          } else {
            out.push_back('\\');
            out.push_back(e);
          }
          break;
      }
    }
    tok.kind = TokenKind::kString;
    tok.text = std::move(out);
    return j + 1;
  }

  size_t lex_number(size_t i, Token& tok) {
    auto digits = [&](size_t j) {
      while (j < src_.size() && (std::isdigit(static_cast<unsigned char>(src_[j])) ||
                                 (src_[j] == '_' && j + 1 < src_.size() &&
                                  std::isdigit(static_cast<unsigned char>(src_[j + 1])))))
        ++j;
      return j;
    };
    size_t j = digits(i);
    bool is_float = false;
    if (j + 1 < src_.size() && src_[j] == '.' && std::isdigit(static_cast<unsigned char>(src_[j + 1]))) {
      j = digits(j + 1);
      is_float = true;
    }
    if (j < src_.size() && (src_[j] == 'e' || src_[j] == 'E')) {
      size_t k = j + 1;
      if (k < src_.size() && (src_[k] == '+' || src_[k] == '-')) ++k;
      if (k < src_.size() && std::isdigit(static_cast<unsigned char>(src_[k]))) {
        j = digits(k);
        is_float = true;
      }
    }
    tok.kind = is_float ? TokenKind::kFloat : TokenKind::kInteger;
    for (size_t k = i; k < j; ++k)
      if (src_[k] != '_') tok.text.push_back(src_[k]);
    return j;
  }

  std::string src_;
  LexOptions opts_;
  std::vector<size_t> line_starts_;
  std::vector<Segment> segments_;
};

// Jinja normalizes \r\n and \r to \n and drops one trailing newline (keep_trailing_newline=False).
std::string normalize_newlines(const std::string& source) {
  std::string out;
  out.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      out.push_back('\n');
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      out.push_back(source[i]);
    }
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

}  // namespace

Result<std::vector<Segment>> lex_template(const std::string& source, const LexOptions& opts) {
  Lexer lexer(normalize_newlines(source), opts);
  return lexer.run();
}

}  // namespace anvil::jinja
