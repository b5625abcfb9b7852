// RDRR adapter packages: a hand-built adapter (random values, special floats, different ranks and
// scales per module, invocation tokens) round-trips exactly with its content hash; the manifest
// records what the format promises; adapters for another base, packages of the wrong type and
// corrupt adapter manifests are refused; tensors split over shards at arbitrary sizes and stored
// as BF16 are read back exactly.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "fails_with.h"
#include "model/checkpoint.h"
#include "model/lora.h"
#include "model/rdrr.h"
#include "rdrr_testing.h"
#include "tiny_checkpoint.h"
#include "util/json.h"
#include "util/rng.h"
#include "util/sha256.h"

namespace fgnet {
namespace {

using testing::EditManifest;
using testing::FailsWith;
using testing::ParityFixture;
using testing::ReadManifestJson;
using testing::TempDir;
using testing::WriteFile;
using testing::WriteManifestJson;

struct ModuleSpec {
  std::size_t layer;
  LoraModule module;
  std::size_t rank;
  float scale;
};

LoraAdapter MakeAdapter(const Gemma3Config& c, const std::vector<ModuleSpec>& specs,
                        std::vector<std::int32_t> invocation) {
  LoraAdapter a;
  a.name = "hand-built";
  a.format = "in-memory";
  a.config.r = 4;
  a.config.lora_alpha = 8;
  a.config.target_modules = {"q_proj", "v_proj", "gate_proj", "down_proj"};
  a.config.alora_invocation_tokens = std::move(invocation);
  a.config.base_model_name_or_path = "org/tiny-base";
  a.layers.resize(static_cast<std::size_t>(c.num_hidden_layers));
  Philox rng(3);
  for (const ModuleSpec& s : specs) {
    const auto [out, in] = LoraModuleShape(c, s.module);
    LoraLayer& l = a.layers[s.layer][static_cast<std::size_t>(s.module)];
    l.rank = s.rank;
    l.scale = s.scale;
    l.a.resize(s.rank * static_cast<std::size_t>(in));
    l.b.resize(static_cast<std::size_t>(out) * s.rank);
    for (float& v : l.a) v = (rng.NextFloat() - 0.5f) * 0.37f;
    for (float& v : l.b) v = (rng.NextFloat() - 0.5f) * 1e-3f;
  }
  a.content_hash = LoraContentHash(a);
  return a;
}

// Four modules with their own ranks and scales (as rank_pattern / alpha_pattern give), special
// float values, and an invocation sequence (an activated LoRA).
LoraAdapter HandBuiltAdapter(const Gemma3Config& c) {
  LoraAdapter a = MakeAdapter(c,
                              {{0, LoraModule::kQ, 4, 2.0f},
                               {0, LoraModule::kV, 2, 1.0f / 3.0f},
                               {3, LoraModule::kDown, 8, 16.0f / std::sqrt(7.0f)},
                               {6, LoraModule::kGate, 1, -1.5e-7f}},
                              {5, 17, 9});
  LoraLayer& q = a.layers[0][static_cast<std::size_t>(LoraModule::kQ)];
  q.a[0] = -0.0f;
  q.a[1] = 1e-40f;  // subnormal
  q.b[0] = 3.0e38f;
  a.content_hash = LoraContentHash(a);
  return a;
}

void ExpectSameAdapter(const LoraAdapter& got, const LoraAdapter& want) {
  ASSERT_EQ(got.layers.size(), want.layers.size());
  for (std::size_t l = 0; l < want.layers.size(); ++l) {
    for (const LoraModule m : kAllLoraModules) {
      SCOPED_TRACE("layer " + std::to_string(l) + " " + std::string(LoraModuleName(m)));
      const LoraLayer& g = got.at(l, m);
      const LoraLayer& w = want.at(l, m);
      EXPECT_EQ(g.rank, w.rank);
      EXPECT_EQ(std::memcmp(&g.scale, &w.scale, sizeof(float)), 0) << g.scale << " vs " << w.scale;
      ASSERT_EQ(g.a.size(), w.a.size());
      ASSERT_EQ(g.b.size(), w.b.size());
      if (!w.active()) continue;
      EXPECT_EQ(std::memcmp(g.a.data(), w.a.data(), w.a.size() * sizeof(float)), 0);
      EXPECT_EQ(std::memcmp(g.b.data(), w.b.data(), w.b.size() * sizeof(float)), 0);
    }
  }
  EXPECT_EQ(got.config.alora_invocation_tokens, want.config.alora_invocation_tokens);
  EXPECT_EQ(got.content_hash, want.content_hash);
}

class RdrrAdapter : public ::testing::Test {
 protected:
  void SetUp() override {
    Result<Checkpoint> ck = Checkpoint::Open(ParityFixture("mqa_bf16_v4"));
    ASSERT_TRUE(ck.ok()) << ck.error().message();
    config_ = ck->config();
    base_hash_ = ck->content_hash();
    adapter_ = HandBuiltAdapter(config_);
    info_.model_id = "react-expert";
    info_.base_model_id = "mqa-tiny";
    info_.base_model_hash = base_hash_;
  }
  Status Write() { return WriteRdrrAdapter(adapter_, package_, info_); }
  Result<LoraAdapter> Load() const { return LoadRdrrAdapter(package_, config_, base_hash_); }

