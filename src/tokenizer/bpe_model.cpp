// BPE merging as HF tokenizers does it: symbols start as single characters (or byte-fallback
// bytes, or fused unk runs); the lowest-ranked adjacent pair merges first, leftmost on ties.
#include "tokenizer/bpe_model.h"

#include <algorithm>
#include <cstdio>
#include <queue>

#include <nlohmann/json.hpp>

#include "tokenizer/utf8.h"

namespace anvil::tok {

void MergeTable::reserve(size_t n) {
  size_t cap = 16;
  int bits = 4;
  while (cap < n * 2) {
    cap <<= 1;
    ++bits;
  }
  slots_.assign(cap, Entry{kEmpty, 0, 0});
  mask_ = cap - 1;
  shift_ = 64 - bits;
  size_ = 0;
}

void MergeTable::insert(int32_t a, int32_t b, int32_t rank, int32_t new_id) {
  if ((size_ + 1) * 2 > slots_.size()) {
    std::vector<Entry> old;
    old.swap(slots_);
    reserve(std::max<size_t>(16, (size_ + 1) * 2));
    for (const Entry& e : old)
      if (e.key != kEmpty) insert(static_cast<int32_t>(e.key >> 32), static_cast<int32_t>(e.key & 0xFFFFFFFFu), e.rank, e.new_id);
  }
  uint64_t key = pack(a, b);
  for (size_t i = hash(key);; i = (i + 1) & mask_) {
    Entry& e = slots_[i];
    if (e.key == key) return;  // first (lowest-rank) definition wins, as in HF
    if (e.key == kEmpty) {
      e = Entry{key, rank, new_id};
      ++size_;
      return;
    }
  }
}

Result<std::unique_ptr<BpeModel>> BpeModel::from_json(const nlohmann::json& j) {
  auto m = std::unique_ptr<BpeModel>(new BpeModel());
  if (!j.contains("vocab") || !j["vocab"].is_object()) return invalid_argument("model: missing object \"vocab\"");
  if (j.contains("dropout") && j["dropout"].is_number() && j["dropout"].get<double>() > 0.0)
    return unsupported("model BPE: dropout > 0 is not supported (encoding must be deterministic)");
  const auto& vocab = j["vocab"];
  int64_t max_id = -1;
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    if (!it.value().is_number_integer()) return invalid_argument("model.vocab: id of \"" + it.key() + "\" is not an integer");
    int64_t id = it.value().get<int64_t>();
    if (id < 0 || id > INT32_MAX) return invalid_argument("model.vocab: id " + std::to_string(id) + " out of range");
    m->vocab_.insert(it.key(), static_cast<int32_t>(id));
    max_id = std::max(max_id, id);
  }
  m->id_to_token_.resize(static_cast<size_t>(max_id + 1));
  m->has_id_.assign(static_cast<size_t>(max_id + 1), false);
  m->vocab_.for_each([&](std::string_view tok, int32_t id) {
    m->id_to_token_[static_cast<size_t>(id)] = std::string(tok);
    m->has_id_[static_cast<size_t>(id)] = true;
  });
  const auto opt_string = [&](const char* key) {
    return j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : std::string();
  };
  m->continuing_subword_prefix_ = opt_string("continuing_subword_prefix");
  m->end_of_word_suffix_ = opt_string("end_of_word_suffix");
  m->byte_fallback_ = j.value("byte_fallback", false);
  m->fuse_unk_ = j.value("fuse_unk", false);
  m->ignore_merges_ = j.value("ignore_merges", false);
  if (j.contains("unk_token") && j["unk_token"].is_string()) {
    const std::string unk = j["unk_token"].get<std::string>();
    m->unk_id_ = m->token_to_id(unk);
    if (m->unk_id_ < 0) return invalid_argument("model: unk_token \"" + unk + "\" is not in the vocab");
  }
  m->all_bytes_present_ = true;
  for (int b = 0; b < 256; ++b) {
    char buf[8];
    std::snprintf(buf, sizeof(buf), "<0x%02X>", b);
    m->byte_ids_[static_cast<size_t>(b)] = m->token_to_id(buf);
    if (m->byte_ids_[static_cast<size_t>(b)] < 0) m->all_bytes_present_ = false;
  }

  m->small_char_ids_.resize(kSmallChars);
  for (char32_t c = 0; c < kSmallChars; ++c) {
    std::string s;
    utf8_append(s, c);
    m->small_char_ids_[c] = m->token_to_id(s);
  }

