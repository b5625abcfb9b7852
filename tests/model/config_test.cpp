// config.json parsing: both transformers forms, the nested multimodal form, the class defaults,
// softcapping, token ids, every rejection, and the 5.x serialisation. The resolution of every
// accepted key is compared with what transformers 5.x resolved for the same file
// (tests/fixtures/model_io/config_cases.json, made by tools/make_model_io_fixtures.py).
#include "model/config.h"

#include <gtest/gtest.h>

#include <map>

#include "fails_with.h"
#include "tiny_checkpoint.h"

namespace fgnet {
namespace {

using testing::FailsWith;
using testing::TempDir;
using testing::WriteFile;

const std::string kFixtures = std::string(FGNET_TEST_DATA_DIR) + "/model_io/";

Json Fixture(const std::string& name) {
  auto json = ReadJsonFile(kFixtures + name);
  EXPECT_TRUE(json.ok()) << json.error().message();
  return json.ok() ? *json : Json();
}

Json FixtureCase(const std::string& name) {
  const Json fixture = Fixture("config_cases.json");
  for (const Json& c : fixture["cases"]) {
    if (c["name"] == name) return c;
  }
  ADD_FAILURE() << "no fixture case " << name;
  return Json::object();
}

Result<Gemma3Config> Parse(const std::string& text) {
  return ParseGemma3Config(Json::parse(text), "cfg.json");
}

// FailsWith, and the message starts with the file name.
::testing::AssertionResult ConfigFails(const Result<Gemma3Config>& result,
                                       std::initializer_list<std::string_view> fragments) {
  auto check = FailsWith(result, fragments);
  if (check && !result.error().message().starts_with("cfg.json: ")) {
    return ::testing::AssertionFailure() << "does not name the file: " << result.error().message();
  }
  return check;
}

std::vector<LayerType> Pattern(const std::string& letters) {
  std::vector<LayerType> out;
  for (const char c : letters) out.push_back(c == 'S' ? LayerType::kSliding : LayerType::kGlobal);
  return out;
}

std::vector<std::int64_t> Ids(const Json& v) {
  if (v.is_null()) return {};
  if (v.is_number()) return {v.get<std::int64_t>()};
  return v.get<std::vector<std::int64_t>>();
}

// Compares a parsed config with the values transformers resolved for the same file.
void ExpectMatchesTransformers(const Gemma3Config& c, const Json& resolved) {
  const Json& t = resolved["text"];
  EXPECT_EQ(c.vocab_size, t["vocab_size"].get<std::int64_t>());
  EXPECT_EQ(c.hidden_size, t["hidden_size"].get<std::int64_t>());
  EXPECT_EQ(c.intermediate_size, t["intermediate_size"].get<std::int64_t>());
  EXPECT_EQ(c.num_hidden_layers, t["num_hidden_layers"].get<std::int64_t>());
  EXPECT_EQ(c.num_attention_heads, t["num_attention_heads"].get<std::int64_t>());
  EXPECT_EQ(c.num_key_value_heads, t["num_key_value_heads"].get<std::int64_t>());
  EXPECT_EQ(c.head_dim, t["head_dim"].get<std::int64_t>());
  EXPECT_EQ(c.max_position_embeddings, t["max_position_embeddings"].get<std::int64_t>());
  EXPECT_EQ(c.sliding_window, t["sliding_window"].get<std::int64_t>());
  ASSERT_EQ(c.layer_types.size(), t["layer_types"].size());
  for (std::size_t i = 0; i < c.layer_types.size(); ++i) {
    EXPECT_EQ(c.layer_types[i] == LayerType::kSliding ? "sliding_attention" : "full_attention",
              t["layer_types"][i].get<std::string>())
        << "layer " << i;
  }
  const auto expect_rope = [](const Json& p, double theta, double factor) {
    EXPECT_EQ(theta, p["rope_theta"].get<double>());
    EXPECT_EQ(factor, p["rope_type"] == "linear" ? p["factor"].get<double>() : 1.0);
  };
  expect_rope(t["rope_parameters"]["full_attention"], c.rope_theta_global, c.rope_scaling_global);
  expect_rope(t["rope_parameters"]["sliding_attention"], c.rope_theta_local, c.rope_scaling_local);
  EXPECT_EQ(c.query_pre_attn_scalar, t["query_pre_attn_scalar"].get<double>());
  EXPECT_EQ(c.rms_norm_eps, t["rms_norm_eps"].get<double>());
  const auto cap = [](const Json& v) {
    return v.is_null() ? std::optional<double>() : std::optional<double>(v.get<double>());
  };
  EXPECT_EQ(c.final_logit_softcapping, cap(t["final_logit_softcapping"]));
  EXPECT_EQ(c.attn_logit_softcapping, cap(t["attn_logit_softcapping"]));
  EXPECT_EQ(c.hidden_activation, t["hidden_activation"].get<std::string>());

  // A multimodal model is tied by the top-level key and reads ids at the top level first.
  const bool multimodal = resolved.contains("outer");
  EXPECT_EQ(c.multimodal, multimodal);
  const auto value = [&](const char* key) -> Json {
    if (multimodal && resolved["outer"][key] != "<absent>") return resolved["outer"][key];
    return t[key];
  };
  EXPECT_EQ(c.tie_word_embeddings, value("tie_word_embeddings").get<bool>());
  EXPECT_EQ(c.eos_token_ids, Ids(value("eos_token_id")));
  const auto id = [](const Json& v) { return v.is_null() ? -1 : v.get<std::int64_t>(); };
  EXPECT_EQ(c.bos_token_id, id(value("bos_token_id")));
  EXPECT_EQ(c.pad_token_id, id(value("pad_token_id")));
}

TEST(ConfigTest, MatchesTransformersOnEveryFixtureCase) {
  const Json fixture = Fixture("config_cases.json");
  ASSERT_TRUE(fixture.contains("cases"));
  // Cases fgnet rejects on purpose although transformers loads them.
  const std::map<std::string, std::vector<std::string>> rejected = {
      {"hf4_rope_scaling_type_key", {"rope_scaling.type", "without rope_type"}},
      {"rope_type_yarn",
       {"rope_parameters.full_attention.rope_type", "unsupported rope_type 'yarn'"}},
      {"hidden_activation_gelu", {"hidden_activation", "unsupported activation 'gelu'"}},
      {"bidirectional", {"use_bidirectional_attention", "not supported"}},
      {"attention_bias", {"attention_bias", "not supported"}},
      {"sliding_window_null", {"sliding_window", "is null but layer 0 uses sliding_attention"}},
  };
  // Cases transformers rejects: fgnet must too.
  const std::map<std::string, std::vector<std::string>> errors = {
      {"flat_rope_parameters", {"rope_parameters", "key 'factor' is not a layer type"}},
      {"query_pre_attn_scalar_float", {"query_pre_attn_scalar", "must be a positive integer"}},
      {"layer_types_wrong_length", {"layer_types", "has 2 entries but num_hidden_layers is 3"}},
      {"layer_types_unknown_value", {"layer_types", "entry 1 is \"chunked_attention\""}},
  };
  std::size_t matched = 0, seen_rejected = 0, seen_errors = 0;
  for (const Json& c : fixture["cases"]) {
    const std::string name = c["name"];
    SCOPED_TRACE(name);
    const auto parsed = ParseGemma3Config(c["config"], "cfg.json");
    const auto expect_error = [&](const std::vector<std::string>& fragments) {
      for (const auto& f : fragments) EXPECT_TRUE(ConfigFails(parsed, {"cfg.json: ", f}));
    };
    if (c.contains("error")) {
      ASSERT_TRUE(errors.contains(name)) << "transformers rejected it: " << c["error"];
      expect_error(errors.at(name));
      ++seen_errors;
    } else if (rejected.contains(name)) {
      expect_error(rejected.at(name));
      ++seen_rejected;
    } else {
      ASSERT_TRUE(parsed.ok()) << parsed.error().message();
      ExpectMatchesTransformers(*parsed, c["resolved"]);
      ++matched;
    }
  }
  EXPECT_EQ(seen_rejected, rejected.size());
  EXPECT_EQ(seen_errors, errors.size());
  EXPECT_GE(matched, 30u);
}

TEST(ConfigTest, Reads270MInBothForms) {
  for (const char* name : {"hf4_270m", "hf5_270m"}) {
    SCOPED_TRACE(name);
    const auto c = ParseGemma3Config(FixtureCase(name)["config"], name);
    ASSERT_TRUE(c.ok()) << c.error().message();
    EXPECT_EQ(c->vocab_size, 262144);
    EXPECT_EQ(c->hidden_size, 640);
    EXPECT_EQ(c->intermediate_size, 2048);
    EXPECT_EQ(c->num_hidden_layers, 18);
    EXPECT_EQ(c->num_attention_heads, 4);
    EXPECT_EQ(c->num_key_value_heads, 1);
    EXPECT_EQ(c->head_dim, 256);
    EXPECT_EQ(c->q_dim(), 1024);
    EXPECT_EQ(c->kv_dim(), 256);
    EXPECT_EQ(c->max_position_embeddings, 32768);
    EXPECT_EQ(c->sliding_window, 512);
    EXPECT_EQ(c->layer_types, Pattern("SSSSSGSSSSSGSSSSSG"));
    EXPECT_TRUE(c->is_sliding(4));
    EXPECT_FALSE(c->is_sliding(5));
    EXPECT_EQ(c->rope_theta_global, 1e6);
    EXPECT_EQ(c->rope_theta_local, 1e4);
    EXPECT_EQ(c->rope_scaling_global, 1.0);
    EXPECT_EQ(c->rope_scaling_local, 1.0);
    EXPECT_EQ(c->query_pre_attn_scalar, 256);
    EXPECT_EQ(c->rms_norm_eps, 1e-6);
    EXPECT_FALSE(c->final_logit_softcapping.has_value());
    EXPECT_FALSE(c->attn_logit_softcapping.has_value());
    EXPECT_TRUE(c->tie_word_embeddings);
    EXPECT_EQ(c->bos_token_id, 2);
    EXPECT_EQ(c->eos_token_ids, (std::vector<std::int64_t>{1}));
    EXPECT_EQ(c->pad_token_id, 0);
    EXPECT_EQ(c->torch_dtype, "bfloat16");
    EXPECT_EQ(c->architectures, (std::vector<std::string>{"Gemma3ForCausalLM"}));
    EXPECT_FALSE(c->multimodal);
  }
}

TEST(ConfigTest, AbsentKeysTakeTheTransformersClassDefaults) {
  const auto c = Parse(R"({"model_type": "gemma3_text"})");
  ASSERT_TRUE(c.ok()) << c.error().message();
  EXPECT_EQ(c->vocab_size, 262208);
  EXPECT_EQ(c->hidden_size, 2304);
  EXPECT_EQ(c->intermediate_size, 9216);
  EXPECT_EQ(c->num_hidden_layers, 26);
  EXPECT_EQ(c->num_attention_heads, 8);
  EXPECT_EQ(c->num_key_value_heads, 4);
  EXPECT_EQ(c->head_dim, 256);
  EXPECT_EQ(c->max_position_embeddings, 131072);
  EXPECT_EQ(c->sliding_window, 4096);
  EXPECT_EQ(c->layer_types, Pattern("SSSSSGSSSSSGSSSSSGSSSSSGSS"));
  EXPECT_EQ(c->rope_theta_global, 1e6);
  EXPECT_EQ(c->rope_theta_local, 1e4);
  EXPECT_EQ(c->query_pre_attn_scalar, 256);
  EXPECT_EQ(c->hidden_activation, "gelu_pytorch_tanh");
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_EQ(c->torch_dtype, "");
}

TEST(ConfigTest, HeadDimIsNeverDerivedFromHiddenSize) {
  const auto c =
      Parse(R"({"model_type": "gemma3_text", "hidden_size": 640, "num_attention_heads": 4,
                           "num_key_value_heads": 1})");
  ASSERT_TRUE(c.ok()) << c.error().message();
  EXPECT_EQ(c->head_dim, 256);
}

TEST(ConfigTest, LayerTypesFromSlidingWindowPattern) {
  auto c = Parse(
      R"({"model_type": "gemma3_text", "num_hidden_layers": 7, "sliding_window_pattern": 3})");
  ASSERT_TRUE(c.ok()) << c.error().message();
  EXPECT_EQ(c->layer_types, Pattern("SSGSSGS"));
  c = Parse(
      R"({"model_type": "gemma3_text", "num_hidden_layers": 3, "sliding_window_pattern": 1})");
  ASSERT_TRUE(c.ok()) << c.error().message();
  EXPECT_EQ(c->layer_types, Pattern("GGG"));
  // layer_types wins over the pattern; the underscored key transformers writes is ignored.
  c = Parse(R"({"model_type": "gemma3_text", "num_hidden_layers": 2, "sliding_window_pattern": 1,
                "_sliding_window_pattern": 1, "layer_types": ["full_attention", "sliding_attention"]})");
  ASSERT_TRUE(c.ok()) << c.error().message();
  EXPECT_EQ(c->layer_types, Pattern("GS"));
  c = Parse(
      R"({"model_type": "gemma3_text", "num_hidden_layers": 2, "_sliding_window_pattern": 1})");
  ASSERT_TRUE(c.ok()) << c.error().message();
  EXPECT_EQ(c->layer_types, Pattern("SS"));
  EXPECT_TRUE(ConfigFails(Parse(R"({"model_type": "gemma3_text", "sliding_window_pattern": 0})"),
                          {"cfg.json: sliding_window_pattern: must be a positive integer, got 0"}));
}

