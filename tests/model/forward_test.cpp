// Gemma3Model::Forward against a naive double-precision forward pass on small random
// checkpoints (F32, BF16, F16 weights; MQA, GQA and MHA; head_dim != hidden / heads;
// query_pre_attn_scalar != head_dim; sliding windows shorter than the prompt; softcapping on
// and off), plus chunked prefill, logits modes, KV cache cloning / truncation and errors.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <new>
#include <string>
#include <vector>

#include "alloc_counter.h"
#include "backend/cpu/ops.h"
#include "forward_reference.h"
#include "gtest/gtest.h"
#include "hwy/targets.h"
#include "model/gemma3_model.h"
#include "util/rng.h"

namespace fgnet {
namespace {

using testing::RandomCheckpoint;
using testing::RandomTokens;
using testing::ReferenceForward;

struct ModelCase {
  const char* name;
  Gemma3Config config;
  DType dtype;
};

Gemma3Config BaseConfig() {
  Gemma3Config c;
  c.vocab_size = 97;
  c.hidden_size = 40;
  c.intermediate_size = 72;
  c.num_hidden_layers = 3;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 1;
  c.head_dim = 18;  // != hidden / heads
  c.max_position_embeddings = 4096;
  c.sliding_window = 5;
  c.layer_types = {LayerType::kSliding, LayerType::kSliding, LayerType::kGlobal};
  c.rope_theta_local = 10'000.0;
  c.rope_theta_global = 1'000'000.0;
  c.query_pre_attn_scalar = 24.0;  // != head_dim
  c.rms_norm_eps = 1e-6;
  return c;
}

std::vector<ModelCase> Cases() {
  std::vector<ModelCase> cases;
  {
    Gemma3Config c = BaseConfig();  // MQA, bf16, no softcapping
    cases.push_back({"mqa_bf16", c, DType::kBF16});
  }
  {
    Gemma3Config c = BaseConfig();  // GQA, f16, both softcaps, scaled global RoPE
    c.num_key_value_heads = 2;
    c.head_dim = 20;
    c.hidden_size = 48;
    c.intermediate_size = 80;
    c.num_hidden_layers = 4;
    c.layer_types = {LayerType::kSliding, LayerType::kGlobal, LayerType::kSliding,
                     LayerType::kGlobal};
    c.sliding_window = 7;
    c.query_pre_attn_scalar = 30.0;
    c.attn_logit_softcapping = 2.0;
    c.final_logit_softcapping = 3.0;
    c.rope_scaling_global = 4.0;
    cases.push_back({"gqa_f16_softcap", c, DType::kF16});
  }
  {
    Gemma3Config c = BaseConfig();  // MHA, f32, odd sizes
    c.num_attention_heads = 2;
    c.num_key_value_heads = 2;
    c.head_dim = 16;
    c.hidden_size = 37;
    c.intermediate_size = 51;
    c.vocab_size = 131;
    c.num_hidden_layers = 2;
    c.layer_types = {LayerType::kSliding, LayerType::kGlobal};
    c.sliding_window = 3;
    c.query_pre_attn_scalar = 16.0;
    // Positions from 16 on get their RoPE tables computed per call rather than precomputed.
    c.max_position_embeddings = 16;
    cases.push_back({"mha_f32", c, DType::kF32});
  }
  return cases;
}

// max |a - ref| <= rel * max |ref|, over rows [0, rows) of `a` compared with rows
// [row0, row0 + rows) of ref.
template <class A, class B>
void ExpectLogitsClose(const A& a, const B& ref, std::size_t vocab, std::size_t row0,
                       std::size_t rows, double rel, const std::string& what) {
  double scale = 0.0;
  for (std::size_t i = row0 * vocab; i < (row0 + rows) * vocab; ++i) {
    scale = std::max(scale, std::fabs(static_cast<double>(ref[i])));
  }
  double worst = 0.0;
  std::size_t worst_i = 0;
  for (std::size_t i = 0; i < rows * vocab; ++i) {
    const double d =
        std::fabs(static_cast<double>(a[i]) - static_cast<double>(ref[row0 * vocab + i]));
    if (d > worst) {
      worst = d;
      worst_i = i;
    }
  }
  EXPECT_LE(worst, rel * scale) << what << ": worst at row " << row0 + worst_i / vocab << " token "
                                << worst_i % vocab << " (scale " << scale << ")";
}

// Runs `tokens` through a fresh cache in chunks of `chunk` (0 = one call) with kAll.
std::vector<float> RunChunked(const Gemma3Model& model, std::span<const std::int32_t> tokens,
                              std::size_t chunk, ThreadPool& pool) {
  KVCache kv = model.NewKVCache(static_cast<std::int64_t>(tokens.size()) + 4);
  const std::size_t V = static_cast<std::size_t>(model.config().vocab_size);
  std::vector<float> all;
  std::vector<float> logits;
  if (chunk == 0) chunk = tokens.size();
  for (std::size_t i = 0; i < tokens.size(); i += chunk) {
    const std::size_t c = std::min(chunk, tokens.size() - i);
    const Status s = model.Forward(tokens.subspan(i, c), kv, pool, LogitsMode::kAll, &logits);
    EXPECT_TRUE(s.ok()) << (s.ok() ? "" : s.error().message());
    EXPECT_EQ(logits.size(), c * V);
    all.insert(all.end(), logits.begin(), logits.end());
  }
  EXPECT_EQ(kv.length(), static_cast<std::int64_t>(tokens.size()));
  return all;
}

constexpr double kTol = 2e-5;

class ForwardTest : public ::testing::TestWithParam<ModelCase> {};

INSTANTIATE_TEST_SUITE_P(Models, ForwardTest, ::testing::ValuesIn(Cases()),
                         [](const ::testing::TestParamInfo<ModelCase>& param_info) {
                           return std::string(param_info.param.name);
                         });

TEST_P(ForwardTest, MatchesReferenceOnEveryTarget) {
  const ModelCase& mc = GetParam();
  const RandomCheckpoint ckpt(mc.config, mc.dtype, 42);
  auto model = Gemma3Model::Create(ckpt.config(), ckpt.weights());
  ASSERT_TRUE(model.ok()) << model.error().message();
  const auto tokens = RandomTokens(23, mc.config.vocab_size, 1);  // longer than every window
  const std::vector<double> ref = ReferenceForward(mc.config, ckpt.weights(), tokens);
  const std::size_t V = static_cast<std::size_t>(mc.config.vocab_size);
  ThreadPool pool(2);
  // Restores normal dispatch however the loop ends.
  struct ResetTargets {
    ~ResetTargets() { hwy::SetSupportedTargetsForTest(0); }
  } reset;
  for (std::int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    ASSERT_EQ(cpu::ActiveTarget(), target);
    const std::string where = std::string(mc.name) + " on " + hwy::TargetName(target);
    // One chunk (packed GEMM regime) and token by token (streaming regime).
    ExpectLogitsClose(RunChunked(*model, tokens, 0, pool), ref, V, 0, tokens.size(), kTol,
                      where + ", one chunk");
    ExpectLogitsClose(RunChunked(*model, tokens, 1, pool), ref, V, 0, tokens.size(), kTol,
                      where + ", token by token");
  }
}

TEST_P(ForwardTest, ChunkedPrefillIsExactForAnyChunkSize) {
  // Chunks longer than the sliding window: a chunk's early queries need keys that its later
  // tokens displace from the ring.
  const ModelCase& mc = GetParam();
  const RandomCheckpoint ckpt(mc.config, mc.dtype, 7);
  auto model = Gemma3Model::Create(ckpt.config(), ckpt.weights());
  ASSERT_TRUE(model.ok()) << model.error().message();
  const auto tokens = RandomTokens(41, mc.config.vocab_size, 2);
  const std::vector<double> ref = ReferenceForward(mc.config, ckpt.weights(), tokens);
  const std::size_t V = static_cast<std::size_t>(mc.config.vocab_size);
  for (std::size_t threads : {1, 2}) {
    ThreadPool pool(threads);
    for (std::size_t chunk : {0, 1, 2, 3, 4, 5, 6, 8, 9, 16, 40}) {
      ExpectLogitsClose(RunChunked(*model, tokens, chunk, pool), ref, V, 0, tokens.size(), kTol,
                        std::string(mc.name) + " chunk " + std::to_string(chunk) + " threads " +
                            std::to_string(threads));
    }
  }
}

TEST_P(ForwardTest, LastEqualsLastRowOfAllAndNoneFillsTheCache) {
  const ModelCase& mc = GetParam();
  const RandomCheckpoint ckpt(mc.config, mc.dtype, 9);
  auto model = Gemma3Model::Create(ckpt.config(), ckpt.weights());
  ASSERT_TRUE(model.ok());
  const std::size_t V = static_cast<std::size_t>(mc.config.vocab_size);
  ThreadPool pool(2);
  for (std::size_t n : {1, 3, 12}) {
    const auto tokens = RandomTokens(n, mc.config.vocab_size, 3 + n);
    KVCache a = model->NewKVCache(32);
    KVCache b = model->NewKVCache(32);
    KVCache c = model->NewKVCache(32);
    std::vector<float> all, last, after_none;
    ASSERT_TRUE(model->Forward(tokens, a, pool, LogitsMode::kAll, &all).ok());
    ASSERT_TRUE(model->Forward(tokens, b, pool, LogitsMode::kLast, &last).ok());
    ASSERT_EQ(last.size(), V);
    ExpectLogitsClose(last, all, V, n - 1, 1, 1e-5, "kLast vs kAll");
    // kNone for all but the last token, then kLast for it.
    std::vector<float> none = {1.0f};
    ASSERT_TRUE(
        model->Forward(std::span(tokens).first(n - 1), c, pool, LogitsMode::kNone, &none).ok());
    EXPECT_TRUE(none.empty());
    ASSERT_TRUE(
        model->Forward(std::span(tokens).last(1), c, pool, LogitsMode::kLast, &after_none).ok());
    ExpectLogitsClose(after_none, all, V, n - 1, 1, 1e-5, "kNone + kLast vs kAll");
    EXPECT_EQ(a.length(), static_cast<std::int64_t>(n));
    EXPECT_EQ(c.length(), static_cast<std::int64_t>(n));
  }
}

TEST(ForwardTest, LongPromptSplitIntoInternalPasses) {
  // More tokens than one internal pass (512), with a window far shorter than that.
  Gemma3Config c = BaseConfig();
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.num_attention_heads = 2;
  c.head_dim = 8;
  c.vocab_size = 50;
  c.num_hidden_layers = 2;
  c.layer_types = {LayerType::kSliding, LayerType::kGlobal};
  c.sliding_window = 33;
  const RandomCheckpoint ckpt(c, DType::kBF16, 3);
  auto model = Gemma3Model::Create(ckpt.config(), ckpt.weights());
  ASSERT_TRUE(model.ok());
  const auto tokens = RandomTokens(530, c.vocab_size, 4);
  const std::vector<double> ref = ReferenceForward(c, ckpt.weights(), tokens);
  ThreadPool pool(2);
  ExpectLogitsClose(RunChunked(*model, tokens, 0, pool), ref, 50, 0, tokens.size(), kTol, "530");
}

class CacheTest : public ::testing::Test {
 protected:
  CacheTest() : ckpt_(BaseConfig(), DType::kBF16, 5), pool_(2) {
    auto m = Gemma3Model::Create(ckpt_.config(), ckpt_.weights());
    EXPECT_TRUE(m.ok());
    model_ = std::make_unique<Gemma3Model>(std::move(m.value()));
  }
  std::vector<float> Step(KVCache& kv, std::vector<std::int32_t> tokens) {
    std::vector<float> logits;
    const Status s = model_->Forward(tokens, kv, pool_, LogitsMode::kLast, &logits);
    EXPECT_TRUE(s.ok()) << (s.ok() ? "" : s.error().message());
    return logits;
  }

