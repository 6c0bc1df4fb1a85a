// Normalizer implementations. Each works on whole pieces (the text between added tokens), as HF
// does; alignment tracking is not needed because anvil never returns offsets.
#include "tokenizer/normalizer.h"

#include <cstdlib>
#include <utf8proc.h>

#include <nlohmann/json.hpp>

#include "tokenizer/pattern.h"
#include "tokenizer/utf8.h"

namespace anvil::tok {
namespace {

bool is_ascii(const std::string& s) {
  for (unsigned char c : s)
    if (c >= 0x80) return false;
  return true;
}

// Code points that NFC leaves alone in any sequence drawn from this set: they are NFC_QC=Yes,
// never the second half of a composition, and no two of them compose (Latin below U+0300, kana,
// CJK ideographs, emoji).
bool nfc_inert(char32_t cp) {
  return cp < 0x300 || (cp >= 0x3041 && cp <= 0x3096) || (cp >= 0x30A1 && cp <= 0x30FA) ||
         (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x1F000 && cp <= 0x1FAFF);
}

bool all_nfc_inert(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    if (static_cast<unsigned char>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    if (!nfc_inert(utf8_next(s, i))) return false;
  }
  return true;
}

class UnicodeNormalizer final : public Normalizer {
 public:
  UnicodeNormalizer(utf8proc_option_t opts, bool nfc) : opts_(opts), nfc_(nfc) {}
  void normalize(std::string& text) const override {
    if (text.empty() || is_ascii(text)) return;  // ASCII is invariant under every normal form
    if (nfc_ && all_nfc_inert(text)) return;
    utf8proc_uint8_t* out = nullptr;
    utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                                      static_cast<utf8proc_ssize_t>(text.size()), &out, opts_);
    if (n >= 0 && out) text.assign(reinterpret_cast<const char*>(out), static_cast<size_t>(n));
    std::free(out);
  }

 private:
  utf8proc_option_t opts_;
  bool nfc_;
};

class LowercaseNormalizer final : public Normalizer {
 public:
  void normalize(std::string& text) const override {
    std::string out;
    out.reserve(text.size());
    for (size_t i = 0; i < text.size();) {
      unsigned char c = static_cast<unsigned char>(text[i]);
      if (c < 0x80) {
        out += static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c);
        ++i;
        continue;
      }
      char32_t cp = utf8_next(text, i);
      if (cp == 0x130) {  // İ lowercases to i + combining dot above (Rust's to_lowercase)
        out += "i\xCC\x87";
        continue;
      }
      utf8_append(out, static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(cp))));
    }
    text.swap(out);
  }
};

class StripNormalizer final : public Normalizer {
 public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
  void normalize(std::string& text) const override {
    size_t b = 0, e = text.size();
    if (left_) {
      while (b < e) {
        size_t i = b;
        if (!is_unicode_whitespace(utf8_next(text, i))) break;
        b = i;
      }
    }
    if (right_) {
      while (e > b) {
        size_t s = e - 1;
        while (s > b && (static_cast<unsigned char>(text[s]) & 0xC0) == 0x80) --s;
        size_t i = s;
        if (!is_unicode_whitespace(utf8_next(text, i))) break;
        e = s;
      }
    }
    text = text.substr(b, e - b);
  }

 private:
  bool left_, right_;
};

class PrependNormalizer final : public Normalizer {
 public:
  explicit PrependNormalizer(std::string p) : prepend_(std::move(p)) {}
  void normalize(std::string& text) const override {
    if (!text.empty()) text.insert(0, prepend_);
  }

 private:
  std::string prepend_;
};

class ReplaceNormalizer final : public Normalizer {
 public:
  ReplaceNormalizer(std::unique_ptr<Pattern> p, std::string content)
      : pattern_(std::move(p)), content_(std::move(content)) {}
  void normalize(std::string& text) const override { text = pattern_->replace_all(text, content_); }

 private:
  std::unique_ptr<Pattern> pattern_;
  std::string content_;
};

class SequenceNormalizer final : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> parts) : parts_(std::move(parts)) {}
  void normalize(std::string& text) const override {
    for (const auto& p : parts_) p->normalize(text);
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> parts_;
};

}  // namespace

Result<std::unique_ptr<Normalizer>> make_normalizer(const nlohmann::json& j) {
  if (j.is_null()) return std::unique_ptr<Normalizer>();
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string())
    return invalid_argument("normalizer: expected an object with a string \"type\"");
  const std::string type = j["type"].get<std::string>();
  const auto compose = [](int extra) {
    return static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE | extra);
  };
  if (type == "NFC") return std::unique_ptr<Normalizer>(new UnicodeNormalizer(compose(0), true));
  if (type == "NFKC") return std::unique_ptr<Normalizer>(new UnicodeNormalizer(compose(UTF8PROC_COMPAT), false));
  if (type == "NFD")
    return std::unique_ptr<Normalizer>(
        new UnicodeNormalizer(static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_DECOMPOSE), false));
  if (type == "NFKD")
    return std::unique_ptr<Normalizer>(new UnicodeNormalizer(
        static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT), false));
  if (type == "Lowercase") return std::unique_ptr<Normalizer>(new LowercaseNormalizer());
  if (type == "Strip") {
    return std::unique_ptr<Normalizer>(
        new StripNormalizer(j.value("strip_left", true), j.value("strip_right", true)));
  }
  if (type == "Prepend") {
    if (!j.contains("prepend") || !j["prepend"].is_string())
      return invalid_argument("normalizer Prepend: missing string field \"prepend\"");
    return std::unique_ptr<Normalizer>(new PrependNormalizer(j["prepend"].get<std::string>()));
  }
  if (type == "Replace") {
    if (!j.contains("pattern") || !j.contains("content") || !j["content"].is_string())
      return invalid_argument("normalizer Replace: needs \"pattern\" and string \"content\"");
    ANVIL_ASSIGN_OR_RETURN(auto pattern, make_pattern(j["pattern"]));
    return std::unique_ptr<Normalizer>(new ReplaceNormalizer(std::move(pattern), j["content"].get<std::string>()));
  }
  if (type == "Sequence") {
    if (!j.contains("normalizers") || !j["normalizers"].is_array())
      return invalid_argument("normalizer Sequence: missing array \"normalizers\"");
    std::vector<std::unique_ptr<Normalizer>> parts;
    for (const auto& sub : j["normalizers"]) {
      ANVIL_ASSIGN_OR_RETURN(auto n, make_normalizer(sub));
      if (n) parts.push_back(std::move(n));
    }
    return std::unique_ptr<Normalizer>(new SequenceNormalizer(std::move(parts)));
  }
  return unsupported("normalizer type \"" + type + "\" is not supported");
}

}  // namespace anvil::tok