TEST(ConfigTest, RopeInBothForms) {
  // 4.x: rope_scaling applies to global layers only.
  auto c = Parse(R"({"model_type": "gemma3_text", "rope_theta": 2e6, "rope_local_base_freq": 5e3,
                     "rope_scaling": {"rope_type": "linear", "factor": 8.0}})");
  ASSERT_TRUE(c.ok()) << c.error().message();
  EXPECT_EQ(c->rope_theta_global, 2e6);
  EXPECT_EQ(c->rope_theta_local, 5e3);
  EXPECT_EQ(c->rope_scaling_global, 8.0);
  EXPECT_EQ(c->rope_scaling_local, 1.0);
  // 4.x legacy "type" is fine when it agrees with rope_type.
  c = Parse(R"({"model_type": "gemma3_text",
                "rope_scaling": {"rope_type": "linear", "type": "linear", "factor": 2}})");
  ASSERT_TRUE(c.ok()) << c.error().message();
  EXPECT_EQ(c->rope_scaling_global, 2.0);
  // 5.x: per layer type, either may scale; entries win over the legacy keys.
  c = Parse(R"({"model_type": "gemma3_text", "rope_theta": 3e6, "rope_parameters": {
                  "full_attention": {"rope_type": "default", "rope_theta": 1e6},
                  "sliding_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 2e4}}})");
  ASSERT_TRUE(c.ok()) << c.error().message();
  EXPECT_EQ(c->rope_theta_global, 1e6);
  EXPECT_EQ(c->rope_scaling_global, 1.0);
  EXPECT_EQ(c->rope_theta_local, 2e4);
  EXPECT_EQ(c->rope_scaling_local, 2.0);
}

