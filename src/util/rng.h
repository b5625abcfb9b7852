// Counter-based random numbers (Philox4x32-10). A stream is fully determined by (seed, stream id)
// and a counter, so any random choice in fgnet can be replayed from its seed, and independent
// streams (one per request, one per mutation) never interfere.
// Thread-safety: a Philox object is a plain value; give each thread its own.
#pragma once

#include <array>
#include <cstdint>

namespace fgnet {

class Philox {
 public:
  explicit Philox(std::uint64_t seed, std::uint64_t stream = 0) : key_(seed), stream_(stream) {}

  // The next 32 random bits.
  std::uint32_t NextU32() {
    if (index_ == 4) {
      block_ = Block(counter_++);
      index_ = 0;
    }
    return block_[index_++];
  }
  std::uint64_t NextU64() {
    const std::uint64_t hi = NextU32();
    return (hi << 32) | NextU32();
  }
  // Uniform in [0, 1) with 24 bits of precision.
  float NextFloat() { return static_cast<float>(NextU32() >> 8) * (1.0f / 16777216.0f); }
  // Uniform in [0, 1) with 53 bits of precision.
  double NextDouble() { return static_cast<double>(NextU64() >> 11) * (1.0 / 9007199254740992.0); }

  // The raw block for (key, stream, counter): exposed for tests and for stateless use.
  std::array<std::uint32_t, 4> Block(std::uint64_t counter) const {
    std::array<std::uint32_t, 4> c = {
        static_cast<std::uint32_t>(counter), static_cast<std::uint32_t>(counter >> 32),
        static_cast<std::uint32_t>(stream_), static_cast<std::uint32_t>(stream_ >> 32)};
    std::uint32_t k0 = static_cast<std::uint32_t>(key_);
    std::uint32_t k1 = static_cast<std::uint32_t>(key_ >> 32);
    for (int round = 0; round < 10; ++round) {
      const std::uint64_t p0 = static_cast<std::uint64_t>(0xD2511F53u) * c[0];
      const std::uint64_t p1 = static_cast<std::uint64_t>(0xCD9E8D57u) * c[2];
      c = {static_cast<std::uint32_t>(p1 >> 32) ^ c[1] ^ k0, static_cast<std::uint32_t>(p1),
           static_cast<std::uint32_t>(p0 >> 32) ^ c[3] ^ k1, static_cast<std::uint32_t>(p0)};
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    return c;
  }

 private:
  std::uint64_t key_;
  std::uint64_t stream_;
  std::uint64_t counter_ = 0;
  std::array<std::uint32_t, 4> block_{};
  int index_ = 4;
};

}  // namespace fgnet
