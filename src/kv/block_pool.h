// Paged KV memory: a pool of fixed-size blocks, each holding the keys and values of
// `block_size` consecutive positions for one group of layers.
//
// Layers are split into groups of equal size, each group of one kind (sliding or global): the
// group size is the greatest common divisor of the sliding and global layer counts (Gemma 3 270M:
// 15 sliding and 3 global layers -> 6 groups of 3). Every block has the same size, so one pool
// serves both kinds, and a sequence keeps one block table per group: global groups hold every
// position, sliding groups only the blocks that still intersect the window.
//
// Block memory: keys [group_layers][block_size][row] then values likewise, row =
// kv_heads * head_dim, in the layout's element type: f32 (every backend), or bf16 (GPU backends:
// half the memory, keys and values rounded to bf16 as they are written). The blocks live in a
// Memory (backend/device.h) on the device the model runs on (Model::AllocateKV): the pool itself
// only keeps counts and ids, so block pointers are in that device's address space and only the CPU
// backend reads them from the host. A block is free (refcount 0), or referenced by sequences,
// pinned prefixes and the prefix tree, each holding one reference; the tree's are counted apart
// (RefCached), so that the blocks only it holds are known without walking it.
//
// When the pool runs dry, Allocate() asks its reclaimer (the prefix tree, which evicts its least
// recently used unreferenced blocks) before it fails.
// Thread-safety: none; the engine's scheduler thread owns the pool.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "backend/device.h"
#include "model/config.h"
#include "tensor/dtype.h"

namespace fgnet::kv {

using BlockId = std::int32_t;
inline constexpr BlockId kNoBlock = -1;

// How a model's layers map onto blocks.
struct KVLayout {
  std::int64_t block_size = 0;            // positions per block
  std::int64_t row = 0;                   // elements per position and layer (kv_heads * head_dim)
  DType dtype = DType::kF32;              // of keys and values: kF32 or kBF16
  std::int64_t window = 0;                // sliding window (0: no sliding layers)
  std::int64_t group_layers = 0;          // layers per group
  std::vector<bool> group_sliding;        // per group
  std::vector<std::int32_t> layer_group;  // per layer: its group
  std::vector<std::int32_t> layer_slot;   // per layer: its index within the group
  std::vector<bool> layer_sliding;        // per layer

  static KVLayout ForConfig(const Gemma3Config& config, std::int64_t block_size,
                            DType dtype = DType::kF32);
  std::int64_t num_groups() const { return static_cast<std::int64_t>(group_sliding.size()); }
  std::int64_t num_layers() const { return static_cast<std::int64_t>(layer_group.size()); }
  std::size_t element_bytes() const { return DTypeBlockBytes(dtype); }
  // Elements of one block (keys and values).
  std::size_t block_elements() const {
    return static_cast<std::size_t>(2 * group_layers * block_size * row);
  }
  std::size_t block_bytes() const { return block_elements() * element_bytes(); }
  // Bytes of KV one position takes in every layer.
  std::size_t bytes_per_position() const {
    return static_cast<std::size_t>(2 * num_layers() * row) * element_bytes();
  }
};

class BlockPool {
 public:
  // `num_blocks` >= 1 blocks of `layout` in `memory` (at least num_blocks * block_bytes()), or
  // in host memory allocated here when `memory` is null.
  BlockPool(KVLayout layout, std::int64_t num_blocks, std::unique_ptr<Memory> memory = nullptr);
  BlockPool(const BlockPool&) = delete;
  BlockPool& operator=(const BlockPool&) = delete;

  const KVLayout& layout() const { return layout_; }

  // A block with refcount 1, or kNoBlock when none is free and the reclaimer freed nothing.
  BlockId Allocate();
  void Ref(BlockId id);
  // Drops a reference; the block is free at zero.
  void Unref(BlockId id);
  // A reference of the prefix cache (kv/prefix_tree.h), taken and dropped as by Ref and Unref; the
  // pool counts the blocks that only such references hold (num_cached_only).
  void RefCached(BlockId id);
  void UnrefCached(BlockId id);
  std::int32_t refcount(BlockId id) const { return refs_[static_cast<std::size_t>(id)]; }
  // Blocks that only the prefix cache references (evictable on demand), kept as references come
  // and go: no walk of the cache.
  std::int64_t num_cached_only() const { return cached_only_; }

  // Called when no block is free; returns true if it freed at least one.
  void set_reclaimer(std::function<bool()> reclaimer) { reclaimer_ = std::move(reclaimer); }

  // Keys / values of a block for layer slot `slot` of its group: [block_size, row], in the
  // memory's address space. f32 layouts only (the CPU backend's view of the blocks).
  float* keys(BlockId id, std::int64_t slot);
  float* values(BlockId id, std::int64_t slot);
  const float* keys(BlockId id, std::int64_t slot) const;
  const float* values(BlockId id, std::int64_t slot) const;
  // Copies a block's contents (for copy-on-write).
  void CopyBlock(BlockId from, BlockId to);

  std::int64_t num_blocks() const { return static_cast<std::int64_t>(refs_.size()); }
  std::int64_t num_free() const { return static_cast<std::int64_t>(free_.size()); }
  std::int64_t num_used() const { return num_blocks() - num_free(); }
  std::size_t memory_bytes() const { return layout_.block_bytes() * refs_.size(); }
  const Memory& memory() const { return *memory_; }

 private:
  // Whether every reference of block i is the prefix cache's (and it has one).
  bool CachedOnly(std::size_t i) const { return cache_refs_[i] > 0 && cache_refs_[i] == refs_[i]; }
  // Adds `refs` references to block `id`, `cache_refs` of them the prefix cache's (either may be
  // negative), keeping cached_only_ and the free list.
  void Count(BlockId id, std::int32_t refs, std::int32_t cache_refs);

  KVLayout layout_;
  std::unique_ptr<Memory> memory_;
  std::vector<std::int32_t> refs_;
  std::vector<std::int32_t> cache_refs_;  // of refs_, the prefix cache's
  std::int64_t cached_only_ = 0;
  std::vector<BlockId> free_;  // a stack: the most recently freed block is reused first
  std::function<bool()> reclaimer_;
};

}  // namespace fgnet::kv
