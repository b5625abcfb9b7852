// SHA-256 (FIPS 180-4) through OpenSSL's EVP interface, which uses the CPU's SHA extensions where
// present. Digests are printed as 64 lowercase hex digits.
// Thread-safety: a Sha256 object is single-threaded; the free functions are reentrant.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "util/status.h"

namespace fgnet {

class Sha256 {
 public:
  using Digest = std::array<std::uint8_t, 32>;

  Sha256();
  ~Sha256();
  Sha256(Sha256&&) noexcept;
  Sha256& operator=(Sha256&&) noexcept;

  void Update(const void* data, std::size_t size);
  void Update(std::string_view s) { Update(s.data(), s.size()); }
  // The digest of everything added; the object starts over afterwards.
  Digest Finish();
  std::string FinishHex();

 private:
  struct Ctx;
  std::unique_ptr<Ctx> ctx_;
};

std::string DigestToHex(const Sha256::Digest& digest);
std::string Sha256Hex(std::string_view data);
// The digest of a file's contents, read in large blocks. Errors name the path.
Result<std::string> Sha256File(const std::string& path);

}  // namespace fgnet
