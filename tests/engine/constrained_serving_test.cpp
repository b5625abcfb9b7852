// Constrained requests through the engine on a random model with Gemma 3's vocabulary and its real
// tokenizer: whatever the (meaningless) model prefers, the output parses (JSON Schema,
// FunctionGemma calls restricted to the declared tools, a regex), also when the token budget is
// tight, and with several constrained requests in one batch.

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "forward_reference.h"
#include "gemma_vocab_model.h"
#include "gtest/gtest.h"
#include "model/gemma3_model.h"
#include "tokenizer/function_call.h"
#include "tokenizer/functiongemma_vocab.h"

namespace fgnet {
namespace {

using testing::GemmaVocabConfig;

class ConstrainedServingTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto tokenizer = testing::FunctionGemmaTestTokenizer();
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.error().message();
    tokenizer_ = new Tokenizer(std::move(*tokenizer));
    ckpt_ = new testing::RandomCheckpoint(GemmaVocabConfig(), DType::kF32, 5);
    auto model = Gemma3Model::Create(ckpt_->config(), ckpt_->weights());
    ASSERT_TRUE(model.ok());
    model_ = new Gemma3Model(std::move(*model));
    EngineOptions options;
    options.threads = 2;
    options.stop_ids = {*tokenizer_->TokenId("<end_of_turn>"), *tokenizer_->TokenId("<eos>")};
    auto engine = Engine::Create(*model_, "random", tokenizer_, nullptr, options);
    ASSERT_TRUE(engine.ok());
    engine_ = engine->release();
  }
  static void TearDownTestSuite() {
    delete engine_;
    delete model_;
    delete ckpt_;
    delete tokenizer_;
  }

  static Request Sampled(std::uint64_t seed, std::int64_t max_tokens) {
    Request r;
    r.prompt = "<bos><start_of_turn>user\nanswer<end_of_turn>\n<start_of_turn>model\n";
    r.sampling = {.do_sample = true, .temperature = 1.0f, .seed = seed};
    r.max_tokens = max_tokens;
    return r;
  }

  static Tokenizer* tokenizer_;
  static testing::RandomCheckpoint* ckpt_;
  static Gemma3Model* model_;
  static Engine* engine_;
};

Tokenizer* ConstrainedServingTest::tokenizer_ = nullptr;
testing::RandomCheckpoint* ConstrainedServingTest::ckpt_ = nullptr;
Gemma3Model* ConstrainedServingTest::model_ = nullptr;
Engine* ConstrainedServingTest::engine_ = nullptr;

const Json& PersonSchema() {
  static const Json schema = Json::parse(R"({
    "type": "object",
    "properties": {
      "name": {"type": "string", "maxLength": 12},
      "age": {"type": "integer"},
      "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "maxItems": 3},
      "ok": {"type": "boolean"}
    },
    "required": ["name", "age"],
    "additionalProperties": false
  })");
  return schema;
}

void ExpectPerson(const std::string& text) {
  const Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(j.is_discarded()) << text;
  ASSERT_TRUE(j.is_object()) << text;
  EXPECT_TRUE(j.contains("name") && j["name"].is_string()) << text;
  EXPECT_TRUE(j.contains("age") && j["age"].is_number_integer()) << text;
  for (const auto& [key, value] : j.items()) {
    EXPECT_TRUE(key == "name" || key == "age" || key == "tags" || key == "ok") << text;
  }
}

TEST_F(ConstrainedServingTest, JsonSchemaOutputsAlwaysParse) {
  std::vector<RequestHandle> handles;
  for (std::uint64_t seed = 1; seed <= 8; ++seed) {
    Request r = Sampled(seed, seed % 2 == 0 ? 60 : 400);  // tight and loose budgets
    r.json_schema = PersonSchema();
    handles.push_back(engine_->Submit(r));
  }
  for (RequestHandle& h : handles) {
    const Completion& c = h.Wait();
    ASSERT_TRUE(c.status.ok()) << c.status.error().message();
    EXPECT_EQ(c.finish_reason, "stop") << c.text;
    ExpectPerson(c.text);
  }
}

TEST_F(ConstrainedServingTest, FunctionCallsNameOnlyDeclaredToolsAndParameters) {
  const Json tools = Json::parse(R"([
    {"type": "function", "function": {"name": "get_weather", "description": "Weather",
      "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}, "days": {"type": "integer"}}, "required": ["city"]}}},
    {"type": "function", "function": {"name": "stop_timer", "description": "Stop",
      "parameters": {"type": "object", "properties": {}}}}])");
  const std::int32_t response = *tokenizer_->TokenId("<start_function_response>");
  std::vector<RequestHandle> handles;
  for (std::uint64_t seed = 1; seed <= 6; ++seed) {
    Request r = Sampled(seed, 120);
    r.prompt.clear();
    r.messages = Json::parse(R"([{"role": "user", "content": "weather in Paris?"}])");
    r.tools = tools;
    r.constrain_tools = true;
    r.stop_ids = {response};
    handles.push_back(engine_->Submit(r));
  }
  for (RequestHandle& h : handles) {
    const Completion& c = h.Wait();
    ASSERT_TRUE(c.status.ok()) << c.status.error().message();
    auto parsed = ParseModelOutput(tokenizer_->Decode(c.ids));
    ASSERT_TRUE(parsed.ok()) << parsed.error().message();
    ASSERT_FALSE(parsed->calls.empty());
    for (const FunctionCall& call : parsed->calls) {
      ASSERT_TRUE(call.name == "get_weather" || call.name == "stop_timer") << call.name;
      if (call.name == "get_weather") {
        EXPECT_TRUE(call.arguments.contains("city"));
        for (const auto& [key, value] : call.arguments.items())
          EXPECT_TRUE(key == "city" || key == "days") << key;
      } else {
        EXPECT_TRUE(call.arguments.empty());
      }
    }
  }
  const EngineMetrics m = engine_->Metrics();
  std::printf("grammar masks: %llu, %.3f ms each on average\n",
              static_cast<unsigned long long>(m.grammar_masks),
              m.grammar_mask_ms / static_cast<double>(std::max<std::uint64_t>(1, m.grammar_masks)));
}

TEST_F(ConstrainedServingTest, RegexOutputsMatch) {
  std::vector<RequestHandle> handles;
  for (std::uint64_t seed = 1; seed <= 6; ++seed) {
    Request r = Sampled(seed, 30);
    r.regex = "(yes|no), [0-9]{1,3} items?";
    handles.push_back(engine_->Submit(r));
  }
  for (RequestHandle& h : handles) {
    const Completion& c = h.Wait();
    ASSERT_TRUE(c.status.ok()) << c.status.error().message();
    EXPECT_TRUE(std::regex_match(c.text, std::regex("(yes|no), [0-9]{1,3} items?"))) << c.text;
  }
}

TEST_F(ConstrainedServingTest, BadSchemasAreRequestErrors) {
  Request r = Sampled(1, 10);
  r.json_schema = Json::parse(R"({"type": "string", "pattern": "a+"})");
  RequestHandle h = engine_->Submit(r);
  const Completion& c = h.Wait();
  ASSERT_FALSE(c.status.ok());
  EXPECT_NE(c.status.error().message().find("pattern"), std::string::npos);
}

}  // namespace
}  // namespace fgnet
