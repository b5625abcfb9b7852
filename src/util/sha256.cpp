#include "util/sha256.h"

#include <openssl/evp.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

namespace fgnet {

struct Sha256::Ctx {
  EVP_MD_CTX* md = nullptr;
  Ctx() : md(EVP_MD_CTX_new()) {
    FGNET_CHECK(md != nullptr);
    FGNET_CHECK(EVP_DigestInit_ex(md, EVP_sha256(), nullptr) == 1);
  }
  ~Ctx() { EVP_MD_CTX_free(md); }
  Ctx(const Ctx&) = delete;
  Ctx& operator=(const Ctx&) = delete;
};

Sha256::Sha256() : ctx_(std::make_unique<Ctx>()) {}
Sha256::~Sha256() = default;
Sha256::Sha256(Sha256&&) noexcept = default;
Sha256& Sha256::operator=(Sha256&&) noexcept = default;

void Sha256::Update(const void* data, std::size_t size) {
  if (size == 0) return;
  FGNET_CHECK(EVP_DigestUpdate(ctx_->md, data, size) == 1);
}

Sha256::Digest Sha256::Finish() {
  Digest digest{};
  unsigned int len = 0;
  FGNET_CHECK(EVP_DigestFinal_ex(ctx_->md, digest.data(), &len) == 1);
  FGNET_CHECK_EQ(len, digest.size());
  FGNET_CHECK(EVP_DigestInit_ex(ctx_->md, EVP_sha256(), nullptr) == 1);
  return digest;
}

std::string Sha256::FinishHex() { return DigestToHex(Finish()); }

std::string DigestToHex(const Sha256::Digest& digest) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex(2 * digest.size(), '0');
  for (std::size_t i = 0; i < digest.size(); ++i) {
    hex[2 * i] = kHex[digest[i] >> 4];
    hex[2 * i + 1] = kHex[digest[i] & 15];
  }
  return hex;
}

std::string Sha256Hex(std::string_view data) {
  Sha256 h;
  h.Update(data);
  return h.FinishHex();
}

Result<std::string> Sha256File(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return MakeError(path, ": cannot open: ", std::strerror(errno));
  Sha256 h;
  std::vector<char> buf(1 << 20);
  std::size_t got = 0;
  while ((got = std::fread(buf.data(), 1, buf.size(), f)) > 0) h.Update(buf.data(), got);
  const bool failed = std::ferror(f) != 0;
  std::fclose(f);
  if (failed) return MakeError(path, ": read error");
  return h.FinishHex();
}

}  // namespace fgnet
