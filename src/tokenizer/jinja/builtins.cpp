// Member access, iteration, tests and global functions with Jinja2's semantics (filters and
// methods live in filters.cpp). Undefined hints reproduce jinja2.Undefined's messages.
#include "tokenizer/jinja/builtins.h"

#include <cmath>
#include <ctime>

#include "tokenizer/jinja/py_string.h"

namespace anvil::jinja {

namespace {

constexpr int64_t kMaxRange = 100000;  // jinja2.sandbox.MAX_RANGE

Value missing_attribute(const Value& object, const std::string& name) {
  std::string hint = "'";
  hint.append(object_description(object)).append("' has no attribute ").append(to_repr(Value::string(name)));
  return Value::undefined(std::move(hint));
}
Value missing_element(const Value& object, const Value& key) {
  if (key.is_string()) return missing_attribute(object, key.as_string());
  return Value::undefined(object_description(object) + " has no element " + to_repr(key));
}

Value loop_attr(const DictData& loop, const std::string& name) {
  const Value* v = loop.find(std::string_view(name));
  return v ? *v : Value::undefined("'LoopContext object' has no attribute '" + name + "'");
}

bool is_int_key(const Value& v) { return v.is_integral(); }

}  // namespace

Status undefined_error(const Value& undefined) {
  const std::string& hint = undefined.undefined_hint();
  return invalid_argument("UndefinedError: " + (hint.empty() ? std::string("value is undefined") : hint));
}

Result<Value> get_attr(const Value& object, const std::string& name) {
  switch (object.kind()) {
    case ValueKind::kUndefined:
      return undefined_error(object);
    case ValueKind::kDict: {
      if (object.dict().is_loop) return loop_attr(object.dict(), name);
      const Value* v = object.dict().find(std::string_view(name));
      return v ? *v : missing_attribute(object, name);
    }
    case ValueKind::kNamespace: {
      const Value* v = object.ns().find(name);
      return v ? *v : missing_attribute(object, name);
    }
    case ValueKind::kNone:
    case ValueKind::kBool:
    case ValueKind::kInt:
    case ValueKind::kFloat:
    case ValueKind::kString:
    case ValueKind::kList:
    case ValueKind::kMacro:
      return missing_attribute(object, name);
  }
  return missing_attribute(object, name);
}

Result<Value> get_item(const Value& object, const Value& key) {
  switch (object.kind()) {
    case ValueKind::kUndefined:
      return undefined_error(object);
    case ValueKind::kDict: {
      if (object.dict().is_loop) {
        return key.is_string() ? loop_attr(object.dict(), key.as_string()) : missing_element(object, key);
      }
      const Value* v = object.dict().find(key);
      return v ? *v : missing_element(object, key);
    }
    case ValueKind::kList: {
      if (!is_int_key(key)) return missing_element(object, key);
      int64_t i = key.as_int();
      const auto n = static_cast<int64_t>(object.items().size());
      if (i < 0) i += n;
      if (i < 0 || i >= n) return missing_element(object, key);
      return object.items()[static_cast<size_t>(i)];
    }
    case ValueKind::kString: {
      if (!is_int_key(key)) return missing_element(object, key);
      const std::u32string cps = decode_utf8(object.as_string());
      int64_t i = key.as_int();
      const auto n = static_cast<int64_t>(cps.size());
      if (i < 0) i += n;
      if (i < 0 || i >= n) return missing_element(object, key);
      return Value::string(encode_utf8(std::u32string_view(cps).substr(static_cast<size_t>(i), 1)));
    }
    case ValueKind::kNamespace:
      if (key.is_string()) return get_attr(object, key.as_string());
      return missing_element(object, key);
    case ValueKind::kNone:
    case ValueKind::kBool:
    case ValueKind::kInt:
    case ValueKind::kFloat:
    case ValueKind::kMacro:
      return missing_element(object, key);
  }
  return missing_element(object, key);
}

Result<std::vector<Value>> iterate(const Value& v) {
  switch (v.kind()) {
    case ValueKind::kUndefined:
      return std::vector<Value>{};
    case ValueKind::kList:
      return v.items();
    case ValueKind::kDict: {
      if (v.dict().is_loop) break;
      std::vector<Value> keys;
      keys.reserve(v.dict().entries.size());
      for (const auto& [k, val] : v.dict().entries) keys.push_back(k);
      return keys;
    }
    case ValueKind::kString: {
      std::vector<Value> chars;
      for (char32_t c : decode_utf8(v.as_string())) {
        std::string s;
        append_utf8(s, c);
        chars.push_back(Value::string(std::move(s)));
      }
      return chars;
    }
    case ValueKind::kNone:
    case ValueKind::kBool:
    case ValueKind::kInt:
    case ValueKind::kFloat:
    case ValueKind::kNamespace:
    case ValueKind::kMacro:
      break;
  }
  return invalid_argument(std::string("TypeError: '") + type_name(v) + "' object is not iterable");
}

Result<std::vector<std::optional<Value>>> bind_args(std::string_view function, const CallArgs& args,
                                                    const std::vector<std::string_view>& params) {
  std::vector<std::optional<Value>> out(params.size());
  if (args.positional.size() > params.size()) {
    return invalid_argument("TypeError: " + std::string(function) + "() takes at most " +
                            std::to_string(params.size()) + " arguments (" + std::to_string(args.positional.size()) +
                            " given)");
  }
  for (size_t i = 0; i < args.positional.size(); ++i) out[i] = args.positional[i];
  for (const auto& [key, value] : args.keyword) {
    size_t idx = params.size();
    for (size_t i = 0; i < params.size(); ++i)
      if (params[i] == key) idx = i;
    if (idx == params.size()) {
      return invalid_argument("TypeError: " + std::string(function) + "() got an unexpected keyword argument '" +
                              key + "'");
    }
    if (out[idx]) {
      return invalid_argument("TypeError: " + std::string(function) + "() got multiple values for argument '" + key +
                              "'");
    }
    out[idx] = value;
  }
  return out;
}

// ---- tests ----

namespace {

const char* const kTests[] = {"defined", "undefined", "none",     "boolean", "true",    "false",       "integer",
                              "float",   "number",    "string",   "mapping", "iterable", "sequence",   "callable",
                              "odd",     "even",      "divisibleby", "eq",   "equalto", "==",          "ne",
                              "!=",      "lt",        "lessthan", "<",       "le",      "<=",          "gt",
                              "greaterthan", ">",     "ge",       ">=",      "in",      "sameas",      "lower",
                              "upper"};

Result<Value> one_arg(std::string_view test, const CallArgs& args) {
  ANVIL_ASSIGN_OR_RETURN(auto bound, bind_args(test, args, {"other"}));
  if (!bound[0]) return invalid_argument("TypeError: test '" + std::string(test) + "' needs one argument");
  return *bound[0];
}

}  // namespace

bool is_known_test(std::string_view name) {
  for (const char* t : kTests)
    if (name == t) return true;
  return false;
}

Result<bool> apply_test(std::string_view name, const Value& v, const CallArgs& args) {
  const ValueKind k = v.kind();
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.is_none();
  if (name == "boolean") return k == ValueKind::kBool;
  if (name == "true") return k == ValueKind::kBool && v.as_bool();
  if (name == "false") return k == ValueKind::kBool && !v.as_bool();
  if (name == "integer") return k == ValueKind::kInt;
  if (name == "float") return k == ValueKind::kFloat;
  if (name == "number") return v.is_number();
  if (name == "string") return k == ValueKind::kString;
  if (name == "mapping") return k == ValueKind::kDict && !v.dict().is_loop;
  if (name == "iterable") {
    return k == ValueKind::kUndefined || k == ValueKind::kList || k == ValueKind::kString ||
           (k == ValueKind::kDict && !v.dict().is_loop);
  }
  if (name == "sequence") {
    return k == ValueKind::kUndefined || k == ValueKind::kList || k == ValueKind::kString ||
           (k == ValueKind::kDict && !v.dict().is_loop);
  }
  if (name == "callable") return k == ValueKind::kMacro;
  if (name == "lower" || name == "upper") {
    const std::string s = to_str(v);
    return name == "lower" ? py_lower(s) == s : py_upper(s) == s;
  }
  if (name == "odd" || name == "even") {
    if (!v.is_integral()) return invalid_argument(std::string("TypeError: test '") + std::string(name) + "' needs an int");
    const int64_t r = ((v.as_int() % 2) + 2) % 2;
    return name == "odd" ? r == 1 : r == 0;
  }
  ANVIL_ASSIGN_OR_RETURN(Value other, one_arg(name, args));
  if (name == "divisibleby") {
    if (!v.is_integral() || !other.is_integral() || other.as_int() == 0) {
      return invalid_argument("TypeError: test 'divisibleby' needs nonzero integers");
    }
    return v.as_int() % other.as_int() == 0;
  }
  if (name == "eq" || name == "equalto" || name == "==") return equals(v, other);
  if (name == "ne" || name == "!=") return !equals(v, other);
  if (name == "sameas") {
    if (v.kind() != other.kind()) return false;
    return equals(v, other) && (v.is_none() || k == ValueKind::kBool || k == ValueKind::kUndefined ||
                                k == ValueKind::kNamespace || k == ValueKind::kMacro);
  }
  if (name == "in") {
    if (other.is_string()) {
      if (!v.is_string()) return invalid_argument("TypeError: 'in <string>' requires string as left operand");
      return other.as_string().find(v.as_string()) != std::string::npos;
    }
    if (other.is_dict()) return other.dict().find(v) != nullptr;
    ANVIL_ASSIGN_OR_RETURN(std::vector<Value> items, iterate(other));
    for (const Value& item : items)
      if (equals(item, v)) return true;
    return false;
  }
  if (name == "lt" || name == "lessthan" || name == "<") return less_than(v, other);
  if (name == "gt" || name == "greaterthan" || name == ">") return less_than(other, v);
  if (name == "le" || name == "<=") {
    ANVIL_ASSIGN_OR_RETURN(bool gt, less_than(other, v));
    return !gt;
  }
  if (name == "ge" || name == ">=") {
    ANVIL_ASSIGN_OR_RETURN(bool lt, less_than(v, other));
    return !lt;
  }
  return invalid_argument("unsupported test '" + std::string(name) + "'");
}

// ---- globals ----

bool is_known_global(std::string_view name) {
  return name == "range" || name == "dict" || name == "namespace" || name == "raise_exception" ||
         name == "strftime_now";
}

namespace {

Result<DictData> dict_from_args(std::string_view fn, const CallArgs& args) {
  DictData d;
  if (args.positional.size() > 1) {
    return invalid_argument("TypeError: " + std::string(fn) + "() takes at most 1 positional argument");
  }
  auto put = [&](Value k, Value v) {
    for (auto& [ek, ev] : d.entries) {
      if (equals(ek, k)) {
        ev = std::move(v);
        return;
      }
    }
    d.entries.emplace_back(std::move(k), std::move(v));
  };
  if (!args.positional.empty()) {
    const Value& src = args.positional[0];
    if (src.is_dict() && !src.dict().is_loop) {
      for (const auto& [k, v] : src.dict().entries) put(k, v);
    } else {
      ANVIL_ASSIGN_OR_RETURN(std::vector<Value> pairs, iterate(src));
      for (const Value& p : pairs) {
        if (!p.is_list() || p.items().size() != 2) {
          return invalid_argument("TypeError: " + std::string(fn) + "() needs a mapping or (key, value) pairs");
        }
        put(p.items()[0], p.items()[1]);
      }
    }
  }
  for (const auto& [k, v] : args.keyword) put(Value::string(k), v);
  return d;
}

}  // namespace

Result<Value> call_global(std::string_view name, const CallArgs& args) {
  if (name == "range") {
    if (!args.keyword.empty()) return invalid_argument("TypeError: range() takes no keyword arguments");
    const auto& p = args.positional;
    if (p.empty() || p.size() > 3) return invalid_argument("TypeError: range() takes 1 to 3 arguments");
    for (const Value& a : p) {
      if (!a.is_integral()) {
        return invalid_argument(std::string("TypeError: '") + type_name(a) + "' object cannot be interpreted as an integer");
      }
    }
    const int64_t start = p.size() == 1 ? 0 : p[0].as_int();
    const int64_t stop = p.size() == 1 ? p[0].as_int() : p[1].as_int();
    const int64_t step = p.size() == 3 ? p[2].as_int() : 1;
    if (step == 0) return invalid_argument("ValueError: range() arg 3 must not be zero");
    int64_t count = 0;
    if (step > 0 && stop > start) count = (stop - start + step - 1) / step;
    if (step < 0 && start > stop) count = (start - stop - step - 1) / (-step);
    if (count > kMaxRange) {
      return invalid_argument("OverflowError: Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
    }
    std::vector<Value> items;
    items.reserve(static_cast<size_t>(count));
    for (int64_t i = 0; i < count; ++i) items.push_back(Value::integer(start + i * step));
    return Value::list(std::move(items));
  }
  if (name == "dict") {
    ANVIL_ASSIGN_OR_RETURN(DictData d, dict_from_args(name, args));
    return Value::dict(std::move(d));
  }
  if (name == "namespace") {
    ANVIL_ASSIGN_OR_RETURN(DictData d, dict_from_args(name, args));
    Value ns = Value::make_namespace();
    for (auto& [k, v] : d.entries) {
      if (!k.is_string()) return invalid_argument("TypeError: namespace() keys must be strings");
      if (!k.as_string().empty() && k.as_string()[0] == '_') {
        return invalid_argument("SecurityError: Chat templates cannot store underscore-prefixed attributes on a "
                                "namespace, but got " + to_repr(k) + ". Please rename the attribute.");
      }
      ns.ns().set(k.as_string(), std::move(v));
    }
    return ns;
  }
  if (name == "raise_exception") {
    ANVIL_ASSIGN_OR_RETURN(auto bound, bind_args(name, args, {"message"}));
    if (!bound[0]) return invalid_argument("TypeError: raise_exception() missing its message");
    return Status(StatusCode::kInvalidArgument, to_str(*bound[0]));
  }
  if (name == "strftime_now") {
    ANVIL_ASSIGN_OR_RETURN(auto bound, bind_args(name, args, {"format"}));
    if (!bound[0] || !bound[0]->is_string()) return invalid_argument("TypeError: strftime_now() needs a format string");
    const std::time_t now = std::time(nullptr);
    std::tm local{};
    localtime_r(&now, &local);
    char buf[512];
    const size_t n = std::strftime(buf, sizeof(buf), bound[0]->as_string().c_str(), &local);
    return Value::string(std::string(buf, n));
  }
  return invalid_argument("unsupported function '" + std::string(name) + "'");
}

}  // namespace anvil::jinja
