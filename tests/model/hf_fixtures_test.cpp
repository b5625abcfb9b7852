// Checkpoints written by transformers 5.x save_pretrained (tests/fixtures/model_io/, made by
// tools/make_model_io_fixtures.py): the reader must see every tensor exactly as the safetensors
// library does, and Checkpoint::Open must bind them.
#include <gtest/gtest.h>

#include <cmath>

#include "model/checkpoint.h"
#include "model/safetensors.h"
#include "tiny_checkpoint.h"

namespace fgnet {
namespace {

using testing::ValueAt;

const std::string kFixtures = std::string(FGNET_TEST_DATA_DIR) + "/model_io/";

TEST(HfFixturesTest, ReaderSeesWhatSafetensorsSees) {
  for (const char* name : {"causal_tied_f32", "causal_untied_bf16_sharded", "mm_bf16"}) {
    SCOPED_TRACE(name);
    const std::string dir = kFixtures + name;
    auto set = SafetensorsSet::OpenDirectory(dir);
    ASSERT_TRUE(set.ok()) << set.error().message();
    auto manifest = ReadJsonFile(dir + "/manifest.json");
    ASSERT_TRUE(manifest.ok()) << manifest.error().message();
    EXPECT_EQ(set->all().size(), manifest->size());
    for (const auto& [tensor, m] : manifest->items()) {
      SCOPED_TRACE(tensor);
      const TensorView* view = set->Find(tensor);
      ASSERT_NE(view, nullptr);
      EXPECT_EQ(DTypeName(view->dtype), m["dtype"].get<std::string>());
      EXPECT_EQ(view->shape, m["shape"].get<std::vector<std::int64_t>>());
      EXPECT_EQ(set->FileOf(tensor), dir + "/" + m["file"].get<std::string>());
      const auto first = m["first"].get<std::vector<double>>();
      for (std::size_t i = 0; i < first.size(); ++i) {
        EXPECT_EQ(static_cast<double>(ValueAt(*view, static_cast<std::int64_t>(i))), first[i]);
      }
      double sum = 0;
      for (std::int64_t i = 0; i < view->num_elements(); ++i) sum += ValueAt(*view, i);
      const double expected = m["sum"].get<double>();
      EXPECT_NEAR(sum, expected, 1e-9 * (1 + std::abs(expected)));
    }
  }
}

TEST(HfFixturesTest, TiedTextCheckpoint) {
  auto ck = Checkpoint::Open(kFixtures + "causal_tied_f32");
  ASSERT_TRUE(ck.ok()) << ck.error().message();
  const Gemma3Config& c = ck->config();
  EXPECT_EQ(c.vocab_size, 64);
  EXPECT_EQ(c.hidden_size, 16);
  EXPECT_EQ(c.num_hidden_layers, 3);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_EQ(c.query_pre_attn_scalar, 8);
  EXPECT_EQ(c.final_logit_softcapping, 30.0);
  EXPECT_EQ(c.layer_types,
            (std::vector<LayerType>{LayerType::kSliding, LayerType::kSliding, LayerType::kGlobal}));
  EXPECT_EQ(c.torch_dtype, "float32");
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(ck->weights().lm_head.data, ck->weights().embed_tokens.data);
  EXPECT_TRUE(ck->unused_tensors().empty());
  EXPECT_EQ(ck->num_model_parameters(), ck->tensors().total_elements());
  EXPECT_EQ(ck->generation_config_path(), kFixtures + "causal_tied_f32/generation_config.json");
  EXPECT_EQ(ck->tokenizer_path(), "");
}

TEST(HfFixturesTest, UntiedShardedCheckpoint) {
  auto ck = Checkpoint::Open(kFixtures + "causal_untied_bf16_sharded");
  ASSERT_TRUE(ck.ok()) << ck.error().message();
  EXPECT_EQ(ck->tensors().num_files(), 8u);
  EXPECT_FALSE(ck->config().tie_word_embeddings);
  EXPECT_NE(ck->weights().lm_head.data, ck->weights().embed_tokens.data);
  EXPECT_EQ(ck->weights().lm_head.data, ck->tensors().Find("lm_head.weight")->data);
  EXPECT_EQ(ck->weights().layers[2].down_proj.dtype, DType::kBF16);
  EXPECT_TRUE(ck->unused_tensors().empty());
  EXPECT_EQ(ck->num_model_parameters(), ck->tensors().total_elements());
}

TEST(HfFixturesTest, MultimodalCheckpoint) {
  auto ck = Checkpoint::Open(kFixtures + "mm_bf16");
  ASSERT_TRUE(ck.ok()) << ck.error().message();
  EXPECT_TRUE(ck->config().multimodal);
  EXPECT_EQ(ck->tensor_prefix(), "language_model.model.");
  EXPECT_TRUE(ck->config().tie_word_embeddings);
  EXPECT_EQ(ck->config().hidden_size, 16);
  EXPECT_EQ(ck->weights().embed_tokens.data,
            ck->tensors().Find("language_model.model.embed_tokens.weight")->data);
  std::size_t vision = 0;
  for (const auto& name : ck->unused_tensors()) {
    EXPECT_TRUE(name.starts_with("vision_tower.") || name.starts_with("multi_modal_projector."))
        << name;
    ++vision;
  }
  EXPECT_EQ(vision + 3 * 13 + 2, ck->tensors().all().size());
}

}  // namespace
}  // namespace fgnet