TEST(ConfigTest, RejectsUnsupportedRope) {
  const struct {
    const char* rope;
    std::vector<const char*> fragments;
  } cases[] = {
      {R"("rope_scaling": {"rope_type": "dynamic", "factor": 2})",
       {"rope_scaling.rope_type: unsupported rope_type 'dynamic': fgnet supports default and "
        "linear"}},
      {R"("rope_scaling": {"rope_type": "linear"})",
       {"rope_scaling.rope_type: rope_type 'linear' needs a factor"}},
      {R"("rope_scaling": {"rope_type": "linear", "factor": -2})",
       {"rope_scaling.factor: must be a positive number, got -2"}},
      {R"("rope_scaling": {"rope_type": "linear", "factor": "8"})",
       {"rope_scaling.factor: must be a positive number"}},
      {R"("rope_scaling": "linear")", {"rope_scaling: must be an object or null"}},
      {R"("rope_scaling": {"type": "linear", "factor": 2})",
       {"rope_scaling.type: \"linear\" without rope_type"}},
      {R"("rope_scaling": {"rope_type": "linear", "type": "yarn", "factor": 2})",
       {"rope_scaling.type: \"yarn\" disagrees with rope_scaling.rope_type \"linear\""}},
      {R"("rope_scaling": {"rope_type": 3})", {"rope_scaling.rope_type: must be a string"}},
      {R"("rope_theta": -1)", {"rope_theta: must be positive, got -1"}},
      {R"("rope_local_base_freq": "1e4")", {"rope_local_base_freq: must be a finite number"}},
      {R"("rope_parameters": [])", {"rope_parameters: must be an object, got []"}},
      {R"("rope_parameters": {"rope_type": "default", "rope_theta": 1e6})",
       {"rope_parameters: key 'rope_theta' is not a layer type"}},
      {R"("rope_parameters": {"full_attention": 5})",
       {"rope_parameters.full_attention: must be an object, got 5"}},
      {R"("rope_parameters": {"sliding_attention": {"rope_type": "default", "rope_theta": 0}})",
       {"rope_parameters.sliding_attention.rope_theta: must be a positive number, got 0"}},
      {R"("rope_parameters": {"sliding_attention": {"rope_type": "linear"}})",
       {"rope_parameters.sliding_attention.rope_type: rope_type 'linear' needs a factor"}},
      {R"("rope_parameters": {"full_attention": {"rope_type": "llama3", "factor": 8}})",
       {"rope_parameters.full_attention.rope_type: unsupported rope_type 'llama3'"}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.rope);
    const auto parsed = Parse(std::string(R"({"model_type": "gemma3_text", )") + c.rope + "}");
    for (const char* f : c.fragments) EXPECT_TRUE(ConfigFails(parsed, {"cfg.json: ", f}));
  }
}

