// RDRR model packages: every parity fixture survives a round trip bit for bit (logits, content
// hash, tensors, side files) with one shard, several shards and tensors split over shards; a
// quantized checkpoint keeps its bytes and quantization; the writer's replacement rules; and
// every kind of corrupt package is refused with a one-line error naming the file and JSON path.
#include "model/rdrr.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "fails_with.h"
#include "model/checkpoint.h"
#include "model/gemma3_model.h"
#include "model/kv_cache.h"
#include "rdrr_testing.h"
#include "tiny_checkpoint.h"
#include "util/json.h"
#include "util/rng.h"
#include "util/sha256.h"
#include "util/thread_pool.h"

namespace fgnet {
namespace {

using testing::EditManifest;
using testing::FailsWith;
using testing::ParityFixture;
using testing::ReadFile;
using testing::ReadManifestJson;
using testing::TempDir;
using testing::WriteFile;

constexpr const char* kFixtures[] = {"mqa_bf16_v4", "gqa_f32_v5", "nested_mm", "untied_f16"};

Checkpoint OpenOrDie(const std::string& dir) {
  Result<Checkpoint> ck = Checkpoint::Open(dir);
  FGNET_CHECK(ck.ok());
  return std::move(ck).value();
}

std::vector<std::int32_t> PromptOf(const std::string& fixture) {
  const Json json = ReadJsonFile(fixture + "/prompt.json").value();
  return json.at("input_ids").get<std::vector<std::int32_t>>();
}

// Logits at every position of `tokens`.
std::vector<float> Logits(const Checkpoint& ck, const std::vector<std::int32_t>& tokens) {
  Result<Gemma3Model> model = Gemma3Model::Create(ck.config(), ck.weights());
  EXPECT_TRUE(model.ok()) << model.error().message();
  if (!model.ok()) return {};
  ThreadPool pool(2);
  KVCache kv = model->NewKVCache(static_cast<std::int64_t>(tokens.size()));
  std::vector<float> logits;
  const Status status = model->Forward(tokens, kv, pool, LogitsMode::kAll, &logits);
  EXPECT_TRUE(status.ok()) << status.error().message();
  return logits;
}

bool SameBits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

std::uint64_t FileSize(const std::string& path) {
  struct stat st {};
  FGNET_CHECK(::stat(path.c_str(), &st) == 0);
  return static_cast<std::uint64_t>(st.st_size);
}

// Every tensor (and every piece of a split one) is 4096-aligned and every shard within `limit`.
void ExpectLayout(const std::string& package, std::uint64_t limit) {
  const Json m = ReadManifestJson(package);
  for (const Json& shard : m.at("shards")) {
    const std::string file = package + "/" + shard.at("fileName").get<std::string>();
    EXPECT_LE(FileSize(file), limit) << file;
    EXPECT_EQ(FileSize(file), shard.at("size").get<std::uint64_t>()) << file;
  }
  for (const auto& [name, t] : m.at("tensors").items()) {
    EXPECT_EQ(t.at("offset").get<std::uint64_t>() % 4096, 0u) << name;
    if (t.contains("spans")) {
      for (const Json& s : t.at("spans")) EXPECT_EQ(s.at("offset").get<std::uint64_t>() % 4096, 0u);
    }
  }
}

std::size_t NumSplitTensors(const std::string& package) {
  std::size_t n = 0;
  const Json m = ReadManifestJson(package);
  for (const auto& [name, t] : m.at("tensors").items()) {
    n += t.contains("spans") ? 1 : 0;
  }
  return n;
}

void ExpectSameTensors(const Checkpoint& a, const Checkpoint& b) {
  ASSERT_EQ(a.tensors().size(), b.tensors().size());
  for (const auto& [name, entry] : a.tensors().all()) {
    SCOPED_TRACE(name);
    const TensorView* other = b.tensors().Find(name);
    ASSERT_NE(other, nullptr);
    EXPECT_EQ(other->dtype, entry.view.dtype);
    EXPECT_EQ(other->shape, entry.view.shape);
    ASSERT_EQ(other->num_bytes(), entry.view.num_bytes());
    EXPECT_EQ(std::memcmp(other->data, entry.view.data, entry.view.num_bytes()), 0);
  }
}

class RdrrRoundTrip : public ::testing::TestWithParam<const char*> {};

TEST_P(RdrrRoundTrip, LogitsAndHashesAreIdentical) {
  const std::string fixture = ParityFixture(GetParam());
  const Checkpoint source = OpenOrDie(fixture);
  const std::vector<std::int32_t> prompt = PromptOf(fixture);
  const std::vector<float> want = Logits(source, prompt);
  ASSERT_FALSE(want.empty());
  TempDir tmp;
  // One shard; several shards; tensors split over shards.
  for (const std::uint64_t limit :
       {std::uint64_t{64} << 20, std::uint64_t{64} << 10, std::uint64_t{8} << 10}) {
    SCOPED_TRACE("max_shard_bytes " + std::to_string(limit));
    const std::string package = tmp.File("pkg_" + std::to_string(limit));
    RdrrWriteOptions options;
    options.max_shard_bytes = limit;
    const Status written = WriteRdrrModel(source, package, options);
    ASSERT_TRUE(written.ok()) << written.error().message();
    EXPECT_TRUE(IsRdrrPackage(package));
    ExpectLayout(package, limit);

    Result<Checkpoint> opened = OpenRdrrCheckpoint(package);
    ASSERT_TRUE(opened.ok()) << opened.error().message();
    const Checkpoint& ck = *opened;
    EXPECT_EQ(ck.format(), CheckpointFormat::kRdrr);
    EXPECT_EQ(ck.dir(), package);
    EXPECT_EQ(ck.content_hash(), source.content_hash());
    EXPECT_EQ(ck.quantization(), "none");
    EXPECT_EQ(ck.tensor_prefix(), source.tensor_prefix());
    EXPECT_EQ(Gemma3ConfigToJson(ck.config()), Gemma3ConfigToJson(source.config()));
    EXPECT_EQ(ck.unused_tensors(), source.unused_tensors());
    ExpectSameTensors(source, ck);
    ASSERT_FALSE(ck.generation_config_path().empty());
    EXPECT_EQ(ReadFile(ck.generation_config_path()), ReadFile(source.generation_config_path()));
    EXPECT_TRUE(SameBits(Logits(ck, prompt), want)) << "logits differ from the source's";

    const Json m = ReadManifestJson(package);
    EXPECT_EQ(m.at("modelId"), "pkg_" + std::to_string(limit));
    EXPECT_EQ(m.at("contentHash"), source.content_hash());
    if (limit < (std::uint64_t{1} << 20)) {
      EXPECT_GT(m.at("shards").size(), 1u);
    }
    if (limit == (std::uint64_t{8} << 10)) {
      EXPECT_GT(NumSplitTensors(package), 0u);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, RdrrRoundTrip, ::testing::ValuesIn(kFixtures),
                         [](const ::testing::TestParamInfo<const char*>& param_info) {
                           return std::string(param_info.param);
                         });

TEST(RdrrModel, RecordsTheManifestFields) {
  const Checkpoint source = OpenOrDie(ParityFixture("untied_f16"));
  TempDir tmp;
  RdrrWriteOptions options;
  options.model_id = "tiny-untied";
  ASSERT_TRUE(WriteRdrrModel(source, tmp.File("p"), options).ok());
  const Json m = ReadManifestJson(tmp.File("p"));
  EXPECT_EQ(m.at("version"), "1.0");
  EXPECT_EQ(m.at("modelId"), "tiny-untied");
  EXPECT_EQ(m.at("modelType"), "base");
  EXPECT_EQ(m.at("architecture"), "gemma3");
  EXPECT_EQ(m.at("quantization"), "none");
  EXPECT_EQ(m.at("hashAlgorithm"), "sha256");
  EXPECT_EQ(m.at("eosTokenIds").get<std::vector<std::int64_t>>(), source.config().eos_token_ids);
  EXPECT_EQ(m.at("config"), Gemma3ConfigToJson(source.config()));
  EXPECT_FALSE(m.contains("normsIncludeOne"));
  const Json& t = m.at("tensors").at("model.embed_tokens.weight");
  EXPECT_EQ(t.at("dtype"), "F16");
  EXPECT_EQ(t.at("role"), "embedding");
  EXPECT_EQ(m.at("tensors").at("lm_head.weight").at("role"), "lm_head");
  EXPECT_EQ(m.at("tensors").at("model.norm.weight").at("role"), "norm");
  EXPECT_EQ(m.at("tensors").at("model.layers.0.self_attn.k_norm.weight").at("role"), "norm");
  EXPECT_EQ(m.at("tensors").at("model.layers.0.self_attn.k_proj.weight").at("role"), "attention");
  EXPECT_EQ(m.at("tensors").at("model.layers.0.mlp.down_proj.weight").at("role"), "mlp");
  ASSERT_EQ(m.at("files").size(), 1u);
  const Json& file = m.at("files")[0];
  EXPECT_EQ(file.at("fileName"), "generation_config.json");
  const std::string text = ReadFile(source.generation_config_path());
  EXPECT_EQ(file.at("size"), text.size());
  EXPECT_EQ(file.at("hash"), Sha256Hex(text));
  for (const Json& shard : m.at("shards")) {
    const std::string path = tmp.File("p/" + shard.at("fileName").get<std::string>());
    EXPECT_EQ(shard.at("hash"), Sha256File(path).value());
  }
}

TEST(RdrrModel, WritingTwiceGivesTheSameBytes) {
  const Checkpoint source = OpenOrDie(ParityFixture("mqa_bf16_v4"));
  TempDir tmp;
  RdrrWriteOptions options;
  options.model_id = "same";
  options.max_shard_bytes = 64 << 10;
  ASSERT_TRUE(WriteRdrrModel(source, tmp.File("a"), options).ok());
  ASSERT_TRUE(WriteRdrrModel(source, tmp.File("b"), options).ok());
  const Json m = ReadManifestJson(tmp.File("a"));
  EXPECT_EQ(ReadFile(tmp.File("a/manifest.json")), ReadFile(tmp.File("b/manifest.json")));
  for (const Json& shard : m.at("shards")) {
    const std::string name = shard.at("fileName").get<std::string>();
    EXPECT_EQ(ReadFile(tmp.File("a/" + name)), ReadFile(tmp.File("b/" + name))) << name;
  }
}

// An in-memory checkpoint whose matrices are Q8_0 (random bytes) and whose norms are F32.
Checkpoint QuantizedCheckpoint(const std::string& quantization) {
  Gemma3Config c = testing::TinyConfig();
  c.vocab_size = 64;
  c.hidden_size = 64;
  c.intermediate_size = 96;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 1;
  c.head_dim = 32;
  auto buffers = std::make_shared<std::vector<std::vector<std::uint8_t>>>();
  Philox rng(11);
  TensorIndex index("in-memory");
  for (const auto& [name, shape] : testing::TinyTensorShapes(c)) {
    const DType dtype = shape.size() == 2 ? DType::kQ8_0 : DType::kF32;
    TensorView view{dtype, shape, nullptr};
    std::vector<std::uint8_t> bytes(view.num_bytes());
    for (auto& b : bytes) b = static_cast<std::uint8_t>(rng.NextU32());
    buffers->push_back(std::move(bytes));
    view.data = buffers->back().data();
    index.Add("model." + name, view, "in-memory");
  }
  Checkpoint::Parts parts;
  parts.format = CheckpointFormat::kInMemory;
  parts.path = "in-memory";
  parts.config_path = "in-memory";
  parts.config = c;
  parts.tensors = std::move(index);
  parts.storage = buffers;
  parts.content_hash = Sha256Hex("the model it was quantized from");
  parts.quantization = quantization;
  Result<Checkpoint> ck = Checkpoint::FromTensors(std::move(parts));
  FGNET_CHECK(ck.ok());
  return std::move(ck).value();
}

TEST(RdrrModel, QuantizedTensorsKeepTheirBytes) {
  for (const char* quantization : {"q8_0", "none"}) {
    SCOPED_TRACE(quantization);
    const Checkpoint source = QuantizedCheckpoint(quantization);
    TempDir tmp;
    RdrrWriteOptions options;
    options.max_shard_bytes = 8 << 10;
    const Status written = WriteRdrrModel(source, tmp.File("q"), options);
    ASSERT_TRUE(written.ok()) << written.error().message();
    ExpectLayout(tmp.File("q"), 8 << 10);
    Result<Checkpoint> ck = OpenRdrrCheckpoint(tmp.File("q"));
    ASSERT_TRUE(ck.ok()) << ck.error().message();
    // A quantized checkpoint marked "none" is recorded with its quantized dtype.
    EXPECT_EQ(ck->quantization(), "q8_0");
    EXPECT_EQ(ck->content_hash(), source.content_hash());
    EXPECT_EQ(ck->weights().layers[0].q_proj.dtype, DType::kQ8_0);
    ExpectSameTensors(source, *ck);
  }
}

TEST(RdrrModel, ReplacesAPackageButNothingElse) {
  const Checkpoint a = OpenOrDie(ParityFixture("untied_f16"));
  const Checkpoint b = OpenOrDie(ParityFixture("mqa_bf16_v4"));
  TempDir tmp;
  const std::string package = tmp.File("pkg");
  ASSERT_TRUE(WriteRdrrModel(a, package, {}).ok());
  RdrrWriteOptions small;
  small.max_shard_bytes = 64 << 10;
  ASSERT_TRUE(WriteRdrrModel(b, package, small).ok());  // a package is replaced
  Result<Checkpoint> ck = OpenRdrrCheckpoint(package);
  ASSERT_TRUE(ck.ok()) << ck.error().message();
  EXPECT_EQ(ck->content_hash(), b.content_hash());

  // An empty directory is filled.
  ASSERT_TRUE(std::filesystem::create_directory(tmp.File("empty")));
  EXPECT_TRUE(WriteRdrrModel(a, tmp.File("empty"), {}).ok());

  // A directory with other files, a package holding a foreign file, and a file are refused.
  ASSERT_TRUE(std::filesystem::create_directory(tmp.File("other")));
  WriteFile(tmp.File("other/notes.txt"), "keep me");
  EXPECT_TRUE(FailsWith(WriteRdrrModel(a, tmp.File("other"), {}),
                        {"other", "not an RDRR package", "refusing"}));
  EXPECT_EQ(ReadFile(tmp.File("other/notes.txt")), "keep me");
  WriteFile(package + "/notes.txt", "mine");
  EXPECT_TRUE(FailsWith(WriteRdrrModel(a, package, {}), {"'notes.txt'", "refusing"}));
  EXPECT_EQ(ReadFile(package + "/notes.txt"), "mine");
  WriteFile(tmp.File("file"), "x");
  EXPECT_TRUE(FailsWith(WriteRdrrModel(a, tmp.File("file"), {}), {"not a directory"}));

  // Bad shard limits.
  for (const std::uint64_t limit : {std::uint64_t{0}, std::uint64_t{1000}, std::uint64_t{5000}}) {
    RdrrWriteOptions bad;
    bad.max_shard_bytes = limit;
    EXPECT_TRUE(FailsWith(WriteRdrrModel(a, tmp.File("bad"), bad), {"max_shard_bytes"}));
  }
  // No temporary directories are left behind.
  for (const auto& entry : std::filesystem::directory_iterator(tmp.path())) {
    EXPECT_NE(entry.path().filename().string().front(), '.') << entry.path();
  }
}

TEST(RdrrModel, AFailedWriteLeavesNoPackage) {
  // A checkpoint one of whose tensors has no data fails half-way through the shards.
  const Checkpoint good = OpenOrDie(ParityFixture("untied_f16"));
  Checkpoint::Parts parts;
  parts.format = CheckpointFormat::kInMemory;
  parts.path = "broken";
  parts.config_path = "broken";
  parts.config = good.config();
  parts.tensors = TensorIndex("broken");
  for (const auto& [name, e] : good.tensors().all()) {
    TensorView v = e.view;
    if (name == "model.norm.weight") v.data = nullptr;
    parts.tensors.Add(name, v, e.file);
  }
  parts.storage = good.storage();
  parts.content_hash = good.content_hash();
  Result<Checkpoint> broken = Checkpoint::FromTensors(std::move(parts));
  ASSERT_TRUE(broken.ok()) << broken.error().message();

  TempDir tmp;
  EXPECT_TRUE(
      FailsWith(WriteRdrrModel(*broken, tmp.File("new"), {}), {"'model.norm.weight'", "no data"}));
  EXPECT_FALSE(std::filesystem::exists(tmp.File("new")));
  // Over an existing package: the old one stays intact.
  ASSERT_TRUE(WriteRdrrModel(good, tmp.File("old"), {}).ok());
  EXPECT_FALSE(WriteRdrrModel(*broken, tmp.File("old"), {}).ok());
  Result<Checkpoint> old = OpenRdrrCheckpoint(tmp.File("old"));
  ASSERT_TRUE(old.ok()) << old.error().message();
  EXPECT_EQ(old->content_hash(), good.content_hash());
  std::size_t entries = 0;
  for (const auto& entry : std::filesystem::directory_iterator(tmp.path())) {
    (void)entry;
    ++entries;
  }
  EXPECT_EQ(entries, 1u);  // only "old"
}

TEST(RdrrModel, IsRdrrPackage) {
  const Checkpoint source = OpenOrDie(ParityFixture("untied_f16"));
  TempDir tmp;
  ASSERT_TRUE(WriteRdrrModel(source, tmp.File("p"), {}).ok());
  EXPECT_TRUE(IsRdrrPackage(tmp.File("p")));
  EXPECT_TRUE(IsRdrrPackage(tmp.File("p/")));
  EXPECT_FALSE(IsRdrrPackage(ParityFixture("untied_f16")));
  EXPECT_FALSE(IsRdrrPackage(tmp.File("p/manifest.json")));
  EXPECT_FALSE(IsRdrrPackage(tmp.File("absent")));
}

// Corrupt packages, each made from a freshly written one (three shards of 64 KiB at most).
class RdrrCorrupt : public ::testing::Test {
 protected:
  void SetUp() override {
    const Checkpoint source = OpenOrDie(ParityFixture("mqa_bf16_v4"));
    RdrrWriteOptions options;
    options.max_shard_bytes = 64 << 10;
    ASSERT_TRUE(WriteRdrrModel(source, package_, options).ok());
    ASSERT_GE(ReadManifestJson(package_).at("shards").size(), 3u);
  }
  Result<Checkpoint> Open() const { return OpenRdrrCheckpoint(package_); }
  std::string Shard(int i) const { return package_ + "/shard_0000" + std::to_string(i) + ".bin"; }
  void EditTensor(const std::string& key, const Json& value,
                  const std::string& tensor = "model.norm.weight") {
    EditManifest(package_, [&](Json& m) { m["tensors"][tensor][key] = value; });
  }

  TempDir tmp_;
  const std::string package_ = tmp_.File("pkg");
};

TEST_F(RdrrCorrupt, TheUntouchedPackageOpens) { EXPECT_TRUE(Open().ok()); }

TEST_F(RdrrCorrupt, FlippedByteInAShard) {
  std::string bytes = ReadFile(Shard(1));
  bytes[bytes.size() / 2] = static_cast<char>(bytes[bytes.size() / 2] ^ 0x10);
  WriteFile(Shard(1), bytes);
  EXPECT_TRUE(FailsWith(Open(), {"shard_00001.bin: SHA-256",
                                 "does not match manifest.json "
                                 "shards[1].hash",
                                 "corrupt"}));
}

TEST_F(RdrrCorrupt, MissingShard) {
  ASSERT_EQ(std::remove(Shard(2).c_str()), 0);
  EXPECT_TRUE(FailsWith(Open(), {"shard_00002.bin: missing", "shards[2].fileName"}));
}

TEST_F(RdrrCorrupt, TruncatedShard) {
  const std::string bytes = ReadFile(Shard(0));
  WriteFile(Shard(0), bytes.substr(0, bytes.size() - 100));
  EXPECT_TRUE(FailsWith(
      Open(), {"shard_00000.bin: ",
               "bytes, but manifest.json shards[0].size is " + std::to_string(bytes.size())}));
}

TEST_F(RdrrCorrupt, TensorPastTheEndOfItsShard) {
  const Json m = ReadManifestJson(package_);
  const Json& t = m.at("tensors").at("model.norm.weight");
  const std::uint64_t shard_size = m.at("shards")[t.at("shard").get<std::size_t>()].at("size");
  EditTensor("offset", (shard_size + 4095) / 4096 * 4096);
  EXPECT_TRUE(
      FailsWith(Open(), {"manifest.json: tensors.\"model.norm.weight\": bytes [", "exceed shard"}));
}

TEST_F(RdrrCorrupt, MisalignedOffset) {
  EditTensor("offset", 4097);
  EXPECT_TRUE(FailsWith(
      Open(), {"manifest.json: tensors.\"model.norm.weight\".offset: 4097 is not 4096-aligned"}));
}

TEST_F(RdrrCorrupt, OverlappingTensors) {
  const Json m = ReadManifestJson(package_);
  const Json& norm = m.at("tensors").at("model.norm.weight");
  // Another tensor of the same shard moved onto the final norm.
  std::string other;
  for (const auto& [name, t] : m.at("tensors").items()) {
    if (name != "model.norm.weight" && t.at("shard") == norm.at("shard") && !t.contains("spans") &&
        t.at("size").get<std::uint64_t>() <= norm.at("size").get<std::uint64_t>()) {
      other = name;
      break;
    }
  }
  ASSERT_FALSE(other.empty());
  EditTensor("offset", norm.at("offset"), other);
  EXPECT_TRUE(FailsWith(Open(), {"manifest.json: tensors.", "overlap tensor"}));
}

TEST_F(RdrrCorrupt, WrongDTypeShapeOrSize) {
  EditTensor("dtype", "F32");  // the tensor is BF16
  EXPECT_TRUE(FailsWith(Open(), {"tensors.\"model.norm.weight\".size: 96 does not match shape "
                                 "[48] of F32 (192 bytes)"}));
  EditTensor("dtype", "F64");
  EXPECT_TRUE(FailsWith(Open(), {"tensors.\"model.norm.weight\".dtype: unknown dtype \"F64\""}));
  EditTensor("dtype", "Q8_0");
  EXPECT_TRUE(FailsWith(Open(), {"tensors.\"model.norm.weight\": the last dimension of shape "
                                 "[48] is not a multiple of the Q8_0 block of 32"}));
  EditTensor("dtype", "BF16");
  EditTensor("shape", Json::array({47}));
  EXPECT_TRUE(FailsWith(Open(), {"tensors.\"model.norm.weight\".size: 96 does not match shape"}));
  EditTensor("shape", Json::array({48}));
  EditTensor("size", 98);
  EXPECT_TRUE(FailsWith(Open(), {"tensors.\"model.norm.weight\".size: 98 does not match"}));
  EditTensor("size", -96);
  EXPECT_TRUE(FailsWith(Open(), {"tensors.\"model.norm.weight\".size: expected a non-negative "
                                 "integer, got -96"}));
  EditTensor("size", 96);
  ASSERT_TRUE(Open().ok());
  // Consistent in itself but not with the config: a transposed matrix.
  const std::string q = "model.layers.1.self_attn.q_proj.weight";
  EditTensor("shape", Json::array({48, 128}), q);
  EXPECT_TRUE(FailsWith(Open(), {"manifest.json: ", "disagree", "'" + q + "'"}));
}

TEST_F(RdrrCorrupt, MalformedJson) {
  WriteFile(package_ + "/manifest.json", "{\"version\": \"1.0\",\n \"modelId\": ");
  EXPECT_TRUE(FailsWith(Open(), {"manifest.json: invalid JSON"}));
  WriteFile(package_ + "/manifest.json", "[1, 2]");
  EXPECT_TRUE(FailsWith(Open(), {"manifest.json: expected a JSON object"}));
}

TEST_F(RdrrCorrupt, MissingManifest) {
  ASSERT_EQ(std::remove((package_ + "/manifest.json").c_str()), 0);
  EXPECT_TRUE(FailsWith(Open(), {"manifest.json: missing"}));
  EXPECT_FALSE(IsRdrrPackage(package_));
}

TEST_F(RdrrCorrupt, MissingFields) {
  const Json original = ReadManifestJson(package_);
  for (const char* key :
       {"version", "modelId", "modelType", "architecture", "quantization", "hashAlgorithm",
        "shards", "tensors", "contentHash", "config", "eosTokenIds"}) {
    Json m = original;
    m.erase(key);
    testing::WriteManifestJson(package_, m);
    EXPECT_TRUE(FailsWith(Open(), {"manifest.json: " + std::string(key) + ": missing"}));
  }
  for (const char* key : {"shard", "offset", "size", "shape", "dtype", "role"}) {
    Json m = original;
    m["tensors"]["model.norm.weight"].erase(key);
    testing::WriteManifestJson(package_, m);
    EXPECT_TRUE(FailsWith(Open(), {"manifest.json: tensors.\"model.norm.weight\"." +
                                   std::string(key) + ": missing"}));
  }
  for (const char* key : {"index", "fileName", "size", "hash"}) {
    Json m = original;
    m["shards"][1].erase(key);
    testing::WriteManifestJson(package_, m);
    EXPECT_TRUE(FailsWith(Open(), {"manifest.json: shards[1]." + std::string(key) + ": missing"}));
  }
}

TEST_F(RdrrCorrupt, WrongValues) {
  const Json original = ReadManifestJson(package_);
  const auto expect = [&](const std::function<void(Json&)>& edit,
                          std::initializer_list<std::string_view> fragments) {
    Json m = original;
    edit(m);
    testing::WriteManifestJson(package_, m);
    EXPECT_TRUE(FailsWith(Open(), fragments));
  };
  const auto expect_ok = [&](const std::function<void(Json&)>& edit) {
    Json m = original;
    edit(m);
    testing::WriteManifestJson(package_, m);
    const Result<Checkpoint> ck = Open();
    EXPECT_TRUE(ck.ok()) << ck.error().message();
  };
  expect([](Json& m) { m["version"] = "2.0"; },
         {"manifest.json: version: \"2.0\" is not supported (expected \"1.0\")"});
  expect([](Json& m) { m["version"] = 1; }, {"version: expected a string, got 1"});
  expect([](Json& m) { m["architecture"] = "llama"; },
         {"architecture: \"llama\" is not supported"});
  expect([](Json& m) { m["hashAlgorithm"] = "blake3"; }, {"hashAlgorithm: \"blake3\""});
  expect([](Json& m) { m["modelType"] = "transformer"; }, {"modelType: \"transformer\""});
  expect([](Json& m) { m["modelId"] = ""; }, {"modelId: is empty"});
  expect([](Json& m) { m["quantization"] = "Q8 0"; }, {"quantization: \"Q8 0\" is not"});
  expect_ok([](Json& m) { m["quantization"] = "q4_k"; });  // any name is kept as recorded
  expect([](Json& m) { m["contentHash"] = "abc"; }, {"contentHash: \"abc\" is not a SHA-256"});
  expect([](Json& m) { m["eosTokenIds"] = {7}; }, {"eosTokenIds: [7] disagrees with config"});
  expect([](Json& m) { m["shards"][1]["index"] = 5; },
         {"shards[1].index: 5 is not the shard's position 1"});
  expect([](Json& m) { m["shards"][1]["fileName"] = "../escape.bin"; },
         {"shards[1].fileName: \"../escape.bin\" is not a plain file name"});
  expect([](Json& m) { m["shards"][1]["size"] = "12"; },
         {"shards[1].size: expected a non-negative integer, got \"12\""});
  expect([](Json& m) { m["tensors"]["model.norm.weight"]["shard"] = 999; },
         {"tensors.\"model.norm.weight\".shard: 999 is not a shard (the package has "});
  expect([](Json& m) { m["tensors"]["model.norm.weight"]["role"] = "lora_a"; },
         {"tensors.\"model.norm.weight\".role: \"lora_a\" is not a role of a base-model"});
  expect([](Json& m) { m["tensors"]["model.norm.weight"]["shape"] = {48.0}; },
         {"tensors.\"model.norm.weight\".shape[0]: expected a non-negative integer, got 48.0"});
  expect([](Json& m) { m["config"]["hidden_size"] = -1; }, {"manifest.json: config: hidden_size"});
  expect_ok([](Json& m) { m["unknownKey"] = 1; });  // unknown keys are ignored
}

TEST_F(RdrrCorrupt, CorruptSideFile) {
  Json m = ReadManifestJson(package_);
  ASSERT_EQ(m.at("files").size(), 1u);
  WriteFile(package_ + "/generation_config.json", "{}\n");
  EXPECT_TRUE(FailsWith(Open(), {"generation_config.json: ", "manifest.json files[0].size"}));
  ASSERT_EQ(std::remove((package_ + "/generation_config.json").c_str()), 0);
  EXPECT_TRUE(FailsWith(Open(), {"generation_config.json: missing"}));
}

}  // namespace
}  // namespace fgnet
