// Jinja's filters, tests, global functions and the Python methods of str/dict/list that chat
// templates call, with HF's overrides (tojson is json.dumps with ensure_ascii=False). The parser
// asks is_known_* so a template naming anything else is refused at load time.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/status.h"
#include "tokenizer/jinja/value.h"

namespace anvil::jinja {

// No filter or method builds a string larger than this; the interpreter applies the same bound
// to its own output (RenderLimits::max_output_bytes), so hostile inputs fail instead of exhausting
// memory.
constexpr size_t kMaxStringBytes = size_t{256} << 20;

struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
};

bool is_known_filter(std::string_view name);
bool is_known_test(std::string_view name);
bool is_known_method(std::string_view name);
bool is_known_global(std::string_view name);

// Errors come back as InvalidArgument with a Python-like message ("TypeError: ...").
Result<Value> apply_filter(std::string_view name, const Value& value, const CallArgs& args);
Result<bool> apply_test(std::string_view name, const Value& value, const CallArgs& args);
Result<Value> call_method(const Value& object, std::string_view name, const CallArgs& args);
// range, dict, namespace, raise_exception, strftime_now.
Result<Value> call_global(std::string_view name, const CallArgs& args);

// Jinja's environment.getattr (obj.name) and getitem (obj[key]): a missing member gives an
// undefined Value that remembers why; misusing that undefined later is the error.
// Getting a member of an undefined value is an UndefinedError.
Result<Value> get_attr(const Value& object, const std::string& name);
Result<Value> get_item(const Value& object, const Value& key);

// Binds call arguments to named parameters: a slot stays empty where the caller passed nothing.
// Fails on too many positional arguments or an unknown/duplicate keyword, naming `function`.
Result<std::vector<std::optional<Value>>> bind_args(std::string_view function, const CallArgs& args,
                                                    const std::vector<std::string_view>& params);

// The error for using an undefined value where a defined one is needed.
Status undefined_error(const Value& undefined);

// Python iteration: list items, dict keys, str code points; undefined iterates as empty.
Result<std::vector<Value>> iterate(const Value& v);

}  // namespace anvil::jinja
