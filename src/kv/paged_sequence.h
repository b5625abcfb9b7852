// One sequence's KV in a BlockPool: a block table per layer group (see block_pool.h). Implements
// SequenceKV, so the model's forward pass reads and writes it directly.
//
// Before a forward of n tokens the owner calls Reserve(n), which allocates the blocks those
// positions need (so the forward itself never allocates or fails for memory). Blocks may be
// shared with other sequences (Fork), with pinned prefixes and with the prefix tree; a shared
// block is never written: Reserve first copies a shared block that the next positions would
// write into (copy on write). Full blocks are only ever read, so sharing them costs nothing.
//
// Sliding groups drop each block, and its reference, once every position in it has left the
// window of the positions still to come (Trim, also done by Reserve), so a long sequence holds
// about (window - 1) / block_size + 1 blocks per sliding group, not its whole length. Trimming is
// not done by the forward pass itself so that the owner can first hand whole blocks to the
// prefix tree.
// Thread-safety: none (see BlockPool).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "kv/block_pool.h"
#include "model/sequence_kv.h"

namespace fgnet::kv {

class PagedSequence final : public SequenceKV {
 public:
  explicit PagedSequence(BlockPool& pool);
  PagedSequence(PagedSequence&& other) noexcept;
  PagedSequence& operator=(PagedSequence&& other) noexcept;
  PagedSequence(const PagedSequence&) = delete;
  PagedSequence& operator=(const PagedSequence&) = delete;
  ~PagedSequence() override;

  // A sequence with the same positions, sharing every block (copy on write).
  PagedSequence Fork() const;

  // Makes positions length() .. length() + n - 1 writable. False when the pool has too few
  // blocks even after reclaiming; the sequence is then as it was.
  bool Reserve(std::int64_t n);
  // Drops every block; the sequence is empty again.
  void Release();
  // Drops the sliding blocks no later position will see.
  void Trim();

  // Appends one whole block of already computed positions (length() must be a multiple of the
  // block size and nothing reserved beyond it): `blocks[g]` for each group g, each gaining a
  // reference; kNoBlock is allowed for sliding groups where the block is outside the window of
  // the final length (checked by FinishAdopt).
  void AdoptBlock(std::span<const BlockId> blocks);
  // Drops sliding blocks that left the window and checks that the window is held.
  void FinishAdopt();

  // Block i of group g (kNoBlock if not held).
  BlockId block(std::int64_t group, std::int64_t index) const;
  // Blocks that hold some of the positions [0, length()) (in every group's table).
  std::int64_t num_blocks() const;
  // Blocks referenced by this sequence (all groups).
  std::int64_t blocks_held() const { return held_; }
  BlockPool& pool() const { return *pool_; }

  // SequenceKV:
  std::int64_t length() const override { return length_; }
  std::int64_t capacity() const override { return capacity_; }
  bool Fits(const Gemma3Config& config) const override;
  Device device() const override { return pool_->memory().device(); }
  DType element_type() const override { return pool_->layout().dtype; }
  void AppendSpans(std::int64_t layer, std::int64_t begin,
                   std::vector<cpu::KVSpan>* out) const override;
  void Write(std::int64_t layer, std::int64_t first_pos, std::size_t count, const float* keys,
             const float* values) override;
  void Advance(std::int64_t n) override;

 private:
  void Drop(std::int64_t group, std::int64_t index);

  BlockPool* pool_;
  std::vector<std::vector<BlockId>> tables_;  // [group][block index]
  std::int64_t length_ = 0;
  std::int64_t capacity_ = 0;  // positions with blocks (length_ + reserved)
  std::int64_t held_ = 0;
  std::vector<std::int64_t> trimmed_;  // per group: blocks below this index are dropped
};

}  // namespace fgnet::kv
