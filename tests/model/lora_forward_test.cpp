// Run-time (unmerged) LoRA in Gemma3Model::Forward / ForwardBatch against the naive reference
// run on weights with the update merged in (W + s * B A, computed in double): single adapters on
// any subset of modules and layers, weighted mixes, activated LoRA (rows before the invocation
// compute exactly as the base, including their KV), scale 0 (exactly the base), batches of
// sequences with different adapter sets (each equal to running it alone), long prompts split into
// passes, and errors.

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "alloc_counter.h"
#include "forward_reference.h"
#include "gtest/gtest.h"
#include "model/gemma3_model.h"
#include "model/lora.h"
#include "util/rng.h"

namespace fgnet {
namespace {

using testing::RandomCheckpoint;
using testing::RandomTokens;
using testing::ReferenceForward;

constexpr double kTol = 2e-3;

Gemma3Config TestConfig() {
  Gemma3Config c;
  c.vocab_size = 61;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_hidden_layers = 3;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 10;
  c.max_position_embeddings = 4096;
  c.sliding_window = 6;
  c.layer_types = {LayerType::kSliding, LayerType::kSliding, LayerType::kGlobal};
  c.query_pre_attn_scalar = 16.0;
  c.rms_norm_eps = 1e-6;
  return c;
}

// Random A and B (uniform in [-amp, amp)) on `modules` of `layers`, rank `rank`, module scale
// alpha / rank with alpha = 2 * rank.
LoraAdapter RandomAdapter(const Gemma3Config& c, std::vector<LoraModule> modules,
                          std::vector<std::size_t> layers, std::size_t rank, std::uint64_t seed,
                          float amp = 0.15f) {
  LoraAdapter a;
  a.name = "random" + std::to_string(seed);
  a.path = a.name;
  a.format = "in-memory";
  a.config.r = static_cast<std::int64_t>(rank);
  a.config.lora_alpha = 2.0 * static_cast<double>(rank);
  a.layers.resize(static_cast<std::size_t>(c.num_hidden_layers));
  Philox rng(seed);
  const auto uniform = [&] {
    return amp * (static_cast<float>(rng.NextU32() >> 8) / 8388608.0f - 1.0f);
  };
  for (std::size_t l : layers) {
    for (LoraModule m : modules) {
      const auto [out, in] = LoraModuleShape(c, m);
      LoraLayer& layer = a.layers[l][static_cast<std::size_t>(m)];
      layer.rank = rank;
      layer.scale = 2.0f;
      layer.a.resize(rank * static_cast<std::size_t>(in));
      layer.b.resize(static_cast<std::size_t>(out) * rank);
      for (float& v : layer.a) v = uniform();
      for (float& v : layer.b) v = uniform();
    }
  }
  a.content_hash = LoraContentHash(a);
  EXPECT_TRUE(ValidateLoraAdapter(a, c).ok());
  return a;
}

// An f32 copy of `base` (a float checkpoint) with sum_i s_i * scale * B A added to the adapted
// weights, computed in double.
class MergedWeights {
 public:
  MergedWeights(const Gemma3Config& c, const Gemma3Weights& base,
                const std::vector<std::pair<const LoraAdapter*, float>>& adapters)
      : weights_(base) {
    for (std::size_t l = 0; l < base.layers.size(); ++l) {
      Gemma3LayerWeights& w = weights_.layers[l];
      TensorView* views[] = {&w.q_proj,    &w.k_proj,  &w.v_proj,   &w.o_proj,
                             &w.gate_proj, &w.up_proj, &w.down_proj};
      for (LoraModule m : kAllLoraModules) {
        TensorView& view = *views[static_cast<std::size_t>(m)];
        const auto [out, in] = LoraModuleShape(c, m);
        std::vector<double> merged(static_cast<std::size_t>(out * in));
        for (std::size_t i = 0; i < merged.size(); ++i) merged[i] = RandomCheckpoint::At(view, i);
        for (const auto& [adapter, s] : adapters) {
          const LoraLayer& lora = adapter->at(l, m);
          for (std::size_t o = 0; o < static_cast<std::size_t>(out); ++o) {
            for (std::size_t k = 0; k < static_cast<std::size_t>(in); ++k) {
              double sum = 0.0;
              for (std::size_t r = 0; r < lora.rank; ++r) {
                sum += static_cast<double>(lora.b[o * lora.rank + r]) *
                       lora.a[r * static_cast<std::size_t>(in) + k];
              }
              merged[o * static_cast<std::size_t>(in) + k] +=
                  static_cast<double>(s) * lora.scale * sum;
            }
          }
        }
        storage_.emplace_back(merged.begin(), merged.end());
        view = TensorView{DType::kF32, {out, in}, storage_.back().data()};
      }
    }
    weights_.embed_tokens = Widened(base.embed_tokens);
    weights_.lm_head = weights_.embed_tokens;
  }
  const Gemma3Weights& weights() const { return weights_; }

