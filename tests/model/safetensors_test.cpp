// The safetensors reader and writer: round trips, every header check on a corrupted file, the
// realignment of misaligned tensors, and sharded sets with their index checks.
#include "model/safetensors.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

#include "fails_with.h"
#include "tiny_checkpoint.h"

namespace fgnet {
namespace {

using testing::FailsWith;
using testing::RawSafetensors;
using testing::ReadFile;
using testing::TempDir;
using testing::TensorStore;
using testing::TinyValue;
using testing::ValueAt;
using testing::WriteFile;

std::string FloatBytes(std::initializer_list<float> values) {
  std::string out;
  for (const float v : values) out.append(reinterpret_cast<const char*>(&v), 4);
  return out;
}

// Writes a raw file and opens it.
Result<SafetensorsFile> OpenRaw(const TempDir& dir, const std::string& header,
                                const std::string& data,
                                std::optional<std::uint64_t> declared = std::nullopt) {
  const std::string path = dir.File("raw.safetensors");
  WriteFile(path, RawSafetensors(header, data, declared));
  return SafetensorsFile::Open(path);
}

// FailsWith, and the message starts with the raw file's path.
::testing::AssertionResult RawFails(const Result<SafetensorsFile>& result,
                                    std::initializer_list<std::string_view> fragments) {
  auto check = FailsWith(result, fragments);
  if (check && result.error().message().find("raw.safetensors: ") == std::string::npos) {
    return ::testing::AssertionFailure() << "does not name the file: " << result.error().message();
  }
  return check;
}

TEST(SafetensorsTest, RoundTripsEveryDtypeWithMetadata) {
  TempDir dir;
  TensorStore store;
  store.Add("a.bf16", {3}, DType::kBF16);  // 6 bytes: would misalign an F32 written after it
  store.Add("b.f32", {2, 3}, DType::kF32);
  store.Add("c.f16", {5}, DType::kF16);
  store.Add("d.scalar", {}, DType::kF32);
  store.Add("e.empty", {0, 4}, DType::kBF16);
  const std::string path = dir.File("x.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, store.entries(), {{"format", "pt"}}).ok());

  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.error().message();
  EXPECT_EQ(file->path(), path);
  EXPECT_EQ(file->metadata(), (std::map<std::string, std::string>{{"format", "pt"}}));
  EXPECT_EQ(file->tensors().size(), 5u);
  EXPECT_EQ(file->num_realigned(), 0u);
  for (const auto& e : store.entries()) {
    SCOPED_TRACE(e.name);
    const auto it = file->tensors().find(e.name);
    ASSERT_NE(it, file->tensors().end());
    EXPECT_EQ(it->second.dtype, e.tensor.dtype);
    EXPECT_EQ(it->second.shape, e.tensor.shape);
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(it->second.data) % DTypeSize(e.tensor.dtype), 0u);
    for (std::int64_t i = 0; i < e.tensor.num_elements(); ++i) {
      EXPECT_EQ(ValueAt(it->second, i), TinyValue(e.name, i));
    }
  }
  // The layout the reference implementation expects: the header padded to 8 bytes, F32 first,
  // then the 2-byte tensors in the given order, with no gaps.
  const std::string bytes = ReadFile(path);
  std::uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), 8);
  EXPECT_EQ(header_len % 8, 0u);
  const Json header = Json::parse(bytes.substr(8, header_len));
  EXPECT_EQ(header["b.f32"]["data_offsets"], Json::parse("[0, 24]"));
  EXPECT_EQ(header["d.scalar"]["data_offsets"], Json::parse("[24, 28]"));
  EXPECT_EQ(header["a.bf16"]["data_offsets"], Json::parse("[28, 34]"));
  EXPECT_EQ(header["c.f16"]["data_offsets"], Json::parse("[34, 44]"));
  EXPECT_EQ(header["e.empty"]["data_offsets"], Json::parse("[44, 44]"));
  EXPECT_EQ(bytes.size(), 8 + header_len + 44);
}

