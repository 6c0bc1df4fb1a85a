// Tokenizer pipeline, in HF order: split on raw added tokens -> normalize each remaining piece ->
// split on normalized added tokens -> pre-tokenize -> BPE per word -> post-process. Loading
// parses tokenizer.json with nlohmann::json; any type or shape error becomes a Status.
#include "tokenizer/tokenizer.h"

#include <algorithm>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "core/mmap_file.h"
#include "tokenizer/added_vocab.h"
#include "tokenizer/bpe_model.h"
#include "tokenizer/decoder.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/pre_tokenizer.h"
#include "tokenizer/tokenizer_json.h"
#include "tokenizer/utf8.h"

namespace anvil {

using nlohmann::json;

struct Tokenizer::Impl {
  std::unique_ptr<tok::BpeModel> model;
  std::unique_ptr<tok::Normalizer> normalizer;
  std::unique_ptr<tok::PreTokenizer> pre_tokenizer;
  std::unique_ptr<tok::Decoder> decoder;
  tok::AddedVocab added;
  // The post-processor for a single sequence, composed into ids around the sequence.
  std::vector<int32_t> post_prefix, post_suffix;
  int32_t bos = -1, eos = -1, pad = -1;
  bool add_bos = false, add_eos = false;
  int64_t vocab_size = 0;

