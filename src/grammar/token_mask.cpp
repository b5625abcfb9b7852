#include "grammar/token_mask.h"

#include <algorithm>
#include <limits>

namespace fgnet {
namespace {

// Below this many allowed ids the list is kept instead of the bitset.
constexpr std::size_t kSparseLimit = 2048;

}  // namespace

TokenMask::TokenMask(std::vector<std::int32_t> allowed, std::int32_t vocab_size,
                     std::int32_t max_end_distance)
    : vocab_size_(vocab_size),
      count_(static_cast<std::int64_t>(allowed.size())),
      max_end_distance_(max_end_distance),
      sparse_(allowed.size() <= kSparseLimit) {
  if (sparse_) {
    std::sort(allowed.begin(), allowed.end());
    ids_ = std::move(allowed);
    return;
  }
  bits_.assign((static_cast<std::size_t>(vocab_size) + 63) / 64, 0);
  for (const std::int32_t t : allowed) bits_[t >> 6] |= std::uint64_t{1} << (t & 63);
}

bool TokenMask::Allows(std::int32_t token) const {
  if (token < 0 || token >= vocab_size_) return false;
  if (sparse_) return std::binary_search(ids_.begin(), ids_.end(), token);
  return (bits_[token >> 6] >> (token & 63)) & 1;
}

std::vector<std::int32_t> TokenMask::AllowedIds() const {
  if (sparse_) return ids_;
  std::vector<std::int32_t> out;
  out.reserve(count_);
  for (std::size_t w = 0; w < bits_.size(); ++w) {
    std::uint64_t bits = bits_[w];
    while (bits != 0) {
      out.push_back(static_cast<std::int32_t>(w * 64 + __builtin_ctzll(bits)));
      bits &= bits - 1;
    }
  }
  return out;
}

void TokenMask::FillBits(std::span<std::uint64_t> words) const {
  const std::size_t covered = std::min(words.size(), bits_.size());
  if (sparse_) {
    std::fill(words.begin(), words.end(), 0);
    for (const std::int32_t t : ids_) {
      if (static_cast<std::size_t>(t >> 6) < words.size())
        words[t >> 6] |= std::uint64_t{1} << (t & 63);
    }
    return;
  }
  std::copy_n(bits_.begin(), covered, words.begin());
  std::fill(words.begin() + static_cast<std::ptrdiff_t>(covered), words.end(), 0);
}

void TokenMask::Apply(std::span<float> logits) const {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  const std::size_t n = logits.size();
  if (sparse_) {
    // Keep the allowed logits, fill everything with -inf, put them back.
    float kept[kSparseLimit];
    std::size_t k = 0;
    for (const std::int32_t t : ids_) {
      if (static_cast<std::size_t>(t) < n) kept[k++] = logits[t];
    }
    std::fill(logits.begin(), logits.end(), kNegInf);
    k = 0;
    for (const std::int32_t t : ids_) {
      if (static_cast<std::size_t>(t) < n) logits[t] = kept[k++];
    }
    return;
  }
  const std::size_t covered = std::min(n, static_cast<std::size_t>(vocab_size_));
  for (std::size_t w = 0; w * 64 < covered; ++w) {
    const std::uint64_t bits = bits_[w];
    if (bits == ~std::uint64_t{0}) continue;
    const std::size_t base = w * 64;
    const std::size_t end = std::min(base + 64, covered);
    if (bits == 0) {
      std::fill(logits.begin() + base, logits.begin() + end, kNegInf);
      continue;
    }
    for (std::size_t i = base; i < end; ++i) {
      if (!((bits >> (i - base)) & 1)) logits[i] = kNegInf;
    }
  }
  if (n > covered) std::fill(logits.begin() + covered, logits.end(), kNegInf);
}

}  // namespace fgnet
