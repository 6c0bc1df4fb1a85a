// Python str semantics over UTF-8 text: code-point length and slicing, strip/split/case mapping,
// and float repr. Invalid UTF-8 bytes survive a decode/encode round trip unchanged (they map to
// lone surrogates U+DC80..U+DCFF, like Python's surrogateescape).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace anvil::jinja {

std::u32string decode_utf8(std::string_view s);
std::string encode_utf8(std::u32string_view s);
void append_utf8(std::string& out, char32_t c);
size_t utf8_length(std::string_view s);

bool py_isspace(char32_t c);

// str.strip / lstrip / rstrip; `chars` unset strips whitespace.
std::string py_strip(std::string_view s, const std::optional<std::string>& chars, bool left, bool right);
// str.split / rsplit; `sep` unset splits on whitespace runs. maxsplit < 0: no limit.
std::vector<std::string> py_split(std::string_view s, const std::optional<std::string>& sep, int64_t maxsplit,
                                  bool from_right);
std::vector<std::string> py_splitlines(std::string_view s, bool keepends);
std::string py_replace(std::string_view s, std::string_view old_sub, std::string_view new_sub, int64_t count);
int64_t py_count(std::string_view s, std::string_view sub);
// str.find in code points; -1 if absent.
int64_t py_find(std::string_view s, std::string_view sub, bool from_right);

std::string py_upper(std::string_view s);
std::string py_lower(std::string_view s);
std::string py_capitalize(std::string_view s);
std::string py_title(std::string_view s);
enum class CharClass { kDigit, kAlpha, kAlnum, kSpace, kUpper, kLower };
bool py_is_class(std::string_view s, CharClass cls);

// repr(float) / str(float): shortest round-trip digits, "1e-05", "3.0", "inf", "nan".
std::string py_float_repr(double d);

// Python slice a[start:stop:step] resolved against a length; fills the selected indices.
// step == 0 is the caller's error to report.
std::vector<int64_t> py_slice_indices(int64_t length, std::optional<int64_t> start, std::optional<int64_t> stop,
                                      int64_t step);

}  // namespace anvil::jinja
