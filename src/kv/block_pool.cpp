#include "kv/block_pool.h"

#include <numeric>

#include "util/status.h"

namespace fgnet::kv {

KVLayout KVLayout::ForConfig(const Gemma3Config& config, std::int64_t block_size, DType dtype) {
  FGNET_CHECK_GE(block_size, 1);
  FGNET_CHECK(dtype == DType::kF32 || dtype == DType::kBF16);
  KVLayout layout;
  layout.dtype = dtype;
  layout.block_size = block_size;
  layout.row = config.kv_dim();
  layout.window = config.sliding_window;
  const std::int64_t layers = config.num_hidden_layers;
  std::int64_t sliding = 0;
  for (std::int64_t l = 0; l < layers; ++l) sliding += config.is_sliding(l) ? 1 : 0;
  layout.group_layers = std::gcd(sliding, layers - sliding);
  FGNET_CHECK_GE(layout.group_layers, 1);
  // Layers of each kind fill that kind's open group in layer order.
  std::int32_t open[2] = {-1, -1};  // [sliding]
  std::int64_t filled[2] = {0, 0};
  for (std::int64_t l = 0; l < layers; ++l) {
    const bool s = config.is_sliding(l);
    if (open[s] < 0 || filled[s] == layout.group_layers) {
      open[s] = static_cast<std::int32_t>(layout.group_sliding.size());
      layout.group_sliding.push_back(s);
      filled[s] = 0;
    }
    layout.layer_group.push_back(open[s]);
    layout.layer_slot.push_back(static_cast<std::int32_t>(filled[s]++));
    layout.layer_sliding.push_back(s);
  }
  return layout;
}

BlockPool::BlockPool(KVLayout layout, std::int64_t num_blocks, std::unique_ptr<Memory> memory)
    : layout_(std::move(layout)), memory_(std::move(memory)) {
  FGNET_CHECK_GE(num_blocks, 1);
  const std::size_t bytes = layout_.block_bytes() * static_cast<std::size_t>(num_blocks);
  if (memory_ == nullptr) memory_ = AllocateHostMemory(bytes);
  FGNET_CHECK_GE(memory_->bytes(), bytes);
  refs_.assign(static_cast<std::size_t>(num_blocks), 0);
  cache_refs_.assign(static_cast<std::size_t>(num_blocks), 0);
  free_.resize(static_cast<std::size_t>(num_blocks));
  // Block 0 on top of the stack.
  for (std::size_t i = 0; i < free_.size(); ++i)
    free_[i] = static_cast<BlockId>(free_.size() - 1 - i);
}

BlockId BlockPool::Allocate() {
  while (free_.empty()) {
    if (!reclaimer_ || !reclaimer_()) return kNoBlock;
  }
  const BlockId id = free_.back();
  free_.pop_back();
  refs_[static_cast<std::size_t>(id)] = 1;
  return id;
}

void BlockPool::Ref(BlockId id) { Count(id, 1, 0); }
void BlockPool::Unref(BlockId id) { Count(id, -1, 0); }
void BlockPool::RefCached(BlockId id) { Count(id, 1, 1); }
void BlockPool::UnrefCached(BlockId id) { Count(id, -1, -1); }

void BlockPool::Count(BlockId id, std::int32_t refs, std::int32_t cache_refs) {
  const auto i = static_cast<std::size_t>(id);
  FGNET_CHECK_GT(refs_[i], 0);  // a reference is taken on a held block, and dropped once
  const bool was = CachedOnly(i);
  refs_[i] += refs;
  cache_refs_[i] += cache_refs;
  FGNET_CHECK_GE(cache_refs_[i], 0);
  FGNET_CHECK_LE(cache_refs_[i], refs_[i]);
  cached_only_ += static_cast<std::int64_t>(CachedOnly(i)) - static_cast<std::int64_t>(was);
  if (refs_[i] == 0) free_.push_back(id);
}

float* BlockPool::keys(BlockId id, std::int64_t slot) {
  FGNET_CHECK(layout_.dtype == DType::kF32);
  return static_cast<float*>(memory_->data()) +
         static_cast<std::size_t>(id) * layout_.block_elements() +
         static_cast<std::size_t>(slot * layout_.block_size * layout_.row);
}

float* BlockPool::values(BlockId id, std::int64_t slot) {
  return keys(id, slot) + layout_.block_elements() / 2;
}

const float* BlockPool::keys(BlockId id, std::int64_t slot) const {
  return const_cast<BlockPool*>(this)->keys(id, slot);
}

const float* BlockPool::values(BlockId id, std::int64_t slot) const {
  return const_cast<BlockPool*>(this)->values(id, slot);
}

void BlockPool::CopyBlock(BlockId from, BlockId to) {
  const std::size_t bytes = layout_.block_bytes();
  memory_->Copy(static_cast<std::size_t>(to) * bytes, static_cast<std::size_t>(from) * bytes,
                bytes);
}

}  // namespace fgnet::kv
