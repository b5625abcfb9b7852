// Gemma3Model::HiddenStates against transformers' output_hidden_states on the committed parity
// checkpoints (tests/fixtures/hidden_states/<name>/, made by tools/make_hidden_state_fixtures.py:
// hidden_states.npy f32 [len(indices), n_prompt, hidden] and hidden_states.json with the
// indices), plus its consistency with Forward: the final-normed state times the output matrix is
// the logits, with and without an adapter, over prompts longer than one internal pass.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "forward_reference.h"
#include "model/checkpoint.h"
#include "model/gemma3_model.h"
#include "model/kv_cache.h"
#include "model/synth.h"
#include "util/json.h"
#include "util/npy.h"
#include "util/status.h"
#include "util/thread_pool.h"

namespace fgnet {
namespace {

using testing::RandomCheckpoint;
using testing::RandomTokens;

// Largest accepted max |fgnet - transformers| / max |transformers| over one hidden state.
constexpr double kRelTolerance = 1e-4;

struct Diff {
  double max_abs = 0.0;
  double max_ref = 0.0;
  double rel() const { return max_ref > 0.0 ? max_abs / max_ref : max_abs; }
};

Diff Compare(std::span<const float> got, std::span<const float> want) {
  Diff d;
  for (std::size_t i = 0; i < want.size(); ++i) {
    double e = std::fabs(static_cast<double>(got[i]) - static_cast<double>(want[i]));
    if (std::isnan(e)) e = 1e30;
    d.max_abs = std::max(d.max_abs, e);
    d.max_ref = std::max(d.max_ref, std::fabs(static_cast<double>(want[i])));
  }
  return d;
}

// rows [n, hidden] times the output matrix [vocab, hidden] transposed: [n, vocab], in double.
std::vector<float> TimesOutputMatrix(std::span<const float> rows, const TensorView& matrix,
                                     std::size_t hidden, std::size_t vocab) {
  const std::size_t n = rows.size() / hidden;
  std::vector<float> out(n * vocab);
  for (std::size_t t = 0; t < n; ++t) {
    for (std::size_t v = 0; v < vocab; ++v) {
      double sum = 0.0;
      for (std::size_t j = 0; j < hidden; ++j) {
        sum += static_cast<double>(rows[t * hidden + j]) *
               RandomCheckpoint::At(matrix, v * hidden + j);
      }
      out[t * vocab + v] = static_cast<float>(sum);
    }
  }
  return out;
}

class HiddenStatesParityTest : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    const std::string data = FGNET_TEST_DATA_DIR;
    auto checkpoint = Checkpoint::Open(data + "/parity/" + GetParam());
    ASSERT_TRUE(checkpoint.ok()) << checkpoint.error().message();
    checkpoint_ = std::make_unique<Checkpoint>(std::move(checkpoint).value());
    auto model = Gemma3Model::Create(checkpoint_->config(), checkpoint_->weights());
    ASSERT_TRUE(model.ok()) << model.error().message();
    model_ = std::make_unique<Gemma3Model>(std::move(model).value());

    auto prompt = ReadJsonFile(data + "/parity/" + GetParam() + "/prompt.json");
    ASSERT_TRUE(prompt.ok()) << prompt.error().message();
    for (const Json& id : prompt.value().at("input_ids")) prompt_.push_back(id.get<std::int32_t>());
    const std::string dir = data + "/hidden_states/" + GetParam();
    auto meta = ReadJsonFile(dir + "/hidden_states.json");
    ASSERT_TRUE(meta.ok()) << meta.error().message();
    for (const Json& i : meta.value().at("indices")) indices_.push_back(i.get<std::int64_t>());
    auto npy = ReadNpy(dir + "/hidden_states.npy");
    ASSERT_TRUE(npy.ok()) << npy.error().message();
    hidden_ = static_cast<std::size_t>(checkpoint_->config().hidden_size);
    ASSERT_EQ(npy.value().shape,
              (std::vector<std::int64_t>{static_cast<std::int64_t>(indices_.size()),
                                         static_cast<std::int64_t>(prompt_.size()),
                                         static_cast<std::int64_t>(hidden_)}));
    auto values = npy.value().AsFloat32();
    ASSERT_TRUE(values.ok()) << values.error().message();
    states_ = std::move(values).value();
  }

