// Jinja filters (jinja2/filters.py semantics, HF's tojson) and the Python str/dict/list methods
// that chat templates call. Filters that Jinja implements as generators (map, select...) return
// lists here, which render identically wherever the subset lets a template use them.
#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "tokenizer/jinja/builtins.h"
#include "tokenizer/jinja/py_string.h"

namespace anvil::jinja {

namespace {

const char* const kFilters[] = {"abs",     "attr",    "capitalize", "count",   "d",          "default", "dictsort", "first",
                                "float",   "indent",  "int",        "items",   "join",       "last",    "length",
                                "list",    "lower",   "map",        "max",     "min",        "reject",  "rejectattr",
                                "replace", "reverse", "round",      "safe",    "select",     "selectattr", "sort",
                                "string",  "sum",     "title",      "tojson",  "trim",       "unique",  "upper"};

const char* const kMethods[] = {"startswith", "endswith", "strip",   "lstrip",       "rstrip",       "split",
                                "rsplit",     "splitlines", "upper", "lower",        "title",        "capitalize",
                                "replace",    "find",     "rfind",   "count",        "join",         "isdigit",
                                "isalpha",    "isalnum",  "isspace", "isupper",      "islower",      "removeprefix",
                                "removesuffix", "items",  "keys",    "values",       "get",          "index",
                                "cycle"};

Status type_error(const std::string& msg) { return invalid_argument("TypeError: " + msg); }

Status too_large(std::string_view what) {
  return invalid_argument(std::string(what) + " would build a string over " + std::to_string(kMaxStringBytes) +
                          " bytes");
}

// str.replace, refusing results over kMaxStringBytes before building them.
Result<Value> checked_replace(const std::string& s, const std::string& old_sub, const std::string& new_sub,
                              int64_t count) {
  uint64_t hits = old_sub.empty() ? utf8_length(s) + 1 : static_cast<uint64_t>(py_count(s, old_sub));
  if (count >= 0) hits = std::min<uint64_t>(hits, static_cast<uint64_t>(count));
  if (new_sub.size() > old_sub.size() &&
      s.size() + hits * (new_sub.size() - old_sub.size()) > kMaxStringBytes) {
    return too_large("replace()");
  }
  return Value::string(py_replace(s, old_sub, new_sub, count));
}

// Joins the str() of `items` with `sep`, refusing results over kMaxStringBytes.
Result<Value> checked_join(const std::vector<Value>& items, const std::string& sep) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) {
    if (i) out += sep;
    out += to_str(items[i]);
    if (out.size() > kMaxStringBytes) return too_large("join()");
  }
  return Value::string(std::move(out));
}

// Jinja's make_attrgetter: "a.b.0" walks getitem per dotted part (digits index lists).
Result<Value> get_path(const Value& item, const Value& attribute) {
  if (!attribute.is_string()) return get_item(item, attribute);
  Value cur = item;
  for (const std::string& part : py_split(attribute.as_string(), std::string("."), -1, false)) {
    const bool digits = !part.empty() && std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; });
    ANVIL_ASSIGN_OR_RETURN(cur, get_item(cur, digits ? Value::integer(std::strtoll(part.c_str(), nullptr, 10))
                                                     : Value::string(part)));
  }
  return cur;
}

// Sort/compare key for case-insensitive filters.
Value fold_case(const Value& v, bool case_sensitive) {
  if (!case_sensitive && v.is_string()) return Value::string(py_lower(v.as_string()));
  return v;
}

Result<std::vector<Value>> keyed(const std::vector<Value>& items, const std::optional<Value>& attribute,
                                 bool case_sensitive) {
  std::vector<Value> keys;
  for (const Value& item : items) {
    Value k = item;
    if (attribute && !attribute->is_none()) {
      ANVIL_ASSIGN_OR_RETURN(k, get_path(item, *attribute));
    }
    keys.push_back(fold_case(k, case_sensitive));
  }
  return keys;
}