TEST(ConfigTest, SoftcappingKeys) {
  auto c = Parse(R"({"model_type": "gemma3_text", "final_logit_softcapping": 30.0,
                     "attn_logit_softcapping": 50})");
  ASSERT_TRUE(c.ok()) << c.error().message();
  EXPECT_EQ(c->final_logit_softcapping, 30.0);
  EXPECT_EQ(c->attn_logit_softcapping, 50.0);
  c = Parse(R"({"model_type": "gemma3_text", "final_logit_softcapping": null,
                "attn_logit_softcapping": null})");
  ASSERT_TRUE(c.ok()) << c.error().message();
  EXPECT_FALSE(c->final_logit_softcapping.has_value());
  EXPECT_FALSE(c->attn_logit_softcapping.has_value());
  EXPECT_TRUE(ConfigFails(Parse(R"({"model_type": "gemma3_text", "final_logit_softcapping": 0})"),
                          {"cfg.json: final_logit_softcapping: must be positive, got 0"}));
  EXPECT_TRUE(ConfigFails(Parse(R"({"model_type": "gemma3_text", "attn_logit_softcapping": "50"})"),
                          {"cfg.json: attn_logit_softcapping: must be a finite number"}));
}

TEST(ConfigTest, TokenIds) {
  auto c = Parse(R"({"model_type": "gemma3_text", "eos_token_id": [1, 106], "bos_token_id": null,
                     "pad_token_id": 3})");
  ASSERT_TRUE(c.ok()) << c.error().message();
  EXPECT_EQ(c->eos_token_ids, (std::vector<std::int64_t>{1, 106}));
  EXPECT_EQ(c->bos_token_id, -1);
  EXPECT_EQ(c->pad_token_id, 3);
  c = Parse(R"({"model_type": "gemma3_text", "eos_token_id": null})");
  ASSERT_TRUE(c.ok()) << c.error().message();
  EXPECT_TRUE(c->eos_token_ids.empty());
  EXPECT_TRUE(
      ConfigFails(Parse(R"({"model_type": "gemma3_text", "eos_token_id": [1, "x"]})"),
                  {"cfg.json: eos_token_id: must be a non-negative integer, a list of them"}));
  EXPECT_TRUE(ConfigFails(Parse(R"({"model_type": "gemma3_text", "eos_token_id": -1})"),
                          {"cfg.json: eos_token_id:"}));
  EXPECT_TRUE(ConfigFails(
      Parse(R"({"model_type": "gemma3_text", "vocab_size": 100, "eos_token_id": [1, 106]})"),
      {"cfg.json: eos_token_id: id 106 is outside the vocabulary (vocab_size 100)"}));
  EXPECT_TRUE(
      ConfigFails(Parse(R"({"model_type": "gemma3_text", "vocab_size": 2})"),
                  {"cfg.json: bos_token_id: id 2 is outside the vocabulary (vocab_size 2)"}));
  EXPECT_TRUE(ConfigFails(Parse(R"({"model_type": "gemma3_text", "pad_token_id": 1.5})"),
                          {"cfg.json: pad_token_id: must be a non-negative integer or null"}));
}