TEST(SafetensorsTest, WriterRejectsBadEntries) {
  TempDir dir;
  TensorStore store;
  store.Add("w", {2}, DType::kF32);
  const std::string path = dir.File("x.safetensors");
  std::vector<SafetensorsEntry> twice = {store.entries()[0], store.entries()[0]};
  EXPECT_TRUE(FailsWith(WriteSafetensors(path, twice), {path, "'w'", "listed twice"}));
  std::vector<SafetensorsEntry> reserved = {{"__metadata__", store.entries()[0].tensor}};
  EXPECT_TRUE(FailsWith(WriteSafetensors(path, reserved), {path, "reserved"}));
  SafetensorsEntry no_data{"n", store.entries()[0].tensor};
  no_data.tensor.data = nullptr;
  EXPECT_TRUE(FailsWith(WriteSafetensors(path, {no_data}), {path, "'n'", "no data"}));
  EXPECT_TRUE(FailsWith(WriteSafetensors(dir.File("missing/x.safetensors"), store.entries()),
                        {"missing/x.safetensors", "cannot create"}));
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST(SafetensorsTest, MissingFileNamesThePath) {
  TempDir dir;
  EXPECT_TRUE(FailsWith(SafetensorsFile::Open(dir.File("nope.safetensors")),
                        {dir.File("nope.safetensors"), "cannot open"}));
}

TEST(SafetensorsTest, RejectsFilesTooShortForTheLength) {
  TempDir dir;
  const std::string path = dir.File("short.safetensors");
  WriteFile(path, "");
  EXPECT_TRUE(FailsWith(SafetensorsFile::Open(path), {path, "0 bytes", "too short"}));
  WriteFile(path, std::string("\x05\x00\x00", 3));
  EXPECT_TRUE(FailsWith(SafetensorsFile::Open(path), {path, "3 bytes", "too short"}));
}

TEST(SafetensorsTest, RejectsHeaderLengthPastEndOfFile) {
  TempDir dir;
  EXPECT_TRUE(RawFails(OpenRaw(dir, "{}", "", 1000),
                       {"raw.safetensors", "header length 1000 runs past the end of the file"}));
}

TEST(SafetensorsTest, RejectsAbsurdHeaderLength) {
  TempDir dir;
  EXPECT_TRUE(RawFails(OpenRaw(dir, "{}", "", std::uint64_t{1} << 40),
                       {"raw.safetensors", "1099511627776", "implausibly large"}));
  EXPECT_TRUE(RawFails(OpenRaw(dir, "{}", "", ~std::uint64_t{0}),
                       {"raw.safetensors", "implausibly large"}));
}

TEST(SafetensorsTest, RejectsTruncatedHeader) {
  TempDir dir;
  TensorStore store;
  store.Add("w", {4}, DType::kF32);
  const std::string path = dir.File("cut.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, store.entries()).ok());
  const std::string bytes = ReadFile(path);
  WriteFile(path, bytes.substr(0, 8 + 10));  // the length survives, the header does not
  EXPECT_TRUE(FailsWith(SafetensorsFile::Open(path), {path, "runs past the end of the file"}));
}

TEST(SafetensorsTest, RejectsTruncatedData) {
  TempDir dir;
  TensorStore store;
  store.Add("w", {4}, DType::kF32);
  const std::string path = dir.File("cut.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, store.entries()).ok());
  const std::string bytes = ReadFile(path);
  WriteFile(path, bytes.substr(0, bytes.size() - 3));
  EXPECT_TRUE(FailsWith(SafetensorsFile::Open(path),
                        {path, "tensor 'w'", "data_offsets [0, 16] exceed the data size 13"}));
}

TEST(SafetensorsTest, RejectsEmptyAndInvalidJson) {
  TempDir dir;
  EXPECT_TRUE(RawFails(OpenRaw(dir, "", ""), {"raw.safetensors", "header is empty"}));
  EXPECT_TRUE(RawFails(OpenRaw(dir, "{\"w\": {\"dtype\": ", ""),
                       {"raw.safetensors", "header is not valid JSON"}));
  EXPECT_TRUE(
      RawFails(OpenRaw(dir, "{\"w\":\n\n[", ""), {"raw.safetensors", "header is not valid JSON"}));
  EXPECT_TRUE(RawFails(OpenRaw(dir, std::string("{}\0\0", 4), ""),
                       {"raw.safetensors", "header holds a NUL byte at offset 2"}));
  EXPECT_TRUE(RawFails(OpenRaw(dir, "[1, 2]", ""),
                       {"raw.safetensors", "header must be a JSON object, got array"}));
}

TEST(SafetensorsTest, AcceptsSpacePaddedHeaderAndEmptyFile) {
  TempDir dir;
  auto file = OpenRaw(dir, "{}      ", "");
  ASSERT_TRUE(file.ok()) << file.error().message();
  EXPECT_TRUE(file->tensors().empty());
}

TEST(SafetensorsTest, RejectsEntriesOfTheWrongJsonTypes) {
  TempDir dir;
  const std::string data(16, '\0');
  const struct {
    const char* header;
    const char* problem;
  } cases[] = {
      {R"({"w": 3})", "tensor 'w': entry must be a JSON object, got number"},
      {R"({"w": {"shape": [4], "data_offsets": [0, 16]}})", "tensor 'w': missing 'dtype'"},
      {R"({"w": {"dtype": 7, "shape": [4], "data_offsets": [0, 16]}})",
       "tensor 'w': 'dtype' must be a string, got number"},
      {R"({"w": {"dtype": "F32", "data_offsets": [0, 16]}})", "tensor 'w': missing 'shape'"},
      {R"({"w": {"dtype": "F32", "shape": 4, "data_offsets": [0, 16]}})",
       "tensor 'w': 'shape' must be an array, got number"},
      {R"({"w": {"dtype": "F32", "shape": [4.0], "data_offsets": [0, 16]}})",
       "tensor 'w': shape must be an array of integers, got [4.0]"},
      {R"({"w": {"dtype": "F32", "shape": ["4"], "data_offsets": [0, 16]}})",
       "tensor 'w': shape must be an array of integers"},
      {R"({"w": {"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]}})",
       "tensor 'w': shape [-4] has a negative dimension"},
      {R"({"w": {"dtype": "F32", "shape": [4]}})", "tensor 'w': missing 'data_offsets'"},
      {R"({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0]}})",
       "tensor 'w': data_offsets must be an array of two integers, got [0]"},
      {R"({"w": {"dtype": "F32", "shape": [4], "data_offsets": {"a": 1}}})",
       "tensor 'w': data_offsets must be an array of two integers"},
      {R"({"w": {"dtype": "F32", "shape": [4], "data_offsets": [-1, 15]}})",
       "tensor 'w': data_offsets must hold two non-negative integers, got -1"},
      {R"({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, "16"]}})",
       "tensor 'w': data_offsets must hold two non-negative integers, got \"16\""},
      {R"({"__metadata__": ["x"]})", "__metadata__ must be an object of strings, got array"},
      {R"({"__metadata__": {"format": 1}})", "__metadata__ value of 'format' must be a string"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.header);
    EXPECT_TRUE(RawFails(OpenRaw(dir, c.header, data), {"raw.safetensors", c.problem}));
  }
}