Result<Value> filter_tojson(const Value& v, const CallArgs& args) {
  ANVIL_ASSIGN_OR_RETURN(auto b, bind_args("tojson", args, {"ensure_ascii", "indent", "separators", "sort_keys"}));
  JsonDumpOptions o;
  o.ensure_ascii = b[0] && truthy(*b[0]);
  if (b[1] && !b[1]->is_none()) {
    o.has_indent = true;
    if (b[1]->is_string()) {
      o.indent = b[1]->as_string();
    } else if (b[1]->is_integral()) {
      if (b[1]->as_int() > 4096) return invalid_argument("ValueError: tojson indent over 4096");
      o.indent = std::string(static_cast<size_t>(std::max<int64_t>(0, b[1]->as_int())), ' ');
    } else {
      return type_error("tojson indent must be an int or a string");
    }
    o.item_separator = ",";
  }
  if (b[2] && !b[2]->is_none()) {
    if (!b[2]->is_list() || b[2]->items().size() != 2 || !b[2]->items()[0].is_string() ||
        !b[2]->items()[1].is_string()) {
      return type_error("tojson separators must be a pair of strings");
    }
    o.item_separator = b[2]->items()[0].as_string();
    o.key_separator = b[2]->items()[1].as_string();
  }
  o.sort_keys = b[3] && truthy(*b[3]);
  ANVIL_ASSIGN_OR_RETURN(std::string text, to_json_text(v, o));
  return Value::string(std::move(text));
}

Result<Value> filter_int(const Value& v, const std::optional<Value>& dflt, const std::optional<Value>& base_arg) {
  const Value fallback = dflt ? *dflt : Value::integer(0);
  const int base = base_arg && base_arg->is_integral() ? static_cast<int>(base_arg->as_int()) : 10;
  if (v.is_integral()) return Value::integer(v.as_int());
  if (v.kind() == ValueKind::kFloat) {
    if (!std::isfinite(v.as_float())) return fallback;
    return Value::integer(static_cast<int64_t>(v.as_float()));
  }
  if (v.is_string()) {
    std::string s = py_strip(v.as_string(), std::nullopt, true, true);
    s.erase(std::remove(s.begin(), s.end(), '_'), s.end());
    if (!s.empty()) {
      char* end = nullptr;
      errno = 0;
      const long long i = std::strtoll(s.c_str(), &end, base);
      if (*end == '\0' && errno == 0) return Value::integer(i);
      const double d = std::strtod(s.c_str(), &end);
      if (*end == '\0' && std::isfinite(d)) return Value::integer(static_cast<int64_t>(d));
    }
  }
  return fallback;
}

Result<Value> filter_float(const Value& v, const std::optional<Value>& dflt) {
  const Value fallback = dflt ? *dflt : Value::floating(0.0);
  if (v.is_number()) return Value::floating(v.as_float());
  if (v.is_string()) {
    const std::string s = py_strip(v.as_string(), std::nullopt, true, true);
    char* end = nullptr;
    const double d = std::strtod(s.c_str(), &end);
    if (!s.empty() && *end == '\0') return Value::floating(d);
  }
  return fallback;
}

Result<Value> filter_select(std::string_view name, const Value& v, const CallArgs& args) {
  const bool by_attr = name == "selectattr" || name == "rejectattr";
  const bool keep_if = name == "select" || name == "selectattr";
  ANVIL_ASSIGN_OR_RETURN(std::vector<Value> items, iterate(v));
  size_t next = 0;
  std::optional<Value> attribute;
  if (by_attr) {
    if (args.positional.empty()) return type_error(std::string(name) + "() needs an attribute name");
    attribute = args.positional[next++];
  }
  std::optional<std::string> test;
  if (next < args.positional.size()) {
    if (!args.positional[next].is_string()) return type_error(std::string(name) + "() test name must be a string");
    test = args.positional[next++].as_string();
    if (!is_known_test(*test)) return invalid_argument("TemplateRuntimeError: No test named '" + *test + "'.");
  }
  CallArgs test_args;
  test_args.positional.assign(args.positional.begin() + static_cast<std::ptrdiff_t>(next), args.positional.end());
  test_args.keyword = args.keyword;
  std::vector<Value> out;
  for (const Value& item : items) {
    Value subject = item;
    if (attribute) {
      ANVIL_ASSIGN_OR_RETURN(subject, get_path(item, *attribute));
    }
    bool pass = false;
    if (test) {
      ANVIL_ASSIGN_OR_RETURN(pass, apply_test(*test, subject, test_args));
    } else {
      pass = truthy(subject);
    }
    if (pass == keep_if) out.push_back(item);
  }
  return Value::list(std::move(out));
}