TEST(ConfigTest, MultimodalConfigNestsTheTextModel) {
  const auto c = ParseGemma3Config(FixtureCase("mm_4b")["config"], "mm.json");
  ASSERT_TRUE(c.ok()) << c.error().message();
  EXPECT_TRUE(c->multimodal);
  EXPECT_EQ(c->model_type, "gemma3_text");
  EXPECT_EQ(c->architectures, (std::vector<std::string>{"Gemma3ForConditionalGeneration"}));
  EXPECT_EQ(c->hidden_size, 2560);
  EXPECT_EQ(c->num_hidden_layers, 34);
  EXPECT_EQ(c->vocab_size, 262208);  // absent from text_config: the class default
  EXPECT_EQ(c->num_attention_heads, 8);
  EXPECT_EQ(c->num_key_value_heads, 4);
  EXPECT_EQ(c->sliding_window, 1024);
  EXPECT_EQ(c->rope_scaling_global, 8.0);
  EXPECT_EQ(c->rope_scaling_local, 1.0);
  EXPECT_EQ(c->eos_token_ids, (std::vector<std::int64_t>{1, 106}));  // from the top level
  EXPECT_EQ(c->torch_dtype, "bfloat16");
  // Keys of the text model at the top level are not read.
  const auto top = Parse(R"({"model_type": "gemma3", "hidden_size": 640, "text_config": {}})");
  ASSERT_TRUE(top.ok()) << top.error().message();
  EXPECT_EQ(top->hidden_size, 2304);
  // Errors carry the nested path.
  EXPECT_TRUE(
      ConfigFails(Parse(R"({"model_type": "gemma3", "text_config": {"hidden_size": 0}})"),
                  {"cfg.json: text_config.hidden_size: must be a positive integer, got 0"}));
  EXPECT_TRUE(ConfigFails(Parse(R"({"model_type": "gemma3", "text_config": []})"),
                          {"cfg.json: text_config: must be an object"}));
  EXPECT_TRUE(
      ConfigFails(Parse(R"({"model_type": "gemma3", "text_config": {"model_type": "llama"}})"),
                  {"cfg.json: unsupported text_config.model_type \"llama\""}));
}

