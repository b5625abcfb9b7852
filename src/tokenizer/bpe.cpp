#include "tokenizer/bpe.h"

#include <algorithm>
#include <cstdio>
#include <limits>

#include "tokenizer/utf8.h"

namespace fgnet::tokenizer_internal {

// ---------------------------------------------------------------------------------------------
// Vocabulary

std::uint64_t Vocabulary::Hash(std::string_view s) {
  std::uint64_t h = 0xCBF29CE484222325ull;  // FNV-1a, then a final avalanche
  for (const char c : s) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001B3ull;
  }
  h ^= h >> 33;
  h *= 0xFF51AFD7ED558CCDull;
  h ^= h >> 33;
  return h;
}

void Vocabulary::Reserve(std::size_t tokens) {
  std::size_t want = 16;
  while (want < tokens * 2) want *= 2;
  if (want > slots_.size()) Rehash(want);
}

void Vocabulary::Rehash(std::size_t slot_count) {
  std::vector<Slot> old = std::move(slots_);
  slots_.assign(slot_count, Slot{});
  const std::size_t mask = slot_count - 1;
  for (const Slot& s : old) {
    if (s.id < 0) continue;
    const std::uint64_t h = Hash(Token(s.id));
    std::size_t i = static_cast<std::size_t>(h) & mask;
    while (slots_[i].id >= 0) i = (i + 1) & mask;
    slots_[i] = s;
  }
}

std::int32_t Vocabulary::Find(std::string_view token) const {
  if (slots_.empty()) return -1;
  const std::uint64_t h = Hash(token);
  const auto tag = static_cast<std::uint32_t>(h >> 32);
  const std::size_t mask = slots_.size() - 1;
  for (std::size_t i = static_cast<std::size_t>(h) & mask;; i = (i + 1) & mask) {
    const Slot& s = slots_[i];
    if (s.id < 0) return -1;
    if (s.hash == tag && Token(s.id) == token) return s.id;
  }
}

std::string_view Vocabulary::Token(std::int32_t id) const {
  if (!Has(id)) return {};
  const auto i = static_cast<std::size_t>(id);
  return std::string_view(arena_).substr(offset_[i], length_[i]);
}

bool Vocabulary::Add(std::string_view token, std::int32_t id) {
  if (id < 0 || Has(id) || Find(token) >= 0) return false;
  if ((count_ + 1) * 2 > slots_.size()) Rehash(std::max<std::size_t>(16, slots_.size() * 2));
  const auto i = static_cast<std::size_t>(id);
  if (i >= offset_.size()) {
    offset_.resize(i + 1, 0);
    length_.resize(i + 1, kNone);
  }
  offset_[i] = static_cast<std::uint32_t>(arena_.size());
  length_[i] = static_cast<std::uint32_t>(token.size());
  arena_.append(token);
  const std::uint64_t h = Hash(token);
  const std::size_t mask = slots_.size() - 1;
  std::size_t slot = static_cast<std::size_t>(h) & mask;
  while (slots_[slot].id >= 0) slot = (slot + 1) & mask;
  slots_[slot] = Slot{static_cast<std::uint32_t>(h >> 32), id};
  ++count_;
  return true;
}

// ---------------------------------------------------------------------------------------------
// MergeMap

void MergeMap::Reserve(std::size_t merges) {
  std::size_t want = 16;
  while (want * 3 < merges * 4) want *= 2;  // load factor at most 3/4
  if (want > slots_.size()) Rehash(want);
}

void MergeMap::Rehash(std::size_t slot_count) {
  std::vector<Entry> old = std::move(slots_);
  slots_.assign(slot_count, Entry{});
  mask_ = slot_count - 1;
  shift_ = 64;
  for (std::size_t n = slot_count; n > 1; n >>= 1) --shift_;
  for (const Entry& e : old) {
    if (e.key == kEmpty) continue;
    std::size_t i = Slot(e.key);
    while (slots_[i].key != kEmpty) i = (i + 1) & mask_;
    slots_[i] = e;
  }
}

void MergeMap::Insert(std::int32_t left, std::int32_t right, std::uint32_t rank,
                      std::int32_t merged) {
  if ((count_ + 1) * 4 > slots_.size() * 3) Rehash(std::max<std::size_t>(16, slots_.size() * 2));
  const std::uint64_t key = Key(left, right);
  std::size_t i = Slot(key);
  while (slots_[i].key != kEmpty && slots_[i].key != key) i = (i + 1) & mask_;
  if (slots_[i].key == kEmpty) ++count_;
  slots_[i] = Entry{key, rank, merged};
}

// ---------------------------------------------------------------------------------------------
// BpeModel

