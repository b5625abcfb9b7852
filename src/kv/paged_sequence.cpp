#include "kv/paged_sequence.h"

#include <algorithm>
#include <cstring>

#include "util/status.h"

namespace fgnet::kv {

PagedSequence::PagedSequence(BlockPool& pool)
    : pool_(&pool),
      tables_(static_cast<std::size_t>(pool.layout().num_groups())),
      trimmed_(tables_.size(), 0) {}

PagedSequence::PagedSequence(PagedSequence&& other) noexcept
    : pool_(other.pool_),
      tables_(std::move(other.tables_)),
      length_(other.length_),
      capacity_(other.capacity_),
      held_(other.held_),
      trimmed_(std::move(other.trimmed_)) {
  other.tables_.assign(tables_.size(), {});
  other.trimmed_.assign(tables_.size(), 0);
  other.length_ = other.capacity_ = other.held_ = 0;
}

PagedSequence& PagedSequence::operator=(PagedSequence&& other) noexcept {
  if (this != &other) {
    Release();
    pool_ = other.pool_;
    std::swap(tables_, other.tables_);
    std::swap(trimmed_, other.trimmed_);
    std::swap(length_, other.length_);
    std::swap(capacity_, other.capacity_);
    std::swap(held_, other.held_);
  }
  return *this;
}

PagedSequence::~PagedSequence() { Release(); }

PagedSequence PagedSequence::Fork() const {
  PagedSequence copy(*pool_);
  const std::int64_t b = pool_->layout().block_size;
  const std::int64_t used = (length_ + b - 1) / b;
  for (std::size_t g = 0; g < tables_.size(); ++g) {
    copy.tables_[g].assign(
        tables_[g].begin(),
        tables_[g].begin() +
            std::min<std::int64_t>(used, static_cast<std::int64_t>(tables_[g].size())));
    for (BlockId id : copy.tables_[g]) {
      if (id == kNoBlock) continue;
      pool_->Ref(id);
      ++copy.held_;
    }
  }
  copy.trimmed_ = trimmed_;
  copy.length_ = length_;
  copy.capacity_ = length_;
  return copy;
}

bool PagedSequence::Reserve(std::int64_t n) {
  FGNET_CHECK_GE(n, 0);
  Trim();
  const std::int64_t target = length_ + n;
  if (target <= capacity_) return true;
  const std::int64_t b = pool_->layout().block_size;
  const std::int64_t first = length_ / b;  // the block that position length_ falls in
  const std::int64_t end = (target + b - 1) / b;
  // Fresh blocks go into `fresh` until everything succeeded; copies replace shared blocks.
  struct Change {
    std::size_t group;
    std::int64_t index;
    BlockId old_id;
  };
  std::vector<Change> changes;
  const auto undo = [&] {
    for (auto it = changes.rbegin(); it != changes.rend(); ++it) {
      std::vector<BlockId>& table = tables_[it->group];
      pool_->Unref(table[static_cast<std::size_t>(it->index)]);
      --held_;
      table[static_cast<std::size_t>(it->index)] = it->old_id;
      if (it->old_id != kNoBlock) ++held_;  // its reference was kept while copying
    }
    for (std::vector<BlockId>& table : tables_) {
      while (!table.empty() && table.back() == kNoBlock &&
             static_cast<std::int64_t>(table.size()) > (capacity_ + b - 1) / b) {
        table.pop_back();
      }
    }
  };
  for (std::size_t g = 0; g < tables_.size(); ++g) {
    std::vector<BlockId>& table = tables_[g];
    if (static_cast<std::int64_t>(table.size()) < end)
      table.resize(static_cast<std::size_t>(end), kNoBlock);
    for (std::int64_t i = first; i < end; ++i) {
      BlockId& slot = table[static_cast<std::size_t>(i)];
      const bool shared_partial = slot != kNoBlock && i * b < length_ && pool_->refcount(slot) > 1;
      if (slot != kNoBlock && !shared_partial) continue;
      const BlockId fresh = pool_->Allocate();
      if (fresh == kNoBlock) {
        undo();
        return false;
      }
      if (shared_partial) {
        pool_->CopyBlock(slot, fresh);
        // Keep the old reference until success, so that undo can restore it.
        changes.push_back({g, i, slot});
        --held_;
      } else {
        changes.push_back({g, i, kNoBlock});
      }
      slot = fresh;
      ++held_;
    }
  }
  // Success: release the shared blocks that were copied.
  for (const Change& c : changes) {
    if (c.old_id != kNoBlock) pool_->Unref(c.old_id);
  }
  capacity_ = target;
  return true;
}

void PagedSequence::Release() {
  for (std::vector<BlockId>& table : tables_) {
    for (BlockId id : table) {
      if (id != kNoBlock) pool_->Unref(id);
    }
    table.clear();
  }
  std::fill(trimmed_.begin(), trimmed_.end(), 0);
  held_ = 0;
  length_ = capacity_ = 0;
}

void PagedSequence::AdoptBlock(std::span<const BlockId> blocks) {
  const KVLayout& layout = pool_->layout();
  FGNET_CHECK_EQ(static_cast<std::int64_t>(blocks.size()), layout.num_groups());
  FGNET_CHECK_EQ(length_ % layout.block_size, 0);
  FGNET_CHECK_EQ(capacity_, length_);
  for (std::size_t g = 0; g < tables_.size(); ++g) {
    FGNET_CHECK(blocks[g] != kNoBlock || layout.group_sliding[g]);
    tables_[g].push_back(blocks[g]);
    if (blocks[g] != kNoBlock) {
      pool_->Ref(blocks[g]);
      ++held_;
    }
  }
  length_ += layout.block_size;
  capacity_ = length_;
}

void PagedSequence::FinishAdopt() {
  Trim();
  for (std::size_t g = 0; g < tables_.size(); ++g) {
    for (std::int64_t i = trimmed_[g]; i < num_blocks(); ++i)
      FGNET_CHECK(tables_[g][static_cast<std::size_t>(i)] != kNoBlock);
  }
}

BlockId PagedSequence::block(std::int64_t group, std::int64_t index) const {
  const std::vector<BlockId>& table = tables_[static_cast<std::size_t>(group)];
  return index < static_cast<std::int64_t>(table.size()) ? table[static_cast<std::size_t>(index)]
                                                         : kNoBlock;
}

std::int64_t PagedSequence::num_blocks() const {
  const std::int64_t b = pool_->layout().block_size;
  return (length_ + b - 1) / b;
}

bool PagedSequence::Fits(const Gemma3Config& config) const {
  const KVLayout& layout = pool_->layout();
  return KVShapeFits(config, layout.row, layout.window, layout.layer_sliding);
}

void PagedSequence::AppendSpans(std::int64_t layer, std::int64_t begin,
                                std::vector<cpu::KVSpan>* out) const {
  const KVLayout& layout = pool_->layout();
  const auto l = static_cast<std::size_t>(layer);
  const std::vector<BlockId>& table = tables_[static_cast<std::size_t>(layout.layer_group[l])];
  const std::int64_t slot = layout.layer_slot[l];
  const std::int64_t b = layout.block_size;
  const auto row = static_cast<std::size_t>(layout.row);
  for (std::int64_t pos = begin; pos < length_;) {
    const std::int64_t index = pos / b;
    const std::int64_t offset = pos - index * b;
    const std::int64_t count = std::min(b - offset, length_ - pos);
    const BlockId id = table[static_cast<std::size_t>(index)];
    FGNET_CHECK(id != kNoBlock);
    out->push_back({pool_->keys(id, slot) + offset * layout.row,
                    pool_->values(id, slot) + offset * layout.row, row, pos,
                    static_cast<std::size_t>(count)});
    pos += count;
  }
}

void PagedSequence::Write(std::int64_t layer, std::int64_t first_pos, std::size_t count,
                          const float* keys, const float* values) {
  const KVLayout& layout = pool_->layout();
  const auto l = static_cast<std::size_t>(layer);
  std::vector<BlockId>& table = tables_[static_cast<std::size_t>(layout.layer_group[l])];
  const std::int64_t slot = layout.layer_slot[l];
  const std::int64_t b = layout.block_size;
  const std::int64_t end = first_pos + static_cast<std::int64_t>(count);
  FGNET_CHECK_LE(end, capacity_);
  // Every position is written, sliding layers included, so that each block's contents are whole
  // (the prefix tree may keep a sliding block this sequence is about to drop).
  std::int64_t pos = first_pos;
  const std::size_t row_bytes = static_cast<std::size_t>(layout.row) * sizeof(float);
  while (pos < end) {
    const std::int64_t index = pos / b;
    const std::int64_t offset = pos - index * b;
    const std::int64_t n = std::min(b - offset, end - pos);
    const BlockId id = table[static_cast<std::size_t>(index)];
    FGNET_CHECK(id != kNoBlock);
    FGNET_CHECK_EQ(pool_->refcount(id), 1);  // never write a shared block
    const std::size_t at = static_cast<std::size_t>(pos - first_pos) * layout.row;
    std::memcpy(pool_->keys(id, slot) + offset * layout.row, keys + at,
                static_cast<std::size_t>(n) * row_bytes);
    std::memcpy(pool_->values(id, slot) + offset * layout.row, values + at,
                static_cast<std::size_t>(n) * row_bytes);
    pos += n;
  }
}

void PagedSequence::Advance(std::int64_t n) {
  length_ += n;
  FGNET_CHECK_LE(length_, capacity_);
}

void PagedSequence::Drop(std::int64_t group, std::int64_t index) {
  BlockId& id = tables_[static_cast<std::size_t>(group)][static_cast<std::size_t>(index)];
  if (id == kNoBlock) return;
  pool_->Unref(id);
  id = kNoBlock;
  --held_;
}

void PagedSequence::Trim() {
  const KVLayout& layout = pool_->layout();
  // The next query (at length_) sees positions from length_ - window + 1 on.
  const std::int64_t keep_from = std::max<std::int64_t>(0, length_ - layout.window + 1);
  const std::int64_t keep_block = keep_from / layout.block_size;
  for (std::size_t g = 0; g < tables_.size(); ++g) {
    if (!layout.group_sliding[g]) continue;
    for (; trimmed_[g] < keep_block; ++trimmed_[g]) Drop(static_cast<std::int64_t>(g), trimmed_[g]);
  }
}

}  // namespace fgnet::kv
