// Value construction, Python-style comparison/printing and json.dumps. Printing follows CPython:
// str(list) shows repr() of the items, repr(str) picks its quote like CPython does.
#include "tokenizer/jinja/value.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "tokenizer/jinja/py_string.h"

#include <utf8proc.h>

namespace anvil::jinja {

const Value* DictData::find(const Value& key) const {
  for (const auto& [k, v] : entries)
    if (equals(k, key)) return &v;
  return nullptr;
}

const Value* DictData::find(std::string_view key) const {
  for (const auto& [k, v] : entries)
    if (k.is_string() && k.as_string() == key) return &v;
  return nullptr;
}

const Value* NamespaceData::find(std::string_view name) const {
  for (const auto& [k, v] : attrs)
    if (k == name) return &v;
  return nullptr;
}

void NamespaceData::set(const std::string& name, Value value) {
  for (auto& [k, v] : attrs) {
    if (k == name) {
      v = std::move(value);
      return;
    }
  }
  attrs.emplace_back(name, std::move(value));
}

const std::shared_ptr<const std::string>& Value::empty_string() {
  static const auto* kEmpty = new std::shared_ptr<const std::string>(std::make_shared<const std::string>());
  return *kEmpty;
}

Value Value::undefined(std::string hint) {
  Value v;
  v.str_ = std::make_shared<const std::string>(std::move(hint));
  return v;
}
Value Value::none() {
  Value v;
  v.kind_ = ValueKind::kNone;
  return v;
}
Value Value::boolean(bool b) {
  Value v;
  v.kind_ = ValueKind::kBool;
  v.b_ = b;
  return v;
}
Value Value::integer(int64_t i) {
  Value v;
  v.kind_ = ValueKind::kInt;
  v.i_ = i;
  return v;
}
Value Value::floating(double f) {
  Value v;
  v.kind_ = ValueKind::kFloat;
  v.f_ = f;
  return v;
}
Value Value::string(std::string s) {
  Value v;
  v.kind_ = ValueKind::kString;
  v.str_ = std::make_shared<const std::string>(std::move(s));
  return v;
}
Value Value::list(std::vector<Value> items, bool is_tuple) {
  Value v;
  v.kind_ = ValueKind::kList;
  v.list_ = std::make_shared<const ListData>(ListData{std::move(items), is_tuple});
  return v;
}
Value Value::dict(DictData d) {
  Value v;
  v.kind_ = ValueKind::kDict;
  v.dict_ = std::make_shared<const DictData>(std::move(d));
  return v;
}
Value Value::make_namespace() {
  Value v;
  v.kind_ = ValueKind::kNamespace;
  v.ns_ = std::make_shared<NamespaceData>();
  return v;
}
Value Value::macro(MacroData m) {
  Value v;
  v.kind_ = ValueKind::kMacro;
  v.macro_ = std::make_shared<const MacroData>(std::move(m));
  return v;
}

const char* type_name(const Value& v) {
  switch (v.kind()) {
    case ValueKind::kUndefined:
      return "Undefined";
    case ValueKind::kNone:
      return "NoneType";
    case ValueKind::kBool:
      return "bool";
    case ValueKind::kInt:
      return "int";
    case ValueKind::kFloat:
      return "float";
    case ValueKind::kString:
      return "str";
    case ValueKind::kList:
      return v.is_tuple() ? "tuple" : "list";
    case ValueKind::kDict:
      return v.dict().is_loop ? "LoopContext" : "dict";
    case ValueKind::kNamespace:
      return "Namespace";
    case ValueKind::kMacro:
      return "Macro";
  }
  return "object";
}

std::string object_description(const Value& v) {
  if (v.is_none()) return "None";
  return std::string(type_name(v)) + " object";
}

bool truthy(const Value& v) {
  switch (v.kind()) {
    case ValueKind::kUndefined:
    case ValueKind::kNone:
      return false;
    case ValueKind::kBool:
      return v.as_bool();
    case ValueKind::kInt:
      return v.as_int() != 0;
    case ValueKind::kFloat:
      return v.as_float() != 0.0;
    case ValueKind::kString:
      return !v.as_string().empty();
    case ValueKind::kList:
      return !v.items().empty();
    case ValueKind::kDict:
      return v.dict().is_loop || !v.dict().entries.empty();
    case ValueKind::kNamespace:
    case ValueKind::kMacro:
      return true;
  }
  return false;
}

bool equals(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.is_integral() && b.is_integral()) return a.as_int() == b.as_int();
    return a.as_float() == b.as_float();
  }
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case ValueKind::kUndefined:
    case ValueKind::kNone:
      return true;
    case ValueKind::kString:
      return a.as_string() == b.as_string();
    case ValueKind::kList: {
      if (a.is_tuple() != b.is_tuple() || a.items().size() != b.items().size()) return false;
      for (size_t i = 0; i < a.items().size(); ++i)
        if (!equals(a.items()[i], b.items()[i])) return false;
      return true;
    }
    case ValueKind::kDict: {
      const auto& ea = a.dict().entries;
      const auto& eb = b.dict().entries;
      if (ea.size() != eb.size()) return false;
      for (const auto& [k, v] : ea) {
        const Value* other = b.dict().find(k);
        if (!other || !equals(v, *other)) return false;
      }
      return true;
    }
    case ValueKind::kNamespace:
      return &a.ns() == &b.ns();
    case ValueKind::kMacro:
      return &a.macro() == &b.macro();
    case ValueKind::kBool:
    case ValueKind::kInt:
    case ValueKind::kFloat:
      break;  // handled above
  }
  return false;
}