 private:
  TensorView Widened(const TensorView& t) {
    std::vector<float> v(static_cast<std::size_t>(t.num_elements()));
    for (std::size_t i = 0; i < v.size(); ++i)
      v[i] = static_cast<float>(RandomCheckpoint::At(t, i));
    storage_.push_back(std::move(v));
    return TensorView{DType::kF32, t.shape, storage_.back().data()};
  }

  Gemma3Weights weights_;
  std::vector<std::vector<float>> storage_;
};

void ExpectClose(const std::vector<float>& got, const std::vector<double>& want, std::size_t vocab,
                 std::size_t first_row, std::size_t rows, double tol, const std::string& where) {
  ASSERT_GE(want.size(), (first_row + rows) * vocab) << where;
  ASSERT_EQ(got.size(), rows * vocab) << where;
  double worst = 0.0;
  for (std::size_t i = 0; i < rows * vocab; ++i) {
    worst = std::max(worst, std::abs(got[i] - want[first_row * vocab + i]));
  }
  EXPECT_LE(worst, tol) << where;
}

std::vector<double> ToDouble(const std::vector<float>& v) { return {v.begin(), v.end()}; }

class LoraForwardTest : public ::testing::Test {
 protected:
  LoraForwardTest()
      : config_(TestConfig()),
        ckpt_(config_, DType::kBF16, 11),
        model_(Gemma3Model::Create(ckpt_.config(), ckpt_.weights()).value()),
        pool_(2),
        vocab_(static_cast<std::size_t>(config_.vocab_size)) {}

  std::vector<float> Run(std::span<const std::int32_t> tokens, std::span<const AdapterUse> uses,
                         std::size_t chunk = 0) {
    KVCache kv = model_.NewKVCache(1024);
    std::vector<float> all, part;
    if (chunk == 0) chunk = tokens.size();
    for (std::size_t i = 0; i < tokens.size(); i += chunk) {
      const auto piece = tokens.subspan(i, std::min(chunk, tokens.size() - i));
      EXPECT_TRUE(model_.Forward(piece, kv, pool_, LogitsMode::kAll, &part, uses).ok());
      all.insert(all.end(), part.begin(), part.end());
    }
    return all;
  }