  RandomCheckpoint ckpt_;
  ThreadPool pool_;
  std::unique_ptr<Gemma3Model> model_;
};

TEST_F(CacheTest, CloneContinuesIdentically) {
  const auto prompt = RandomTokens(9, 97, 8);
  KVCache kv = model_->NewKVCache(64);
  Step(kv, prompt);
  KVCache copy = kv.Clone();
  EXPECT_EQ(copy.length(), kv.length());
  EXPECT_EQ(copy.capacity(), kv.capacity());
  const auto a = Step(kv, {5, 6});
  // The original moved on; the clone still continues from the prompt.
  const auto b = Step(copy, {5, 6});
  EXPECT_EQ(a, b);
  const auto c = Step(kv, {7});
  const auto d = Step(copy, {7});
  EXPECT_EQ(c, d);
}

TEST_F(CacheTest, BadTokenIdsAndOverflowAreErrorsThatLeaveTheCacheAlone) {
  KVCache kv = model_->NewKVCache(12);
  Step(kv, {1, 2, 3, 4, 5, 6, 7, 8});
  KVCache twin = kv.Clone();
  std::vector<float> logits;
  for (std::vector<std::int32_t> bad : {std::vector<std::int32_t>{1, 97}, {-1}, {3, 4, 1000000}}) {
    const Status s = model_->Forward(bad, kv, pool_, LogitsMode::kLast, &logits);
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.error().message().find("out of range"), std::string::npos) << s.error().message();
    EXPECT_EQ(kv.length(), 8);
  }
  const Status full = model_->Forward(std::vector<std::int32_t>{1, 2, 3, 4, 5}, kv, pool_,
                                      LogitsMode::kLast, &logits);
  ASSERT_FALSE(full.ok());
  EXPECT_NE(full.error().message().find("full"), std::string::npos) << full.error().message();
  EXPECT_EQ(kv.length(), 8);
  const Status empty = model_->Forward({}, kv, pool_, LogitsMode::kLast, &logits);
  EXPECT_FALSE(empty.ok());
  // Nothing was written: both continue alike, up to the capacity exactly.
  EXPECT_EQ(Step(kv, {9, 10, 11, 12}), Step(twin, {9, 10, 11, 12}));
  EXPECT_EQ(kv.length(), 12);
  EXPECT_FALSE(
      model_->Forward(std::vector<std::int32_t>{1}, kv, pool_, LogitsMode::kNone, nullptr).ok());
}

TEST_F(CacheTest, DecodeStepsAllocateNothing) {
  KVCache kv = model_->NewKVCache(64);
  std::vector<float> logits;
  ASSERT_TRUE(
      model_->Forward(RandomTokens(12, 97, 10), kv, pool_, LogitsMode::kLast, &logits).ok());
  const std::vector<std::int32_t> next = {42};
  ASSERT_TRUE(model_->Forward(next, kv, pool_, LogitsMode::kLast, &logits).ok());
  const long before = testing::AllocationCount();
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(model_->Forward(next, kv, pool_, LogitsMode::kLast, &logits).ok());
  }
  EXPECT_EQ(testing::AllocationCount() - before, 0);
}