Result<Value> filter_map(const Value& v, const CallArgs& args) {
  ANVIL_ASSIGN_OR_RETURN(std::vector<Value> items, iterate(v));
  std::vector<Value> out;
  if (args.positional.empty()) {
    ANVIL_ASSIGN_OR_RETURN(auto b, bind_args("map", args, {"attribute", "default"}));
    if (!b[0]) return type_error("map() needs a filter name or attribute=");
    for (const Value& item : items) {
      ANVIL_ASSIGN_OR_RETURN(Value x, get_path(item, *b[0]));
      if (x.is_undefined() && b[1]) x = *b[1];
      out.push_back(std::move(x));
    }
    return Value::list(std::move(out));
  }
  if (!args.positional[0].is_string()) return type_error("map() filter name must be a string");
  const std::string filter = args.positional[0].as_string();
  if (!is_known_filter(filter)) return invalid_argument("TemplateRuntimeError: No filter named '" + filter + "'.");
  CallArgs rest;
  rest.positional.assign(args.positional.begin() + 1, args.positional.end());
  rest.keyword = args.keyword;
  for (const Value& item : items) {
    ANVIL_ASSIGN_OR_RETURN(Value x, apply_filter(filter, item, rest));
    out.push_back(std::move(x));
  }
  return Value::list(std::move(out));
}

Result<Value> filter_minmax(bool is_max, const Value& v, const CallArgs& args) {
  ANVIL_ASSIGN_OR_RETURN(auto b, bind_args(is_max ? "max" : "min", args, {"case_sensitive", "attribute"}));
  ANVIL_ASSIGN_OR_RETURN(std::vector<Value> items, iterate(v));
  if (items.empty()) return Value::undefined("No aggregated item, sequence was empty.");
  ANVIL_ASSIGN_OR_RETURN(std::vector<Value> keys, keyed(items, b[1], b[0] && truthy(*b[0])));
  size_t best = 0;
  for (size_t i = 1; i < items.size(); ++i) {
    ANVIL_ASSIGN_OR_RETURN(bool better, is_max ? less_than(keys[best], keys[i]) : less_than(keys[i], keys[best]));
    if (better) best = i;
  }
  return items[best];
}

