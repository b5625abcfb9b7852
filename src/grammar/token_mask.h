// The set of tokens a grammar state allows next (stop ids included when the state accepts),
// ignoring the token budget. Stored as a bitset over the vocabulary, or as a sorted id list when
// few tokens are allowed (most structural JSON states allow a handful), which also makes
// applying it cheaper.
// Thread-safety: immutable after construction.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace fgnet {

class TokenMask {
 public:
  // From the allowed ids (any order, no duplicates) over a vocabulary of `vocab_size` tokens.
  // `max_end_distance` is the largest distance to acceptance of a state an allowed token leads
  // to (0 if none): while the budget after this token is at least that, nothing more is masked.
  TokenMask(std::vector<std::int32_t> allowed, std::int32_t vocab_size,
            std::int32_t max_end_distance);

  bool Allows(std::int32_t token) const;
  std::int64_t count() const { return count_; }
  std::int32_t vocab_size() const { return vocab_size_; }
  std::int32_t max_end_distance() const { return max_end_distance_; }
  // The allowed ids in increasing order.
  std::vector<std::int32_t> AllowedIds() const;
  // Sets every logit of a token it does not allow to -infinity; logits past the vocabulary too.
  // `logits` may be shorter than the vocabulary (ids past its end cannot be sampled anyway).
  void Apply(std::span<float> logits) const;
  // Writes the mask as a bitset (token t allowed when bit t % 64 of words[t / 64] is set) over
  // words.size() * 64 tokens; tokens past the mask's vocabulary are not allowed.
  void FillBits(std::span<std::uint64_t> words) const;
  // Approximate heap bytes held.
  std::size_t bytes() const { return bits_.size() * 8 + ids_.size() * 4; }

 private:
  std::int32_t vocab_size_;
  std::int64_t count_;
  std::int32_t max_end_distance_;
  bool sparse_;
  std::vector<std::uint64_t> bits_;  // dense form
  std::vector<std::int32_t> ids_;    // sparse form, sorted
};

}  // namespace fgnet