TEST(ConfigTest, MultimodalTyingFollowsTheTopLevelKeyAsTransformersDoes) {
  const Json tying = Fixture("tying.json");
  ASSERT_EQ(tying.size(), 9u);
  for (const Json& t : tying) {
    Json config = {{"model_type", "gemma3"}, {"text_config", Json::object()}};
    if (!t["top"].is_null()) config["tie_word_embeddings"] = t["top"];
    if (!t["text"].is_null()) config["text_config"]["tie_word_embeddings"] = t["text"];
    SCOPED_TRACE(config.dump());
    const auto c = ParseGemma3Config(config, "mm.json");
    ASSERT_TRUE(c.ok()) << c.error().message();
    EXPECT_EQ(c->tie_word_embeddings, t["tied_after_load"].get<bool>());
  }
}

TEST(ConfigTest, RejectsOtherModelsAndArchitectures) {
  EXPECT_TRUE(ConfigFails(Parse(R"({"model_type": "llama"})"),
                          {"cfg.json: unsupported model_type 'llama': fgnet runs gemma3_text"}));
  EXPECT_TRUE(ConfigFails(Parse(R"({"hidden_size": 8})"), {"cfg.json: missing model_type"}));
  EXPECT_TRUE(
      ConfigFails(Parse(R"({"model_type": 3})"), {"cfg.json: model_type: must be a string"}));
  EXPECT_TRUE(ConfigFails(Parse(R"([1])"), {"cfg.json: must be a JSON object, got array"}));
  EXPECT_TRUE(ConfigFails(
      Parse(
          R"({"model_type": "gemma3_text", "architectures": ["Gemma3ForSequenceClassification"]})"),
      {"cfg.json: architectures: unsupported architecture 'Gemma3ForSequenceClassification'",
       "fgnet runs Gemma3ForCausalLM and Gemma3ForConditionalGeneration"}));
  EXPECT_TRUE(
      ConfigFails(Parse(R"({"model_type": "gemma3_text", "architectures": "Gemma3ForCausalLM"})"),
                  {"cfg.json: architectures: must be a list of strings"}));
}