Result<Value> filter_sort(const Value& v, const CallArgs& args) {
  ANVIL_ASSIGN_OR_RETURN(auto b, bind_args("sort", args, {"reverse", "case_sensitive", "attribute"}));
  ANVIL_ASSIGN_OR_RETURN(std::vector<Value> items, iterate(v));
  ANVIL_ASSIGN_OR_RETURN(std::vector<Value> keys, keyed(items, b[2], b[1] && truthy(*b[1])));
  std::vector<size_t> order(items.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  Status failed;
  const bool reverse = b[0] && truthy(*b[0]);
  std::stable_sort(order.begin(), order.end(), [&](size_t x, size_t y) {
    Result<bool> lt = reverse ? less_than(keys[y], keys[x]) : less_than(keys[x], keys[y]);
    if (!lt.is_ok()) {
      failed = lt.status();
      return false;
    }
    return *lt;
  });
  ANVIL_RETURN_IF_ERROR(failed);
  std::vector<Value> out;
  for (size_t i : order) out.push_back(items[i]);
  return Value::list(std::move(out));
}

Result<Value> filter_indent(const Value& v, const CallArgs& args) {
  ANVIL_ASSIGN_OR_RETURN(auto b, bind_args("indent", args, {"width", "first", "blank"}));
  std::string indention(4, ' ');
  if (b[0] && b[0]->is_string()) {
    indention = b[0]->as_string();
  } else if (b[0] && b[0]->is_integral()) {
    if (b[0]->as_int() > 4096) return invalid_argument("FilterArgumentError: indent width over 4096");
    indention = std::string(static_cast<size_t>(std::max<int64_t>(0, b[0]->as_int())), ' ');
  } else if (b[0]) {
    return type_error("indent width must be an int or a string");
  }
  const std::string s = to_str(v) + "\n";
  std::vector<std::string> lines = py_splitlines(s, false);
  if (s.size() + lines.size() * indention.size() > kMaxStringBytes) return too_large("indent()");
  std::string rv;
  if (b[2] && truthy(*b[2])) {
    for (size_t i = 0; i < lines.size(); ++i) rv += (i ? "\n" + indention : "") + lines[i];
  } else {
    rv = lines.empty() ? "" : lines[0];
    for (size_t i = 1; i < lines.size(); ++i) rv += "\n" + (lines[i].empty() ? "" : indention + lines[i]);
  }
  if (b[1] && truthy(*b[1])) rv = indention + rv;
  return Value::string(std::move(rv));
}

Result<Value> sequence_end(const Value& v, bool last) {
  ANVIL_ASSIGN_OR_RETURN(std::vector<Value> items, iterate(v));
  if (items.empty()) {
    return Value::undefined(last ? "No last item, sequence was empty." : "No first item, sequence was empty.");
  }
  return last ? items.back() : items.front();
}

Result<Value> filter_length(const Value& v) {
  switch (v.kind()) {
    case ValueKind::kUndefined:
      return Value::integer(0);
    case ValueKind::kString:
      return Value::integer(static_cast<int64_t>(utf8_length(v.as_string())));
    case ValueKind::kList:
      return Value::integer(static_cast<int64_t>(v.items().size()));
    case ValueKind::kDict:
      if (!v.dict().is_loop) return Value::integer(static_cast<int64_t>(v.dict().entries.size()));
      break;
    case ValueKind::kNone:
    case ValueKind::kBool:
    case ValueKind::kInt:
    case ValueKind::kFloat:
    case ValueKind::kNamespace:
    case ValueKind::kMacro:
      break;
  }
  return type_error(std::string("object of type '") + type_name(v) + "' has no len()");
}

Value items_of(const DictData& d) {
  std::vector<Value> out;
  for (const auto& [k, v] : d.entries) out.push_back(Value::list({k, v}, /*is_tuple=*/true));
  return Value::list(std::move(out));
}

}  // namespace

bool is_known_filter(std::string_view name) {
  for (const char* f : kFilters)
    if (name == f) return true;
  return false;
}

bool is_known_method(std::string_view name) {
  for (const char* m : kMethods)
    if (name == m) return true;
  return false;
}

