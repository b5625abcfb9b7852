#include "util/npy.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>

namespace fgnet {
namespace {

std::string TempPath(const std::string& name) {
  return ::testing::TempDir() + "/fgnet_npy_" + std::to_string(::getpid()) + "_" + name;
}

TEST(Npy, WriteThenReadFloat32) {
  const std::vector<float> values = {1.5f, -2.0f, 3.25f, 0.0f, 7.0f, -1e-3f};
  const std::string path = TempPath("a.npy");
  ASSERT_TRUE(WriteNpyFloat32(path, {2, 3}, values.data()).ok());
  auto array = ReadNpy(path);
  ASSERT_TRUE(array.ok()) << array.error().message();
  EXPECT_EQ(array->dtype, "<f4");
  EXPECT_EQ(array->shape, (std::vector<std::int64_t>{2, 3}));
  EXPECT_EQ(*array->AsFloat32(), values);
}

TEST(Npy, OneDimensionalShape) {
  const float v[3] = {1, 2, 3};
  const std::string path = TempPath("b.npy");
  ASSERT_TRUE(WriteNpyFloat32(path, {3}, v).ok());
  auto array = ReadNpy(path);
  ASSERT_TRUE(array.ok());
  EXPECT_EQ(array->shape, (std::vector<std::int64_t>{3}));
}

TEST(Npy, RejectsTruncatedAndForeignFiles) {
  const float v[4] = {1, 2, 3, 4};
  const std::string path = TempPath("c.npy");
  ASSERT_TRUE(WriteNpyFloat32(path, {4}, v).ok());
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size() - 3));
  }
  auto truncated = ReadNpy(path);
  ASSERT_FALSE(truncated.ok());
  EXPECT_NE(truncated.error().message().find("truncated"), std::string::npos);
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << "hello, not numpy";
  }
  auto foreign = ReadNpy(path);
  ASSERT_FALSE(foreign.ok());
  EXPECT_NE(foreign.error().message().find("bad magic"), std::string::npos);
  EXPECT_FALSE(ReadNpy(TempPath("missing.npy")).ok());
}

}  // namespace
}  // namespace fgnet