TEST(ConfigTest, RejectsBadSizesNamingTheKey) {
  for (const char* key : {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                          "num_attention_heads", "num_key_value_heads", "head_dim",
                          "max_position_embeddings", "sliding_window", "query_pre_attn_scalar"}) {
    for (const char* bad : {"0", "-3", "2.5", "\"8\"", "true", "null"}) {
      if (std::string(key) == "sliding_window" && std::string(bad) == "null") continue;
      SCOPED_TRACE(std::string(key) + " = " + bad);
      const auto c =
          Parse(std::string(R"({"model_type": "gemma3_text", ")") + key + "\": " + bad + "}");
      EXPECT_TRUE(FailsWith(c, {std::string("cfg.json: ") + key + ": must be a positive integer"}));
    }
  }
  EXPECT_TRUE(ConfigFails(Parse(R"({"model_type": "gemma3_text", "num_hidden_layers": 100000})"),
                          {"cfg.json: num_hidden_layers: 100000 is implausibly large"}));
  EXPECT_TRUE(ConfigFails(Parse(R"({"model_type": "gemma3_text", "hidden_size": 99999999999})"),
                          {"cfg.json: hidden_size: 99999999999 is implausibly large"}));
  EXPECT_TRUE(ConfigFails(Parse(R"({"model_type": "gemma3_text", "rms_norm_eps": -1e-6})"),
                          {"cfg.json: rms_norm_eps: must not be negative"}));
}

TEST(ConfigTest, DeepOrLongValuesGiveShortOneLineErrors) {
  const std::size_t depth = 200000;
  const auto deep = Parse(R"({"model_type": "gemma3_text", "hidden_size": )" +
                          std::string(depth, '[') + std::string(depth, ']') + "}");
  EXPECT_TRUE(
      ConfigFails(deep, {"cfg.json: hidden_size: must be a positive integer, got [[[[[...]]]]]"}));
  const auto long_string =
      Parse(R"({"model_type": "gemma3_text", "head_dim": ")" + std::string(100000, 'x') + "\"}");
  ASSERT_FALSE(long_string.ok());
  EXPECT_LT(long_string.error().message().size(), 200u);
  const auto tensor_name = Parse(R"({"model_type": "gemma3_text", "hidden_activation": "a\nb"})");
  EXPECT_TRUE(ConfigFails(tensor_name, {"unsupported activation 'a\\x0ab'"}));
}

TEST(ConfigTest, RejectsHeadsThatAreNotAMultipleOfKvHeads) {
  EXPECT_TRUE(ConfigFails(
      Parse(R"({"model_type": "gemma3_text", "num_attention_heads": 6, "num_key_value_heads": 4})"),
      {"cfg.json: num_attention_heads: 6 is not a multiple of num_key_value_heads 4"}));
  // The kv-heads default (4) applies when the key is absent.
  EXPECT_TRUE(ConfigFails(Parse(R"({"model_type": "gemma3_text", "num_attention_heads": 2})"),
                          {"num_attention_heads: 2 is not a multiple of num_key_value_heads 4"}));
}

TEST(ConfigTest, RejectsBadLayerTypes) {
  EXPECT_TRUE(ConfigFails(Parse(R"({"model_type": "gemma3_text", "num_hidden_layers": 2,
                                  "layer_types": ["full_attention"]})"),
                          {"cfg.json: layer_types: has 1 entries but num_hidden_layers is 2"}));
  EXPECT_TRUE(ConfigFails(Parse(R"({"model_type": "gemma3_text", "num_hidden_layers": 1,
                                  "layer_types": ["global"]})"),
                          {"cfg.json: layer_types: entry 0 is \"global\""}));
  EXPECT_TRUE(
      ConfigFails(Parse(R"({"model_type": "gemma3_text", "layer_types": "sliding_attention"})"),
                  {"cfg.json: layer_types: must be a list of strings"}));
}

