// Renders a parsed template against a set of variables. Scoping follows Jinja2: each for-loop
// iteration and each macro call gets its own scope (a `set` there does not leak out; namespaces
// are how templates carry state across iterations). Work is bounded so hostile templates or
// inputs fail with an error instead of running away.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "core/status.h"
#include "tokenizer/jinja/ast.h"
#include "tokenizer/jinja/value.h"

namespace anvil::jinja {

struct RenderLimits {
  int64_t max_steps = 20'000'000;           // loop iterations + macro calls + output writes
  size_t max_output_bytes = 256u << 20;     // rendered text and any single string built
  int max_macro_depth = 64;
};

// Renders `body` with `globals` as the template's variables. Runtime errors (raise_exception,
// undefined misuse, type errors) come back as InvalidArgument naming the line and column.
Result<std::string> render_template(const ast::Body& body, std::vector<std::pair<std::string, Value>> globals,
                                    const RenderLimits& limits = RenderLimits{});

}  // namespace anvil::jinja