Result<BpeModel> BpeModel::Build(const RawTokenizerJson& raw, const TokenizerSpec& spec,
                                 std::string_view source) {
  BpeModel m;
  m.vocab_.Reserve(raw.vocab.size());
  for (const auto& entry : raw.vocab) {
    const std::string_view token = raw.Str(entry.token);
    if (entry.id < 0 || entry.id >= std::numeric_limits<std::int32_t>::max()) {
      return MakeError(source, ": model.vocab: token '", Printable(token), "' has id ", entry.id,
                       ", outside [0, 2^31 - 1)");
    }
    const auto id = static_cast<std::int32_t>(entry.id);
    if (!m.vocab_.Add(token, id)) {
      if (m.vocab_.Find(token) >= 0) {
        return MakeError(source, ": model.vocab: token '", Printable(token), "' is given twice");
      }
      return MakeError(source, ": model.vocab: id ", id, " is given to both '",
                       Printable(m.vocab_.Token(id)), "' and '", Printable(token), "'");
    }
  }
  if (m.vocab_.size() == 0) return MakeError(source, ": model.vocab: empty");

  m.merges_.Reserve(raw.merges.size());
  std::string joined;
  for (std::size_t i = 0; i < raw.merges.size(); ++i) {
    const std::string_view left = raw.Str(raw.merges[i].left);
    const std::string_view right = raw.Str(raw.merges[i].right);
    const std::int32_t a = m.vocab_.Find(left);
    const std::int32_t b = m.vocab_.Find(right);
    joined.assign(left).append(right);
    const std::int32_t merged = m.vocab_.Find(joined);
    if (a < 0 || b < 0 || merged < 0) {
      const std::string_view missing = a < 0 ? left : b < 0 ? right : std::string_view(joined);
      return MakeError(source, ": model.merges[", i, "]: token '", Printable(missing),
                       "' is not in model.vocab");
    }
    m.merges_.Insert(a, b, static_cast<std::uint32_t>(i), merged);
  }

  m.char_ids_.assign(kDirectChars, -1);
  for (std::int32_t id = 0; id < m.vocab_.id_bound(); ++id) {
    const std::string_view token = m.vocab_.Token(id);
    std::uint32_t cp = 0;
    if (!token.empty() && ValidCharLength(token, 0, &cp) == static_cast<int>(token.size()) &&
        cp < kDirectChars) {
      m.char_ids_[cp] = id;
    }
  }

  // Word starts. The normaliser of Gemma 3 marks word starts with a character that is a token
  // (' ' -> U+2581). The first merge that joins a character c to a following marker is a merge
  // (c, t) with t starting with the marker: when every such c is a single character (Gemma 3:
  // only '>', for ">▁</"), a piece can be cut before each marker that follows a character other
  // than the marker and those c, and the parts merged separately with the same result (no merge
  // acts across the cut, and merges keep their order within each part). This keeps the merge
  // heaps small.
  const std::string& marker = spec.normalizer_content;
  if (spec.has_normalizer && !marker.empty() &&
      ValidCharLength(marker, 0) == static_cast<int>(marker.size()) && m.vocab_.Find(marker) >= 0) {
    bool usable = true;
    for (const auto& merge : raw.merges) {
      const std::string_view left = raw.Str(merge.left);
      const std::string_view right = raw.Str(merge.right);
      if (right.substr(0, marker.size()) != marker || left.empty() ||
          (left.size() >= marker.size() && left.substr(left.size() - marker.size()) == marker)) {
        continue;
      }
      // A multi-character left side, or the unknown token (which stands for other characters),
      // cannot be recognised from the one character before the marker.
      if (ValidCharLength(left, 0) != static_cast<int>(left.size()) || left == spec.unk_token) {
        usable = false;
        break;
      }
      if (std::find(m.joins_marker_.begin(), m.joins_marker_.end(), left) ==
          m.joins_marker_.end()) {
        m.joins_marker_.emplace_back(left);
      }
    }
    if (usable) {
      m.word_start_ = marker;
    } else {
      m.joins_marker_.clear();
    }
  }

  m.byte_fallback_ = spec.byte_fallback;
  m.fuse_unk_ = spec.fuse_unk;
  m.all_bytes_present_ = true;
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    m.byte_ids_[static_cast<std::size_t>(b)] = m.vocab_.Find(name);
    m.all_bytes_present_ = m.all_bytes_present_ && m.byte_ids_[static_cast<std::size_t>(b)] >= 0;
  }
  if (spec.unk_token) {
    m.unk_id_ = m.vocab_.Find(*spec.unk_token);
    if (m.unk_id_ < 0) {
      return MakeError(source, ": model.unk_token: '", Printable(*spec.unk_token),
                       "' is not in model.vocab");
    }
  }
  if (m.unk_id_ < 0 && !(m.byte_fallback_ && m.all_bytes_present_)) {
    return MakeError(source,
                     ": model.unk_token: required unless byte_fallback is on and <0x00>..<0xFF> "
                     "are all in the vocabulary");
  }
  return m;
}