TEST(ConfigTest, RejectsUnsupportedFeatures) {
  EXPECT_TRUE(
      ConfigFails(Parse(R"({"model_type": "gemma3_text", "use_bidirectional_attention": true})"),
                  {"cfg.json: use_bidirectional_attention: true is not supported"}));
  EXPECT_TRUE(Parse(R"({"model_type": "gemma3_text", "use_bidirectional_attention": null})").ok());
  EXPECT_TRUE(ConfigFails(Parse(R"({"model_type": "gemma3_text", "hidden_activation": "silu"})"),
                          {"cfg.json: hidden_activation: unsupported activation 'silu'",
                           "fgnet runs gelu_pytorch_tanh"}));
  EXPECT_TRUE(ConfigFails(Parse(R"({"model_type": "gemma3_text", "attention_bias": true})"),
                          {"cfg.json: attention_bias: true is not supported"}));
  EXPECT_TRUE(ConfigFails(Parse(R"({"model_type": "gemma3_text", "tie_word_embeddings": "yes"})"),
                          {"cfg.json: tie_word_embeddings: must be true or false"}));
  // hidden_act is ignored, as transformers ignores it for Gemma 3.
  const auto c = Parse(R"({"model_type": "gemma3_text", "hidden_act": "gelu"})");
  ASSERT_TRUE(c.ok()) << c.error().message();
  EXPECT_EQ(c->hidden_activation, "gelu_pytorch_tanh");
  // A null window is fine only without sliding layers.
  const auto full = Parse(R"({"model_type": "gemma3_text", "num_hidden_layers": 1,
                             "sliding_window": null, "layer_types": ["full_attention"]})");
  ASSERT_TRUE(full.ok()) << full.error().message();
  EXPECT_EQ(full->sliding_window, 0);
}

TEST(ConfigTest, LoadNamesTheFile) {
  TempDir dir;
  EXPECT_TRUE(FailsWith(LoadGemma3Config(dir.File("config.json")),
                        {dir.File("config.json"), "cannot open"}));
  WriteFile(dir.File("config.json"), "{\"model_type\": ");
  EXPECT_TRUE(FailsWith(LoadGemma3Config(dir.File("config.json")),
                        {dir.File("config.json"), "invalid JSON"}));
  WriteFile(dir.File("config.json"), R"({"model_type": "gemma3_text", "head_dim": -1})");
  EXPECT_TRUE(FailsWith(LoadGemma3Config(dir.File("config.json")),
                        {dir.File("config.json") + ": head_dim: must be a positive integer"}));
}

TEST(ConfigTest, ToJsonWritesThe5xFormAndReadsBack) {
  std::vector<Gemma3Config> configs;
  configs.push_back(testing::TinyConfig());
  Gemma3Config c = *ParseGemma3Config(FixtureCase("hf4_270m")["config"], "x");
  configs.push_back(c);
  c.rope_scaling_global = 8;
  c.rope_scaling_local = 2;
  c.rope_theta_local = 12345.5;
  c.final_logit_softcapping = 30;
  c.attn_logit_softcapping = 50.5;
  c.eos_token_ids = {1, 106};
  c.bos_token_id = -1;
  c.pad_token_id = -1;
  c.tie_word_embeddings = false;
  c.torch_dtype = "";
  configs.push_back(c);
  c.eos_token_ids = {};
  c.layer_types.assign(18, LayerType::kGlobal);
  c.sliding_window = 0;
  configs.push_back(c);
  for (const auto& config : configs) {
    const Json j = Gemma3ConfigToJson(config);
    SCOPED_TRACE(j.dump());
    EXPECT_EQ(j["model_type"], "gemma3_text");
    EXPECT_TRUE(j.contains("rope_parameters"));
    EXPECT_TRUE(j.contains("layer_types"));
    EXPECT_FALSE(j.contains("rope_theta"));
    EXPECT_FALSE(j.contains("rope_scaling"));
    EXPECT_TRUE(j["query_pre_attn_scalar"].is_number_integer());
    auto back = ParseGemma3Config(j, "roundtrip");
    ASSERT_TRUE(back.ok()) << back.error().message();
    Gemma3Config expected = config;
    expected.architectures = {"Gemma3ForCausalLM"};
    EXPECT_TRUE(*back == expected);
  }
}

}  // namespace
}  // namespace fgnet
