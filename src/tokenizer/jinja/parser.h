// Parses lexed segments into an ast::Body with Jinja's grammar and operator precedence. Anything
// outside the supported subset (a tag, filter, test, method or function anvil does not implement,
// *args, recursive loops...) fails here, at load time, naming the construct and its position.
#pragma once

#include <string>

#include "core/status.h"
#include "tokenizer/jinja/ast.h"

namespace anvil::jinja {

struct ParsedTemplate {
  ast::Body body;
};

Result<ParsedTemplate> parse_template(const std::string& source);

}  // namespace anvil::jinja