  std::span<const float> State(std::size_t k) const {
    const std::size_t size = prompt_.size() * hidden_;
    return std::span<const float>(states_).subspan(k * size, size);
  }

  std::unique_ptr<Checkpoint> checkpoint_;
  std::unique_ptr<Gemma3Model> model_;
  std::vector<std::int32_t> prompt_;
  std::vector<std::int64_t> indices_;
  std::vector<float> states_;
  std::size_t hidden_ = 0;
  ThreadPool pool_{2};
};

TEST_P(HiddenStatesParityTest, MatchesTransformersAtEveryStoredIndex) {
  const std::int64_t layers = checkpoint_->config().num_hidden_layers;
  ASSERT_TRUE(std::find(indices_.begin(), indices_.end(), 0) != indices_.end());
  ASSERT_TRUE(std::find(indices_.begin(), indices_.end(), layers) != indices_.end());
  for (std::size_t k = 0; k < indices_.size(); ++k) {
    std::vector<float> got;
    Status status = model_->HiddenStates(prompt_, indices_[k], pool_, &got);
    ASSERT_TRUE(status.ok()) << status.error().message();
    ASSERT_EQ(got.size(), prompt_.size() * hidden_);
    const Diff d = Compare(got, State(k));
    EXPECT_LE(d.rel(), kRelTolerance) << GetParam() << " index " << indices_[k] << ": max abs "
                                      << d.max_abs << ", max |ref| " << d.max_ref;
    std::printf("%s index %lld: max abs %.3g, rel %.3g\n", GetParam(),
                static_cast<long long>(indices_[k]), d.max_abs, d.rel());
    // The same state counted from the end.
    std::vector<float> from_end;
    ASSERT_TRUE(model_->HiddenStates(prompt_, indices_[k] - layers - 1, pool_, &from_end).ok());
    EXPECT_EQ(from_end, got);
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, HiddenStatesParityTest,
                         ::testing::Values("mqa_bf16_v4", "gqa_f32_v5", "untied_f16"));

TEST(HiddenStatesTest, FinalStateTimesEmbeddingsIsTheLogits) {
  // mqa_bf16_v4: tied embeddings, no final softcap.
  auto checkpoint = Checkpoint::Open(std::string(FGNET_TEST_DATA_DIR) + "/parity/mqa_bf16_v4");
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.error().message();
  const Gemma3Config& c = checkpoint.value().config();
  ASSERT_FALSE(c.final_logit_softcapping.has_value());
  auto model = Gemma3Model::Create(c, checkpoint.value().weights());
  ASSERT_TRUE(model.ok()) << model.error().message();
  ThreadPool pool(2);
  const std::vector<std::int32_t> tokens = RandomTokens(23, c.vocab_size, 5);
  std::vector<float> hidden, logits;
  ASSERT_TRUE(model.value().HiddenStates(tokens, -1, pool, &hidden).ok());
  KVCache kv = model.value().NewKVCache(23);
  ASSERT_TRUE(model.value().Forward(tokens, kv, pool, LogitsMode::kAll, &logits).ok());
  const std::vector<float> product = TimesOutputMatrix(
      hidden, checkpoint.value().weights().embed_tokens, static_cast<std::size_t>(c.hidden_size),
      static_cast<std::size_t>(c.vocab_size));
  EXPECT_LE(Compare(product, logits).max_abs, 1e-3);
}

Gemma3Config SmallConfig() {
  Gemma3Config c;
  c.vocab_size = 37;
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.num_hidden_layers = 3;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 1;
  c.head_dim = 8;
  c.sliding_window = 5;
  c.layer_types = {LayerType::kSliding, LayerType::kGlobal, LayerType::kSliding};
  c.query_pre_attn_scalar = 8.0;
  c.max_position_embeddings = 2048;
  return c;
}

TEST(HiddenStatesTest, AdapterChangesStatesAsForwardDoesOverSeveralPasses) {
  const RandomCheckpoint checkpoint(SmallConfig(), DType::kF32, 11);
  const Gemma3Config& c = checkpoint.config();
  auto model = Gemma3Model::Create(c, checkpoint.weights());
  ASSERT_TRUE(model.ok()) << model.error().message();
  const LoraAdapter adapter = RandomLoraAdapter(c, 2, 3, "route", 0.15f);
  const AdapterUse use[] = {{&adapter, 1.0f, 0}};
  ThreadPool pool(2);
  // Longer than one internal pass of 512 tokens.
  const std::vector<std::int32_t> tokens = RandomTokens(600, c.vocab_size, 9);
  const auto hidden = static_cast<std::size_t>(c.hidden_size);
  const auto vocab = static_cast<std::size_t>(c.vocab_size);
  for (const bool adapted : {false, true}) {
    const std::span<const AdapterUse> adapters =
        adapted ? std::span<const AdapterUse>(use) : std::span<const AdapterUse>();
    std::vector<float> state, logits;
    ASSERT_TRUE(model.value().HiddenStates(tokens, 3, pool, &state, adapters).ok());
    KVCache kv = model.value().NewKVCache(600);
    ASSERT_TRUE(model.value().Forward(tokens, kv, pool, LogitsMode::kAll, &logits, adapters).ok());
    const std::vector<float> product =
        TimesOutputMatrix(state, checkpoint.weights().embed_tokens, hidden, vocab);
    EXPECT_LE(Compare(product, logits).max_abs, 1e-3) << "adapted " << adapted;
  }
  // Every index after the embeddings moves with the adapter; the embeddings do not.
  for (std::int64_t index = 0; index <= 3; ++index) {
    std::vector<float> base, adapted;
    ASSERT_TRUE(model.value().HiddenStates(tokens, index, pool, &base).ok());
    ASSERT_TRUE(model.value().HiddenStates(tokens, index, pool, &adapted, use).ok());
    if (index == 0) {
      EXPECT_EQ(base, adapted);
    } else {
      EXPECT_GT(Compare(adapted, base).max_abs, 1e-3) << "index " << index;
    }
  }
}

TEST(HiddenStatesTest, EarlyIndicesAreThePrefixOfLaterComputation) {
  // Index 0 is the scaled embedding row.
  const RandomCheckpoint checkpoint(SmallConfig(), DType::kF32, 12);
  const Gemma3Config& c = checkpoint.config();
  auto model = Gemma3Model::Create(c, checkpoint.weights());
  ASSERT_TRUE(model.ok());
  ThreadPool pool(1);
  const std::vector<std::int32_t> tokens = {4, 0, 36, 4};
  std::vector<float> state;
  ASSERT_TRUE(model.value().HiddenStates(tokens, 0, pool, &state).ok());
  const float scale = std::sqrt(static_cast<float>(c.hidden_size));
  for (std::size_t t = 0; t < tokens.size(); ++t) {
    for (std::size_t j = 0; j < 16; ++j) {
      const double want = RandomCheckpoint::At(checkpoint.weights().embed_tokens,
                                               static_cast<std::size_t>(tokens[t]) * 16 + j) *
                          scale;
      EXPECT_NEAR(state[t * 16 + j], want, 1e-5);
    }
  }
}

TEST(HiddenStatesTest, Errors) {
  const RandomCheckpoint checkpoint(SmallConfig(), DType::kF32, 13);
  auto model = Gemma3Model::Create(checkpoint.config(), checkpoint.weights());
  ASSERT_TRUE(model.ok());
  ThreadPool pool(1);
  std::vector<float> out;
  const std::vector<std::int32_t> tokens = {1, 2};
  Status s = model.value().HiddenStates(tokens, 4, pool, &out);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message().find("index 4 is out of range [-4, 3]"), std::string::npos)
      << s.error().message();
  EXPECT_FALSE(model.value().HiddenStates(tokens, -5, pool, &out).ok());
  EXPECT_TRUE(model.value().HiddenStates(tokens, -4, pool, &out).ok());
  s = model.value().HiddenStates({}, 0, pool, &out);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message().find("no tokens"), std::string::npos);
  const std::vector<std::int32_t> bad = {1, 37};
  s = model.value().HiddenStates(bad, 0, pool, &out);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message().find("token id 37"), std::string::npos) << s.error().message();
}

}  // namespace
}  // namespace fgnet