void BpeModel::EncodeWord(std::string_view word, std::vector<std::int32_t>* out,
                          Scratch* scratch) const {
  if (word_start_.empty()) {
    MergeWord(word, out, scratch);
    return;
  }
  const std::string_view marker = word_start_;
  std::size_t start = 0;
  for (std::size_t hit = word.find(marker, 1); hit != std::string_view::npos;
       hit = word.find(marker, hit + marker.size())) {
    // The character before the marker (a stray byte when the text is not UTF-8).
    std::size_t prev = hit - 1;
    while (prev > 0 && hit - prev < 4 && (static_cast<unsigned char>(word[prev]) & 0xC0) == 0x80) {
      --prev;
    }
    const std::string_view before = word.substr(prev, hit - prev);
    const bool can_join = before == marker || std::find(joins_marker_.begin(), joins_marker_.end(),
                                                        before) != joins_marker_.end();
    if (!can_join && hit > start) {
      MergeWord(word.substr(start, hit - start), out, scratch);
      start = hit;
    }
  }
  MergeWord(word.substr(start), out, scratch);
}

void BpeModel::MergeWord(std::string_view word, std::vector<std::int32_t>* out,
                         Scratch* scratch) const {
  auto& symbols = scratch->symbols;
  auto& heap = scratch->heap;
  symbols.clear();
  heap.clear();
  auto push = [&](std::int32_t id) {
    const auto n = static_cast<std::int32_t>(symbols.size());
    symbols.push_back({id, n - 1, -1, true});
    if (n > 0) symbols[static_cast<std::size_t>(n - 1)].next = n;
  };

  // Characters to symbols. As in `tokenizers`, a character resolved by byte fallback does not
  // flush a pending unknown token, and consecutive unknown characters fuse when fuse_unk is set.
  bool unk_pending = false;
  std::size_t i = 0;
  while (i < word.size()) {
    std::uint32_t cp = static_cast<unsigned char>(word[i]);
    const int valid = cp < 0x80 ? 1 : ValidCharLength(word, i, &cp);
    const std::size_t len = valid > 0 ? static_cast<std::size_t>(valid) : 1;
    const std::int32_t id = valid > 0 ? CharId(word.substr(i, len), cp) : -1;
    if (id >= 0) {
      if (unk_pending) push(unk_id_);
      unk_pending = false;
      push(id);
    } else {
      bool resolved = false;
      if (byte_fallback_) {
        resolved = true;
        for (std::size_t k = i; k < i + len; ++k) {
          resolved = resolved && byte_ids_[static_cast<unsigned char>(word[k])] >= 0;
        }
        if (resolved) {
          for (std::size_t k = i; k < i + len; ++k) {
            push(byte_ids_[static_cast<unsigned char>(word[k])]);
          }
        }
      }
      if (!resolved) {
        if (unk_pending && !fuse_unk_) push(unk_id_);
        unk_pending = true;
      }
    }
    i += len;
  }
  if (unk_pending) push(unk_id_);
  if (symbols.empty()) return;

  // Merges: repeatedly apply the lowest-ranked adjacent pair, the leftmost one on ties.
  // Candidates that went stale (either side merged since) no longer match the ids of the symbols
  // at their position and are skipped when popped.
  auto later = [](const Scratch::Candidate& x, const Scratch::Candidate& y) {
    return x.rank != y.rank ? x.rank > y.rank : x.pos > y.pos;
  };
  auto consider = [&](std::uint32_t pos, std::int32_t left, std::int32_t right) {
    if (const MergeMap::Entry* e = merges_.Find(left, right)) {
      heap.push_back({e->rank, pos, left, right, e->merged});
      return true;
    }
    return false;
  };
  for (std::size_t k = 0; k + 1 < symbols.size(); ++k) {
    consider(static_cast<std::uint32_t>(k), symbols[k].id, symbols[k + 1].id);
  }
  std::make_heap(heap.begin(), heap.end(), later);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), later);
    const Scratch::Candidate top = heap.back();
    heap.pop_back();
    Scratch::Symbol& left = symbols[top.pos];
    if (!left.alive || left.next < 0 || left.id != top.left) continue;
    Scratch::Symbol& right = symbols[static_cast<std::size_t>(left.next)];
    if (right.id != top.right) continue;
    left.id = top.merged;
    left.next = right.next;
    right.alive = false;
    if (right.next >= 0) {
      symbols[static_cast<std::size_t>(right.next)].prev = static_cast<std::int32_t>(top.pos);
    }
    if (left.prev >= 0) {
      const auto prev = static_cast<std::uint32_t>(left.prev);
      if (consider(prev, symbols[prev].id, left.id)) {
        std::push_heap(heap.begin(), heap.end(), later);
      }
    }
    if (left.next >= 0) {
      if (consider(top.pos, left.id, symbols[static_cast<std::size_t>(left.next)].id)) {
        std::push_heap(heap.begin(), heap.end(), later);
      }
    }
  }
  for (std::int32_t k = 0; k >= 0; k = symbols[static_cast<std::size_t>(k)].next) {
    out->push_back(symbols[static_cast<std::size_t>(k)].id);
  }
}

}  // namespace fgnet::tokenizer_internal
