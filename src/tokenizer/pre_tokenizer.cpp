// Pre-tokenizer implementations, following HF tokenizers' split semantics: matches and the gaps
// between them are labelled, optionally inverted, then merged by the SplitBehavior.
#include "tokenizer/pre_tokenizer.h"

#include <algorithm>

#include <utf8proc.h>

#include <nlohmann/json.hpp>

#include "tokenizer/pattern.h"
#include "tokenizer/utf8.h"

namespace anvil::tok {
namespace {

using Ranges = std::vector<std::pair<size_t, size_t>>;

struct Span {
  size_t b, e;
  bool is_match;
};

// Splits `piece` at `matches` (sorted, non-overlapping) by `behavior`, appending to `out`.
void split_piece(PreToken&& piece, const Ranges& matches, SplitBehavior behavior, bool invert,
                 std::vector<PreToken>& out) {
  const std::string& s = piece.text;
  if (matches.empty()) {
    // One unmatched span (a matched one if inverted): only Removed+invert can drop it.
    if (!(invert && behavior == SplitBehavior::kRemoved) && !s.empty()) out.push_back(std::move(piece));
    return;
  }
  std::vector<Span> spans;
  spans.reserve(matches.size() * 2 + 1);
  size_t prev = 0;
  for (auto [b, e] : matches) {
    if (b != prev) spans.push_back({prev, b, invert});
    spans.push_back({b, e, !invert});
    prev = e;
  }
  if (prev != s.size()) spans.push_back({prev, s.size(), invert});

  std::vector<Span> merged;
  merged.reserve(spans.size());
  switch (behavior) {
    case SplitBehavior::kIsolated:
      merged = std::move(spans);
      break;
    case SplitBehavior::kRemoved:
      for (const Span& sp : spans)
        if (!sp.is_match) merged.push_back(sp);
      break;
    case SplitBehavior::kMergedWithPrevious: {
      bool prev_match = false;
      for (const Span& sp : spans) {
        if (sp.is_match && !prev_match && !merged.empty()) {
          merged.back().e = sp.e;
        } else {
          merged.push_back(sp);
        }
        prev_match = sp.is_match;
      }
      break;
    }
    case SplitBehavior::kMergedWithNext: {
      bool prev_match = false;
      for (size_t k = spans.size(); k-- > 0;) {
        const Span& sp = spans[k];
        if (sp.is_match && !prev_match && !merged.empty()) {
          merged.back().b = sp.b;
        } else {
          merged.push_back(sp);
        }
        prev_match = sp.is_match;
      }
      std::reverse(merged.begin(), merged.end());
      break;
    }
    case SplitBehavior::kContiguous: {
      for (size_t k = 0; k < spans.size(); ++k) {
        if (k > 0 && spans[k].is_match == spans[k - 1].is_match) {
          merged.back().e = spans[k].e;
        } else {
          merged.push_back(spans[k]);
        }
      }
      break;
    }
  }
  for (const Span& sp : merged) {
    if (sp.e <= sp.b) continue;
    out.push_back(PreToken{s.substr(sp.b, sp.e - sp.b), piece.at_origin && sp.b == 0});
  }
}

Result<SplitBehavior> parse_behavior(const nlohmann::json& j) {
  if (!j.is_string()) return invalid_argument("pre_tokenizer Split: \"behavior\" must be a string");
  const std::string b = j.get<std::string>();
  if (b == "Removed") return SplitBehavior::kRemoved;
  if (b == "Isolated") return SplitBehavior::kIsolated;
  if (b == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (b == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (b == "Contiguous") return SplitBehavior::kContiguous;
  return invalid_argument("pre_tokenizer Split: unknown behavior \"" + b + "\"");
}

class SplitPreTokenizer final : public PreTokenizer {
 public:
  SplitPreTokenizer(std::unique_ptr<Pattern> p, SplitBehavior b, bool invert)
      : pattern_(std::move(p)), behavior_(b), invert_(invert) {}
  void pre_tokenize(std::vector<PreToken>& pieces) const override {
    std::vector<PreToken> out;
    out.reserve(pieces.size() * 4);
    Ranges m;
    for (auto& p : pieces) {
      pattern_->find_all(p.text, m);
      split_piece(std::move(p), m, behavior_, invert_, out);
    }
    pieces.swap(out);
  }

 private:
  std::unique_ptr<Pattern> pattern_;
  SplitBehavior behavior_;
  bool invert_;
};

constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class ByteLevelPreTokenizer final : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, std::unique_ptr<Regex> re)
      : add_prefix_space_(add_prefix_space), regex_(std::move(re)) {}
  void pre_tokenize(std::vector<PreToken>& pieces) const override {
    if (add_prefix_space_) {
      for (auto& p : pieces)
        if (p.text.empty() || p.text[0] != ' ') p.text.insert(0, 1, ' ');
    }
    if (regex_) {
      std::vector<PreToken> out;
      Ranges m;
      for (auto& p : pieces) {
        regex_->find_all(p.text, m);
        split_piece(std::move(p), m, SplitBehavior::kIsolated, false, out);
      }
      pieces.swap(out);
    }
    std::string mapped;
    for (auto& p : pieces) {
      mapped.clear();
      for (unsigned char c : p.text) mapped.append(byte_level_utf8(c));
      p.text.swap(mapped);
    }
  }

 private:
  bool add_prefix_space_;
  std::unique_ptr<Regex> regex_;
};

enum class PrependScheme { kFirst, kAlways, kNever };

class MetaspacePreTokenizer final : public PreTokenizer {
 public:
  MetaspacePreTokenizer(std::string replacement, PrependScheme scheme, bool split)
      : replacement_(std::move(replacement)), scheme_(scheme), split_(split) {}
  void pre_tokenize(std::vector<PreToken>& pieces) const override {
    std::vector<PreToken> out;
    Ranges m;
    for (auto& p : pieces) {
      std::string s;
      s.reserve(p.text.size() + replacement_.size());
      for (char c : p.text) {
        if (c == ' ') {
          s += replacement_;
        } else {
          s += c;
        }
      }
      bool starts = s.compare(0, replacement_.size(), replacement_) == 0;
      bool prepend = false;
      switch (scheme_) {
        case PrependScheme::kAlways: prepend = !starts; break;
        case PrependScheme::kFirst: prepend = !starts && p.at_origin; break;
        case PrependScheme::kNever: break;
      }
      if (prepend) s.insert(0, replacement_);
      PreToken np{std::move(s), p.at_origin};
      if (!split_) {
        if (!np.text.empty()) out.push_back(std::move(np));
        continue;
      }
      m.clear();
      for (size_t pos = 0; (pos = np.text.find(replacement_, pos)) != std::string::npos; pos += replacement_.size())
        m.emplace_back(pos, pos + replacement_.size());
      split_piece(std::move(np), m, SplitBehavior::kMergedWithNext, false, out);
    }
    pieces.swap(out);
  }