  if (!j.contains("merges") || !j["merges"].is_array()) return invalid_argument("model: missing array \"merges\"");
  const auto& merges = j["merges"];
  m->merges_.reserve(merges.size());
  const size_t prefix_len = m->continuing_subword_prefix_.size();
  int32_t rank = 0;
  static constexpr std::string_view kMeta = "\xE2\x96\x81";
  const auto ends_with_meta = [](const std::string& t) { return t.size() >= 3 && t.compare(t.size() - 3, 3, kMeta) == 0; };
  const auto starts_with_meta = [](const std::string& t) { return t.compare(0, 3, kMeta) == 0; };
  bool meta_boundary_merge = false;
  for (const auto& mj : merges) {
    std::string a, b;
    if (mj.is_string()) {
      const std::string& s = mj.get_ref<const std::string&>();
      size_t sp = s.find(' ');
      if (sp == std::string::npos || sp == 0 || sp + 1 == s.size())
        return invalid_argument("model.merges[" + std::to_string(rank) + "]: \"" + s + "\" is not \"a b\"");
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else if (mj.is_array() && mj.size() == 2 && mj[0].is_string() && mj[1].is_string()) {
      a = mj[0].get<std::string>();
      b = mj[1].get<std::string>();
    } else {
      return invalid_argument("model.merges[" + std::to_string(rank) + "]: expected \"a b\" or [a, b]");
    }
    int32_t ia = m->token_to_id(a), ib = m->token_to_id(b);
    if (ia < 0 || ib < 0)
      return invalid_argument("model.merges[" + std::to_string(rank) + "]: \"" + (ia < 0 ? a : b) + "\" is not in the vocab");
    std::string merged = a + (b.size() >= prefix_len ? b.substr(prefix_len) : b);
    int32_t inew = m->token_to_id(merged);
    if (inew < 0)
      return invalid_argument("model.merges[" + std::to_string(rank) + "]: merged token \"" + merged + "\" is not in the vocab");
    m->merges_.insert(ia, ib, rank, inew);
    if (!ends_with_meta(a) && starts_with_meta(b)) meta_boundary_merge = true;
    ++rank;
  }
  m->split_at_metaspace_ = !meta_boundary_merge && !m->ignore_merges_ && m->token_to_id(kMeta) >= 0 &&
                           m->continuing_subword_prefix_.empty() && m->end_of_word_suffix_.empty();
  return m;
}

// Spreads words over lock shards without hashing the whole word (the map hashes it anyway).
size_t BpeModel::shard_of(std::string_view w) {
  return (w.size() * 131 + static_cast<unsigned char>(w.front()) * 31 + static_cast<unsigned char>(w.back())) % kCacheShards;
}

size_t BpeModel::cache_size() const {
  size_t n = 0;
  for (auto& shard : cache_) {
    std::shared_lock lock(shard.mu);
    n += shard.map.size();
  }
  return n;
}

void BpeModel::cache_put(std::string_view word, const int32_t* ids, size_t n) const {
  CacheShard& shard = cache_[shard_of(word)];
  std::unique_lock lock(shard.mu);
  if (shard.map.size() >= kCacheMaxEntriesPerShard) shard.map.clear();
  shard.map.emplace(std::string(word), std::vector<int32_t>(ids, ids + n));
}

void BpeModel::tokenize(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (split_at_metaspace_ && word.size() > 16) {
    static constexpr std::string_view kMeta = "\xE2\x96\x81";
    size_t start = 0;
    for (size_t p = word.find(kMeta, 3); p != std::string_view::npos; p = word.find(kMeta, p + 3)) {
      if (word.compare(p - 3, 3, kMeta) == 0) continue;  // inside a run of "▁"
      if (p > start) {
        tokenize_part(word.substr(start, p - start), out);
        start = p;
      }
    }
    tokenize_part(word.substr(start), out);
    return;
  }
  tokenize_part(word, out);
}

void BpeModel::tokenize_part(std::string_view word, std::vector<int32_t>& out) const {
  if (ignore_merges_) {
    int32_t id = token_to_id(word);
    if (id >= 0) {
      out.push_back(id);
      return;
    }
  }
  const bool cacheable = word.size() <= kCacheMaxWordBytes;
  if (cacheable) {
    CacheShard& shard = cache_[shard_of(word)];
    std::shared_lock lock(shard.mu);
    auto it = shard.map.find(word);
    if (it != shard.map.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  size_t start = out.size();
  merge_word(word, out);
  if (cacheable) cache_put(word, out.data() + start, out.size() - start);
}

namespace {
struct Symbol {
  int32_t id;
  int32_t prev;
  int32_t next;
  int32_t alive;
};
struct MergeCandidate {
  int32_t rank;
  int32_t pos;
  int32_t new_id;
  // std::priority_queue is a max-heap: "less" means larger rank, then larger position.
  bool operator<(const MergeCandidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
};
}  // namespace

void BpeModel::merge_word(std::string_view w, std::vector<int32_t>& out) const {
  thread_local std::vector<Symbol> syms;
  thread_local std::vector<MergeCandidate> heap_storage;
  syms.clear();
  syms.reserve(w.size());
  const bool plain = continuing_subword_prefix_.empty() && end_of_word_suffix_.empty();
  const auto push = [&](int32_t id) {
    int32_t n = static_cast<int32_t>(syms.size());
    syms.push_back(Symbol{id, n - 1, -1, 1});
    if (n > 0) syms[static_cast<size_t>(n - 1)].next = n;
  };
  bool pending_unk = false;
  std::string piece;
  for (size_t i = 0; i < w.size();) {
    size_t b = i;
    i += std::min(utf8_lead_len(static_cast<unsigned char>(w[i])), w.size() - i);
    std::string_view ch = w.substr(b, i - b);
    int32_t id;
    if (plain) {
      if (ch.size() == 1) {
        id = static_cast<unsigned char>(ch[0]) < 0x80 ? small_char_ids_[static_cast<unsigned char>(ch[0])] : token_to_id(ch);
      } else if (ch.size() == 2 && (static_cast<unsigned char>(ch[0]) & 0xE0) == 0xC0) {
        size_t k = 0;
        id = small_char_ids_[utf8_next(ch, k)];
      } else {
        id = token_to_id(ch);
      }
    } else {
      piece.clear();
      if (b > 0) piece += continuing_subword_prefix_;
      piece += ch;
      if (i == w.size()) piece += end_of_word_suffix_;
      id = token_to_id(piece);
    }
    if (id >= 0) {
      if (pending_unk) {
        push(unk_id_);
        pending_unk = false;
      }
      push(id);
      continue;
    }
    if (byte_fallback_) {
      bool ok = true;
      for (char c : ch) ok = ok && byte_ids_[static_cast<unsigned char>(c)] >= 0;
      if (ok) {
        if (pending_unk) {  // HF pushes a pending unk only when a known token follows
          push(unk_id_);
          pending_unk = false;
        }
        for (char c : ch) push(byte_ids_[static_cast<unsigned char>(c)]);
        continue;
      }
    }
    if (unk_id_ >= 0) {
      if (pending_unk && !fuse_unk_) push(unk_id_);
      pending_unk = true;
    }
  }
  if (pending_unk) push(unk_id_);

  if (syms.size() > 1) {
    heap_storage.clear();
    std::priority_queue<MergeCandidate> heap(std::less<MergeCandidate>(), std::move(heap_storage));
    for (size_t k = 0; k + 1 < syms.size(); ++k) {
      if (const auto* e = merges_.find(syms[k].id, syms[k + 1].id))
        heap.push(MergeCandidate{e->rank, static_cast<int32_t>(k), e->new_id});
    }
    while (!heap.empty()) {
      MergeCandidate top = heap.top();
      heap.pop();
      Symbol& left = syms[static_cast<size_t>(top.pos)];
      if (!left.alive || left.next < 0) continue;
      Symbol& right = syms[static_cast<size_t>(left.next)];
      const auto* e = merges_.find(left.id, right.id);
      if (!e || e->new_id != top.new_id) continue;
      left.id = top.new_id;
      right.alive = 0;
      left.next = right.next;
      if (right.next >= 0) syms[static_cast<size_t>(right.next)].prev = top.pos;
      if (left.prev >= 0) {
        if (const auto* pe = merges_.find(syms[static_cast<size_t>(left.prev)].id, left.id))
          heap.push(MergeCandidate{pe->rank, left.prev, pe->new_id});
      }
      if (left.next >= 0) {
        if (const auto* ne = merges_.find(left.id, syms[static_cast<size_t>(left.next)].id))
          heap.push(MergeCandidate{ne->rank, top.pos, ne->new_id});
      }
    }
  }
  for (const Symbol& s : syms)
    if (s.alive) out.push_back(s.id);
}

}  // namespace anvil::tok
