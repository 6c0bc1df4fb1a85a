// The values a chat template computes with, modelled on the Python objects Jinja2 sees: undefined,
// None, bool, int, float, str (UTF-8), list/tuple, dict (insertion-ordered), namespace and macro.
// Lists and dicts are immutable once built (HF renders in an immutable sandbox); only a namespace's
// attributes change. Copying a Value is cheap: strings, lists and dicts are shared.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/status.h"

namespace anvil::jinja {

namespace ast {
struct Macro;
}

enum class ValueKind { kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kDict, kNamespace, kMacro };

class Value;
struct ListData {
  std::vector<Value> items;
  bool is_tuple = false;
};
struct DictData {
  std::vector<std::pair<Value, Value>> entries;  // insertion order, keys unique
  bool is_loop = false;                           // the `loop` object of a for block (has cycle())
  const Value* find(const Value& key) const;
  const Value* find(std::string_view key) const;
};
// A macro and the variables it closed over: those of the loop/macro scopes it was defined in
// (a snapshot; template-level variables are read live at call time, as in Jinja).
struct MacroData {
  const ast::Macro* def = nullptr;
  std::vector<std::pair<std::string, Value>> closure;
};
struct NamespaceData {
  std::vector<std::pair<std::string, Value>> attrs;
  const Value* find(std::string_view name) const;
  void set(const std::string& name, Value value);
};

class Value {
 public:
  Value() = default;  // undefined with no hint
  static Value undefined(std::string hint);
  static Value none();
  static Value boolean(bool b);
  static Value integer(int64_t i);
  static Value floating(double f);
  static Value string(std::string s);
  static Value list(std::vector<Value> items, bool is_tuple = false);
  static Value dict(DictData d);
  static Value make_namespace();
  static Value macro(MacroData m);

  ValueKind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == ValueKind::kUndefined; }
  bool is_none() const { return kind_ == ValueKind::kNone; }
  bool is_string() const { return kind_ == ValueKind::kString; }
  bool is_list() const { return kind_ == ValueKind::kList; }
  bool is_dict() const { return kind_ == ValueKind::kDict; }
  // int or bool (Python's bool is an int)
  bool is_integral() const { return kind_ == ValueKind::kInt || kind_ == ValueKind::kBool; }
  bool is_number() const { return is_integral() || kind_ == ValueKind::kFloat; }

  bool as_bool() const { return b_; }
  int64_t as_int() const { return kind_ == ValueKind::kBool ? (b_ ? 1 : 0) : i_; }
  double as_float() const { return kind_ == ValueKind::kFloat ? f_ : static_cast<double>(as_int()); }
  const std::string& as_string() const { return *str_; }
  // Why this value is undefined, e.g. "'dict object' has no attribute 'content'".
  const std::string& undefined_hint() const { return *str_; }
  const std::vector<Value>& items() const { return list_->items; }
  bool is_tuple() const { return list_->is_tuple; }
  const DictData& dict() const { return *dict_; }
  NamespaceData& ns() const { return *ns_; }
  const MacroData& macro() const { return *macro_; }

 private:
  ValueKind kind_ = ValueKind::kUndefined;
  bool b_ = false;
  int64_t i_ = 0;
  double f_ = 0;
  std::shared_ptr<const std::string> str_ = empty_string();
  std::shared_ptr<const ListData> list_;
  std::shared_ptr<const DictData> dict_;
  std::shared_ptr<NamespaceData> ns_;
  std::shared_ptr<const MacroData> macro_;

  static const std::shared_ptr<const std::string>& empty_string();
};

// Python's name of the type, as Jinja's error messages use it: "dict", "str", "NoneType"...
const char* type_name(const Value& v);
// How Jinja names an object in an undefined hint: "dict object", "None", "str object".
std::string object_description(const Value& v);

// Python truthiness.
bool truthy(const Value& v);
// Python ==.
bool equals(const Value& a, const Value& b);
// Python <; fails like Python for unorderable types.
Result<bool> less_than(const Value& a, const Value& b);
// str(v) as Jinja prints it ({{ v }}); undefined prints as "".
std::string to_str(const Value& v);
// repr(v), as str() of a list or dict shows its items.
std::string to_repr(const Value& v);

struct JsonDumpOptions {
  bool ensure_ascii = false;
  bool has_indent = false;
  std::string indent;  // used where has_indent
  std::string item_separator = ", ";
  std::string key_separator = ": ";
  bool sort_keys = false;
};
// json.dumps(v, ...) with Python's formatting (floats as repr, NaN/Infinity, separators).
Result<std::string> to_json_text(const Value& v, const JsonDumpOptions& opts);

// JSON -> Value (objects keep their key order).
Value from_json(const nlohmann::ordered_json& j);
Value from_json(const nlohmann::json& j);

}  // namespace anvil::jinja
