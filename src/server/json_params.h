// Typed, range-checked reads of optional fields of a JSON request body. An absent field or a
// JSON null leaves the output untouched (the caller's default); a wrong type or an out-of-range
// value gives a 400 ApiError naming the field. Integers accept integral floats (3.0), as
// OpenAI's own validation does; booleans are never numbers.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "server/api_error.h"

namespace anvil::server {

using MaybeError = std::optional<ApiError>;
// Request bodies keep their key order: chat templates print tool schemas as given.
using RequestJson = nlohmann::ordered_json;

// True when `body` has `name` and it is not null.
bool has_field(const RequestJson& body, const char* name);

MaybeError read_bool(const RequestJson& body, const char* name, bool* out);
MaybeError read_int(const RequestJson& body, const char* name, int64_t lo, int64_t hi, int64_t* out);
MaybeError read_float(const RequestJson& body, const char* name, double lo, double hi, double* out);
MaybeError read_string(const RequestJson& body, const char* name, std::string* out);

// `v` as an int64 if it is an integer or an integral float within int64; else nullopt.
std::optional<int64_t> json_as_int(const RequestJson& v);
// A short description of a JSON value's type for error messages ("a string", "an array", ...).
const char* json_type_phrase(const RequestJson& v);

}  // namespace anvil::server