TEST(SafetensorsTest, DeeplyNestedValuesAreReportedWithoutRecursion) {
  TempDir dir;
  const std::size_t depth = 200000;
  const std::string header = R"({"w": {"dtype": "F32", "shape": )" + std::string(depth, '[') +
                             std::string(depth, ']') + R"(, "data_offsets": [0, 0]}})";
  EXPECT_TRUE(RawFails(
      OpenRaw(dir, header, ""),
      {"raw.safetensors", "tensor 'w'", "shape must be an array of integers, got [[[[[...]]]]]"}));
}

TEST(SafetensorsTest, RejectsUnsupportedDtypesNamingTensorAndDtype) {
  TempDir dir;
  for (const char* dtype : {"F64", "I8", "BOOL", "F8_E4M3", "bf16"}) {
    SCOPED_TRACE(dtype);
    const std::string header = std::string(R"({"layer.w": {"dtype": ")") + dtype +
                               R"(", "shape": [2], "data_offsets": [0, 2]}})";
    EXPECT_TRUE(RawFails(
        OpenRaw(dir, header, std::string(2, '\0')),
        {"raw.safetensors", "tensor 'layer.w'", std::string("unsupported dtype '") + dtype + "'"}));
  }
}

TEST(SafetensorsTest, RejectsShapeThatDisagreesWithItsRange) {
  TempDir dir;
  EXPECT_TRUE(
      RawFails(OpenRaw(dir, R"({"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 20]}})",
                       std::string(24, '\0')),
               {"raw.safetensors", "tensor 'w'",
                "shape [2, 3] of F32 needs 24 bytes but data_offsets [0, 20] hold 20"}));
  EXPECT_TRUE(
      RawFails(OpenRaw(dir, R"({"w": {"dtype": "BF16", "shape": [], "data_offsets": [0, 4]}})",
                       std::string(4, '\0')),
               {"tensor 'w'", "shape [] of BF16 needs 2 bytes but data_offsets [0, 4] hold 4"}));
}

