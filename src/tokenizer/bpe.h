// The BPE model of a tokenizer.json: vocabulary, merge ranks, byte fallback and unknown-token
// handling, with the merge order of the `tokenizers` library (lowest rank first, leftmost on
// ties). A piece of text is merged in parts cut at word starts where no merge can cross the cut
// (see BpeModel::Build), which gives the same tokens with much smaller merge heaps.
// Internal to the tokenizer library.
// Thread-safety: immutable after Build(); EncodeWord may run concurrently with its own scratch.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/tokenizer_json.h"
#include "tokenizer/tokenizer_spec.h"
#include "util/status.h"

namespace fgnet::tokenizer_internal {

// Token strings by id, with a hash index from string to id. Ids may have gaps.
class Vocabulary {
 public:
  // Adds `token` as `id`; false when the token or the id is already present.
  bool Add(std::string_view token, std::int32_t id);
  // The id of `token`, or -1.
  std::int32_t Find(std::string_view token) const;
  bool Has(std::int32_t id) const {
    return id >= 0 && id < id_bound() && length_[static_cast<std::size_t>(id)] != kNone;
  }
  // The token of `id`; empty when absent.
  std::string_view Token(std::int32_t id) const;
  // 1 + the largest id.
  std::int32_t id_bound() const { return static_cast<std::int32_t>(offset_.size()); }
  // The number of tokens.
  std::size_t size() const { return count_; }
  void Reserve(std::size_t tokens);

 private:
  static constexpr std::uint32_t kNone = 0xFFFFFFFFu;
  struct Slot {
    std::uint32_t hash = 0;
    std::int32_t id = -1;
  };
  static std::uint64_t Hash(std::string_view s);
  void Rehash(std::size_t slot_count);

  std::string arena_;
  std::vector<std::uint32_t> offset_;
  std::vector<std::uint32_t> length_;
  std::vector<Slot> slots_;
  std::size_t count_ = 0;
};

// (left id, right id) -> (rank, merged id), open addressing.
class MergeMap {
 public:
  struct Entry {
    std::uint64_t key = kEmpty;
    std::uint32_t rank = 0;
    std::int32_t merged = -1;
  };
  void Reserve(std::size_t merges);
  // Inserts or overwrites (a later duplicate merge wins, as in `tokenizers`).
  void Insert(std::int32_t left, std::int32_t right, std::uint32_t rank, std::int32_t merged);
  const Entry* Find(std::int32_t left, std::int32_t right) const {
    if (slots_.empty()) return nullptr;
    const std::uint64_t key = Key(left, right);
    for (std::size_t i = Slot(key);; i = (i + 1) & mask_) {
      const Entry& e = slots_[i];
      if (e.key == key) return &e;
      if (e.key == kEmpty) return nullptr;
    }
  }

 private:
  static constexpr std::uint64_t kEmpty = ~std::uint64_t{0};
  static std::uint64_t Key(std::int32_t left, std::int32_t right) {
    return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(left)) << 32) |
           static_cast<std::uint32_t>(right);
  }
  std::size_t Slot(std::uint64_t key) const {
    return static_cast<std::size_t>((key * 0x9E3779B97F4A7C15ull) >> shift_) & mask_;
  }
  void Rehash(std::size_t slot_count);

  std::vector<Entry> slots_;
  std::size_t mask_ = 0;
  int shift_ = 64;
  std::size_t count_ = 0;
};

class BpeModel {
 public:
  // Working memory of EncodeWord, reusable across calls of one thread.
  struct Scratch {
    struct Symbol {
      std::int32_t id;
      std::int32_t prev;
      std::int32_t next;
      bool alive;
    };
    struct Candidate {  // merging symbols[pos] (id left) with the next one (id right)
      std::uint32_t rank;
      std::uint32_t pos;
      std::int32_t left;
      std::int32_t right;
      std::int32_t merged;
    };
    std::vector<Symbol> symbols;
    std::vector<Candidate> heap;
  };

  // Builds the tables from model.vocab and model.merges. Errors name `source` and the JSON path.
  static Result<BpeModel> Build(const RawTokenizerJson& raw, const TokenizerSpec& spec,
                                std::string_view source);

  // Appends the ids of one pre-tokenized piece of normalized text. Bytes that are not valid
  // UTF-8 are treated as one-byte characters outside the vocabulary (byte fallback or unk).
  void EncodeWord(std::string_view word, std::vector<std::int32_t>* out, Scratch* scratch) const;

  // The word-start marker pieces are cut at before merging (empty: none); see Build().
  const std::string& word_start() const { return word_start_; }

  const Vocabulary& vocab() const { return vocab_; }

 private:
  // BPE of one word (the merge loop).
  void MergeWord(std::string_view word, std::vector<std::int32_t>* out, Scratch* scratch) const;

  // The id of the character `ch` (code point `cp`), or -1.
  std::int32_t CharId(std::string_view ch, std::uint32_t cp) const {
    if (cp < kDirectChars) return char_ids_[cp];
    return vocab_.Find(ch);
  }

  static constexpr std::uint32_t kDirectChars = 0x10000;

  Vocabulary vocab_;
  std::string word_start_;                 // see Build; empty: words are not cut
  std::vector<std::string> joins_marker_;  // characters that may merge with a following marker
  MergeMap merges_;
  std::vector<std::int32_t> char_ids_;        // ids of the one-character tokens below kDirectChars
  std::array<std::int32_t, 256> byte_ids_{};  // ids of <0x00>..<0xFF>, -1 when absent
  bool byte_fallback_ = false;
  bool all_bytes_present_ = false;
  bool fuse_unk_ = false;
  std::int32_t unk_id_ = -1;
};

}  // namespace fgnet::tokenizer_internal
