#include "model/synth.h"

#include <gtest/gtest.h>

#include <cmath>

#include "model/checkpoint.h"
#include "tiny_checkpoint.h"

namespace fgnet {
namespace {

Gemma3Config SmallConfig() {
  Gemma3Config c = Gemma3_270MConfig();
  c.vocab_size = 64;
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.num_hidden_layers = 3;
  c.head_dim = 8;
  c.sliding_window = 4;
  c.layer_types = {LayerType::kSliding, LayerType::kSliding, LayerType::kGlobal};
  return c;
}

TEST(Synth, PresetIsThePublished270M) {
  const auto c = FindPresetConfig("functiongemma-270m");
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->hidden_size, 640);
  EXPECT_EQ(c->vocab_size, 262144);
  EXPECT_EQ(c->num_hidden_layers, 18);
  EXPECT_EQ(c->q_dim(), 1024);
  EXPECT_EQ(c->kv_dim(), 256);
  int global = 0;
  for (std::int64_t l = 0; l < c->num_hidden_layers; ++l) global += !c->is_sliding(l);
  EXPECT_EQ(global, 3);
  EXPECT_FALSE(c->is_sliding(5));
  EXPECT_FALSE(c->is_sliding(17));
  EXPECT_FALSE(FindPresetConfig("llama-7b").has_value());
}

TEST(Synth, WritesACheckpointThatLoadsAndIsReproducible) {
  testing::TempDir a, b, c;
  SynthOptions options;
  options.seed = 7;
  for (auto dtype : {DType::kBF16, DType::kF32}) {
    options.dtype = dtype;
    const auto bytes = WriteRandomCheckpoint(SmallConfig(), options, a.path());
    ASSERT_TRUE(bytes.ok()) << bytes.error().message();
    auto checkpoint = Checkpoint::Open(a.path());
    ASSERT_TRUE(checkpoint.ok()) << checkpoint.error().message();
    EXPECT_EQ(checkpoint->config().hidden_size, 16);
    EXPECT_EQ(checkpoint->weights().layers.size(), 3u);
    EXPECT_EQ(checkpoint->weights().embed_tokens.dtype, dtype);
    // Values are spread around zero with roughly the requested deviation.
    const auto& embed = checkpoint->weights().embed_tokens;
    double sum_sq = 0;
    for (std::int64_t i = 0; i < embed.num_elements(); ++i) {
      const double v = testing::ValueAt(embed, i);
      sum_sq += v * v;
    }
    EXPECT_NEAR(std::sqrt(sum_sq / static_cast<double>(embed.num_elements())),
                options.weight_stddev, options.weight_stddev * 0.1);
  }
  options.dtype = DType::kBF16;
  ASSERT_TRUE(WriteRandomCheckpoint(SmallConfig(), options, a.path()).ok());
  ASSERT_TRUE(WriteRandomCheckpoint(SmallConfig(), options, b.path()).ok());
  EXPECT_EQ(testing::ReadFile(a.File("model.safetensors")),
            testing::ReadFile(b.File("model.safetensors")));
  options.seed = 8;
  ASSERT_TRUE(WriteRandomCheckpoint(SmallConfig(), options, c.path()).ok());
  EXPECT_NE(testing::ReadFile(a.File("model.safetensors")),
            testing::ReadFile(c.File("model.safetensors")));
}

TEST(Synth, UnwritableDirectoryIsAnError) {
  const auto result = WriteRandomCheckpoint(SmallConfig(), {}, "/proc/fgnet-cannot-write-here");
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.error().message().find("/proc/fgnet-cannot-write-here"), std::string::npos);
}

}  // namespace
}  // namespace fgnet
