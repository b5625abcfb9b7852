#include "util/sha256.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <string>

namespace fgnet {
namespace {

// FIPS 180-4 examples.
TEST(Sha256Test, KnownDigests) {
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Sha256Hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST(Sha256Test, IncrementalEqualsOneShotAndRestarts) {
  const std::string data(100000, 'a');
  Sha256 h;
  for (std::size_t i = 0; i < data.size(); i += 777) h.Update(data.substr(i, 777));
  EXPECT_EQ(h.FinishHex(), Sha256Hex(data));
  h.Update("abc");
  EXPECT_EQ(h.FinishHex(), Sha256Hex("abc"));
}

TEST(Sha256Test, FileDigestAndMissingFile) {
  const std::string path = testing::TempDir() + "sha256_test_" + std::to_string(getpid());
  std::FILE* f = std::fopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  std::fputs("abc", f);
  std::fclose(f);
  auto digest = Sha256File(path);
  ASSERT_TRUE(digest.ok()) << digest.error().message();
  EXPECT_EQ(*digest, Sha256Hex("abc"));
  std::remove(path.c_str());
  auto missing = Sha256File(path);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message().find(path), std::string::npos);
}

}  // namespace
}  // namespace fgnet
