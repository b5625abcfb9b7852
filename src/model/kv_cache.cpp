#include "model/kv_cache.h"

#include <algorithm>
#include <cstring>

#include "util/status.h"

namespace fgnet {

KVCache::KVCache(const Gemma3Config& config, std::int64_t capacity, std::int64_t sliding_slack)
    : capacity_(capacity), row_(config.kv_dim()), window_(config.sliding_window) {
  FGNET_CHECK_GE(capacity, 1);
  FGNET_CHECK_GE(sliding_slack, 0);
  FGNET_CHECK_EQ(static_cast<std::int64_t>(config.layer_types.size()), config.num_hidden_layers);
  const std::size_t layers = config.layer_types.size();
  slots_.resize(layers);
  sliding_.resize(layers);
  keys_.resize(layers);
  values_.resize(layers);
  for (std::size_t l = 0; l < layers; ++l) {
    sliding_[l] = config.is_sliding(static_cast<std::int64_t>(l));
    FGNET_CHECK(!sliding_[l] || window_ >= 1);
    slots_[l] = sliding_[l] ? std::min(capacity, window_ + sliding_slack) : capacity;
    const std::size_t floats = static_cast<std::size_t>(slots_[l] * row_);
    keys_[l].resize(floats);
    values_[l].resize(floats);
  }
}

KVCache KVCache::Clone() const {
  KVCache copy;
  copy.capacity_ = capacity_;
  copy.length_ = length_;
  copy.row_ = row_;
  copy.window_ = window_;
  copy.slots_ = slots_;
  copy.sliding_ = sliding_;
  copy.keys_.resize(keys_.size());
  copy.values_.resize(values_.size());
  for (std::size_t l = 0; l < keys_.size(); ++l) {
    copy.keys_[l].resize(keys_[l].size());
    copy.values_[l].resize(values_[l].size());
    // Slots fill from 0 upwards; only the written ones are copied.
    const std::size_t used = static_cast<std::size_t>(std::min(length_, slots_[l]) * row_);
    std::memcpy(copy.keys_[l].data(), keys_[l].data(), used * sizeof(float));
    std::memcpy(copy.values_[l].data(), values_[l].data(), used * sizeof(float));
  }
  return copy;
}

bool KVCache::Truncate(std::int64_t new_length) {
  if (new_length < 0 || new_length > length_) return false;
  for (std::size_t l = 0; l < slots_.size(); ++l) {
    if (!sliding_[l]) continue;
    const std::int64_t oldest_held = std::max<std::int64_t>(0, length_ - slots_[l]);
    const std::int64_t oldest_needed = std::max<std::int64_t>(0, new_length - window_ + 1);
    if (oldest_held > oldest_needed) return false;
  }
  length_ = new_length;
  return true;
}

bool KVShapeFits(const Gemma3Config& config, std::int64_t row_size, std::int64_t window,
                 const std::vector<bool>& sliding) {
  if (static_cast<std::int64_t>(sliding.size()) != config.num_hidden_layers ||
      row_size != config.kv_dim() || window != config.sliding_window) {
    return false;
  }
  for (std::int64_t l = 0; l < config.num_hidden_layers; ++l) {
    if (sliding[static_cast<std::size_t>(l)] != config.is_sliding(l)) return false;
  }
  return true;
}

bool KVCache::Fits(const Gemma3Config& config) const {
  return KVShapeFits(config, row_, window_, sliding_);
}

void KVCache::AppendSpans(std::int64_t layer, std::int64_t begin,
                          std::vector<cpu::KVSpan>* out) const {
  const std::int64_t slots = this->slots(layer);
  FGNET_CHECK_GE(begin, length_ - slots);
  const std::int64_t count = length_ - begin;
  if (count <= 0) return;
  const std::int64_t s0 = begin % slots;
  const std::int64_t len1 = std::min(count, slots - s0);
  const auto row = static_cast<std::size_t>(row_);
  out->push_back({keys(layer) + s0 * row_, values(layer) + s0 * row_, row, begin,
                  static_cast<std::size_t>(len1)});
  if (len1 < count) {
    out->push_back(
        {keys(layer), values(layer), row, begin + len1, static_cast<std::size_t>(count - len1)});
  }
}

void KVCache::Write(std::int64_t layer, std::int64_t first_pos, std::size_t count, const float* k,
                    const float* v) {
  const std::int64_t slots = this->slots(layer);
  const std::int64_t end = first_pos + static_cast<std::int64_t>(count);
  const auto row = static_cast<std::size_t>(row_);
  // Positions older than the ring would be overwritten within this chunk anyway.
  for (std::int64_t pos = std::max(first_pos, end - slots); pos < end; ++pos) {
    const auto slot = static_cast<std::size_t>(SlotOf(layer, pos));
    const auto at = static_cast<std::size_t>(pos - first_pos);
    std::memcpy(keys(layer) + slot * row, k + at * row, row * sizeof(float));
    std::memcpy(values(layer) + slot * row, v + at * row, row * sizeof(float));
  }
}

std::size_t KVCache::memory_bytes() const {
  std::size_t bytes = 0;
  for (std::size_t l = 0; l < keys_.size(); ++l) {
    bytes += (keys_[l].size() + values_[l].size()) * sizeof(float);
  }
  return bytes;
}

ForwardScratch& KVCache::scratch() {
  if (!scratch_) scratch_ = std::make_unique<ForwardScratch>();
  return *scratch_;
}

}  // namespace fgnet