Result<Value> apply_filter(std::string_view name, const Value& v, const CallArgs& args) {
  // These convert or concatenate the value itself, which jinja2's Undefined refuses.
  if ((name == "int" || name == "float" || name == "indent") && v.is_undefined()) return undefined_error(v);
  if (name == "tojson") return filter_tojson(v, args);
  if (name == "length" || name == "count") return filter_length(v);
  if (name == "map") return filter_map(v, args);
  if (name == "select" || name == "reject" || name == "selectattr" || name == "rejectattr") {
    return filter_select(name, v, args);
  }
  if (name == "max" || name == "min") return filter_minmax(name == "max", v, args);
  if (name == "sort") return filter_sort(v, args);
  if (name == "indent") return filter_indent(v, args);
  if (name == "first" || name == "last") return sequence_end(v, name == "last");
  if (name == "default" || name == "d") {
    ANVIL_ASSIGN_OR_RETURN(auto b, bind_args(name, args, {"default_value", "boolean"}));
    const bool boolean = b[1] && truthy(*b[1]);
    if (v.is_undefined() || (boolean && !truthy(v))) return b[0] ? *b[0] : Value::string("");
    return v;
  }
  if (name == "dictsort") {
    ANVIL_ASSIGN_OR_RETURN(auto b, bind_args(name, args, {"case_sensitive", "by", "reverse"}));
    if (v.is_undefined()) return undefined_error(v);
    if (!v.is_dict() || v.dict().is_loop) return invalid_argument("FilterArgumentError: dictsort needs a mapping");
    const std::string by = b[1] ? to_str(*b[1]) : "key";
    if (by != "key" && by != "value") {
      return invalid_argument("FilterArgumentError: You can only sort by either \"key\" or \"value\"");
    }
    const Value pairs = items_of(v.dict());
    CallArgs sort_args;
    sort_args.keyword.emplace_back("reverse", b[2] ? *b[2] : Value::boolean(false));
    sort_args.keyword.emplace_back("case_sensitive", b[0] ? *b[0] : Value::boolean(false));
    sort_args.keyword.emplace_back("attribute", Value::integer(by == "key" ? 0 : 1));
    return filter_sort(pairs, sort_args);
  }
  if (name == "items") {
    if (v.is_undefined()) return Value::list({});
    if (!v.is_dict() || v.dict().is_loop) return type_error("Can only get item pairs from a mapping.");
    return items_of(v.dict());
  }
  if (name == "list") {
    ANVIL_ASSIGN_OR_RETURN(std::vector<Value> items, iterate(v));
    return Value::list(std::move(items));
  }
  if (name == "join") {
    ANVIL_ASSIGN_OR_RETURN(auto b, bind_args(name, args, {"d", "attribute"}));
    ANVIL_ASSIGN_OR_RETURN(std::vector<Value> items, iterate(v));
    if (b[1] && !b[1]->is_none()) {
      for (Value& x : items) {
        ANVIL_ASSIGN_OR_RETURN(x, get_path(x, *b[1]));
      }
    }
    return checked_join(items, b[0] ? to_str(*b[0]) : "");
  }
  if (name == "unique") {
    ANVIL_ASSIGN_OR_RETURN(auto b, bind_args(name, args, {"case_sensitive", "attribute"}));
    ANVIL_ASSIGN_OR_RETURN(std::vector<Value> items, iterate(v));
    ANVIL_ASSIGN_OR_RETURN(std::vector<Value> keys, keyed(items, b[1], b[0] && truthy(*b[0])));
    std::vector<Value> out;
    std::vector<Value> seen;
    for (size_t i = 0; i < items.size(); ++i) {
      if (std::any_of(seen.begin(), seen.end(), [&](const Value& s) { return equals(s, keys[i]); })) continue;
      seen.push_back(keys[i]);
      out.push_back(items[i]);
    }
    return Value::list(std::move(out));
  }
  if (name == "reverse") {
    if (v.is_string()) {
      std::u32string cps = decode_utf8(v.as_string());
      std::reverse(cps.begin(), cps.end());
      return Value::string(encode_utf8(cps));
    }
    ANVIL_ASSIGN_OR_RETURN(std::vector<Value> items, iterate(v));
    std::reverse(items.begin(), items.end());
    return Value::list(std::move(items));
  }
  if (name == "sum") {
    ANVIL_ASSIGN_OR_RETURN(auto b, bind_args(name, args, {"attribute", "start"}));
    ANVIL_ASSIGN_OR_RETURN(std::vector<Value> items, iterate(v));
    Value total = b[1] ? *b[1] : Value::integer(0);
    for (const Value& item : items) {
      Value x = item;
      if (b[0] && !b[0]->is_none()) {
        ANVIL_ASSIGN_OR_RETURN(x, get_path(item, *b[0]));
      }
      if (!x.is_number() || !total.is_number()) return type_error("sum() needs numbers");
      total = total.is_integral() && x.is_integral() ? Value::integer(total.as_int() + x.as_int())
                                                     : Value::floating(total.as_float() + x.as_float());
    }
    return total;
  }
  if (name == "int") {
    ANVIL_ASSIGN_OR_RETURN(auto b, bind_args(name, args, {"default", "base"}));
    return filter_int(v, b[0], b[1]);
  }
  if (name == "float") {
    ANVIL_ASSIGN_OR_RETURN(auto b, bind_args(name, args, {"default"}));
    return filter_float(v, b[0]);
  }
  if (name == "abs") {
    if (v.is_integral()) return Value::integer(std::llabs(v.as_int()));
    if (v.kind() == ValueKind::kFloat) return Value::floating(std::fabs(v.as_float()));
    return type_error(std::string("bad operand type for abs(): '") + type_name(v) + "'");
  }
  if (name == "round") {
    ANVIL_ASSIGN_OR_RETURN(auto b, bind_args(name, args, {"precision", "method"}));
    if (!v.is_number()) return type_error("round() needs a number");
    const int64_t precision = b[0] && b[0]->is_integral() ? b[0]->as_int() : 0;
    const std::string method = b[1] ? to_str(*b[1]) : "common";
    const double scale = std::pow(10.0, static_cast<double>(precision));
    const double x = v.as_float() * scale;
    double r = 0;
    if (method == "common") {
      r = std::nearbyint(x);  // Python's round(): ties to even under the default rounding mode
    } else if (method == "ceil") {
      r = std::ceil(x);
    } else if (method == "floor") {
      r = std::floor(x);
    } else {
      return invalid_argument("FilterArgumentError: method must be common, ceil or floor");
    }
    return Value::floating(r / scale);
  }
  if (name == "attr") {
    ANVIL_ASSIGN_OR_RETURN(auto b, bind_args(name, args, {"name"}));
    if (!b[0] || !b[0]->is_string()) return type_error("attr() needs an attribute name");
    // Python getattr only: a dict's keys are items, not attributes.
    if (v.is_dict() && !v.dict().is_loop) {
      return Value::undefined("'dict object' has no attribute '" + b[0]->as_string() + "'");
    }
    return get_attr(v, b[0]->as_string());
  }
  if (name == "replace") {
    ANVIL_ASSIGN_OR_RETURN(auto b, bind_args(name, args, {"old", "new", "count"}));
    if (!b[0] || !b[1]) return type_error("replace() needs old and new");
    const int64_t count = b[2] && !b[2]->is_none() ? b[2]->as_int() : -1;
    return checked_replace(to_str(v), to_str(*b[0]), to_str(*b[1]), count);
  }
  if (name == "trim") {
    ANVIL_ASSIGN_OR_RETURN(auto b, bind_args(name, args, {"chars"}));
    std::optional<std::string> chars;
    if (b[0] && !b[0]->is_none()) chars = to_str(*b[0]);
    return Value::string(py_strip(to_str(v), chars, true, true));
  }
  ANVIL_ASSIGN_OR_RETURN(auto none, bind_args(name, args, {}));
  (void)none;
  if (name == "string" || name == "safe") return Value::string(to_str(v));
  if (name == "upper") return Value::string(py_upper(to_str(v)));
  if (name == "lower") return Value::string(py_lower(to_str(v)));
  if (name == "capitalize") return Value::string(py_capitalize(to_str(v)));
  if (name == "title") {
    // Jinja's title: upper-case the first letter of each word, words split at spaces/brackets/dashes.
    std::string out;
    bool at_word_start = true;
    for (char32_t c : decode_utf8(to_str(v))) {
      std::string one;
      append_utf8(one, c);
      const bool boundary = py_isspace(c) || c == '-' || c == '(' || c == '{' || c == '[' || c == '<';
      out += boundary ? one : (at_word_start ? py_upper(one) : py_lower(one));
      at_word_start = boundary;
    }
    return Value::string(std::move(out));
  }
  return invalid_argument("unsupported filter '" + std::string(name) + "'");
}