TEST(SafetensorsTest, RejectsShapesWhoseSizeOverflows) {
  TempDir dir;
  EXPECT_TRUE(RawFails(
      OpenRaw(
          dir,
          R"({"w": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 0]}})",
          ""),
      {"raw.safetensors", "tensor 'w'", "too large"}));
  EXPECT_TRUE(RawFails(
      OpenRaw(dir,
              R"({"w": {"dtype": "F32", "shape": [4611686018427387904], "data_offsets": [0, 0]}})",
              ""),
      {"tensor 'w'", "overflows"}));
  EXPECT_TRUE(RawFails(
      OpenRaw(dir,
              R"({"w": {"dtype": "F32", "shape": [18446744073709551615], "data_offsets": [0, 0]}})",
              ""),
      {"tensor 'w'", "dimension too large"}));
}

TEST(SafetensorsTest, RejectsReversedAndOutOfFileRanges) {
  TempDir dir;
  EXPECT_TRUE(
      RawFails(OpenRaw(dir, R"({"w": {"dtype": "F32", "shape": [0], "data_offsets": [8, 4]}})",
                       std::string(16, '\0')),
               {"raw.safetensors", "tensor 'w'", "data_offsets [8, 4] begin after they end"}));
  EXPECT_TRUE(
      RawFails(OpenRaw(dir, R"({"w": {"dtype": "F32", "shape": [16], "data_offsets": [0, 64]}})",
                       std::string(16, '\0')),
               {"raw.safetensors", "tensor 'w'", "data_offsets [0, 64] exceed the data size 16"}));
  EXPECT_TRUE(RawFails(
      OpenRaw(
          dir,
          R"({"w": {"dtype": "F32", "shape": [0], "data_offsets": [18446744073709551615, 18446744073709551615]}})",
          ""),
      {"tensor 'w'", "exceed the data size 0"}));
}

TEST(SafetensorsTest, RejectsOverlappingRangesNamingBothTensors) {
  TempDir dir;
  const std::string header = R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},)"
                             R"( "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}})";
  EXPECT_TRUE(RawFails(OpenRaw(dir, header, std::string(24, '\0')),
                       {"raw.safetensors", "tensors 'a' [0, 16] and 'b' [8, 24] overlap"}));
  const std::string same = R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},)"
                           R"( "b": {"dtype": "BF16", "shape": [4], "data_offsets": [0, 8]}})";
  EXPECT_TRUE(RawFails(OpenRaw(dir, same, std::string(8, '\0')), {"'a' [0, 8] and 'b' [0, 8]"}));
}

TEST(SafetensorsTest, EmptyRangesAndGapsAreFine) {
  TempDir dir;
  const std::string header = R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},)"
                             R"( "e": {"dtype": "F32", "shape": [0], "data_offsets": [4, 4]},)"
                             R"( "b": {"dtype": "F32", "shape": [1], "data_offsets": [12, 16]}})";
  auto file = OpenRaw(dir, header, FloatBytes({1, 2, 0, 3}));
  ASSERT_TRUE(file.ok()) << file.error().message();
  EXPECT_EQ(ValueAt(file->tensors().at("b"), 0), 3.0f);
  EXPECT_EQ(file->tensors().at("e").num_elements(), 0);
}

TEST(SafetensorsTest, RejectsDuplicateTensorNames) {
  TempDir dir;
  const std::string header = R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},)"
                             R"( "w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})";
  EXPECT_TRUE(RawFails(OpenRaw(dir, header, std::string(8, '\0')),
                       {"raw.safetensors", "lists tensor 'w' twice"}));
}

TEST(SafetensorsTest, NamesWithControlCharactersStayOnOneLine) {
  TempDir dir;
  const std::string header =
      R"({"bad\nname": {"dtype": "F64", "shape": [1], "data_offsets": [0, 8]}})";
  EXPECT_TRUE(RawFails(OpenRaw(dir, header, std::string(8, '\0')),
                       {"raw.safetensors", "'bad\\x0aname'", "unsupported dtype 'F64'"}));
}