  Gemma3Config config_;
  RandomCheckpoint ckpt_;
  Gemma3Model model_;
  ThreadPool pool_;
  std::size_t vocab_;
};

TEST_F(LoraForwardTest, SingleAdapterMatchesMergedReference) {
  const auto tokens = RandomTokens(19, config_.vocab_size, 1);
  struct Case {
    const char* name;
    std::vector<LoraModule> modules;
    std::vector<std::size_t> layers;
    std::size_t rank;
  };
  const Case cases[] = {
      {"attention", {LoraModule::kQ, LoraModule::kK, LoraModule::kV, LoraModule::kO}, {0, 1, 2}, 4},
      {"all", {kAllLoraModules.begin(), kAllLoraModules.end()}, {0, 1, 2}, 8},
      {"mlp subset", {LoraModule::kGate, LoraModule::kUp, LoraModule::kDown}, {1}, 3},
  };
  for (const Case& c : cases) {
    const LoraAdapter adapter = RandomAdapter(config_, c.modules, c.layers, c.rank, 100 + c.rank);
    for (float scale : {1.0f, 0.5f}) {
      const MergedWeights merged(config_, ckpt_.weights(), {{&adapter, scale}});
      const std::vector<double> ref = ReferenceForward(config_, merged.weights(), tokens);
      const std::vector<double> base = ReferenceForward(config_, ckpt_.weights(), tokens);
      double moved = 0.0;
      for (std::size_t i = 0; i < ref.size(); ++i)
        moved = std::max(moved, std::abs(ref[i] - base[i]));
      EXPECT_GT(moved, 20 * kTol) << c.name << ": the adapter must change the logits clearly";
      const AdapterUse use{&adapter, scale, 0};
      for (std::size_t chunk : {0, 1, 5}) {
        ExpectClose(Run(tokens, std::span(&use, 1), chunk), ref, vocab_, 0, tokens.size(), kTol,
                    std::string(c.name) + " scale " + std::to_string(scale) + " chunk " +
                        std::to_string(chunk));
      }
    }
  }
}

TEST_F(LoraForwardTest, WeightedMixMatchesMergedReference) {
  const auto tokens = RandomTokens(15, config_.vocab_size, 2);
  const LoraAdapter a =
      RandomAdapter(config_, {LoraModule::kQ, LoraModule::kV, LoraModule::kDown}, {0, 1, 2}, 4, 7);
  const LoraAdapter b =
      RandomAdapter(config_, {LoraModule::kQ, LoraModule::kO, LoraModule::kUp}, {0, 2}, 6, 8);
  const MergedWeights merged(config_, ckpt_.weights(), {{&a, 0.7f}, {&b, -0.4f}});
  const std::vector<double> ref = ReferenceForward(config_, merged.weights(), tokens);
  const AdapterUse uses[] = {{&a, 0.7f, 0}, {&b, -0.4f, 0}};
  for (std::size_t chunk : {0, 1}) {
    ExpectClose(Run(tokens, uses, chunk), ref, vocab_, 0, tokens.size(), kTol,
                "mix chunk " + std::to_string(chunk));
  }
}

TEST_F(LoraForwardTest, ScaleZeroIsExactlyTheBase) {
  const auto tokens = RandomTokens(13, config_.vocab_size, 3);
  const LoraAdapter a =
      RandomAdapter(config_, {kAllLoraModules.begin(), kAllLoraModules.end()}, {0, 1, 2}, 4, 9);
  const AdapterUse zero{&a, 0.0f, 0};
  EXPECT_EQ(Run(tokens, std::span(&zero, 1)), Run(tokens, {}));
}

TEST_F(LoraForwardTest, ActivatedAdapterLeavesEarlierPositionsExactlyAsTheBase) {
  const auto tokens = RandomTokens(17, config_.vocab_size, 4);
  const LoraAdapter a =
      RandomAdapter(config_, {kAllLoraModules.begin(), kAllLoraModules.end()}, {0, 1, 2}, 4, 10);
  constexpr std::int64_t kStart = 9;
  const AdapterUse use{&a, 1.0f, kStart};
  KVCache base_kv = model_.NewKVCache(64);
  KVCache alora_kv = model_.NewKVCache(64);
  std::vector<float> base, alora;
  ASSERT_TRUE(model_.Forward(tokens, base_kv, pool_, LogitsMode::kAll, &base).ok());
  ASSERT_TRUE(
      model_.Forward(tokens, alora_kv, pool_, LogitsMode::kAll, &alora, std::span(&use, 1)).ok());
  const std::size_t before = static_cast<std::size_t>(kStart) * vocab_;
  EXPECT_TRUE(
      std::equal(base.begin(), base.begin() + static_cast<std::ptrdiff_t>(before), alora.begin()));
  EXPECT_FALSE(std::equal(base.begin() + static_cast<std::ptrdiff_t>(before), base.end(),
                          alora.begin() + static_cast<std::ptrdiff_t>(before)));
  // The KV of the positions before the invocation is the base's, bit for bit (global layer:
  // every position is kept).
  const std::int64_t global = 2;
  const std::size_t row = static_cast<std::size_t>(base_kv.row_size());
  EXPECT_EQ(0, std::memcmp(base_kv.keys(global), alora_kv.keys(global),
                           static_cast<std::size_t>(kStart) * row * sizeof(float)));
  EXPECT_NE(0, std::memcmp(base_kv.keys(global) + kStart * row,
                           alora_kv.keys(global) + kStart * row, row * sizeof(float)));
  // Later positions: the reference with the adapter merged, for the rows from kStart on.
  const MergedWeights merged(config_, ckpt_.weights(), {{&a, 1.0f}});
  // Rows >= kStart see base keys before kStart and adapted keys after: compare by continuing a
  // base prefix cache with the adapter, which must equal the one-shot run.
  KVCache split = model_.NewKVCache(64);
  std::vector<float> prefix, rest;
  ASSERT_TRUE(
      model_.Forward(std::span(tokens).first(kStart), split, pool_, LogitsMode::kNone, nullptr)
          .ok());
  ASSERT_TRUE(model_
                  .Forward(std::span(tokens).subspan(kStart), split, pool_, LogitsMode::kAll, &rest,
                           std::span(&use, 1))
                  .ok());
  ExpectClose(rest, ToDouble(alora), vocab_, static_cast<std::size_t>(kStart),
              tokens.size() - static_cast<std::size_t>(kStart), 1e-4,
              "base prefix + activated continuation");
}

TEST_F(LoraForwardTest, BatchOfMixedAdapterSetsEqualsEachAlone) {
  const LoraAdapter a =
      RandomAdapter(config_, {kAllLoraModules.begin(), kAllLoraModules.end()}, {0, 1, 2}, 4, 20);
  const LoraAdapter b = RandomAdapter(config_, {LoraModule::kK, LoraModule::kUp}, {1, 2}, 2, 21);
  const std::vector<std::vector<AdapterUse>> sets = {{},
                                                     {{&a, 1.0f, 0}},
                                                     {{&b, 0.5f, 0}},
                                                     {{&a, 0.3f, 0}, {&b, 0.9f, 0}},
                                                     {{&a, 1.0f, 4}},
                                                     {{&a, 1.0f, 0}}};
  // Prompts of various lengths, then a decode step for all at once.
  std::vector<std::vector<std::int32_t>> prompts;
  for (std::size_t i = 0; i < sets.size(); ++i)
    prompts.push_back(RandomTokens(3 + 4 * i, config_.vocab_size, 30 + i));
  std::vector<KVCache> caches, alone_caches;
  std::vector<std::vector<float>> logits(sets.size()), alone(sets.size());
  std::vector<SequenceStep> steps;
  for (std::size_t i = 0; i < sets.size(); ++i) {
    caches.push_back(model_.NewKVCache(64));
    alone_caches.push_back(model_.NewKVCache(64));
  }
  for (std::size_t i = 0; i < sets.size(); ++i) {
    steps.push_back({prompts[i], &caches[i], i % 2 == 0 ? LogitsMode::kAll : LogitsMode::kLast,
                     &logits[i], sets[i]});
  }
  ForwardScratch scratch;
  ASSERT_TRUE(model_.ForwardBatch(steps, pool_, scratch).ok());
  for (std::size_t i = 0; i < sets.size(); ++i) {
    ASSERT_TRUE(
        model_.Forward(prompts[i], alone_caches[i], pool_, steps[i].mode, &alone[i], sets[i]).ok());
    ExpectClose(logits[i], ToDouble(alone[i]), vocab_, 0, alone[i].size() / vocab_, 1e-4,
                "prefill of sequence " + std::to_string(i));
  }
  // One decode token each, all in one batch.
  const std::vector<std::int32_t> next = {5};
  for (auto& s : steps) {
    s.tokens = next;
    s.mode = LogitsMode::kLast;
  }
  ASSERT_TRUE(model_.ForwardBatch(steps, pool_, scratch).ok());
  for (std::size_t i = 0; i < sets.size(); ++i) {
    ASSERT_TRUE(
        model_.Forward(next, alone_caches[i], pool_, LogitsMode::kLast, &alone[i], sets[i]).ok());
    ExpectClose(logits[i], ToDouble(alone[i]), vocab_, 0, 1, 1e-4,
                "decode of sequence " + std::to_string(i));
    EXPECT_EQ(caches[i].length(), alone_caches[i].length());
  }
}

TEST_F(LoraForwardTest, BatchLongerThanOnePassEqualsEachAlone) {
  const LoraAdapter a = RandomAdapter(config_, {LoraModule::kQ, LoraModule::kDown}, {0, 2}, 4, 40);
  const std::vector<AdapterUse> with = {{&a, 1.0f, 0}};
  const auto p0 = RandomTokens(300, config_.vocab_size, 41);
  const auto p1 = RandomTokens(400, config_.vocab_size, 42);
  KVCache k0 = model_.NewKVCache(512), k1 = model_.NewKVCache(512);
  std::vector<float> l0, l1;
  const SequenceStep steps[] = {{p0, &k0, LogitsMode::kAll, &l0, with},
                                {p1, &k1, LogitsMode::kLast, &l1, {}}};
  ForwardScratch scratch;
  ASSERT_TRUE(model_.ForwardBatch(steps, pool_, scratch).ok());
  ExpectClose(l0, ToDouble(Run(p0, with)), vocab_, 0, p0.size(), 1e-4, "sequence 0");
  const std::vector<float> alone1 = Run(p1, {});
  ExpectClose(l1, ToDouble(alone1), vocab_, p1.size() - 1, 1, 1e-4, "sequence 1");
}

TEST(LoraForwardBatchTest, PositionsPastThePrecomputedRopeTables) {
  // A model whose RoPE tables hold 8 positions: a batch's segments compute theirs per segment.
  Gemma3Config c = TestConfig();
  c.max_position_embeddings = 8;
  const RandomCheckpoint ckpt(c, DType::kBF16, 70);
  auto model = Gemma3Model::Create(ckpt.config(), ckpt.weights());
  ASSERT_TRUE(model.ok());
  ThreadPool pool(2);
  const auto p0 = RandomTokens(12, c.vocab_size, 71);
  const auto p1 = RandomTokens(5, c.vocab_size, 72);
  KVCache k0 = model->NewKVCache(32), k1 = model->NewKVCache(32);
  std::vector<float> l0, l1, a0, a1;
  const SequenceStep steps[] = {{p0, &k0, LogitsMode::kAll, &l0, {}},
                                {p1, &k1, LogitsMode::kAll, &l1, {}}};
  ForwardScratch scratch;
  ASSERT_TRUE(model->ForwardBatch(steps, pool, scratch).ok());
  KVCache alone0 = model->NewKVCache(32), alone1 = model->NewKVCache(32);
  ASSERT_TRUE(model->Forward(p0, alone0, pool, LogitsMode::kAll, &a0).ok());
  ASSERT_TRUE(model->Forward(p1, alone1, pool, LogitsMode::kAll, &a1).ok());
  const std::size_t vocab = static_cast<std::size_t>(c.vocab_size);
  ExpectClose(l0, ToDouble(a0), vocab, 0, p0.size(), 1e-4, "sequence 0");
  ExpectClose(l1, ToDouble(a1), vocab, 0, p1.size(), 1e-4, "sequence 1");
  ExpectClose(l0, ReferenceForward(c, ckpt.weights(), p0), vocab, 0, p0.size(), kTol,
              "sequence 0 vs the reference");
}

TEST_F(LoraForwardTest, DecodeWithAdaptersAllocatesNothing) {
  const LoraAdapter a =
      RandomAdapter(config_, {kAllLoraModules.begin(), kAllLoraModules.end()}, {0, 1, 2}, 4, 50);
  const LoraAdapter b = RandomAdapter(config_, {LoraModule::kV}, {1}, 2, 51);
  const AdapterUse uses[] = {{&a, 1.0f, 0}, {&b, 0.5f, 0}};
  KVCache kv = model_.NewKVCache(64);
  std::vector<float> logits;
  ASSERT_TRUE(model_
                  .Forward(RandomTokens(8, config_.vocab_size, 52), kv, pool_, LogitsMode::kLast,
                           &logits, uses)
                  .ok());
  const std::vector<std::int32_t> next = {3};
  ASSERT_TRUE(model_.Forward(next, kv, pool_, LogitsMode::kLast, &logits, uses).ok());
  const long before = testing::AllocationCount();
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(model_.Forward(next, kv, pool_, LogitsMode::kLast, &logits, uses).ok());
  }
  EXPECT_EQ(testing::AllocationCount() - before, 0);
}

TEST_F(LoraForwardTest, BadAdapterSetsAreErrorsThatLeaveTheCacheAlone) {
  const auto tokens = RandomTokens(4, config_.vocab_size, 60);
  LoraAdapter short_adapter = RandomAdapter(config_, {LoraModule::kQ}, {0}, 2, 61);
  short_adapter.layers.pop_back();
  const LoraAdapter ok = RandomAdapter(config_, {LoraModule::kQ}, {0}, 2, 62);
  KVCache kv = model_.NewKVCache(16);
  std::vector<float> logits;
  const auto fails = [&](std::vector<AdapterUse> uses, const std::string& expected) {
    const Status s = model_.Forward(tokens, kv, pool_, LogitsMode::kLast, &logits, uses);
    ASSERT_FALSE(s.ok()) << expected;
    EXPECT_NE(s.error().message().find(expected), std::string::npos) << s.error().message();
    EXPECT_EQ(kv.length(), 0);
  };
  fails({{nullptr, 1.0f, 0}}, "is null");
  fails({{&short_adapter, 1.0f, 0}}, "has 2 layers but the model has 3");
  fails({{&ok, NAN, 0}}, "non-finite scale");
  fails({{&ok, 1.0f, -1}}, "negative position");
  KVCache other = model_.NewKVCache(16);
  std::vector<float> l2;
  const SequenceStep twice[] = {{tokens, &other, LogitsMode::kLast, &logits, {}},
                                {tokens, &other, LogitsMode::kLast, &l2, {}}};
  ForwardScratch scratch;
  const Status s = model_.ForwardBatch(twice, pool_, scratch);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message().find("share one KV cache"), std::string::npos);
  EXPECT_EQ(other.length(), 0);
}

