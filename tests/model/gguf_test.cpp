// The GGUF reader and writer (model/gguf.h): round trips of every metadata type and tensor type,
// and rejection of corrupt files. Corrupt files are built byte by byte here (RawGguf), so the
// reader is also checked against an encoding written independently of GgufWriter.
#include "model/gguf.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "fails_with.h"
#include "tiny_checkpoint.h"

namespace fgnet {
namespace {

using testing::FailsWith;
using testing::TempDir;
using testing::WriteFile;

// Little-endian encoders for hand-made files.
void PutU32(std::string* s, std::uint32_t v) { s->append(reinterpret_cast<const char*>(&v), 4); }
void PutU64(std::string* s, std::uint64_t v) { s->append(reinterpret_cast<const char*>(&v), 8); }
void PutStr(std::string* s, std::string_view v) {
  PutU64(s, v.size());
  s->append(v);
}

// A hand-made GGUF file: one string key (general.architecture) and one tensor unless told
// otherwise; every field can be set to a wrong value.
struct RawGguf {
  std::string magic = "GGUF";
  std::uint32_t version = 3;
  std::optional<std::uint64_t> tensor_count;  // default: tensors.size()
  std::optional<std::uint64_t> kv_count;      // default: the number of kvs
  std::string kvs;                            // encoded key-value pairs
  std::uint64_t n_kvs = 0;
  struct Tensor {
    std::string name = "t";
    std::vector<std::uint64_t> dims = {4};  // innermost first
    std::uint32_t type = 0;                 // F32
    std::uint64_t offset = 0;
  };
  std::vector<Tensor> tensors = {Tensor{}};
  std::uint32_t alignment = 32;
  std::uint64_t data_bytes = 16;

  RawGguf() { AddString("general.architecture", "test"); }

  void AddString(std::string_view key, std::string_view value) {
    PutStr(&kvs, key);
    PutU32(&kvs, 8);
    PutStr(&kvs, value);
    ++n_kvs;
  }
  void AddRaw(std::string_view key, std::uint32_t type, const std::string& value_bytes) {
    PutStr(&kvs, key);
    PutU32(&kvs, type);
    kvs += value_bytes;
    ++n_kvs;
  }

  std::string Bytes() const {
    std::string s = magic;
    PutU32(&s, version);
    PutU64(&s, tensor_count.value_or(tensors.size()));
    PutU64(&s, kv_count.value_or(n_kvs));
    s += kvs;
    for (const Tensor& t : tensors) {
      PutStr(&s, t.name);
      PutU32(&s, static_cast<std::uint32_t>(t.dims.size()));
      for (const std::uint64_t d : t.dims) PutU64(&s, d);
      PutU32(&s, t.type);
      PutU64(&s, t.offset);
    }
    s.resize((s.size() + alignment - 1) / alignment * alignment, '\0');
    for (std::uint64_t i = 0; i < data_bytes; ++i) s += static_cast<char>(i);
    return s;
  }
};

class GgufTest : public ::testing::Test {
 protected:
  std::string Write(const std::string& bytes, const std::string& name = "x.gguf") {
    const std::string path = dir_.File(name);
    WriteFile(path, bytes);
    return path;
  }
  Result<GgufFile> OpenRaw(const RawGguf& raw) { return GgufFile::Open(Write(raw.Bytes())); }