TEST(SafetensorsTest, CopiesMisalignedTensorsIntoAlignedStorage) {
  TempDir dir;
  // The data section starts at 8 + header length; pad the header so that it starts at 1 mod 4.
  std::string header = R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},)"
                       R"( "b": {"dtype": "BF16", "shape": [2], "data_offsets": [16, 20]},)"
                       R"( "c": {"dtype": "F32", "shape": [1], "data_offsets": [23, 27]}})";
  while ((8 + header.size()) % 4 != 1) header += ' ';
  std::string data = FloatBytes({1.5f, -2.0f, 3.25f, 4.0f});
  const std::uint16_t b[2] = {F32ToBF16(0.5f), F32ToBF16(-8.0f)};
  data.append(reinterpret_cast<const char*>(b), 4);
  data.append(3, '\0');
  data += FloatBytes({7.0f});

  auto file = OpenRaw(dir, header, data);
  ASSERT_TRUE(file.ok()) << file.error().message();
  EXPECT_EQ(file->num_realigned(), 2u);  // a (1 mod 4) and b (odd); c is aligned and viewed
  const auto& t = file->tensors();
  for (const auto& [name, view] : t) {
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(view.data) % DTypeSize(view.dtype), 0u) << name;
  }
  EXPECT_EQ(ValueAt(t.at("a"), 0), 1.5f);
  EXPECT_EQ(ValueAt(t.at("a"), 3), 4.0f);
  EXPECT_EQ(ValueAt(t.at("b"), 0), 0.5f);
  EXPECT_EQ(ValueAt(t.at("b"), 1), -8.0f);
  EXPECT_EQ(ValueAt(t.at("c"), 0), 7.0f);

  // The copies survive a move of the file.
  SafetensorsFile moved = std::move(file).value();
  EXPECT_EQ(ValueAt(moved.tensors().at("a"), 2), 3.25f);
}

// --- Sets of files and sharded checkpoints -----------------------------------------------------

// Writes tensors a, b (shard 1) and c (shard 2) with an index mapping them there.
void WriteTwoShards(const TempDir& dir, TensorStore* store) {
  store->Add("a", {2, 2}, DType::kF32);
  store->Add("b", {3}, DType::kBF16);
  store->Add("c", {4}, DType::kF16);
  ASSERT_TRUE(WriteSafetensors(dir.File("s1.safetensors"), store->Subset({"a", "b"})).ok());
  ASSERT_TRUE(WriteSafetensors(dir.File("s2.safetensors"), store->Subset({"c"})).ok());
  ASSERT_TRUE(WriteSafetensorsIndex(
                  dir.File("model.safetensors.index.json"),
                  {{"a", "s1.safetensors"}, {"b", "s1.safetensors"}, {"c", "s2.safetensors"}}, 30)
                  .ok());
}

TEST(SafetensorsSetTest, OpensShardedDirectories) {
  TempDir dir;
  TensorStore store;
  WriteTwoShards(dir, &store);
  auto set = SafetensorsSet::OpenDirectory(dir.path());
  ASSERT_TRUE(set.ok()) << set.error().message();
  EXPECT_EQ(set->num_files(), 2u);
  EXPECT_EQ(set->source(), dir.File("model.safetensors.index.json"));
  EXPECT_EQ(set->FileOf("a"), dir.File("s1.safetensors"));
  EXPECT_EQ(set->FileOf("c"), dir.File("s2.safetensors"));
  EXPECT_EQ(set->FileOf("zzz"), "");
  EXPECT_EQ(set->Find("zzz"), nullptr);
  ASSERT_NE(set->Find("c"), nullptr);
  EXPECT_EQ(ValueAt(*set->Find("c"), 3), TinyValue("c", 3));
  EXPECT_EQ(set->total_bytes(), 16u + 6u + 8u);
  EXPECT_EQ(set->total_elements(), 4u + 3u + 4u);
  EXPECT_EQ(set->BytesByDType(), (std::map<DType, std::uint64_t>{
                                     {DType::kF32, 16}, {DType::kBF16, 6}, {DType::kF16, 8}}));
}

TEST(SafetensorsSetTest, SingleFileWinsOverTheIndex) {
  TempDir dir;
  TensorStore store;
  WriteTwoShards(dir, &store);
  ASSERT_TRUE(WriteSafetensors(dir.File("model.safetensors"), store.Subset({"a"})).ok());
  auto set = SafetensorsSet::OpenDirectory(dir.path());
  ASSERT_TRUE(set.ok()) << set.error().message();
  EXPECT_EQ(set->num_files(), 1u);
  EXPECT_EQ(set->source(), dir.File("model.safetensors"));
}

TEST(SafetensorsSetTest, EmptyDirectoryNamesWhatIsMissing) {
  TempDir dir;
  EXPECT_TRUE(FailsWith(SafetensorsSet::OpenDirectory(dir.path()),
                        {dir.path(), "no model.safetensors or model.safetensors.index.json"}));
}