  TempDir tmp_;
  const std::string package_ = tmp_.File("adapter");
  Gemma3Config config_;
  std::string base_hash_;
  LoraAdapter adapter_;
  RdrrAdapterInfo info_;
};

TEST_F(RdrrAdapter, RoundTripPreservesEveryValue) {
  const Status written = Write();
  ASSERT_TRUE(written.ok()) << written.error().message();
  EXPECT_TRUE(IsRdrrPackage(package_));
  Result<LoraAdapter> loaded = Load();
  ASSERT_TRUE(loaded.ok()) << loaded.error().message();
  const LoraAdapter& a = *loaded;
  ExpectSameAdapter(a, adapter_);
  EXPECT_EQ(a.name, "react-expert");
  EXPECT_EQ(a.path, package_);
  EXPECT_EQ(a.format, "rdrr");
  EXPECT_EQ(a.base_model_hash, base_hash_);
  EXPECT_EQ(a.config.r, 4);
  EXPECT_EQ(a.config.lora_alpha, 8.0);
  EXPECT_FALSE(a.config.use_rslora);
  EXPECT_EQ(a.config.target_modules, adapter_.config.target_modules);
  EXPECT_EQ(a.config.base_model_name_or_path, "mqa-tiny");
  EXPECT_TRUE(a.is_activated());

  // The base hash check is skipped when the caller has none.
  Result<LoraAdapter> unchecked = LoadRdrrAdapter(package_, config_, "");
  ASSERT_TRUE(unchecked.ok()) << unchecked.error().message();
  EXPECT_EQ(unchecked->content_hash, adapter_.content_hash);
}

TEST_F(RdrrAdapter, ManifestRecordsTheAdapter) {
  ASSERT_TRUE(Write().ok());
  const Json m = ReadManifestJson(package_);
  EXPECT_EQ(m.at("version"), "1.0");
  EXPECT_EQ(m.at("modelId"), "react-expert");
  EXPECT_EQ(m.at("modelType"), "lora");
  EXPECT_EQ(m.at("adapterType"), "lora");
  EXPECT_EQ(m.at("architecture"), "gemma3");
  EXPECT_EQ(m.at("hashAlgorithm"), "sha256");
  EXPECT_EQ(m.at("baseModel"), "mqa-tiny");
  EXPECT_EQ(m.at("baseModelHash"), base_hash_);
  EXPECT_EQ(m.at("contentHash"), adapter_.content_hash);
  const Json& c = m.at("loraConfig");
  EXPECT_EQ(c.at("rank"), 4);
  EXPECT_EQ(c.at("alpha"), 8.0);
  EXPECT_EQ(c.at("useRslora"), false);
  EXPECT_EQ(c.at("numLayers"), 7);
  EXPECT_EQ(c.at("invocationTokens"), Json::array({5, 17, 9}));
  EXPECT_EQ(c.at("targetModules"), Json(adapter_.config.target_modules));
  EXPECT_EQ(m.at("loraModules").size(), 4u);
  EXPECT_EQ(m.at("loraModules").at("layers.3.down_proj").at("rank"), 8);
  EXPECT_EQ(m.at("tensors").size(), 8u);
  const Json& a = m.at("tensors").at("layers.3.down_proj.lora_A");
  EXPECT_EQ(a.at("dtype"), "F32");
  EXPECT_EQ(a.at("role"), "lora_a");
  EXPECT_EQ(a.at("shape"), Json::array({8, config_.intermediate_size}));
  const Json& b = m.at("tensors").at("layers.3.down_proj.lora_B");
  EXPECT_EQ(b.at("role"), "lora_b");
  EXPECT_EQ(b.at("shape"), Json::array({config_.hidden_size, 8}));
}

TEST_F(RdrrAdapter, PlainLoraHasNoInvocationTokens) {
  adapter_ = MakeAdapter(config_, {{2, LoraModule::kO, 3, 0.75f}}, {});
  info_.model_id.clear();  // the adapter's name is used
  ASSERT_TRUE(Write().ok());
  const Json m = ReadManifestJson(package_);
  EXPECT_FALSE(m.at("loraConfig").contains("invocationTokens"));
  EXPECT_EQ(m.at("modelId"), "hand-built");
  Result<LoraAdapter> loaded = Load();
  ASSERT_TRUE(loaded.ok()) << loaded.error().message();
  EXPECT_FALSE(loaded->is_activated());
  ExpectSameAdapter(*loaded, adapter_);
}

TEST_F(RdrrAdapter, RefusesAnAdapterForAnotherBase) {
  ASSERT_TRUE(Write().ok());
  const std::string other = Sha256Hex("another base");
  EXPECT_TRUE(FailsWith(
      LoadRdrrAdapter(package_, config_, other),
      {"'react-expert' was built for base " + base_hash_ + " but the model is " + other}));
  // A base of another shape: fewer layers, or other sizes.
  Gemma3Config fewer = config_;
  fewer.num_hidden_layers = 6;
  fewer.layer_types.resize(6);
  EXPECT_TRUE(FailsWith(LoadRdrrAdapter(package_, fewer, ""),
                        {"loraConfig.numLayers: 7 but the base model has 6 layers"}));
  Gemma3Config wider = config_;
  wider.hidden_size = 64;
  EXPECT_TRUE(FailsWith(LoadRdrrAdapter(package_, wider, ""),
                        {"manifest.json: tensors.\"layers.0.q_proj.lora_A\".shape: [4, 48] does "
                         "not fit the base model's q_proj weight [128, 64] (expected [4, 64])"}));
}

TEST_F(RdrrAdapter, PackagesOfTheOtherTypeAreRefused) {
  ASSERT_TRUE(Write().ok());
  EXPECT_TRUE(FailsWith(OpenRdrrCheckpoint(package_),
                        {"manifest.json: modelType: \"lora\"", "LoRA adapter, not a model"}));
  Result<Checkpoint> base = Checkpoint::Open(ParityFixture("mqa_bf16_v4"));
  ASSERT_TRUE(base.ok());
  const std::string model = tmp_.File("model");
  ASSERT_TRUE(WriteRdrrModel(*base, model, {}).ok());
  EXPECT_TRUE(FailsWith(LoadRdrrAdapter(model, config_, base_hash_),
                        {"manifest.json: modelType: \"base\"", "base model, not a LoRA adapter"}));
}

TEST_F(RdrrAdapter, CorruptManifestsAreRefused) {
  ASSERT_TRUE(Write().ok());
  const Json original = ReadManifestJson(package_);
  const auto expect = [&](const std::function<void(Json&)>& edit,
                          std::initializer_list<std::string_view> fragments) {
    Json m = original;
    edit(m);
    WriteManifestJson(package_, m);
    EXPECT_TRUE(FailsWith(Load(), fragments));
  };
  const std::string other_hash = Sha256Hex("x");
  expect([&](Json& m) { m["contentHash"] = other_hash; },
         {"manifest.json: contentHash: " + other_hash + " differs from the hash of the adapter's"});
  // The scale is part of the content.
  expect([](Json& m) { m["loraModules"]["layers.0.v_proj"]["scale"] = 0.5; },
         {"contentHash: ", "differs"});
  expect([](Json& m) { m["loraModules"]["layers.0.v_proj"]["rank"] = 3; },
         {"tensors.\"layers.0.v_proj.lora_A\".shape: [2, 48] does not fit rank 3 of "
          "loraModules.\"layers.0.v_proj\""});
  expect([](Json& m) { m["loraModules"].erase("layers.0.v_proj"); },
         {"tensors.\"layers.0.v_proj.lora_A\": has no entry \"layers.0.v_proj\" in loraModules"});
  expect(
      [](Json& m) {
        m["loraModules"]["layers.1.k_proj"] = {{"rank", 2}, {"scale", 1.0}};
      },
      {"loraModules.\"layers.1.k_proj\": has no tensor \"layers.1.k_proj.lora_A\""});
  expect(
      [](Json& m) {
        m["loraModules"]["layers.9.k_proj"] = {{"rank", 2}, {"scale", 1.0}};
      },
      {"loraModules.\"layers.9.k_proj\": layer 9 is past loraConfig.numLayers 7"});
  expect(
      [](Json& m) {
        m["loraModules"]["q_proj"] = {{"rank", 2}, {"scale", 1.0}};
      },
      {"loraModules.q_proj: is not a module key"});
  expect([](Json& m) { m["loraModules"]["layers.0.v_proj"]["scale"] = "big"; },
         {"loraModules.\"layers.0.v_proj\".scale: expected a finite number"});
  expect([](Json& m) { m["tensors"]["layers.0.v_proj.lora_A"]["role"] = "lora_b"; },
         {"tensors.\"layers.0.v_proj.lora_A\".role: \"lora_b\" should be \"lora_a\""});
  expect(
      [](Json& m) {
        m["tensors"]["layers.00.v_proj.lora_A"] = m["tensors"]["layers.0.v_proj.lora_A"];
        m["tensors"].erase("layers.0.v_proj.lora_A");
      },
      {"tensors.\"layers.00.v_proj.lora_A\": is not an adapter tensor name"});
  expect([](Json& m) { m.erase("baseModelHash"); }, {"manifest.json: baseModelHash: missing"});
  expect([](Json& m) { m.erase("loraConfig"); }, {"manifest.json: loraConfig: missing"});
  expect([](Json& m) { m["loraConfig"].erase("numLayers"); }, {"loraConfig.numLayers: missing"});
  expect([](Json& m) { m["loraConfig"]["invocationTokens"] = Json::array(); },
         {"loraConfig.invocationTokens: is empty"});
  expect([](Json& m) { m["loraConfig"]["useRslora"] = 0; },
         {"loraConfig.useRslora: expected true or false, got 0"});
  expect([](Json& m) { m["adapterType"] = "qlora"; }, {"adapterType: \"qlora\" is not supported"});
  // Invocation tokens are part of the content too.
  expect([](Json& m) { m["loraConfig"]["invocationTokens"] = {5, 17}; }, {"contentHash: "});
}

TEST_F(RdrrAdapter, WriterRefusesBadInput) {
  info_.base_model_hash = "not-a-hash";
  EXPECT_TRUE(FailsWith(Write(), {"base model hash 'not-a-hash' is not a SHA-256 digest"}));
  info_.base_model_hash = base_hash_;
  adapter_.layers[0][static_cast<std::size_t>(LoraModule::kQ)].a.pop_back();
  EXPECT_TRUE(FailsWith(Write(), {"layers.0.q_proj: A has", "not multiples of rank 4"}));
  EXPECT_FALSE(std::filesystem::exists(package_));
}

// A package made by hand: A split over two shards at a size that is not a whole page (so the
// reader copies it rather than mapping it) and B stored as BF16.
TEST_F(RdrrAdapter, SplitAndBF16TensorsAreReadExactly) {
  adapter_ = MakeAdapter(config_, {{2, LoraModule::kK, 2, 0.5f}}, {});
  LoraLayer& k = adapter_.layers[2][static_cast<std::size_t>(LoraModule::kK)];
  for (std::size_t i = 0; i < k.b.size(); ++i) k.b[i] = static_cast<float>(i % 17) / 8.0f - 1.0f;
  adapter_.content_hash = LoraContentHash(adapter_);
  ASSERT_TRUE(Write().ok());
  Json m = ReadManifestJson(package_);
  std::filesystem::remove_all(package_);
  std::filesystem::create_directory(package_);

  const std::string a_bytes(reinterpret_cast<const char*>(k.a.data()), k.a.size() * sizeof(float));
  std::string b_bytes;
  for (const float v : k.b) {
    const std::uint16_t h = F32ToBF16(v);
    b_bytes.append(reinterpret_cast<const char*>(&h), 2);
  }
  const std::size_t cut = 40;
  const std::vector<std::string> shards = {
      a_bytes.substr(0, cut),
      a_bytes.substr(cut) + std::string(4096 - (a_bytes.size() - cut), '\0') + b_bytes};
  m["shards"] = Json::array();
  for (std::size_t i = 0; i < shards.size(); ++i) {
    const std::string name = "shard_0000" + std::to_string(i) + ".bin";
    WriteFile(package_ + "/" + name, shards[i]);
    m["shards"].push_back({{"index", i},
                           {"fileName", name},
                           {"size", shards[i].size()},
                           {"hash", Sha256Hex(shards[i])}});
  }
  Json& a = m["tensors"]["layers.2.k_proj.lora_A"];
  a["shard"] = 0;
  a["offset"] = 0;
  a["spans"] = Json::array({{{"shard", 0}, {"offset", 0}, {"size", cut}},
                            {{"shard", 1}, {"offset", 0}, {"size", a_bytes.size() - cut}}});
  Json& b = m["tensors"]["layers.2.k_proj.lora_B"];
  b["shard"] = 1;
  b["offset"] = 4096;
  b["size"] = b_bytes.size();
  b["dtype"] = "BF16";
  WriteManifestJson(package_, m);

  Result<LoraAdapter> loaded = Load();
  ASSERT_TRUE(loaded.ok()) << loaded.error().message();
  ExpectSameAdapter(*loaded, adapter_);

  // The pieces must add up to the tensor.
  EditManifest(package_, [&](Json& j) {
    j["tensors"]["layers.2.k_proj.lora_A"]["spans"][1]["size"] = a_bytes.size() - cut - 4;
  });
  EXPECT_TRUE(FailsWith(Load(), {"tensors.\"layers.2.k_proj.lora_A\".spans: the pieces hold"}));
  EditManifest(package_, [&](Json& j) {
    j["tensors"]["layers.2.k_proj.lora_A"]["spans"][1]["size"] = a_bytes.size() - cut;
    j["tensors"]["layers.2.k_proj.lora_A"]["spans"][0]["offset"] = 4096;
  });
  EXPECT_TRUE(FailsWith(Load(), {"tensors.\"layers.2.k_proj.lora_A\".spans[0]: bytes [4096"}));
}

}  // namespace
}  // namespace fgnet