TEST_F(CacheTest, CacheOfAnotherModelIsAnError) {
  Gemma3Config other = BaseConfig();
  other.num_key_value_heads = 2;
  KVCache kv(other, 16);
  std::vector<float> logits;
  const Status s =
      model_->Forward(std::vector<std::int32_t>{1}, kv, pool_, LogitsMode::kLast, &logits);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message().find("different model"), std::string::npos);
}

TEST_F(CacheTest, TruncateWithinTheRingIsExact) {
  const auto tokens = RandomTokens(14, 97, 9);
  // Window 5, slack 3: the ring has 8 slots.
  KVCache kv(ckpt_.config(), 64, /*sliding_slack=*/3);
  Step(kv, tokens);
  EXPECT_EQ(kv.slots(0), 8);
  EXPECT_EQ(kv.slots(2), 64);
  EXPECT_FALSE(kv.Truncate(9));   // would need position 5, overwritten by 13
  EXPECT_FALSE(kv.Truncate(15));  // beyond the length
  EXPECT_EQ(kv.length(), 14);
  ASSERT_TRUE(kv.Truncate(10));  // needs 6.. : held
  const auto resumed = Step(kv, {tokens[10], tokens[11]});
  KVCache fresh = model_->NewKVCache(64);
  Step(fresh, std::vector<std::int32_t>(tokens.begin(), tokens.begin() + 10));
  const auto direct = Step(fresh, {tokens[10], tokens[11]});
  ExpectLogitsClose(resumed, direct, 97, 0, 1, 1e-6, "truncated");
  // Without slack only one position can be dropped once the ring has wrapped.
  KVCache tight = model_->NewKVCache(64);
  Step(tight, tokens);
  EXPECT_FALSE(tight.Truncate(12));
  EXPECT_TRUE(tight.Truncate(13));
}