TEST(SafetensorsSetTest, RejectsATensorInTwoFiles) {
  TempDir dir;
  TensorStore store;
  store.Add("a", {2}, DType::kF32);
  ASSERT_TRUE(WriteSafetensors(dir.File("x.safetensors"), store.entries()).ok());
  ASSERT_TRUE(WriteSafetensors(dir.File("y.safetensors"), store.entries()).ok());
  EXPECT_TRUE(
      FailsWith(SafetensorsSet::OpenFiles({dir.File("x.safetensors"), dir.File("y.safetensors")}),
                {"tensor 'a' is in both", dir.File("x.safetensors"), dir.File("y.safetensors")}));
  EXPECT_TRUE(FailsWith(SafetensorsSet::OpenFiles({}), {"no safetensors files"}));
}

TEST(SafetensorsSetTest, RejectsMalformedIndexes) {
  const struct {
    const char* index;
    const char* problem;
  } cases[] = {
      {"{", "invalid JSON"},
      {"[]", "must be a JSON object, got array"},
      {R"({"metadata": {}})", "missing 'weight_map'"},
      {R"({"weight_map": []})", "'weight_map' must be an object, got array"},
      {R"({"weight_map": {}})", "'weight_map' is empty"},
      {R"({"weight_map": {"a": 1}})", "weight_map entry of tensor 'a' must be a shard file name"},
      {R"({"weight_map": {"a": "../s1.safetensors"}})",
       "tensor 'a' maps to '../s1.safetensors', which is not a file name inside"},
      {R"({"weight_map": {"a": "/etc/passwd"}})", "not a file name inside"},
      {R"({"weight_map": {"a": ""}})", "not a file name inside"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.index);
    TempDir dir;
    TensorStore store;
    WriteTwoShards(dir, &store);
    WriteFile(dir.File("model.safetensors.index.json"), c.index);
    EXPECT_TRUE(FailsWith(SafetensorsSet::OpenDirectory(dir.path()),
                          {"model.safetensors.index.json", c.problem}));
  }
}

TEST(SafetensorsSetTest, RejectsIndexesThatDisagreeWithTheShards) {
  const struct {
    const char* weight_map;
    std::vector<const char*> fragments;
  } cases[] = {
      {R"({"a": "s1.safetensors", "b": "s1.safetensors", "c": "s3.safetensors"})",
       {"shard 's3.safetensors' (of tensor 'c') does not exist", "s3.safetensors"}},
      {R"({"a": "s1.safetensors", "b": "s1.safetensors", "c": "s2.safetensors", "d": "s2.safetensors"})",
       {"tensor 'd' is mapped to shard 's2.safetensors', which has no such tensor"}},
      {R"({"a": "s1.safetensors", "b": "s2.safetensors", "c": "s2.safetensors"})",
       {"tensor 'b' is mapped to shard 's2.safetensors' but lives in", "s1.safetensors"}},
      {R"({"a": "s1.safetensors", "c": "s2.safetensors"})",
       {"tensor 'b' in", "s1.safetensors", "is not listed in weight_map"}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.weight_map);
    TempDir dir;
    TensorStore store;
    WriteTwoShards(dir, &store);
    WriteFile(dir.File("model.safetensors.index.json"),
              std::string(R"({"weight_map": )") + c.weight_map + "}");
    auto result = SafetensorsSet::OpenDirectory(dir.path());
    EXPECT_TRUE(FailsWith(result, {"model.safetensors.index.json"}));
    for (const char* f : c.fragments) EXPECT_TRUE(FailsWith(result, {f}));
  }
}

TEST(SafetensorsSetTest, RejectsATensorInTwoShards) {
  TempDir dir;
  TensorStore store;
  WriteTwoShards(dir, &store);
  ASSERT_TRUE(WriteSafetensors(dir.File("s2.safetensors"), store.Subset({"b", "c"})).ok());
  EXPECT_TRUE(FailsWith(SafetensorsSet::OpenDirectory(dir.path()),
                        {"model.safetensors.index.json", "tensor 'b' is in both", "s1.safetensors",
                         "s2.safetensors"}));
}

TEST(SafetensorsSetTest, CorruptShardErrorsNameTheShard) {
  TempDir dir;
  TensorStore store;
  WriteTwoShards(dir, &store);
  const std::string bytes = ReadFile(dir.File("s2.safetensors"));
  WriteFile(dir.File("s2.safetensors"), bytes.substr(0, bytes.size() - 1));
  EXPECT_TRUE(FailsWith(SafetensorsSet::OpenDirectory(dir.path()),
                        {dir.File("s2.safetensors"), "tensor 'c'", "exceed the data size"}));
}

}  // namespace
}  // namespace fgnet
