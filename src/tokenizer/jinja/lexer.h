// Splits a template into text, {{ output }} and {% statement %} segments, applying Jinja's
// whitespace control exactly as HF configures it (trim_blocks, lstrip_blocks, `-`/`+` markers,
// newlines normalized to \n, one trailing newline dropped), and tokenizes the expression inside
// each tag. Every token carries its 1-based line and column for error messages.
#pragma once

#include <string>
#include <vector>

#include "core/status.h"

namespace anvil::jinja {

struct SourcePos {
  int line = 1;
  int column = 1;
};
std::string describe(const SourcePos& pos);  // "line 3, column 7"

enum class TokenKind { kName, kString, kInteger, kFloat, kOperator, kEnd };
struct Token {
  TokenKind kind = TokenKind::kEnd;
  std::string text;  // name, decoded string literal, number text or operator
  SourcePos pos;
};

enum class SegmentKind { kText, kOutput, kStatement };
struct Segment {
  SegmentKind kind = SegmentKind::kText;
  std::string text;           // kText only
  std::vector<Token> tokens;  // kOutput / kStatement, ending with a kEnd token
  SourcePos pos;              // where the segment starts
};

struct LexOptions {
  bool trim_blocks = true;
  bool lstrip_blocks = true;
};

Result<std::vector<Segment>> lex_template(const std::string& source, const LexOptions& opts);

}  // namespace anvil::jinja
