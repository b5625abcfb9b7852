#include "engine/generation_config.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

namespace fgnet {
namespace {

namespace fs = std::filesystem;

class GenerationConfigFile : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) /
           ("genconfig_" +
            std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string Write(const std::string& text) {
    const fs::path path = dir_ / "generation_config.json";
    std::ofstream(path) << text;
    return path.string();
  }
  fs::path dir_;
};

TEST_F(GenerationConfigFile, MissingFileGivesTransformersDefaults) {
  const Result<GenerationConfig> c = LoadGenerationConfig(dir_.string());
  ASSERT_TRUE(c.ok()) << c.error().message();
  EXPECT_FALSE(c->from_file);
  EXPECT_FALSE(c->do_sample);
  EXPECT_EQ(c->temperature, 1.0f);
  EXPECT_EQ(c->top_k, 50);
  EXPECT_EQ(c->top_p, 1.0f);
  EXPECT_EQ(c->min_p, 0.0f);
  EXPECT_EQ(c->repetition_penalty, 1.0f);
  EXPECT_FALSE(c->max_new_tokens.has_value());
  EXPECT_EQ(c->max_length, 20);
  EXPECT_TRUE(c->eos_token_ids.empty());
  EXPECT_EQ(c->MaxNewTokens(5), 15);
  EXPECT_EQ(c->MaxNewTokens(30), 0);
  EXPECT_TRUE(c->ToSamplingParams(1).greedy());
}

TEST_F(GenerationConfigFile, FunctionGemmaConfig) {
  const std::string path = Write(R"({
    "cache_implementation": "hybrid", "do_sample": true, "top_k": 64, "top_p": 0.95,
    "bos_token_id": 2, "eos_token_id": [1, 106], "pad_token_id": 0,
    "transformers_version": "4.57.0"})");
  for (const std::string& where : {path, dir_.string()}) {
    const Result<GenerationConfig> c = LoadGenerationConfig(where);
    ASSERT_TRUE(c.ok()) << c.error().message();
    EXPECT_TRUE(c->from_file);
    EXPECT_TRUE(c->do_sample);
    EXPECT_EQ(c->top_k, 64);
    EXPECT_FLOAT_EQ(c->top_p, 0.95f);
    EXPECT_EQ(c->temperature, 1.0f);
    EXPECT_EQ(c->eos_token_ids, (std::vector<std::int32_t>{1, 106}));
    EXPECT_EQ(c->bos_token_id, 2);
    EXPECT_EQ(c->pad_token_id, 0);
    const SamplingParams p = c->ToSamplingParams(77);
    EXPECT_FALSE(p.greedy());
    EXPECT_EQ(p.top_k, 64);
    EXPECT_EQ(p.seed, 77u);
    EXPECT_TRUE(p.Validate().ok());
  }
}

TEST(GenerationConfig, ScalarEosNullsAndLengths) {
  const Result<GenerationConfig> c = ParseGenerationConfig(
      Json::parse(
          R"({"eos_token_id": 1, "temperature": null, "min_p": 0.1, "repetition_penalty": 1.2,
                      "max_new_tokens": 128, "max_length": 4096, "top_k": 0})"),
      "generation_config.json");
  ASSERT_TRUE(c.ok()) << c.error().message();
  EXPECT_EQ(c->eos_token_ids, (std::vector<std::int32_t>{1}));
  EXPECT_EQ(c->temperature, 1.0f);
  EXPECT_FLOAT_EQ(c->min_p, 0.1f);
  EXPECT_FLOAT_EQ(c->repetition_penalty, 1.2f);
  EXPECT_EQ(c->top_k, 0);
  EXPECT_EQ(c->MaxNewTokens(100), 128);
}

TEST(GenerationConfig, BadValuesNameFileAndKey) {
  const std::vector<std::pair<const char*, const char*>> cases = {
      {R"({"top_p": 1.5})", "cfg.json: key 'top_p': expected a number in (0, 1], got 1.5"},
      {R"({"top_p": 0})", "key 'top_p'"},
      {R"({"temperature": -1})", "key 'temperature': expected a number >= 0, got -1"},
      {R"({"top_k": 1.5})", "key 'top_k': expected an integer >= 0, got 1.5"},
      {R"({"top_k": "64"})", "key 'top_k': expected an integer >= 0, got \"64\""},
      {R"({"min_p": 2})", "key 'min_p'"},
      {R"({"repetition_penalty": 0})", "key 'repetition_penalty'"},
      {R"({"do_sample": "yes"})", "key 'do_sample': expected true or false"},
      {R"({"max_new_tokens": -1})", "key 'max_new_tokens'"},
      {R"({"max_length": 1e3})", "key 'max_length'"},
      {R"({"eos_token_id": ["a"]})", "key 'eos_token_id': expected a token id or a list"},
      {R"({"eos_token_id": -1})", "key 'eos_token_id'"},
      {R"({"bos_token_id": 3000000000})", "key 'bos_token_id'"},
      {R"([1, 2])", "cfg.json: expected a JSON object"},
  };
  for (const auto& [json, expected] : cases) {
    const Result<GenerationConfig> c = ParseGenerationConfig(Json::parse(json), "cfg.json");
    ASSERT_FALSE(c.ok()) << json;
    EXPECT_NE(c.error().message().find(expected), std::string::npos)
        << json << " -> " << c.error().message();
  }
}

TEST_F(GenerationConfigFile, InvalidJsonNamesTheFile) {
  const std::string path = Write("{\"top_k\": 64,");
  const Result<GenerationConfig> c = LoadGenerationConfig(path);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.error().message().find(path), std::string::npos) << c.error().message();
}

}  // namespace
}  // namespace fgnet
