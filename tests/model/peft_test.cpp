// Reading and writing PEFT adapters: every adapter peft wrote in tests/fixtures/lora loads with
// the modules, ranks and scales peft built (fixture.json "expected"); peft's matching rules
// (the probe tables of tests/fixtures/lora/manifest.json) are reproduced; WritePeftAdapter
// round-trips; and every unsupported or inconsistent adapter is rejected with a one-line error
// naming the key or tensor, on hand-written adapter directories.
#include "model/peft.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "fails_with.h"
#include "lora_fixtures.h"
#include "model/checkpoint.h"
#include "model/config.h"
#include "model/lora.h"
#include "model/merge.h"
#include "model/safetensors.h"
#include "tiny_checkpoint.h"
#include "util/json.h"

namespace fgnet {
namespace {

using testing::FailsWith;
using testing::LoadFixtureJson;
using testing::LoraFixtureDir;
using testing::TempDir;
using testing::TensorStore;
using testing::TestDataPath;
using testing::TinyConfig;

const char* const kAdapterFixtures[] = {"attn_qkvo", "all_linear_rslora", "mlp_layers",
                                        "alora",     "regex_mm",          "attn_qvo_second"};

Gemma3Config BaseConfigOf(const Json& fixture) {
  auto checkpoint = Checkpoint::Open(TestDataPath(fixture["base"].get<std::string>()));
  FGNET_CHECK(checkpoint.ok());
  return checkpoint->config();
}

class PeftFixtureTest : public ::testing::TestWithParam<const char*> {};

TEST_P(PeftFixtureTest, LoadsWithPeftsModulesRanksAndScales) {
  const Json fixture = LoadFixtureJson(GetParam());
  const Gemma3Config base = BaseConfigOf(fixture);
  auto adapter = LoadPeftAdapter(LoraFixtureDir(GetParam()), base);
  ASSERT_TRUE(adapter.ok()) << adapter.error().message();
  EXPECT_EQ(adapter->name, GetParam());
  EXPECT_EQ(adapter->path, LoraFixtureDir(GetParam()));
  EXPECT_EQ(adapter->format, "peft");
  EXPECT_EQ(adapter->content_hash, LoraContentHash(*adapter));
  EXPECT_EQ(adapter->content_hash.size(), 64u);
  EXPECT_TRUE(ValidateLoraAdapter(*adapter, base).ok());
  ASSERT_EQ(adapter->layers.size(), static_cast<std::size_t>(base.num_hidden_layers));
  const Json& lora = fixture["lora_config"];
  EXPECT_EQ(adapter->config.r, lora["r"].get<std::int64_t>());
  EXPECT_EQ(adapter->config.lora_alpha, lora["lora_alpha"].get<double>());
  EXPECT_EQ(adapter->config.use_rslora, lora.value("use_rslora", false));
  EXPECT_FALSE(adapter->config.base_model_name_or_path.empty());

  std::set<std::pair<std::size_t, std::size_t>> expected;
  for (const Json& row : fixture["expected"]) {
    const auto l = row["layer"].get<std::size_t>();
    const auto m = ParseLoraModuleName(row["module"].get<std::string>());
    ASSERT_TRUE(m.has_value());
    expected.insert({l, static_cast<std::size_t>(*m)});
    const LoraLayer& layer = adapter->at(l, *m);
    EXPECT_EQ(layer.rank, row["rank"].get<std::size_t>()) << row["key"];
    EXPECT_NEAR(layer.scale, row["scale"].get<double>(), 1e-6 * row["scale"].get<double>())
        << row["key"];
  }
  for (std::size_t l = 0; l < adapter->layers.size(); ++l) {
    for (LoraModule m : kAllLoraModules) {
      EXPECT_EQ(adapter->at(l, m).active(), expected.contains({l, static_cast<std::size_t>(m)}))
          << "layer " << l << " " << LoraModuleName(m);
    }
  }
  if (lora.contains("alora_invocation_tokens")) {
    EXPECT_TRUE(adapter->is_activated());
    EXPECT_EQ(adapter->config.alora_invocation_tokens,
              testing::Ids(lora["alora_invocation_tokens"]));
    // The start fgnet computes is the one peft computed for the fixture prompt.
    const auto start =
        AloraStart(testing::Ids(fixture["prompt_ids"]), adapter->config.alora_invocation_tokens);
    ASSERT_TRUE(start.has_value());
    EXPECT_EQ(*start, fixture["alora"]["peft_start"].get<std::int64_t>());
    EXPECT_FALSE(AloraStart(testing::Ids(fixture["alora"]["no_invocation_prompt_ids"]),
                            adapter->config.alora_invocation_tokens)
                     .has_value());
  } else {
    EXPECT_FALSE(adapter->is_activated());
  }
}

TEST_P(PeftFixtureTest, WritePeftAdapterRoundTrips) {
  const Json fixture = LoadFixtureJson(GetParam());
  const Gemma3Config base = BaseConfigOf(fixture);
  auto adapter = LoadPeftAdapter(LoraFixtureDir(GetParam()), base);
  ASSERT_TRUE(adapter.ok()) << adapter.error().message();
  TempDir tmp;
  const std::string dir = tmp.File("written");
  ASSERT_TRUE(WritePeftAdapter(*adapter, dir).ok());
  auto again = LoadPeftAdapter(dir, base);
  ASSERT_TRUE(again.ok()) << again.error().message();
  EXPECT_EQ(again->content_hash, adapter->content_hash);
  EXPECT_EQ(again->config.alora_invocation_tokens, adapter->config.alora_invocation_tokens);
  EXPECT_EQ(again->name, "written");
}

INSTANTIATE_TEST_SUITE_P(Fixtures, PeftFixtureTest, ::testing::ValuesIn(kAdapterFixtures));

TEST(PeftFixtures, BF16AndF16TensorsAreWidenedExactly) {
  // all_linear_rslora stores BF16, mlp_layers F16: every loaded value is representable there.
  for (const char* name : {"all_linear_rslora", "mlp_layers"}) {
    const Json fixture = LoadFixtureJson(name);
    auto adapter = LoadPeftAdapter(LoraFixtureDir(name), BaseConfigOf(fixture));
    ASSERT_TRUE(adapter.ok()) << adapter.error().message();
    const bool bf16 = std::string(name) == "all_linear_rslora";
    std::size_t checked = 0;
    for (const auto& layer : adapter->layers) {
      for (const LoraLayer& m : layer) {
        for (const auto* values : {&m.a, &m.b}) {
          for (float v : *values) {
            const float back = bf16 ? BF16ToF32(F32ToBF16(v)) : F16ToF32(F32ToF16(v));
            ASSERT_EQ(back, v) << name;
            ++checked;
          }
        }
      }
    }
    EXPECT_GT(checked, 1000u);
  }
}

TEST(PeftFixtures, WrittenConfigNamesExactlyTheAdaptedModules) {
  TempDir tmp;
  // mlp_layers adapts layers 0 and 2 of 3: a list of names would select layer 1 too.
  {
    const Json fixture = LoadFixtureJson("mlp_layers");
    auto adapter = LoadPeftAdapter(LoraFixtureDir("mlp_layers"), BaseConfigOf(fixture));
    ASSERT_TRUE(adapter.ok());
    ASSERT_TRUE(WritePeftAdapter(*adapter, tmp.File("mlp")).ok());
    auto config = ReadJsonFile(tmp.File("mlp") + "/adapter_config.json");
    ASSERT_TRUE(config.ok());
    EXPECT_EQ((*config)["target_modules"],
              "model\\.layers\\.(?:0|2)\\.mlp\\.gate_proj|model\\.layers\\.(?:0|2)\\.mlp\\.up_"
              "proj|model\\.layers\\.(?:0|2)\\.mlp\\.down_proj");
    EXPECT_EQ((*config)["r"], 3);
    EXPECT_EQ((*config)["peft_type"], "LORA");
  }
  // all_linear_rslora: every module on every layer, ranks and alphas vary.
  {
    const Json fixture = LoadFixtureJson("all_linear_rslora");
    auto adapter = LoadPeftAdapter(LoraFixtureDir("all_linear_rslora"), BaseConfigOf(fixture));
    ASSERT_TRUE(adapter.ok());
    ASSERT_TRUE(WritePeftAdapter(*adapter, tmp.File("all")).ok());
    auto config = ReadJsonFile(tmp.File("all") + "/adapter_config.json");
    ASSERT_TRUE(config.ok());
    EXPECT_EQ((*config)["target_modules"],
              Json({"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}));
    EXPECT_EQ((*config)["use_rslora"], false);
    EXPECT_EQ((*config)["r"], 4);
    EXPECT_EQ((*config)["rank_pattern"]["layers.5.self_attn.v_proj"], 8);
    EXPECT_EQ((*config)["rank_pattern"]["layers.3.mlp.down_proj"], 2);
    EXPECT_FALSE((*config)["rank_pattern"].contains("layers.3.self_attn.k_proj"));
  }
}

// --- peft's matching rules, against the probes recorded from peft 0.21 ---------------------

TEST(PeftMatching, PatternKeysFollowGetPatternKey) {
  auto manifest = ReadJsonFile(LoraFixtureDir("manifest.json"));
  ASSERT_TRUE(manifest.ok());
  const Json& cases = (*manifest)["probe_get_pattern_key"]["cases"];
  ASSERT_GE(cases.size(), 10u);
  for (const Json& c : cases) {
    const std::string key = c["key"];
    std::string first = key;  // get_pattern_key returns the key itself when nothing matches
    for (const Json& p : c["pattern_keys"]) {
      auto hit = PeftPatternKeyMatches(p.get<std::string>(), key);
      ASSERT_TRUE(hit.ok()) << hit.error().message();
      if (*hit) {
        first = p.get<std::string>();
        break;
      }
    }
    EXPECT_EQ(first, c["returns"].get<std::string>()) << c.dump();
  }
}

TEST(PeftMatching, TargetsFollowCheckTargetModuleExists) {
  // The LoraConfig arguments of each probe (tools/make_lora_fixtures.py, probe_target_matching).
  const std::map<std::string, Json> configs = {
      {"list q_proj", {{"target_modules", {"q_proj"}}}},
      {"list self_attn.q_proj", {{"target_modules", {"self_attn.q_proj"}}}},
      {"str q_proj", {{"target_modules", "q_proj"}}},
      {"str regex", {{"target_modules", ".*\\.(q|v)_proj"}}},
      {"list + layers_to_transform [1] pattern layers",
       {{"target_modules", {"up_proj"}},
        {"layers_to_transform", {1}},
        {"layers_pattern", "layers"}}},
      {"list + layers_to_transform 1 no pattern",
       {{"target_modules", {"up_proj"}}, {"layers_to_transform", 1}}},
      {"exclude k_proj",
       {{"target_modules", {"q_proj", "k_proj"}}, {"exclude_modules", {"k_proj"}}}},
      {"exclude regex",
       {{"target_modules", {"q_proj", "k_proj"}}, {"exclude_modules", ".*layers\\.0\\..*"}}},
  };
  auto manifest = ReadJsonFile(LoraFixtureDir("manifest.json"));
  ASSERT_TRUE(manifest.ok());
  const Json& probes = (*manifest)["probe_check_target_module_exists"];
  ASSERT_EQ(probes.size(), configs.size());
  int checked = 0;
  for (const auto& [label, args] : configs) {
    Json config = args;
    config["peft_type"] = "LORA";
    ASSERT_TRUE(probes.contains(label)) << label;
    for (const auto& [key, want] : probes[label].items()) {
      auto got = PeftConfigSelects(config.dump(), key);
      ASSERT_TRUE(got.ok()) << got.error().message();
      const bool selected = want.is_boolean() && want.get<bool>();  // "excluded" -> false
      EXPECT_EQ(*got, selected) << label << " / " << key;
      ++checked;
    }
  }
  EXPECT_EQ(checked, 80);
}

// --- hand-written adapters ------------------------------------------------------------------

// An adapter directory for TinyConfig() (hidden 8, q 8, kv 4, intermediate 16, 3 layers).
class HandAdapter {
 public:
  HandAdapter() { config_ = {{"peft_type", "LORA"}, {"r", 2}, {"lora_alpha", 4}}; }

  Json& config() { return config_; }
  // A tensor of that exact name and shape.
  void Tensor(const std::string& name, std::vector<std::int64_t> shape, DType dtype = DType::kF32) {
    store_.Add(name, shape, dtype);
  }
  // lora_A [r, in] and lora_B [out, r] of one module under `prefix`.
  void Module(const std::string& key, std::int64_t r, LoraModule m,
              const std::string& prefix = "base_model.model.") {
    const auto [out, in] = LoraModuleShape(TinyConfig(), m);
    Tensor(prefix + key + ".lora_A.weight", {r, in});
    Tensor(prefix + key + ".lora_B.weight", {out, r});
  }
  std::string Write() {
    const std::string dir = tmp_.File("adapter");
    std::filesystem::create_directories(dir);
    testing::WriteFile(dir + "/adapter_config.json", config_.dump(2));
    FGNET_CHECK(WriteSafetensors(dir + "/adapter_model.safetensors", store_.entries()).ok());
    return dir;
  }
  Result<LoraAdapter> Load() { return LoadPeftAdapter(Write(), TinyConfig()); }

 private:
  TempDir tmp_;
  Json config_;
  TensorStore store_;
};

std::string Key(int layer, LoraModule m) {
  return "model.layers." + std::to_string(layer) + "." + std::string(LoraModulePath(m));
}

TEST(PeftHandWritten, AcceptsAPlainAdapter) {
  HandAdapter h;
  h.config()["target_modules"] = {"q_proj"};
  for (int l = 0; l < 3; ++l) h.Module(Key(l, LoraModule::kQ), 2, LoraModule::kQ);
  auto a = h.Load();
  ASSERT_TRUE(a.ok()) << a.error().message();
  EXPECT_EQ(a->at(1, LoraModule::kQ).rank, 2u);
  EXPECT_EQ(a->at(1, LoraModule::kQ).scale, 2.0f);
  EXPECT_EQ(a->name, "adapter");
  // The values are the tensors' (TinyValue, exact in f32).
  EXPECT_EQ(a->at(0, LoraModule::kQ).a[3],
            testing::TinyValue("base_model.model." + Key(0, LoraModule::kQ) + ".lora_A.weight", 3));
}

TEST(PeftHandWritten, AcceptsMultimodalLayoutsAndSkipsTheVisionTower) {
  for (const std::string prefix : {"model.language_model.", "language_model.model."}) {
    HandAdapter h;
    h.config()["target_modules"] = {"q_proj", "fc1"};
    for (int l = 0; l < 3; ++l) {
      h.Module(prefix + "layers." + std::to_string(l) + ".self_attn.q_proj", 2, LoraModule::kQ);
    }
    h.Tensor("base_model.model.model.vision_tower.encoder.layers.0.mlp.fc1.lora_A.weight", {2, 5});
    h.Tensor("base_model.model.model.vision_tower.encoder.layers.0.mlp.fc1.lora_B.weight", {7, 2});
    auto a = h.Load();
    ASSERT_TRUE(a.ok()) << prefix << ": " << a.error().message();
    EXPECT_EQ(a->adapted_modules(), std::vector<std::string>{"q_proj"});
  }
}

TEST(PeftHandWritten, RsloraLayersToTransformExcludeAndAllLinear) {
  HandAdapter h;
  h.config()["target_modules"] = "ALL-LINEAR";
  h.config()["use_rslora"] = true;
  h.config()["r"] = 4;
  h.config()["lora_alpha"] = 6;
  h.config()["exclude_modules"] = {"o_proj"};
  h.config()["rank_pattern"] = {{"layers.1.mlp.up_proj", 1}};
  for (int l = 0; l < 3; ++l) {
    for (LoraModule m : kAllLoraModules) {
      if (m == LoraModule::kO) continue;
      h.Module(Key(l, m), l == 1 && m == LoraModule::kUp ? 1 : 4, m);
    }
  }
  auto a = h.Load();
  ASSERT_TRUE(a.ok()) << a.error().message();
  EXPECT_EQ(a->at(0, LoraModule::kQ).scale, 3.0f);   // 6 / sqrt(4)
  EXPECT_EQ(a->at(1, LoraModule::kUp).scale, 6.0f);  // 6 / sqrt(1)
  EXPECT_FALSE(a->at(2, LoraModule::kO).active());

  HandAdapter only1;
  only1.config()["target_modules"] = {"down_proj"};
  only1.config()["layers_to_transform"] = 1;
  only1.Module(Key(1, LoraModule::kDown), 2, LoraModule::kDown);
  auto b = only1.Load();
  ASSERT_TRUE(b.ok()) << b.error().message();
  EXPECT_TRUE(b->at(1, LoraModule::kDown).active());
  EXPECT_FALSE(b->at(0, LoraModule::kDown).active());
}

TEST(PeftHandWritten, RankAndAlphaPatternsFirstMatchingKeyWinsInFileOrder) {
  // The file lists "o_proj" before the more specific key: it wins for layer 2 as well (peft
  // iterates the dict in the order json.load built it).
  HandAdapter h;
  h.config()["target_modules"] = {"o_proj"};
  for (int l = 0; l < 3; ++l) h.Module(Key(l, LoraModule::kO), 2, LoraModule::kO);
  const std::string dir = h.Write();
  testing::WriteFile(dir + "/adapter_config.json",
                     R"({"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["o_proj"],
                         "alpha_pattern": {"o_proj": 8, "layers.2.self_attn.o_proj": 2}})");
  auto a = LoadPeftAdapter(dir, TinyConfig());
  ASSERT_TRUE(a.ok()) << a.error().message();
  EXPECT_EQ(a->at(2, LoraModule::kO).scale, 4.0f);
  testing::WriteFile(dir + "/adapter_config.json",
                     R"({"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["o_proj"],
                         "alpha_pattern": {"layers.2.self_attn.o_proj": 2, "o_proj": 8}})");
  auto b = LoadPeftAdapter(dir, TinyConfig());
  ASSERT_TRUE(b.ok()) << b.error().message();
  EXPECT_EQ(b->at(2, LoraModule::kO).scale, 1.0f);
  EXPECT_EQ(b->at(1, LoraModule::kO).scale, 4.0f);
}

// One rejected adapter: what to change from a valid q_proj adapter, and the error fragments.
struct Rejection {
  const char* label;
  void (*edit)(HandAdapter&);
  std::vector<std::string> fragments;
};

void ValidQ(HandAdapter& h) {
  h.config()["target_modules"] = {"q_proj"};
  for (int l = 0; l < 3; ++l) h.Module(Key(l, LoraModule::kQ), 2, LoraModule::kQ);
}

const Rejection kRejections[] = {
    {"not LORA",
     [](HandAdapter& h) { ValidQ(h), h.config()["peft_type"] = "IA3"; },
     {"adapter_config.json", "peft_type", "IA3", "only LORA"}},
    {"no peft_type",
     [](HandAdapter& h) { ValidQ(h), h.config().erase("peft_type"); },
     {"peft_type is missing"}},
    {"DoRA",
     [](HandAdapter& h) { ValidQ(h), h.config()["use_dora"] = true; },
     {"adapter_config.json", "use_dora is true", "DoRA"}},
    {"modules_to_save",
     [](HandAdapter& h) { ValidQ(h), h.config()["modules_to_save"] = {"lm_head"}; },
     {"modules_to_save", "lm_head"}},
    {"bias",
     [](HandAdapter& h) { ValidQ(h), h.config()["bias"] = "lora_only"; },
     {"bias is \"lora_only\"", "none"}},
    {"target_parameters",
     [](HandAdapter& h) { ValidQ(h), h.config()["target_parameters"] = {"experts.w1"}; },
     {"target_parameters", "experts.w1"}},
    {"lora_bias",
     [](HandAdapter& h) { ValidQ(h), h.config()["lora_bias"] = true; },
     {"lora_bias is true"}},
    {"fan_in_fan_out",
     [](HandAdapter& h) { ValidQ(h), h.config()["fan_in_fan_out"] = true; },
     {"fan_in_fan_out is true"}},
    {"trainable tokens",
     [](HandAdapter& h) {
       ValidQ(h), h.config()["trainable_token_indices"] = {1, 2};
     },
     {"trainable_token_indices"}},
    {"bad r",
     [](HandAdapter& h) { ValidQ(h), h.config()["r"] = "two"; },
     {"r must be a positive integer", "\"two\""}},
    {"lm_head",
     [](HandAdapter& h) {
       ValidQ(h);
       h.config()["target_modules"] = {"q_proj", "lm_head"};
       h.Tensor("base_model.model.lm_head.lora_A.weight", {2, 8});
       h.Tensor("base_model.model.lm_head.lora_B.weight", {32, 2});
     },
     {"adapter_model.safetensors", "base_model.model.lm_head.lora_", "'lm_head'", "not supported",
      "q/k/v/o/gate/up/down"}},
    {"embed_tokens",
     [](HandAdapter& h) {
       ValidQ(h);
       h.Tensor("base_model.model.model.embed_tokens.lora_embedding_A", {2, 32});
     },
     {"lora_embedding_A", "token embeddings", "not supported"}},
    {"q_norm",
     [](HandAdapter& h) {
       ValidQ(h);
       h.Tensor("base_model.model.model.layers.0.self_attn.q_norm.lora_A.weight", {2, 4});
     },
     {"model.layers.0.self_attn.q_norm", "not supported"}},
    {"DoRA magnitude",
     [](HandAdapter& h) {
       ValidQ(h);
       h.Tensor("base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector", {8});
     },
     {"lora_magnitude_vector", "DoRA"}},
    {"lora_B bias",
     [](HandAdapter& h) {
       ValidQ(h);
       h.Tensor("base_model.model.model.layers.0.self_attn.q_proj.lora_B.bias", {8});
     },
     {"lora_B.bias", "lora_bias"}},
    {"unknown tensor",
     [](HandAdapter& h) { ValidQ(h), h.Tensor("something_else", {2}); },
     {"unknown tensor 'something_else'"}},
    {"adapter-name infix",
     [](HandAdapter& h) {
       ValidQ(h);
       h.Tensor("base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight", {2, 8});
     },
     {"unknown tensor", "lora_A.default.weight"}},
    {"missing B",
     [](HandAdapter& h) {
       h.config()["target_modules"] = {"q_proj"};
       for (int l = 0; l < 3; ++l) {
         h.Tensor("base_model.model." + Key(l, LoraModule::kQ) + ".lora_A.weight", {2, 8});
         if (l != 1)
           h.Tensor("base_model.model." + Key(l, LoraModule::kQ) + ".lora_B.weight", {8, 2});
       }
     },
     {"adapter_model.safetensors", "layer 1 q_proj", "no lora_B"}},
    {"missing A",
     [](HandAdapter& h) {
       h.config()["target_modules"] = {"q_proj"};
       for (int l = 0; l < 3; ++l) {
         if (l != 2)
           h.Tensor("base_model.model." + Key(l, LoraModule::kQ) + ".lora_A.weight", {2, 8});
         h.Tensor("base_model.model." + Key(l, LoraModule::kQ) + ".lora_B.weight", {8, 2});
       }
     },
     {"layer 2 q_proj", "no lora_A"}},
    {"A shape",
     [](HandAdapter& h) {
       h.config()["target_modules"] = {"k_proj"};
       for (int l = 0; l < 3; ++l) {
         h.Tensor("base_model.model." + Key(l, LoraModule::kK) + ".lora_A.weight",
                  {2, l == 0 ? 9 : 8});
         h.Tensor("base_model.model." + Key(l, LoraModule::kK) + ".lora_B.weight", {4, 2});
       }
     },
     {"tensor 'base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight'", "shape [2, 9]",
      "[4, 8]", "hidden_size = 8", "num_key_value_heads * head_dim = 4", "must be [r, 8]"}},
    {"B shape",
     [](HandAdapter& h) {
       h.config()["target_modules"] = {"down_proj"};
       for (int l = 0; l < 3; ++l) {
         h.Tensor("base_model.model." + Key(l, LoraModule::kDown) + ".lora_A.weight", {2, 16});
         h.Tensor("base_model.model." + Key(l, LoraModule::kDown) + ".lora_B.weight",
                  {8, l == 2 ? 3 : 2});
       }
     },
     {"layers.2.mlp.down_proj.lora_B.weight", "shape [8, 3]", "must be [8, 2]"}},
    {"layer past the base",
     [](HandAdapter& h) { ValidQ(h), h.Module(Key(3, LoraModule::kQ), 2, LoraModule::kQ); },
     {"layers.3.self_attn.q_proj", "layer 3 is past the base's last layer 2"}},
    {"rank disagrees",
     [](HandAdapter& h) {
       ValidQ(h), h.config()["rank_pattern"] = {{"layers.1.self_attn.q_proj", 3}};
     },
     {"layers.1.self_attn.q_proj.lora_A.weight", "has rank 2", "rank 3",
      "rank_pattern key 'layers.1.self_attn.q_proj'"}},
    {"tensor not targeted",
     [](HandAdapter& h) { ValidQ(h), h.config()["target_modules"] = {"v_proj"}; },
     {"target_modules does not select 'model.layers.0.self_attn.q_proj'"}},
    {"targeted module missing",
     [](HandAdapter& h) {
       ValidQ(h), h.config()["target_modules"] = {"q_proj", "v_proj"};
     },
     {"target_modules selects 'model.layers.0.self_attn.v_proj'", "no lora_A / lora_B"}},
    {"bad regex",
     [](HandAdapter& h) { ValidQ(h), h.config()["target_modules"] = "(?P<x>q_proj)"; },
     {"target_modules", "not a regex fgnet can evaluate"}},
    {"invocation outside the vocabulary",
     [](HandAdapter& h) {
       ValidQ(h), h.config()["alora_invocation_tokens"] = {5, 32};
     },
     {"alora_invocation_tokens[1] = 32", "32 tokens"}},
    {"two prefixes",
     [](HandAdapter& h) {
       ValidQ(h);
       h.config()["target_modules"] = {"q_proj", "v_proj"};
       h.Module("model.language_model.layers.0.self_attn.v_proj", 2, LoraModule::kV);
     },
     {"is under 'model.'", "other tensors are under 'model.language_model.'"}},
    {"nothing for the text model",
     [](HandAdapter& h) {
       h.config()["target_modules"] = {"fc1"};
       h.Tensor("base_model.model.model.vision_tower.encoder.layers.0.mlp.fc1.lora_A.weight",
                {2, 5});
     },
     {"no LoRA tensors for the text model"}},
};

TEST(PeftHandWritten, RejectsWithOneLineErrorsNamingTheProblem) {
  for (const Rejection& r : kRejections) {
    HandAdapter h;
    r.edit(h);
    const auto result = h.Load();
    std::vector<std::string_view> fragments(r.fragments.begin(), r.fragments.end());
    ASSERT_FALSE(result.ok()) << r.label;
    const std::string& message = result.error().message();
    EXPECT_EQ(message.find('\n'), std::string::npos) << r.label;
    for (const auto& f : r.fragments) {
      EXPECT_NE(message.find(f), std::string::npos)
          << r.label << ": \"" << message << "\" lacks \"" << f << "\"";
    }
  }
}

TEST(PeftHandWritten, RejectsPickleAdaptersAndMissingFiles) {
  TempDir tmp;
  EXPECT_TRUE(
      FailsWith(LoadPeftAdapter(tmp.File("nope"), TinyConfig()), {"not an adapter directory"}));
  const std::string dir = tmp.File("bin");
  std::filesystem::create_directories(dir);
  EXPECT_TRUE(FailsWith(LoadPeftAdapter(dir, TinyConfig()), {"adapter_config.json: missing"}));
  testing::WriteFile(dir + "/adapter_config.json", R"({"peft_type": "LORA"})");
  EXPECT_TRUE(
      FailsWith(LoadPeftAdapter(dir, TinyConfig()), {"adapter_model.safetensors: missing"}));
  testing::WriteFile(dir + "/adapter_model.bin", "PK");
  EXPECT_TRUE(FailsWith(LoadPeftAdapter(dir, TinyConfig()),
                        {"adapter_model.bin", "not supported", "safe_serialization"}));
  testing::WriteFile(dir + "/adapter_config.json", "{not json");
  testing::WriteFile(dir + "/adapter_model.safetensors", "");
  EXPECT_TRUE(FailsWith(LoadPeftAdapter(dir, TinyConfig()), {"adapter_config.json"}));
}

TEST(PeftHandWritten, ShapeMismatchAgainstARealBaseNamesItsDims) {
  // attn_qkvo was made for gqa_f32_v5 (hidden 40); mqa_bf16_v4 has hidden 48.
  auto other = Checkpoint::Open(TestDataPath("parity/mqa_bf16_v4"));
  ASSERT_TRUE(other.ok());
  EXPECT_TRUE(FailsWith(
      LoadPeftAdapter(LoraFixtureDir("attn_qkvo"), other->config()),
      {"adapter_model.safetensors", "lora_A.weight", "shape [4, 40]", "hidden_size = 48"}));
}

TEST(PeftWriter, RefusesAnEmptyAdapter) {
  LoraAdapter empty;
  empty.name = "empty";
  empty.layers.resize(3);
  TempDir tmp;
  EXPECT_TRUE(FailsWith(WritePeftAdapter(empty, tmp.File("x")), {"adapts no module"}));
}

}  // namespace
}  // namespace fgnet
