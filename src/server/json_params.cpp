// Typed field readers for request bodies; see json_params.h. Messages follow OpenAI's wording:
// "'<field>' must be <what>, got <value>".
#include "server/json_params.h"

#include <cmath>
#include <sstream>

namespace anvil::server {
namespace {

std::string format_number(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

ApiError type_error(const char* name, const char* expected, const RequestJson& got) {
  return invalid_param(name, std::string("'") + name + "' must be " + expected + ", got " + json_type_phrase(got));
}

}  // namespace

const char* json_type_phrase(const RequestJson& v) {
  switch (v.type()) {
    case nlohmann::json::value_t::null: return "null";
    case nlohmann::json::value_t::object: return "an object";
    case nlohmann::json::value_t::array: return "an array";
    case nlohmann::json::value_t::string: return "a string";
    case nlohmann::json::value_t::boolean: return "a boolean";
    case nlohmann::json::value_t::number_integer:
    case nlohmann::json::value_t::number_unsigned: return "an integer";
    case nlohmann::json::value_t::number_float: return "a number";
    case nlohmann::json::value_t::binary: return "binary data";
    case nlohmann::json::value_t::discarded: return "an invalid value";
  }
  return "an unknown value";
}

bool has_field(const RequestJson& body, const char* name) {
  auto it = body.find(name);
  return it != body.end() && !it->is_null();
}

std::optional<int64_t> json_as_int(const RequestJson& v) {
  if (v.is_number_integer() && !v.is_number_unsigned()) return v.get<int64_t>();
  if (v.is_number_unsigned()) {
    uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(INT64_MAX)) return std::nullopt;
    return static_cast<int64_t>(u);
  }
  if (v.is_number_float()) {
    double d = v.get<double>();
    // 2^63 is exactly representable; anything >= it does not fit.
    if (!std::isfinite(d) || d != std::floor(d) || d >= 9223372036854775808.0 || d < -9223372036854775808.0) {
      return std::nullopt;
    }
    return static_cast<int64_t>(d);
  }
  return std::nullopt;
}

MaybeError read_bool(const RequestJson& body, const char* name, bool* out) {
  if (!has_field(body, name)) return std::nullopt;
  const auto& v = body.at(name);
  if (!v.is_boolean()) return type_error(name, "a boolean", v);
  *out = v.get<bool>();
  return std::nullopt;
}

MaybeError read_int(const RequestJson& body, const char* name, int64_t lo, int64_t hi, int64_t* out) {
  if (!has_field(body, name)) return std::nullopt;
  const auto& v = body.at(name);
  if (!v.is_number()) return type_error(name, "an integer", v);
  auto i = json_as_int(v);
  if (!i) {
    return invalid_param(name, std::string("'") + name + "' must be an integer, got " + format_number(v.get<double>()));
  }
  if (*i < lo || *i > hi) {
    return invalid_param(name, std::string("'") + name + "' must be in [" + std::to_string(lo) + ", " +
                                   std::to_string(hi) + "], got " + std::to_string(*i));
  }
  *out = *i;
  return std::nullopt;
}

MaybeError read_float(const RequestJson& body, const char* name, double lo, double hi, double* out) {
  if (!has_field(body, name)) return std::nullopt;
  const auto& v = body.at(name);
  if (!v.is_number()) return type_error(name, "a number", v);
  double d = v.get<double>();
  if (!std::isfinite(d) || d < lo || d > hi) {
    return invalid_param(name, std::string("'") + name + "' must be in [" + format_number(lo) + ", " +
                                   format_number(hi) + "], got " + format_number(d));
  }
  *out = d;
  return std::nullopt;
}

MaybeError read_string(const RequestJson& body, const char* name, std::string* out) {
  if (!has_field(body, name)) return std::nullopt;
  const auto& v = body.at(name);
  if (!v.is_string()) return type_error(name, "a string", v);
  *out = v.get<std::string>();
  return std::nullopt;
}

}  // namespace anvil::server