// A LogitsFilter on the host path: the selection is that of the filtered row; bad filters are
// errors that leave the cache alone.
TEST_F(LoraForwardTest, FilteredStepsSelectFromTheFilteredRow) {
  const auto tokens = RandomTokens(5, config_.vocab_size, 70);
  std::vector<float> full;
  {
    KVCache kv = model_.NewKVCache(16);
    ASSERT_TRUE(model_.Forward(tokens, kv, pool_, LogitsMode::kLast, &full).ok());
  }
  std::vector<std::uint64_t> allowed(LogitsFilterWords(config_.vocab_size), 0);
  for (std::int32_t t = 0; t < config_.vocab_size; t += 3) allowed[t / 64] |= 1ull << (t % 64);
  const std::vector<std::int32_t> seen = {0, 3, 6, 9, 12, 15, 1000000};
  LogitsFilter filter{allowed, seen, 1.8f};
  std::vector<float> want = full;
  ApplyLogitsFilter(want, filter);
  EXPECT_EQ(want[1], -INFINITY);
  EXPECT_EQ(want[3], full[3] < 0 ? full[3] * 1.8f : full[3] / 1.8f);

  KVCache kv1 = model_.NewKVCache(16), kv2 = model_.NewKVCache(16);
  std::int32_t greedy = -1, unused = -1;
  std::vector<float> fallback;
  std::vector<TopLogit> top;
  SequenceStep steps[2] = {{tokens, &kv1, LogitsMode::kArgmax, nullptr, {}, &greedy},
                           {tokens, &kv2, LogitsMode::kTop, &fallback, {}, &unused}};
  steps[0].filter = filter;
  steps[1].filter = filter;
  steps[1].top = &top;
  steps[1].top_k = 5;
  ForwardScratch scratch;
  ASSERT_TRUE(model_.ForwardBatch(steps, pool_, scratch).ok());
  EXPECT_EQ(greedy, std::max_element(want.begin(), want.end()) - want.begin());
  std::vector<TopLogit> want_top;
  SelectTopLogits(want, &want_top);
  ASSERT_EQ(top.size(), want_top.size());
  for (std::size_t k = 0; k < top.size(); ++k) {
    EXPECT_EQ(top[k].id, want_top[k].id);
    EXPECT_EQ(top[k].logit, want_top[k].logit);
  }

  const auto fails = [&](SequenceStep step, const std::string& expected) {
    KVCache kv = model_.NewKVCache(16);
    step.kv = &kv;
    const Status s = model_.ForwardBatch(std::span(&step, 1), pool_, scratch);
    ASSERT_FALSE(s.ok()) << expected;
    EXPECT_NE(s.error().message().find(expected), std::string::npos) << s.error().message();
    EXPECT_EQ(kv.length(), 0);
  };
  SequenceStep last{tokens, nullptr, LogitsMode::kLast, &fallback, {}};
  last.filter = filter;
  fails(last, "a logits filter needs an argmax or top-logits step");
  SequenceStep long_bits = steps[0];
  const std::vector<std::uint64_t> two_words(2, ~0ull);
  long_bits.filter.allowed = two_words;
  fails(long_bits, "the allowed-token bitset has 2 words but the vocabulary of 61 tokens needs 1");
  SequenceStep bad_penalty = steps[0];
  bad_penalty.filter.repetition_penalty = -2.0f;
  fails(bad_penalty, "repetition penalty -2 must be a finite number > 0");
}

TEST(AloraStartTest, FindsTheLastOccurrence) {
  const std::vector<std::int32_t> t = {1, 2, 3, 9, 2, 3, 4, 2, 3};
  EXPECT_EQ(AloraStart(t, std::vector<std::int32_t>{2, 3}), 7);
  EXPECT_EQ(AloraStart(t, std::vector<std::int32_t>{9, 2}), 3);
  EXPECT_EQ(AloraStart(t, std::vector<std::int32_t>{1}), 0);
  EXPECT_EQ(AloraStart(t, std::vector<std::int32_t>{}), 0);
  EXPECT_FALSE(AloraStart(t, std::vector<std::int32_t>{3, 2}).has_value());
  EXPECT_FALSE(AloraStart(std::vector<std::int32_t>{2}, std::vector<std::int32_t>{2, 3}));
}

}  // namespace
}  // namespace fgnet