  TempDir dir_;
};

TEST_F(GgufTest, HandMadeFileReads) {
  RawGguf raw;
  raw.version = 2;
  auto file = OpenRaw(raw);
  ASSERT_TRUE(file.ok()) << file.error().message();
  EXPECT_EQ(file->version(), 2u);
  EXPECT_EQ(file->alignment(), 32u);
  ASSERT_EQ(file->tensors().size(), 1u);
  const GgufTensorInfo& t = file->tensors()[0];
  EXPECT_EQ(t.shape, std::vector<std::int64_t>{4});
  EXPECT_EQ(t.size, 16u);
  EXPECT_EQ(t.view.dtype, DType::kF32);
  EXPECT_EQ(static_cast<const std::uint8_t*>(t.view.data)[5], 5);
  EXPECT_EQ(file->data_offset() % 32, 0u);
  EXPECT_EQ(*file->Find("general.architecture")->AsString(), "test");
}

TEST_F(GgufTest, MetadataOfEveryTypeRoundTrips) {
  std::vector<std::pair<std::string, GgufValue>> kvs = {
      {"a.u8", GgufValue::U8(255)},
      {"a.i8", GgufValue::I8(-128)},
      {"a.u16", GgufValue::U16(65535)},
      {"a.i16", GgufValue::I16(-32768)},
      {"a.u32", GgufValue::U32(4294967295u)},
      {"a.i32", GgufValue::I32(std::numeric_limits<std::int32_t>::min())},
      {"a.f32", GgufValue::F32(1e-6f)},
      {"a.bool_true", GgufValue::Bool(true)},
      {"a.bool_false", GgufValue::Bool(false)},
      {"a.string", GgufValue::String(std::string("h\xc3\xa9llo\0world", 12))},
      {"a.empty_string", GgufValue::String("")},
      {"a.u64", GgufValue::U64(std::numeric_limits<std::uint64_t>::max())},
      {"a.i64", GgufValue::I64(std::numeric_limits<std::int64_t>::min())},
      {"a.f64", GgufValue::F64(0.1)},
      {"a.empty_array", GgufValue::Array(GgufType::kFloat32, {})},
      {"a.strings", GgufValue::StringArray({"<pad>", "", "\xe2\x96\x81the"})},
      {"a.bools",
       GgufValue::Array(GgufType::kBool, {GgufValue::Bool(true), GgufValue::Bool(false)})},
      {"a.nested",
       GgufValue::Array(
           GgufType::kArray,
           {GgufValue::Array(GgufType::kInt64, {GgufValue::I64(-1), GgufValue::I64(2)}),
            GgufValue::Array(GgufType::kString, {GgufValue::String("x")}),
            GgufValue::Array(GgufType::kArray,
                             {GgufValue::Array(GgufType::kFloat64, {GgufValue::F64(2.5)})})})},
  };
  GgufWriter writer;
  for (const auto& [k, v] : kvs) writer.Set(k, v);
  writer.Set("a.u8", GgufValue::U8(7));  // replaces, keeps its place
  kvs[0].second = GgufValue::U8(7);
  const std::string path = dir_.File("meta.gguf");
  ASSERT_TRUE(writer.Write(path).ok());

  auto file = GgufFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.error().message();
  ASSERT_EQ(file->metadata().size(), kvs.size());
  for (std::size_t i = 0; i < kvs.size(); ++i) {
    EXPECT_EQ(file->metadata()[i].first, kvs[i].first);
    EXPECT_EQ(file->metadata()[i].second, kvs[i].second) << kvs[i].first;
    EXPECT_EQ(file->metadata()[i].second.type(), kvs[i].second.type()) << kvs[i].first;
  }
  EXPECT_TRUE(file->tensors().empty());
  EXPECT_EQ(std::filesystem::file_size(path) % 32, 0u);  // the header is padded even so
  // Typed accessors.
  EXPECT_EQ(file->Find("a.u32")->AsInt(), 4294967295);
  EXPECT_EQ(file->Find("a.u64")->AsInt(), std::nullopt);
  EXPECT_EQ(file->Find("a.u64")->AsU64(), std::numeric_limits<std::uint64_t>::max());
  EXPECT_EQ(file->Find("a.f32")->AsF32(), 1e-6f);
  EXPECT_EQ(file->Find("a.f64")->AsDouble(), 0.1);
  EXPECT_EQ(file->Find("a.bool_true")->AsBool(), true);
  EXPECT_EQ(file->Find("a.string")->AsInt(), std::nullopt);
  EXPECT_EQ(file->Find("a.missing"), nullptr);
  EXPECT_EQ(file->Find("a.strings")->Describe(), "['<pad>', '', '\xe2\x96\x81the']");
}

TEST_F(GgufTest, TensorsOfEveryTypeRoundTripWithAlignment) {
  // Byte patterns: the reader must hand back exactly what was written, quantized blocks included.
  struct Case {
    std::string name;
    DType dtype;
    std::vector<std::int64_t> shape;
  };
  const std::vector<Case> cases = {
      {"f32", DType::kF32, {3, 5}},           {"f16", DType::kF16, {7}},
      {"bf16", DType::kBF16, {2, 3, 4}},      {"q8_0", DType::kQ8_0, {3, 64}},
      {"q4_0", DType::kQ4_0, {2, 32}},        {"q4_k", DType::kQ4_K, {2, 256}},
      {"q6_k", DType::kQ6_K, {1, 2, 3, 256}},
  };
  std::vector<std::vector<std::uint8_t>> data;
  GgufWriter writer(64);
  writer.Set("general.architecture", GgufValue::String("test"));
  for (std::size_t c = 0; c < cases.size(); ++c) {
    TensorView view{cases[c].dtype, cases[c].shape, nullptr};
    data.emplace_back(view.num_bytes());
    for (std::size_t i = 0; i < data.back().size(); ++i) {
      data.back()[i] = static_cast<std::uint8_t>(i * 7 + c);
    }
    view.data = data.back().data();
    writer.AddTensor(cases[c].name, view);
  }
  const std::string path = dir_.File("tensors.gguf");
  ASSERT_TRUE(writer.Write(path).ok());

  auto file = GgufFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.error().message();
  // As ggml and gguf-py write it: every tensor, the last one included, padded to the alignment.
  const GgufTensorInfo& last = file->tensors().back();
  const std::uint64_t padded_end = (last.offset + last.size + 63) / 64 * 64;
  EXPECT_EQ(std::filesystem::file_size(path), file->data_offset() + padded_end);
  EXPECT_EQ(file->alignment(), 64u);
  EXPECT_EQ(file->Find("general.alignment")->AsInt(), 64);
  ASSERT_EQ(file->tensors().size(), cases.size());
  for (std::size_t c = 0; c < cases.size(); ++c) {
    const GgufTensorInfo* t = file->FindTensor(cases[c].name);
    ASSERT_NE(t, nullptr) << cases[c].name;
    EXPECT_EQ(t->view.dtype, cases[c].dtype);
    EXPECT_EQ(t->shape, cases[c].shape);
    EXPECT_EQ(t->ggml_type, GgmlTypeOf(cases[c].dtype));
    EXPECT_EQ(t->offset % 64, 0u);
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(t->view.data) % 64, 0u);
    ASSERT_EQ(t->size, data[c].size());
    EXPECT_EQ(std::memcmp(t->view.data, data[c].data(), data[c].size()), 0) << cases[c].name;
  }
}

TEST_F(GgufTest, GgmlTypeIdsFollowTheSpec) {
  EXPECT_EQ(GgmlTypeOf(DType::kF32), 0u);
  EXPECT_EQ(GgmlTypeOf(DType::kF16), 1u);
  EXPECT_EQ(GgmlTypeOf(DType::kQ4_0), 2u);
  EXPECT_EQ(GgmlTypeOf(DType::kQ8_0), 8u);
  EXPECT_EQ(GgmlTypeOf(DType::kQ4_K), 12u);
  EXPECT_EQ(GgmlTypeOf(DType::kQ6_K), 14u);
  EXPECT_EQ(GgmlTypeOf(DType::kBF16), 30u);
  EXPECT_EQ(DTypeOfGgmlType(13), std::nullopt);
  EXPECT_EQ(GgmlTypeName(13), "Q5_K");
  EXPECT_EQ(GgmlTypeName(4), "unknown");
  EXPECT_EQ(GgmlTypeName(1000), "unknown");
}

TEST_F(GgufTest, RejectsTruncatedHeader) {
  const std::string bytes = RawGguf().Bytes();
  EXPECT_TRUE(FailsWith(GgufFile::Open(Write(bytes.substr(0, 10))),
                        {"x.gguf", "10 bytes", "too short", "GGUF header"}));
  EXPECT_TRUE(FailsWith(GgufFile::Open(Write("")), {"x.gguf", "0 bytes"}));
  // Cut inside the metadata and inside the tensor infos.
  EXPECT_TRUE(FailsWith(GgufFile::Open(Write(bytes.substr(0, 60))),
                        {"x.gguf", "truncated", "'general.architecture'", "at offset 56"}));
  EXPECT_TRUE(FailsWith(GgufFile::Open(Write(bytes.substr(0, 40))),
                        {"x.gguf", "tensor count 1 cannot fit in the 16 bytes"}));
  EXPECT_TRUE(FailsWith(GgufFile::Open(Write(bytes.substr(0, 70))), {"x.gguf", "truncated"}));
}

TEST_F(GgufTest, RejectsBadMagic) {
  RawGguf raw;
  raw.magic = "GGML";
  EXPECT_TRUE(FailsWith(OpenRaw(raw), {"x.gguf", "not a GGUF file", "47 47 4d 4c"}));
}

TEST_F(GgufTest, RejectsUnsupportedVersions) {
  RawGguf raw;
  raw.version = 1;
  EXPECT_TRUE(FailsWith(OpenRaw(raw), {"x.gguf", "version 1 is not supported"}));
  raw.version = 4;
  EXPECT_TRUE(FailsWith(OpenRaw(raw), {"x.gguf", "unknown GGUF version 4"}));
  raw.version = 0x03000000;
  EXPECT_TRUE(FailsWith(OpenRaw(raw), {"x.gguf", "big-endian"}));
}

TEST_F(GgufTest, RejectsCountsTheFileCannotHold) {
  RawGguf raw;
  raw.kv_count = 1ull << 60;
  EXPECT_TRUE(FailsWith(OpenRaw(raw), {"x.gguf", "metadata count 1152921504606846976"}));
  raw.kv_count.reset();
  raw.tensor_count = 1ull << 40;
  EXPECT_TRUE(FailsWith(OpenRaw(raw), {"x.gguf", "tensor count 1099511627776"}));
  raw.tensor_count = 2;  // fits the file size check, but the second tensor info is garbage
  EXPECT_FALSE(OpenRaw(raw).ok());
}

TEST_F(GgufTest, RejectsBadStringLengths) {
  RawGguf raw;
  std::string value;
  PutU64(&value, 1ull << 50);  // a string far longer than the file
  raw.AddRaw("general.name", 8, value);
  EXPECT_TRUE(FailsWith(OpenRaw(raw),
                        {"x.gguf", "'general.name'", "string length 1125899906842624", "exceeds"}));
  RawGguf bad_key;
  bad_key.kvs.clear();
  bad_key.n_kvs = 1;
  PutU64(&bad_key.kvs, 1000);  // key length
  EXPECT_TRUE(FailsWith(OpenRaw(bad_key), {"x.gguf", "metadata key 0", "string length 1000"}));
  RawGguf bad_name;
  bad_name.tensors[0].name = std::string(65, 'n');
  EXPECT_TRUE(FailsWith(OpenRaw(bad_name), {"x.gguf", "65 bytes long"}));
}

TEST_F(GgufTest, RejectsBadValues) {
  {
    RawGguf raw;
    raw.AddRaw("a.b", 13, "");
    EXPECT_TRUE(FailsWith(OpenRaw(raw), {"x.gguf", "'a.b'", "unknown value type 13"}));
  }
  {
    RawGguf raw;
    raw.AddRaw("a.flag", 7, std::string(1, '\x02'));
    EXPECT_TRUE(FailsWith(OpenRaw(raw), {"x.gguf", "'a.flag'", "bool byte 2"}));
  }
  {
    RawGguf raw;
    std::string array;
    PutU32(&array, 99);
    PutU64(&array, 0);
    raw.AddRaw("a.arr", 9, array);
    EXPECT_TRUE(FailsWith(OpenRaw(raw), {"x.gguf", "'a.arr'", "unknown array element type 99"}));
  }
  {
    RawGguf raw;
    std::string array;
    PutU32(&array, 4);
    PutU64(&array, 1ull << 40);
    raw.AddRaw("a.arr", 9, array);
    EXPECT_TRUE(
        FailsWith(OpenRaw(raw), {"x.gguf", "'a.arr'", "array of 1099511627776 u32", "cannot fit"}));
  }
  {
    RawGguf raw;  // arrays nested 9 deep
    std::string array;
    for (int i = 0; i < 9; ++i) {
      PutU32(&array, 9);
      PutU64(&array, 1);
    }
    PutU32(&array, 0);
    PutU64(&array, 0);
    raw.AddRaw("a.deep", 9, array);
    EXPECT_TRUE(FailsWith(OpenRaw(raw), {"x.gguf", "'a.deep'", "nested deeper than 8"}));
  }
  {
    RawGguf raw;
    raw.AddString("general.architecture", "again");
    EXPECT_TRUE(FailsWith(OpenRaw(raw), {"x.gguf", "'general.architecture' appears twice"}));
  }
  {
    RawGguf raw;
    raw.AddString("bad key", "x");
    EXPECT_TRUE(FailsWith(OpenRaw(raw), {"x.gguf", "'bad key'", "not printable ASCII"}));
  }
}

TEST_F(GgufTest, RejectsBadAlignment) {
  RawGguf raw;
  std::string v;
  PutU32(&v, 24);
  raw.AddRaw("general.alignment", 4, v);
  EXPECT_TRUE(FailsWith(OpenRaw(raw), {"x.gguf", "general.alignment 24", "power of two"}));
  RawGguf raw64;
  std::string v64;
  PutU64(&v64, 32);
  raw64.AddRaw("general.alignment", 10, v64);
  EXPECT_TRUE(FailsWith(OpenRaw(raw64), {"x.gguf", "general.alignment must be a u32", "u64"}));
}

TEST_F(GgufTest, RejectsTensorPastTheEnd) {
  RawGguf raw;
  raw.data_bytes = 12;  // a [4] F32 tensor needs 16
  EXPECT_TRUE(FailsWith(OpenRaw(raw), {"x.gguf", "tensor 't'", "[0, 16)", "past the end"}));
  RawGguf far;
  far.tensors[0].offset = 1ull << 62;
  EXPECT_TRUE(FailsWith(OpenRaw(far), {"x.gguf", "tensor 't'", "past the end"}));
}

TEST_F(GgufTest, RejectsUnknownAndUnsupportedTypes) {
  RawGguf raw;
  raw.tensors[0].type = 13;
  EXPECT_TRUE(
      FailsWith(OpenRaw(raw), {"x.gguf", "tensor 't'", "ggml type 13 (Q5_K)", "not supported"}));
  raw.tensors[0].type = 77;
  EXPECT_TRUE(FailsWith(OpenRaw(raw), {"x.gguf", "tensor 't'", "ggml type 77 (unknown)"}));
}

TEST_F(GgufTest, RejectsMisalignedOffset) {
  RawGguf raw;
  raw.tensors[0].offset = 4;
  raw.data_bytes = 64;
  EXPECT_TRUE(FailsWith(OpenRaw(raw), {"x.gguf", "tensor 't'", "offset 4", "alignment 32"}));
}

TEST_F(GgufTest, RejectsBadShapes) {
  RawGguf raw;
  raw.tensors[0].dims = {};
  EXPECT_TRUE(FailsWith(OpenRaw(raw), {"x.gguf", "tensor 't'", "rank 0"}));
  raw.tensors[0].dims = {1, 1, 1, 1, 1};
  EXPECT_TRUE(FailsWith(OpenRaw(raw), {"x.gguf", "tensor 't'", "rank 5"}));
  raw.tensors[0].dims = {4, 0};
  EXPECT_TRUE(FailsWith(OpenRaw(raw), {"x.gguf", "tensor 't'", "dimension 1 is 0"}));
  raw.tensors[0].dims = {1ull << 40, 1ull << 40};
  EXPECT_TRUE(FailsWith(OpenRaw(raw), {"x.gguf", "tensor 't'", "overflow"}));
  raw.tensors[0].dims = {48, 2};
  raw.tensors[0].type = 8;  // Q8_0: blocks of 32
  EXPECT_TRUE(FailsWith(OpenRaw(raw),
                        {"x.gguf", "tensor 't'", "innermost dimension 48", "Q8_0 block of 32"}));
}

TEST_F(GgufTest, RejectsOverlapsAndDuplicates) {
  RawGguf raw;
  raw.tensors.push_back({"u", {8}, 0, 0});
  raw.data_bytes = 64;
  EXPECT_TRUE(FailsWith(OpenRaw(raw), {"x.gguf", "'t'", "'u'", "overlap"}));
  raw.tensors[1] = {"t", {4}, 0, 32};
  EXPECT_TRUE(FailsWith(OpenRaw(raw), {"x.gguf", "tensor 't' appears twice"}));
  raw.tensors[1] = {"u", {4}, 0, 32};
  EXPECT_TRUE(OpenRaw(raw).ok());
}

TEST_F(GgufTest, ErrorsStayOnOneLine) {
  RawGguf raw;
  raw.tensors[0].name = "bad\nname";
  raw.tensors[0].type = 13;
  EXPECT_TRUE(FailsWith(OpenRaw(raw), {"bad\\x0aname"}));
  EXPECT_TRUE(
      FailsWith(GgufFile::Open(dir_.File("missing.gguf")), {"missing.gguf", "cannot open"}));
}

TEST_F(GgufTest, WriterRejectsBadInput) {
  const float data[4] = {1, 2, 3, 4};
  {
    GgufWriter w;
    w.AddTensor("t", TensorView{DType::kF32, {4}, data});
    w.AddTensor("t", TensorView{DType::kF32, {4}, data});
    EXPECT_TRUE(FailsWith(w.Write(dir_.File("w.gguf")), {"w.gguf", "'t' added twice"}));
  }
  {
    GgufWriter w;
    w.AddTensor("t", TensorView{DType::kQ8_0, {1, 4}, data});
    EXPECT_TRUE(FailsWith(w.Write(dir_.File("w.gguf")), {"w.gguf", "innermost dimension 4"}));
  }
  {
    GgufWriter w;
    w.AddTensor("t", TensorView{DType::kF32, {}, data});
    EXPECT_TRUE(FailsWith(w.Write(dir_.File("w.gguf")), {"w.gguf", "rank 0"}));
  }
  {
    GgufWriter w;
    w.Set("a.arr", GgufValue::Array(GgufType::kUint32, {GgufValue::I32(1)}));
    EXPECT_TRUE(FailsWith(w.Write(dir_.File("w.gguf")), {"w.gguf", "'a.arr'", "holds a i32"}));
  }
  {
    GgufWriter w;
    w.Set("", GgufValue::U8(1));
    EXPECT_TRUE(FailsWith(w.Write(dir_.File("w.gguf")), {"w.gguf", "is empty"}));
  }
  {
    GgufWriter w;
    w.AddTensor("t", TensorView{DType::kF32, {4}, nullptr});
    EXPECT_TRUE(FailsWith(w.Write(dir_.File("w.gguf")), {"w.gguf", "no data"}));
  }
  {
    GgufWriter w;
    EXPECT_TRUE(FailsWith(w.Write(dir_.File("no/such/dir/w.gguf")), {"w.gguf", "cannot create"}));
  }
}

}  // namespace
}  // namespace fgnet