Result<Value> call_method(const Value& obj, std::string_view name, const CallArgs& args) {
  if (obj.is_undefined()) return undefined_error(obj);
  const std::string fn(name);
  if (obj.is_string()) {
    const std::string& s = obj.as_string();
    auto opt_str = [](const std::optional<Value>& v) -> std::optional<std::string> {
      if (!v || v->is_none()) return std::nullopt;
      return to_str(*v);
    };
    if (name == "startswith" || name == "endswith") {
      ANVIL_ASSIGN_OR_RETURN(auto b, bind_args(name, args, {"prefix"}));
      if (!b[0]) return type_error(fn + "() takes at least 1 argument (0 given)");
      std::vector<Value> options = b[0]->is_list() ? b[0]->items() : std::vector<Value>{*b[0]};
      for (const Value& o : options) {
        if (!o.is_string()) return type_error(fn + " first arg must be str or a tuple of str");
        const std::string& p = o.as_string();
        const bool hit = name == "startswith" ? s.compare(0, p.size(), p) == 0 && s.size() >= p.size()
                                              : s.size() >= p.size() && s.compare(s.size() - p.size(), p.size(), p) == 0;
        if (hit) return Value::boolean(true);
      }
      return Value::boolean(false);
    }
    if (name == "strip" || name == "lstrip" || name == "rstrip") {
      ANVIL_ASSIGN_OR_RETURN(auto b, bind_args(name, args, {"chars"}));
      return Value::string(py_strip(s, opt_str(b[0]), name != "rstrip", name != "lstrip"));
    }
    if (name == "split" || name == "rsplit") {
      ANVIL_ASSIGN_OR_RETURN(auto b, bind_args(name, args, {"sep", "maxsplit"}));
      const std::optional<std::string> sep = opt_str(b[0]);
      if (sep && sep->empty()) return invalid_argument("ValueError: empty separator");
      const int64_t maxsplit = b[1] && b[1]->is_integral() ? b[1]->as_int() : -1;
      std::vector<Value> out;
      for (auto& part : py_split(s, sep, maxsplit, name == "rsplit")) out.push_back(Value::string(std::move(part)));
      return Value::list(std::move(out));
    }
    if (name == "splitlines") {
      ANVIL_ASSIGN_OR_RETURN(auto b, bind_args(name, args, {"keepends"}));
      std::vector<Value> out;
      for (auto& line : py_splitlines(s, b[0] && truthy(*b[0]))) out.push_back(Value::string(std::move(line)));
      return Value::list(std::move(out));
    }
    if (name == "replace") {
      ANVIL_ASSIGN_OR_RETURN(auto b, bind_args(name, args, {"old", "new", "count"}));
      if (!b[0] || !b[1] || !b[0]->is_string() || !b[1]->is_string()) return type_error("replace() needs two strings");
      return checked_replace(s, b[0]->as_string(), b[1]->as_string(), b[2] && b[2]->is_integral() ? b[2]->as_int() : -1);
    }
    if (name == "find" || name == "rfind" || name == "count" || name == "index" || name == "removeprefix" ||
        name == "removesuffix") {
      ANVIL_ASSIGN_OR_RETURN(auto b, bind_args(name, args, {"sub"}));
      if (!b[0] || !b[0]->is_string()) return type_error(fn + "() needs a string argument");
      const std::string& sub = b[0]->as_string();
      if (name == "count") return Value::integer(py_count(s, sub));
      if (name == "removeprefix") return Value::string(s.rfind(sub, 0) == 0 ? s.substr(sub.size()) : s);
      if (name == "removesuffix") {
        const bool ends = s.size() >= sub.size() && s.compare(s.size() - sub.size(), sub.size(), sub) == 0;
        return Value::string(ends && !sub.empty() ? s.substr(0, s.size() - sub.size()) : s);
      }
      const int64_t at = py_find(s, sub, name == "rfind");
      if (name == "index" && at < 0) return invalid_argument("ValueError: substring not found");
      return Value::integer(at);
    }
    if (name == "join") {
      ANVIL_ASSIGN_OR_RETURN(auto b, bind_args(name, args, {"iterable"}));
      if (!b[0]) return type_error("join() takes exactly one argument (0 given)");
      ANVIL_ASSIGN_OR_RETURN(std::vector<Value> items, iterate(*b[0]));
      for (size_t i = 0; i < items.size(); ++i) {
        if (!items[i].is_string()) {
          return type_error("sequence item " + std::to_string(i) + ": expected str instance, " + type_name(items[i]) +
                            " found");
        }
      }
      return checked_join(items, s);
    }
    ANVIL_ASSIGN_OR_RETURN(auto none, bind_args(name, args, {}));
    (void)none;
    if (name == "upper") return Value::string(py_upper(s));
    if (name == "lower") return Value::string(py_lower(s));
    if (name == "title") return Value::string(py_title(s));
    if (name == "capitalize") return Value::string(py_capitalize(s));
    if (name == "isdigit") return Value::boolean(py_is_class(s, CharClass::kDigit));
    if (name == "isalpha") return Value::boolean(py_is_class(s, CharClass::kAlpha));
    if (name == "isalnum") return Value::boolean(py_is_class(s, CharClass::kAlnum));
    if (name == "isspace") return Value::boolean(py_is_class(s, CharClass::kSpace));
    if (name == "isupper") return Value::boolean(py_is_class(s, CharClass::kUpper));
    if (name == "islower") return Value::boolean(py_is_class(s, CharClass::kLower));
  } else if (obj.is_dict() && obj.dict().is_loop) {
    if (name == "cycle") {
      if (args.positional.empty()) return type_error("no items for cycling given");
      const Value* index0 = obj.dict().find(std::string_view("index0"));
      const auto i = static_cast<size_t>(index0->as_int()) % args.positional.size();
      return args.positional[i];
    }
  } else if (obj.is_dict()) {
    if (name == "get") {
      ANVIL_ASSIGN_OR_RETURN(auto b, bind_args(name, args, {"key", "default"}));
      if (!b[0]) return type_error("get expected at least 1 argument, got 0");
      const Value* v = obj.dict().find(*b[0]);
      if (v) return *v;
      return b[1] ? *b[1] : Value::none();
    }
    ANVIL_ASSIGN_OR_RETURN(auto none, bind_args(name, args, {}));
    (void)none;
    if (name == "items") return items_of(obj.dict());
    if (name == "keys" || name == "values") {
      std::vector<Value> out;
      for (const auto& [k, v] : obj.dict().entries) out.push_back(name == "keys" ? k : v);
      return Value::list(std::move(out));
    }
  } else if (obj.is_list()) {
    if (name == "count" || name == "index") {
      ANVIL_ASSIGN_OR_RETURN(auto b, bind_args(name, args, {"value"}));
      if (!b[0]) return type_error(fn + "() takes exactly one argument (0 given)");
      int64_t count = 0;
      for (size_t i = 0; i < obj.items().size(); ++i) {
        if (!equals(obj.items()[i], *b[0])) continue;
        if (name == "index") return Value::integer(static_cast<int64_t>(i));
        ++count;
      }
      if (name == "index") return invalid_argument("ValueError: " + to_repr(*b[0]) + " is not in list");
      return Value::integer(count);
    }
  }
  return undefined_error(Value::undefined("'" + object_description(obj) + "' has no attribute '" + fn + "'"));
}

}  // namespace anvil::jinja