  void encode_piece(std::string_view piece, bool at_origin, std::vector<int32_t>& out) const;
};

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;

namespace {

// Appends one post-processor's ids around the sequence: pre + [prefix, A, suffix] + post.
Status compose_post_processor(const json& j, std::vector<int32_t>& prefix, std::vector<int32_t>& suffix) {
  if (j.is_null()) return Status::ok();
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string())
    return invalid_argument("post_processor: expected an object with a string \"type\"");
  const std::string type = j["type"].get<std::string>();
  if (type == "ByteLevel") return Status::ok();  // only trims offsets; ids are unchanged
  if (type == "Sequence") {
    if (!j.contains("processors") || !j["processors"].is_array())
      return invalid_argument("post_processor Sequence: missing array \"processors\"");
    for (const auto& p : j["processors"]) ANVIL_RETURN_IF_ERROR(compose_post_processor(p, prefix, suffix));
    return Status::ok();
  }
  if (type == "TemplateProcessing") {
    if (!j.contains("single") || !j["single"].is_array())
      return invalid_argument("post_processor TemplateProcessing: missing array \"single\"");
    const json specials = j.value("special_tokens", json::object());
    std::vector<int32_t> pre, post;
    bool seen_sequence = false;
    for (const auto& item : j["single"]) {
      if (item.contains("Sequence")) {
        seen_sequence = true;
        continue;
      }
      if (!item.contains("SpecialToken") || !item["SpecialToken"].contains("id"))
        return invalid_argument("post_processor TemplateProcessing: bad item " + item.dump());
      const std::string name = item["SpecialToken"]["id"].get<std::string>();
      if (!specials.contains(name) || !specials[name].contains("ids") || !specials[name]["ids"].is_array())
        return invalid_argument("post_processor TemplateProcessing: special token \"" + name + "\" has no ids");
      for (const auto& id : specials[name]["ids"]) (seen_sequence ? post : pre).push_back(id.get<int32_t>());
    }
    prefix.insert(prefix.begin(), pre.begin(), pre.end());
    suffix.insert(suffix.end(), post.begin(), post.end());
    return Status::ok();
  }
  return unsupported("post_processor type \"" + type + "\" is not supported");
}

// tokenizer_config.json names special tokens either as a string or as {"content": ...}.
std::string config_token(const json& cfg, const char* key) {
  if (!cfg.contains(key)) return {};
  const json& v = cfg[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  return {};
}

}  // namespace

Result<std::unique_ptr<Tokenizer>> Tokenizer::from_json(std::string_view tokenizer_json, std::string_view config_json,
                                                        const std::string& source) {
  json j = json::parse(tokenizer_json, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return data_loss(source + ": not valid JSON");
  json cfg;
  if (!config_json.empty()) {
    cfg = json::parse(config_json, nullptr, false);
    if (cfg.is_discarded() || !cfg.is_object()) return data_loss("tokenizer_config.json: not valid JSON");
  }
  return tokenizer_from_parsed_json(j, cfg, source);
}

Result<std::unique_ptr<Tokenizer>> tokenizer_from_parsed_json(const nlohmann::json& j, const nlohmann::json& cfg,
                                                              const std::string& source) {
  if (!j.is_object()) return invalid_argument(source + ": expected a JSON object");
  auto impl = std::make_unique<Tokenizer::Impl>();
  try {
    const auto with_source = [&](const Status& s) { return s.with_context(source); };

    if (!j.contains("model") || !j["model"].is_object()) return invalid_argument(source + ": missing object \"model\"");
    const json& model = j["model"];
    std::string model_type = model.value("type", std::string());
    if (model_type.empty() && model.contains("merges")) model_type = "BPE";  // older files omit the type
    if (model_type != "BPE") return unsupported(source + ": model type \"" + model_type + "\" is not supported");
    auto m = tok::BpeModel::from_json(model);
    if (!m.is_ok()) return with_source(m.status());
    impl->model = std::move(m).value();

    auto n = tok::make_normalizer(j.value("normalizer", json()));
    if (!n.is_ok()) return with_source(n.status());
    impl->normalizer = std::move(n).value();
    auto p = tok::make_pre_tokenizer(j.value("pre_tokenizer", json()));
    if (!p.is_ok()) return with_source(p.status());
    impl->pre_tokenizer = std::move(p).value();
    auto d = tok::make_decoder(j.value("decoder", json()));
    if (!d.is_ok()) return with_source(d.status());
    impl->decoder = std::move(d).value();
    Status ps = compose_post_processor(j.value("post_processor", json()), impl->post_prefix, impl->post_suffix);
    if (!ps.is_ok()) return with_source(ps);

    impl->vocab_size = impl->model->id_limit();
    if (j.contains("added_tokens") && j["added_tokens"].is_array()) {
      for (const auto& a : j["added_tokens"]) {
        tok::AddedToken t;
        if (!a.contains("content") || !a["content"].is_string() || !a.contains("id") || !a["id"].is_number_integer())
          return invalid_argument(source + ": added_tokens entry without string content and integer id: " + a.dump());
        t.content = a["content"].get<std::string>();
        t.id = a["id"].get<int32_t>();
        t.special = a.value("special", false);
        t.normalized = a.value("normalized", !t.special);
        t.lstrip = a.value("lstrip", false);
        t.rstrip = a.value("rstrip", false);
        t.single_word = a.value("single_word", false);
        if (t.id < 0) return invalid_argument(source + ": added token \"" + t.content + "\" has a negative id");
        // As in HF, a token the model already knows keeps the model's id.
        if (int32_t model_id = impl->model->token_to_id(t.content); model_id >= 0) t.id = model_id;
        impl->vocab_size = std::max<int64_t>(impl->vocab_size, int64_t{t.id} + 1);
        std::string pattern = t.content;
        if (t.normalized && impl->normalizer) impl->normalizer->normalize(pattern);
        impl->added.add(std::move(t), pattern);
      }
    }

    if (cfg.is_object()) {
      const auto lookup = [&](const char* key) {
        std::string s = config_token(cfg, key);
        if (s.empty()) return -1;
        int32_t id = impl->added.find(s);
        return id >= 0 ? id : impl->model->token_to_id(s);
      };
      impl->bos = lookup("bos_token");
      impl->eos = lookup("eos_token");
      impl->pad = lookup("pad_token");
      if (cfg.contains("add_bos_token") && cfg["add_bos_token"].is_boolean()) impl->add_bos = cfg["add_bos_token"].get<bool>();
      if (cfg.contains("add_eos_token") && cfg["add_eos_token"].is_boolean()) impl->add_eos = cfg["add_eos_token"].get<bool>();
    }
  } catch (const std::exception& e) {
    return invalid_argument(source + ": malformed field: " + e.what());
  }
  return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(impl)));
}