 private:
  std::string replacement_;
  PrependScheme scheme_;
  bool split_;
};

class DigitsPreTokenizer final : public PreTokenizer {
 public:
  explicit DigitsPreTokenizer(bool individual) : individual_(individual) {}
  void pre_tokenize(std::vector<PreToken>& pieces) const override {
    std::vector<PreToken> out;
    Ranges m;
    for (auto& p : pieces) {
      m.clear();
      for (size_t i = 0; i < p.text.size();) {
        size_t b = i;
        char32_t cp = utf8_next(p.text, i);
        utf8proc_category_t cat = utf8proc_category(static_cast<utf8proc_int32_t>(cp));
        if (cat == UTF8PROC_CATEGORY_ND || cat == UTF8PROC_CATEGORY_NL || cat == UTF8PROC_CATEGORY_NO)
          m.emplace_back(b, i);
      }
      split_piece(std::move(p), m, individual_ ? SplitBehavior::kIsolated : SplitBehavior::kContiguous, false, out);
    }
    pieces.swap(out);
  }

 private:
  bool individual_;
};

class SequencePreTokenizer final : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> parts) : parts_(std::move(parts)) {}
  void pre_tokenize(std::vector<PreToken>& pieces) const override {
    for (const auto& p : parts_) p->pre_tokenize(pieces);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> parts_;
};

}  // namespace

Result<std::unique_ptr<PreTokenizer>> make_pre_tokenizer(const nlohmann::json& j) {
  using Ptr = std::unique_ptr<PreTokenizer>;
  if (j.is_null()) return Ptr();
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string())
    return invalid_argument("pre_tokenizer: expected an object with a string \"type\"");
  const std::string type = j["type"].get<std::string>();
  if (type == "Split") {
    if (!j.contains("pattern")) return invalid_argument("pre_tokenizer Split: missing \"pattern\"");
    ANVIL_ASSIGN_OR_RETURN(auto pattern, make_pattern(j["pattern"]));
    ANVIL_ASSIGN_OR_RETURN(SplitBehavior behavior, parse_behavior(j.value("behavior", nlohmann::json("Isolated"))));
    return Ptr(new SplitPreTokenizer(std::move(pattern), behavior, j.value("invert", false)));
  }
  if (type == "ByteLevel") {
    std::unique_ptr<Regex> re;
    if (j.value("use_regex", true)) {
      ANVIL_ASSIGN_OR_RETURN(re, Regex::compile(kGpt2Pattern));
    }
    return Ptr(new ByteLevelPreTokenizer(j.value("add_prefix_space", true), std::move(re)));
  }
  if (type == "Metaspace") {
    std::string replacement = j.value("replacement", std::string("\xE2\x96\x81"));
    if (replacement.empty() || utf8_lead_len(static_cast<unsigned char>(replacement[0])) != replacement.size())
      return invalid_argument("pre_tokenizer Metaspace: \"replacement\" must be one character");
    PrependScheme scheme = PrependScheme::kAlways;
    if (j.contains("prepend_scheme") && j["prepend_scheme"].is_string()) {
      const std::string s = j["prepend_scheme"].get<std::string>();
      if (s == "first") {
        scheme = PrependScheme::kFirst;
      } else if (s == "always") {
        scheme = PrependScheme::kAlways;
      } else if (s == "never") {
        scheme = PrependScheme::kNever;
      } else {
        return invalid_argument("pre_tokenizer Metaspace: unknown prepend_scheme \"" + s + "\"");
      }
    } else if (j.contains("add_prefix_space")) {
      scheme = j.value("add_prefix_space", true) ? PrependScheme::kAlways : PrependScheme::kNever;
    }
    return Ptr(new MetaspacePreTokenizer(std::move(replacement), scheme, j.value("split", true)));
  }
  if (type == "Digits") return Ptr(new DigitsPreTokenizer(j.value("individual_digits", false)));
  if (type == "Sequence") {
    if (!j.contains("pretokenizers") || !j["pretokenizers"].is_array())
      return invalid_argument("pre_tokenizer Sequence: missing array \"pretokenizers\"");
    std::vector<Ptr> parts;
    for (const auto& sub : j["pretokenizers"]) {
      ANVIL_ASSIGN_OR_RETURN(auto p, make_pre_tokenizer(sub));
      if (p) parts.push_back(std::move(p));
    }
    return Ptr(new SequencePreTokenizer(std::move(parts)));
  }
  return unsupported("pre_tokenizer type \"" + type + "\" is not supported");
}

}  // namespace anvil::tok
