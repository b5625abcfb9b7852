// The prefix cache: a radix tree over whole token blocks whose nodes own the KV blocks computed
// for them, so that a sequence starting with cached blocks adopts them instead of computing them.
//
// Exactness is part of the key. A node is keyed by its block's tokens and by the adapters that
// act anywhere up to the end of the block: each as (content hash, scale, start position), the
// adapters of a sequence's set whose start lies before the block's end. So
//   * two sequences share a block only if every position up to its end was computed by the same
//     model (the tree belongs to one base, whose content hash seeds every key) under the same
//     adapters: never across adapters, and never by a user-supplied name;
//   * an activated LoRA's blocks before its invocation are keyed like the base model's, and are
//     shared with it: that is exact, because those positions are the base model's bit for bit.
//
// Sliding-window layers need only the last window before a hit, so a hit at position L requires
// the sliding blocks of positions L - window + 1 .. L - 1 only (a node may lack its sliding blocks
// when its sequence had already dropped them).
//
// Eviction: the tree holds one reference on each of its blocks. A leaf whose blocks nobody else
// references (no running sequence, no pinned prefix) and that no sequence is extending is
// evictable, and so are sliding blocks nobody else references (a later hit needs them only
// within its window). When the pool runs dry, the least recently used of these is freed (a leaf's
// parent may become the next). Pinned prefixes are sequences that hold their blocks, hence never
// evicted.
// Thread-safety: none (see BlockPool).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "kv/paged_sequence.h"
#include "model/gemma3_model.h"

namespace fgnet::kv {

class PrefixTree {
 public:
  struct Node;

  // The tree of one base model (its content hash); registers itself as `pool`'s reclaimer.
  PrefixTree(BlockPool& pool, std::string base_hash);
  ~PrefixTree();  // releases its blocks
  PrefixTree(const PrefixTree&) = delete;
  PrefixTree& operator=(const PrefixTree&) = delete;

  // Where a sequence stands in the tree: the node of its last cached block. A cursor keeps
  // that node from being evicted; Release it (or let it go out of scope) when done.
  class Cursor {
   public:
    Cursor() = default;
    Cursor(Cursor&& other) noexcept;
    Cursor& operator=(Cursor&& other) noexcept;
    Cursor(const Cursor&) = delete;
    Cursor& operator=(const Cursor&) = delete;
    ~Cursor() { Release(); }
    void Release();
    // Whole blocks of the sequence that are in the tree.
    std::int64_t blocks() const { return blocks_; }

   private:
    friend class PrefixTree;
    void Set(Node* node, std::int64_t blocks);
    Node* node_ = nullptr;
    std::int64_t blocks_ = 0;
  };

  // Finds the longest cached prefix of `tokens` under `adapters` of at most `max_tokens`
  // positions, and starts `seq` (empty) with its blocks; `cursor` then points at its last
  // node. Returns the positions adopted (a multiple of the block size).
  std::int64_t Match(std::span<const std::int32_t> tokens, std::span<const AdapterUse> adapters,
                     std::int64_t max_tokens, PagedSequence& seq, Cursor& cursor);

  // Adds the whole blocks of `seq` (positions [0, seq.length()) computed from `tokens` under
  // `adapters`) that follow `cursor`, and moves the cursor to the last. A block already in the
  // tree is kept as it is (the sequence keeps its own copy).
  void Insert(std::span<const std::int32_t> tokens, std::span<const AdapterUse> adapters,
              const PagedSequence& seq, Cursor& cursor);

  // Frees the least recently used evictable leaf or unreferenced sliding blocks of a node; false
  // if there is nothing to free.
  bool EvictOne();
  // Frees every evictable node.
  void EvictAll();

  std::int64_t num_nodes() const { return num_nodes_; }
  // Blocks the tree references, and those of them only it references (evictable on demand).
  std::int64_t blocks_held() const;
  std::int64_t blocks_cached_only() const;

 private:
  std::uint64_t KeyHash(std::span<const std::int32_t> tokens, const std::string& adapters) const;
  // The adapters acting on a block that ends at `end`, canonically written.
  static std::string AdapterKey(std::span<const AdapterUse> adapters, std::int64_t end);
  Node* Child(Node* parent, std::span<const std::int32_t> tokens, const std::string& adapters);
  bool Evictable(const Node& node) const;
  void Free(Node* node);

  BlockPool* pool_;
  std::string base_hash_;
  std::unique_ptr<Node> root_;
  std::int64_t num_nodes_ = 0;
  std::uint64_t clock_ = 0;
};

}  // namespace fgnet::kv