Result<std::unique_ptr<Tokenizer>> Tokenizer::load(const std::string& dir_or_file) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path path(dir_or_file);
  fs::path dir = path;
  if (fs::is_directory(path, ec)) {
    path /= "tokenizer.json";
  } else {
    dir = path.parent_path();
  }
  if (!fs::exists(path, ec)) return not_found(path.string() + ": no such file (expected a HF tokenizer.json)");
  ANVIL_ASSIGN_OR_RETURN(std::string text, read_file(path.string()));
  std::string config;
  fs::path cfg_path = dir / "tokenizer_config.json";
  if (fs::exists(cfg_path, ec)) {
    ANVIL_ASSIGN_OR_RETURN(config, read_file(cfg_path.string()));
  }
  return from_json(text, config, path.string());
}

void Tokenizer::Impl::encode_piece(std::string_view piece, bool at_origin, std::vector<int32_t>& out) const {
  if (!pre_tokenizer) {
    model->tokenize(piece, out);
    return;
  }
  thread_local std::vector<tok::PreToken> words;
  words.clear();
  words.push_back(tok::PreToken{std::string(piece), at_origin});
  pre_tokenizer->pre_tokenize(words);
  for (const auto& w : words) model->tokenize(w.text, out);
}

std::vector<int32_t> Tokenizer::encode(std::string_view input, bool add_special_tokens) const {
  const Impl& im = *impl_;
  std::string sanitized;
  std::string_view text = input;
  if (!tok::utf8_is_valid(input)) {
    sanitized = tok::utf8_sanitize(input);
    text = sanitized;
  }
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 8);
  if (add_special_tokens) ids.insert(ids.end(), im.post_prefix.begin(), im.post_prefix.end());

  std::vector<tok::Segment> raw, norm;
  im.added.split(text, /*normalized=*/false, raw);
  std::string piece;
  for (const tok::Segment& s : raw) {
    if (s.id >= 0) {
      ids.push_back(s.id);
      continue;
    }
    piece.assign(text.substr(s.begin, s.end - s.begin));
    if (im.normalizer) im.normalizer->normalize(piece);
    norm.clear();
    im.added.split(piece, /*normalized=*/true, norm);
    for (const tok::Segment& n : norm) {
      if (n.id >= 0) {
        ids.push_back(n.id);
      } else {
        im.encode_piece(std::string_view(piece).substr(n.begin, n.end - n.begin), s.begin == 0 && n.begin == 0, ids);
      }
    }
  }
  if (add_special_tokens) ids.insert(ids.end(), im.post_suffix.begin(), im.post_suffix.end());
  return ids;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  const Impl& im = *impl_;
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    if (const tok::AddedToken* a = im.added.by_id(id)) {
      if (skip_special_tokens && a->special) continue;
      tokens.push_back(a->surface);
    } else if (const std::string* t = im.model->id_to_token(id)) {
      tokens.push_back(*t);
    }
  }
  if (!im.decoder) {
    std::string out;
    for (size_t k = 0; k < tokens.size(); ++k) {
      if (k) out += ' ';
      out += tokens[k];
    }
    return out;
  }
  im.decoder->decode_chain(tokens);
  std::string out;
  for (const auto& t : tokens) out += t;
  return out;
}

int32_t Tokenizer::token_to_id(std::string_view token) const {
  int32_t id = impl_->added.find(token);
  return id >= 0 ? id : impl_->model->token_to_id(token);
}

std::string Tokenizer::id_to_token(int32_t id) const {
  if (const tok::AddedToken* a = impl_->added.by_id(id)) return a->surface;
  const std::string* t = impl_->model->id_to_token(id);
  return t ? *t : std::string();
}

int64_t Tokenizer::vocab_size() const { return impl_->vocab_size; }
int32_t Tokenizer::bos_id() const { return impl_->bos; }
int32_t Tokenizer::eos_id() const { return impl_->eos; }
int32_t Tokenizer::pad_id() const { return impl_->pad; }
bool Tokenizer::add_bos_token() const { return impl_->add_bos; }
bool Tokenizer::add_eos_token() const { return impl_->add_eos; }
size_t Tokenizer::cache_size() const { return impl_->model->cache_size(); }

bool Tokenizer::is_special(int32_t id) const {
  const tok::AddedToken* a = impl_->added.by_id(id);
  return a && a->special;
}

std::vector<int32_t> Tokenizer::special_ids() const {
  std::vector<int32_t> out;
  for (const auto& t : impl_->added.tokens())
    if (t.special) out.push_back(t.id);
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace anvil