TEST(ForwardCreateTest, ShapeAndConfigErrorsNameTheProblem) {
  const Gemma3Config c = BaseConfig();
  {
    RandomCheckpoint ckpt(c, DType::kBF16, 1);
    ckpt.mutable_weights().layers[1].k_proj.shape = {17, 40};
    auto m = Gemma3Model::Create(ckpt.config(), ckpt.weights());
    ASSERT_FALSE(m.ok());
    EXPECT_NE(m.error().message().find("model.layers.1.self_attn.k_proj.weight"), std::string::npos)
        << m.error().message();
  }
  {
    RandomCheckpoint ckpt(c, DType::kBF16, 1);
    ckpt.mutable_weights().layers[2].post_feedforward_layernorm = TensorView();
    auto m = Gemma3Model::Create(ckpt.config(), ckpt.weights());
    ASSERT_FALSE(m.ok());
    EXPECT_NE(m.error().message().find("post_feedforward_layernorm"), std::string::npos)
        << m.error().message();
  }
  {
    RandomCheckpoint ckpt(c, DType::kBF16, 1);
    ckpt.mutable_weights().layers.pop_back();
    EXPECT_FALSE(Gemma3Model::Create(ckpt.config(), ckpt.weights()).ok());
  }
  {
    Gemma3Config bad = c;
    bad.num_key_value_heads = 3;
    RandomCheckpoint ckpt(c, DType::kBF16, 1);
    auto m = Gemma3Model::Create(bad, ckpt.weights());
    ASSERT_FALSE(m.ok());
    EXPECT_NE(m.error().message().find("num_key_value_heads"), std::string::npos);
  }
  {
    Gemma3Config bad = c;
    bad.hidden_activation = "relu";
    RandomCheckpoint ckpt(c, DType::kBF16, 1);
    EXPECT_FALSE(Gemma3Model::Create(bad, ckpt.weights()).ok());
  }
}

TEST(ForwardCreateTest, NormFactorIsOnePlusWeight) {
  // With every norm weight -1 the (1 + w) factors are zero: the residual stream is just the
  // scaled embedding, and the final norm zeroes it, so every logit is 0.
  Gemma3Config c = BaseConfig();
  RandomCheckpoint ckpt(c, DType::kF32, 1);
  std::vector<float> minus_one(256, -1.0f);
  ckpt.mutable_weights().norm.data = minus_one.data();
  auto m = Gemma3Model::Create(ckpt.config(), ckpt.weights());
  ASSERT_TRUE(m.ok());
  ThreadPool pool(1);
  KVCache kv = m->NewKVCache(4);
  std::vector<float> logits;
  ASSERT_TRUE(
      m->Forward(std::vector<std::int32_t>{3, 4}, kv, pool, LogitsMode::kAll, &logits).ok());
  for (float v : logits) ASSERT_EQ(v, 0.0f);
}

}  // namespace
}  // namespace fgnet