Result<bool> less_than(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.is_integral() && b.is_integral()) return a.as_int() < b.as_int();
    return a.as_float() < b.as_float();
  }
  if (a.is_string() && b.is_string()) return a.as_string() < b.as_string();  // UTF-8 order == code point order
  if (a.is_list() && b.is_list() && a.is_tuple() == b.is_tuple()) {
    const auto& x = a.items();
    const auto& y = b.items();
    for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
      if (equals(x[i], y[i])) continue;
      return less_than(x[i], y[i]);
    }
    return x.size() < y.size();
  }
  return invalid_argument(std::string("TypeError: '<' not supported between instances of '") + type_name(a) +
                          "' and '" + type_name(b) + "'");
}

namespace {

// CPython's str.isprintable for one code point: not a control, format, surrogate, private-use,
// unassigned or separator character (the ASCII space excepted).
bool is_printable(char32_t c) {
  if (c == ' ') return true;
  if (c >= 0xD800 && c <= 0xDFFF) return false;
  const auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return !(cat == UTF8PROC_CATEGORY_CC || cat == UTF8PROC_CATEGORY_CF || cat == UTF8PROC_CATEGORY_CS ||
           cat == UTF8PROC_CATEGORY_CO || cat == UTF8PROC_CATEGORY_CN || cat == UTF8PROC_CATEGORY_ZS ||
           cat == UTF8PROC_CATEGORY_ZL || cat == UTF8PROC_CATEGORY_ZP);
}

std::string repr_string(const std::string& s) {
  const bool has_single = s.find('\'') != std::string::npos;
  const bool has_double = s.find('"') != std::string::npos;
  const char quote = has_single && !has_double ? '"' : '\'';
  std::string out(1, quote);
  for (char32_t c : decode_utf8(s)) {
    if (c == static_cast<char32_t>(quote) || c == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(c));
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (!is_printable(c)) {
      char buf[16];
      if (c < 0x100) {
        std::snprintf(buf, sizeof(buf), "\\x%02x", static_cast<unsigned>(c));
      } else if (c < 0x10000) {
        std::snprintf(buf, sizeof(buf), "\\u%04x", static_cast<unsigned>(c));
      } else {
        std::snprintf(buf, sizeof(buf), "\\U%08x", static_cast<unsigned>(c));
      }
      out += buf;
    } else {
      append_utf8(out, c);
    }
  }
  out.push_back(quote);
  return out;
}

void append_json_string(std::string& out, const std::string& s, bool ensure_ascii) {
  out.push_back('"');
  for (char32_t c : decode_utf8(s)) {
    switch (c) {
      case '"':
        out += "\\\"";
        continue;
      case '\\':
        out += "\\\\";
        continue;
      case '\n':
        out += "\\n";
        continue;
      case '\r':
        out += "\\r";
        continue;
      case '\t':
        out += "\\t";
        continue;
      case '\b':
        out += "\\b";
        continue;
      case '\f':
        out += "\\f";
        continue;
      default:
        break;
    }
    char buf[16];
    if (c < 0x20 || (ensure_ascii && c >= 0x80)) {
      if (c >= 0x10000) {
        const char32_t v = c - 0x10000;
        std::snprintf(buf, sizeof(buf), "\\u%04x\\u%04x", static_cast<unsigned>(0xD800 + (v >> 10)),
                      static_cast<unsigned>(0xDC00 + (v & 0x3FF)));
      } else {
        std::snprintf(buf, sizeof(buf), "\\u%04x", static_cast<unsigned>(c));
      }
      out += buf;
    } else {
      append_utf8(out, c);
    }
  }
  out.push_back('"');
}

std::string json_float(double d) {
  if (std::isnan(d)) return "NaN";
  if (std::isinf(d)) return d < 0 ? "-Infinity" : "Infinity";
  return py_float_repr(d);
}

Status dump_json(std::string& out, const Value& v, const JsonDumpOptions& o, int depth) {
  auto newline_indent = [&](int level) {
    out.push_back('\n');
    for (int i = 0; i < level; ++i) out += o.indent;
  };
  switch (v.kind()) {
    case ValueKind::kNone:
      out += "null";
      return Status::ok();
    case ValueKind::kBool:
      out += v.as_bool() ? "true" : "false";
      return Status::ok();
    case ValueKind::kInt:
      out += std::to_string(v.as_int());
      return Status::ok();
    case ValueKind::kFloat:
      out += json_float(v.as_float());
      return Status::ok();
    case ValueKind::kString:
      append_json_string(out, v.as_string(), o.ensure_ascii);
      return Status::ok();
    case ValueKind::kList: {
      if (v.items().empty()) {
        out += "[]";
        return Status::ok();
      }
      out.push_back('[');
      bool first = true;
      for (const Value& item : v.items()) {
        if (!first) out += o.item_separator;
        first = false;
        if (o.has_indent) newline_indent(depth + 1);
        ANVIL_RETURN_IF_ERROR(dump_json(out, item, o, depth + 1));
      }
      if (o.has_indent) newline_indent(depth);
      out.push_back(']');
      return Status::ok();
    }
    case ValueKind::kDict: {
      if (v.dict().entries.empty()) {
        out += "{}";
        return Status::ok();
      }
      std::vector<std::pair<std::string, const Value*>> items;
      for (const auto& [k, val] : v.dict().entries) {
        std::string key;
        switch (k.kind()) {
          case ValueKind::kString:
            key = k.as_string();
            break;
          case ValueKind::kNone:
            key = "null";
            break;
          case ValueKind::kBool:
            key = k.as_bool() ? "true" : "false";
            break;
          case ValueKind::kInt:
            key = std::to_string(k.as_int());
            break;
          case ValueKind::kFloat:
            key = json_float(k.as_float());
            break;
          case ValueKind::kUndefined:
          case ValueKind::kList:
          case ValueKind::kDict:
          case ValueKind::kNamespace:
          case ValueKind::kMacro:
            return invalid_argument(std::string("TypeError: keys must be str, int, float, bool or None, not ") +
                                    type_name(k));
        }
        items.emplace_back(std::move(key), &val);
      }
      if (o.sort_keys) {
        std::stable_sort(items.begin(), items.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
      }
      out.push_back('{');
      bool first = true;
      for (const auto& [key, val] : items) {
        if (!first) out += o.item_separator;
        first = false;
        if (o.has_indent) newline_indent(depth + 1);
        append_json_string(out, key, o.ensure_ascii);
        out += o.key_separator;
        ANVIL_RETURN_IF_ERROR(dump_json(out, *val, o, depth + 1));
      }
      if (o.has_indent) newline_indent(depth);
      out.push_back('}');
      return Status::ok();
    }
    case ValueKind::kUndefined:
    case ValueKind::kNamespace:
    case ValueKind::kMacro:
      break;
  }
  return invalid_argument(std::string("TypeError: Object of type ") + type_name(v) + " is not JSON serializable");
}

}  // namespace

std::string to_repr(const Value& v) {
  switch (v.kind()) {
    case ValueKind::kString:
      return repr_string(v.as_string());
    case ValueKind::kUndefined:
      return "Undefined";
    case ValueKind::kNone:
    case ValueKind::kBool:
    case ValueKind::kInt:
    case ValueKind::kFloat:
    case ValueKind::kList:
    case ValueKind::kDict:
    case ValueKind::kNamespace:
    case ValueKind::kMacro:
      return to_str(v);
  }
  return "";
}

std::string to_str(const Value& v) {
  switch (v.kind()) {
    case ValueKind::kUndefined:
      return "";
    case ValueKind::kNone:
      return "None";
    case ValueKind::kBool:
      return v.as_bool() ? "True" : "False";
    case ValueKind::kInt:
      return std::to_string(v.as_int());
    case ValueKind::kFloat:
      return py_float_repr(v.as_float());
    case ValueKind::kString:
      return v.as_string();
    case ValueKind::kList: {
      std::string out = v.is_tuple() ? "(" : "[";
      for (size_t i = 0; i < v.items().size(); ++i) {
        if (i) out += ", ";
        out += to_repr(v.items()[i]);
      }
      if (v.is_tuple() && v.items().size() == 1) out += ",";
      out += v.is_tuple() ? ")" : "]";
      return out;
    }
    case ValueKind::kDict: {
      if (v.dict().is_loop) return "<LoopContext>";
      std::string out = "{";
      bool first = true;
      for (const auto& [k, val] : v.dict().entries) {
        if (!first) out += ", ";
        first = false;
        out += to_repr(k) + ": " + to_repr(val);
      }
      return out + "}";
    }
    case ValueKind::kNamespace: {
      std::string out = "<Namespace {";
      bool first = true;
      for (const auto& [k, val] : v.ns().attrs) {
        if (!first) out += ", ";
        first = false;
        out += repr_string(k) + ": " + to_repr(val);
      }
      return out + "}>";
    }
    case ValueKind::kMacro:
      return "<Macro>";
  }
  return "";
}

Result<std::string> to_json_text(const Value& v, const JsonDumpOptions& opts) {
  std::string out;
  ANVIL_RETURN_IF_ERROR(dump_json(out, v, opts, 0));
  return out;
}

namespace {

template <typename J>
Value from_json_impl(const J& j) {
  switch (j.type()) {
    case nlohmann::json::value_t::null:
    case nlohmann::json::value_t::discarded:
      return Value::none();
    case nlohmann::json::value_t::boolean:
      return Value::boolean(j.template get<bool>());
    case nlohmann::json::value_t::number_integer:
      return Value::integer(j.template get<int64_t>());
    case nlohmann::json::value_t::number_unsigned: {
      const auto u = j.template get<uint64_t>();
      if (u > static_cast<uint64_t>(INT64_MAX)) return Value::floating(static_cast<double>(u));
      return Value::integer(static_cast<int64_t>(u));
    }
    case nlohmann::json::value_t::number_float:
      return Value::floating(j.template get<double>());
    case nlohmann::json::value_t::string:
      return Value::string(j.template get<std::string>());
    case nlohmann::json::value_t::binary:
      return Value::none();
    case nlohmann::json::value_t::array: {
      std::vector<Value> items;
      items.reserve(j.size());
      for (const auto& e : j) items.push_back(from_json_impl(e));
      return Value::list(std::move(items));
    }
    case nlohmann::json::value_t::object: {
      DictData d;
      d.entries.reserve(j.size());
      for (auto it = j.begin(); it != j.end(); ++it) d.entries.emplace_back(Value::string(it.key()), from_json_impl(*it));
      return Value::dict(std::move(d));
    }
  }
  return Value::none();
}

}  // namespace

Value from_json(const nlohmann::ordered_json& j) { return from_json_impl(j); }
Value from_json(const nlohmann::json& j) { return from_json_impl(j); }

}  // namespace anvil::jinja
