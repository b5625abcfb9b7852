// Merging adapters in delta space: merged checkpoints against peft's merge_and_unload() logits
// and against the merge references of tests/fixtures/lora/merges (linear, and TIES computed with
// peft's own merge_utils.ties on the dense deltas); a weight-0 merge reproduces the base byte for
// byte; concatenation equals the linear merge; TIES follows its rule on hand-checked cases; DARE
// and TIES are deterministic per seed; and the refusals (aLoRA, quantized bases, bad options).
#include "model/merge.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <memory>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

#include "fails_with.h"
#include "lora_fixtures.h"
#include "model/checkpoint.h"
#include "model/lora.h"
#include "model/peft.h"
#include "model/safetensors.h"
#include "tiny_checkpoint.h"
#include "util/json.h"
#include "util/rng.h"

namespace fgnet {
namespace {

using testing::CheckpointLogits;
using testing::FailsWith;
using testing::Ids;
using testing::LoadFixtureJson;
using testing::LoraFixtureDir;
using testing::MaxAbsDiff;
using testing::ReadLogits;
using testing::TempDir;
using testing::TestDataPath;
using testing::TinyConfig;

constexpr double kTolerance = 1e-3;

struct Loaded {
  std::unique_ptr<Checkpoint> base;
  LoraAdapter adapter;
};

Loaded LoadFixture(const std::string& name) {
  const Json fixture = LoadFixtureJson(name);
  auto base = Checkpoint::Open(TestDataPath(fixture["base"].get<std::string>()));
  FGNET_CHECK(base.ok());
  Loaded out{std::make_unique<Checkpoint>(std::move(base).value()), {}};
  auto adapter = LoadPeftAdapter(LoraFixtureDir(name), out.base->config());
  FGNET_CHECK(adapter.ok());
  out.adapter = std::move(adapter).value();
  return out;
}

MergeOptions F32(MergeOptions::Method method, double density = 1.0, std::uint64_t seed = 0) {
  MergeOptions o;
  o.method = method;
  o.density = density;
  o.seed = seed;
  o.out_dtype = DType::kF32;
  return o;
}

class MergedParityTest : public ::testing::TestWithParam<const char*> {};

TEST_P(MergedParityTest, MergedCheckpointMatchesPeftMergeAndUnload) {
  const Json fixture = LoadFixtureJson(GetParam());
  Loaded l = LoadFixture(GetParam());
  TempDir tmp;
  const std::pair<const LoraAdapter*, float> one[] = {{&l.adapter, 1.0f}};
  const Status status =
      WriteMergedCheckpoint(*l.base, one, F32(MergeOptions::Method::kLinear), tmp.path());
  ASSERT_TRUE(status.ok()) << status.error().message();
  const auto prompt = Ids(fixture["prompt_ids"]);
  auto logits = CheckpointLogits(tmp.path(), prompt);
  ASSERT_TRUE(logits.ok()) << logits.error().message();
  const auto n = static_cast<std::int64_t>(prompt.size());
  const std::int64_t vocab = l.base->config().vocab_size;
  const auto merged = ReadLogits(LoraFixtureDir(GetParam()) + "/logits_merged.npy", n, vocab);
  const auto unmerged = ReadLogits(LoraFixtureDir(GetParam()) + "/logits_unmerged.npy", n, vocab);
  EXPECT_LE(MaxAbsDiff(*logits, merged), kTolerance) << GetParam();
  EXPECT_LE(MaxAbsDiff(*logits, unmerged), kTolerance) << GetParam();
  // The adapter matters: the base's logits are far away.
  auto base_logits = CheckpointLogits(l.base->dir(), prompt);
  ASSERT_TRUE(base_logits.ok());
  EXPECT_GT(MaxAbsDiff(*base_logits, merged), 1.0);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, MergedParityTest,
                         ::testing::Values("attn_qkvo", "all_linear_rslora", "mlp_layers",
                                           "regex_mm", "attn_qvo_second"));

TEST(Merge, WeightZeroReproducesTheBaseExactly) {
  for (const char* name : {"all_linear_rslora", "mlp_layers", "regex_mm"}) {
    Loaded l = LoadFixture(name);
    TempDir tmp;
    const std::pair<const LoraAdapter*, float> zero[] = {{&l.adapter, 0.0f}};
    ASSERT_TRUE(WriteMergedCheckpoint(*l.base, zero, MergeOptions{}, tmp.path()).ok());
    auto merged = SafetensorsFile::Open(tmp.File("model.safetensors"));
    ASSERT_TRUE(merged.ok()) << merged.error().message();
    const auto& base_tensors = l.base->tensors().all();
    ASSERT_EQ(merged->tensors().size(), base_tensors.size()) << name;
    for (const auto& [tensor, view] : merged->tensors()) {
      const TensorView* want = l.base->tensors().Find(tensor);
      ASSERT_NE(want, nullptr) << tensor;
      EXPECT_EQ(view.dtype, want->dtype) << tensor;
      EXPECT_EQ(view.shape, want->shape) << tensor;
      ASSERT_EQ(view.num_bytes(), want->num_bytes());
      EXPECT_EQ(std::memcmp(view.data, want->data, view.num_bytes()), 0) << name << ": " << tensor;
    }
    EXPECT_EQ(testing::ReadFile(tmp.File("config.json")), testing::ReadFile(l.base->config_path()));
    EXPECT_EQ(testing::ReadFile(tmp.File("generation_config.json")),
              testing::ReadFile(l.base->generation_config_path()));
    const std::vector<std::int32_t> ids = {2, 7, 9, 11, 40, 3};
    auto a = CheckpointLogits(tmp.path(), ids);
    auto b = CheckpointLogits(l.base->dir(), ids);
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_EQ(*a, *b) << name;
  }
}

TEST(Merge, OutputDtypeConvertsEveryTensorAndTheConfig) {
  Loaded l = LoadFixture("attn_qkvo");  // an F32 base
  TempDir tmp;
  MergeOptions o;
  o.out_dtype = DType::kBF16;
  const std::pair<const LoraAdapter*, float> one[] = {{&l.adapter, 1.0f}};
  ASSERT_TRUE(WriteMergedCheckpoint(*l.base, one, o, tmp.path()).ok());
  auto merged = Checkpoint::Open(tmp.path());
  ASSERT_TRUE(merged.ok()) << merged.error().message();
  for (const auto& [name, entry] : merged->tensors().all())
    EXPECT_EQ(entry.view.dtype, DType::kBF16);
  auto config = ReadJsonFile(tmp.File("config.json"));
  ASSERT_TRUE(config.ok());
  EXPECT_EQ((*config)["dtype"], "bfloat16");
}

TEST(Merge, ConcatIsExactAndEqualsTheLinearMerge) {
  Loaded a = LoadFixture("attn_qkvo");
  Loaded b = LoadFixture("attn_qvo_second");
  const Gemma3Config& config = a.base->config();
  const std::pair<const LoraAdapter*, float> pair[] = {{&a.adapter, 0.7f}, {&b.adapter, 0.5f}};
  auto concat = ConcatAdapters(pair, config);
  ASSERT_TRUE(concat.ok()) << concat.error().message();
  EXPECT_EQ(concat->name, "attn_qkvo+attn_qvo_second");
  EXPECT_EQ(concat->content_hash, LoraContentHash(*concat));
  EXPECT_TRUE(ValidateLoraAdapter(*concat, config).ok());
  for (std::size_t l = 0; l < concat->layers.size(); ++l) {
    EXPECT_EQ(concat->at(l, LoraModule::kQ).rank, 6u);
    EXPECT_EQ(concat->at(l, LoraModule::kK).rank, 4u);
    EXPECT_EQ(concat->at(l, LoraModule::kO).rank, 6u);
    EXPECT_FALSE(concat->at(l, LoraModule::kGate).active());
    EXPECT_EQ(concat->at(l, LoraModule::kQ).scale, 1.0f);
    for (LoraModule m : {LoraModule::kQ, LoraModule::kK, LoraModule::kV, LoraModule::kO}) {
      auto linear = MergedModuleDelta(pair, l, m, config, MergeOptions{});
      const std::pair<const LoraAdapter*, float> just[] = {{&*concat, 1.0f}};
      auto cat = MergedModuleDelta(just, l, m, config, MergeOptions{});
      ASSERT_TRUE(linear.ok() && cat.ok());
      EXPECT_LE(MaxAbsDiff(*linear, *cat), 1e-6) << l << " " << LoraModuleName(m);
    }
  }
  // As a PEFT directory and back.
  TempDir tmp;
  ASSERT_TRUE(WritePeftAdapter(*concat, tmp.File("cat")).ok());
  auto reloaded = LoadPeftAdapter(tmp.File("cat"), config);
  ASSERT_TRUE(reloaded.ok()) << reloaded.error().message();
  EXPECT_EQ(reloaded->content_hash, concat->content_hash);

  // Merged checkpoints: linear and concat agree with each other and with the reference.
  const Json ref = LoadFixtureJson("merges");
  const auto prompt = Ids(ref["prompt_ids"]);
  const auto n = static_cast<std::int64_t>(prompt.size());
  const auto want = ReadLogits(LoraFixtureDir("merges/logits_linear.npy"), n, config.vocab_size);
  std::vector<float> got[2];
  int i = 0;
  for (auto method : {MergeOptions::Method::kLinear, MergeOptions::Method::kConcat}) {
    const std::string dir = tmp.File(std::string(MergeMethodName(method)));
    ASSERT_TRUE(WriteMergedCheckpoint(*a.base, pair, F32(method), dir).ok());
    auto logits = CheckpointLogits(dir, prompt);
    ASSERT_TRUE(logits.ok()) << logits.error().message();
    EXPECT_LE(MaxAbsDiff(*logits, want), kTolerance) << MergeMethodName(method);
    got[i++] = std::move(logits).value();
  }
  EXPECT_LE(MaxAbsDiff(got[0], got[1]), 1e-4);
}

TEST(Merge, TiesMatchesPeftsMergeUtilsOnTheDeltas) {
  Loaded a = LoadFixture("attn_qkvo");
  Loaded b = LoadFixture("attn_qvo_second");
  const Json ref = LoadFixtureJson("merges");
  const std::pair<const LoraAdapter*, float> pair[] = {{&a.adapter, 0.7f}, {&b.adapter, 0.5f}};
  TempDir tmp;
  const Status status = WriteMergedCheckpoint(
      *a.base, pair, F32(MergeOptions::Method::kTies, ref["ties_density"].get<double>()),
      tmp.path());
  ASSERT_TRUE(status.ok()) << status.error().message();
  const auto prompt = Ids(ref["prompt_ids"]);
  auto logits = CheckpointLogits(tmp.path(), prompt);
  ASSERT_TRUE(logits.ok());
  const auto n = static_cast<std::int64_t>(prompt.size());
  const std::int64_t vocab = a.base->config().vocab_size;
  EXPECT_LE(MaxAbsDiff(*logits, ReadLogits(LoraFixtureDir("merges/logits_ties.npy"), n, vocab)),
            kTolerance);
  EXPECT_GT(MaxAbsDiff(*logits, ReadLogits(LoraFixtureDir("merges/logits_linear.npy"), n, vocab)),
            1.0);
}

// A random adapter for TinyConfig() on the given modules.
LoraAdapter RandomAdapter(std::uint64_t seed, std::size_t rank,
                          std::initializer_list<LoraModule> modules, float scale = 1.5f) {
  const Gemma3Config c = TinyConfig();
  LoraAdapter a;
  a.name = "random" + std::to_string(seed);
  a.layers.resize(static_cast<std::size_t>(c.num_hidden_layers));
  Philox rng(seed);
  for (auto& layer : a.layers) {
    for (LoraModule m : modules) {
      const auto [out, in] = LoraModuleShape(c, m);
      LoraLayer& l = layer[static_cast<std::size_t>(m)];
      l.rank = rank;
      l.scale = scale;
      l.a.resize(rank * static_cast<std::size_t>(in));
      l.b.resize(static_cast<std::size_t>(out) * rank);
      for (float& v : l.a) v = rng.NextFloat() - 0.5f;
      for (float& v : l.b) v = rng.NextFloat() - 0.5f;
    }
  }
  a.content_hash = LoraContentHash(a);
  return a;
}

// scale * B A in double.
std::vector<double> NaiveDelta(const LoraLayer& l, std::int64_t out, std::int64_t in) {
  std::vector<double> d(static_cast<std::size_t>(out * in), 0.0);
  for (std::int64_t o = 0; o < out; ++o) {
    for (std::int64_t i = 0; i < in; ++i) {
      double s = 0;
      for (std::size_t k = 0; k < l.rank; ++k) {
        s += static_cast<double>(l.b[static_cast<std::size_t>(o) * l.rank + k]) *
             l.a[k * static_cast<std::size_t>(in) + static_cast<std::size_t>(i)];
      }
      d[static_cast<std::size_t>(o * in + i)] = l.scale * s;
    }
  }
  return d;
}

TEST(Merge, LinearDeltaIsTheWeightedSumOfScaledProducts) {
  const LoraAdapter a = RandomAdapter(1, 2, {LoraModule::kUp});
  const LoraAdapter b = RandomAdapter(2, 3, {LoraModule::kUp}, 0.25f);
  const std::pair<const LoraAdapter*, float> pair[] = {{&a, 0.5f}, {&b, -2.0f}};
  auto got = MergedModuleDelta(pair, 1, LoraModule::kUp, TinyConfig(), MergeOptions{});
  ASSERT_TRUE(got.ok());
  const auto [out, in] = LoraModuleShape(TinyConfig(), LoraModule::kUp);
  const auto da = NaiveDelta(a.at(1, LoraModule::kUp), out, in);
  const auto db = NaiveDelta(b.at(1, LoraModule::kUp), out, in);
  for (std::size_t i = 0; i < got->size(); ++i) {
    EXPECT_NEAR((*got)[i], 0.5 * da[i] - 2.0 * db[i], 1e-5);
  }
  // A module no adapter adapts merges to zero.
  auto none = MergedModuleDelta(pair, 1, LoraModule::kQ, TinyConfig(), MergeOptions{});
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(std::all_of(none->begin(), none->end(), [](float v) { return v == 0.0f; }));
}

TEST(Merge, TiesFollowsTrimElectDisjointMean) {
  const LoraAdapter a = RandomAdapter(11, 2, {LoraModule::kGate, LoraModule::kV});
  const LoraAdapter b = RandomAdapter(12, 1, {LoraModule::kGate});
  const LoraAdapter c = RandomAdapter(13, 3, {LoraModule::kGate, LoraModule::kV});
  const std::vector<std::pair<const LoraAdapter*, float>> all = {
      {&a, 0.9f}, {&b, 0.4f}, {&c, 1.3f}};
  const Gemma3Config config = TinyConfig();
  for (double density : {0.3, 0.5, 1.0}) {
    for (LoraModule m : {LoraModule::kGate, LoraModule::kV}) {
      const auto [out, in] = LoraModuleShape(config, m);
      const auto n = static_cast<std::size_t>(out * in);
      // Reference: trim by a stable sort on magnitude, elect, disjoint mean.
      std::vector<std::vector<double>> trimmed;
      std::vector<double> weights;
      for (const auto& [adapter, w] : all) {
        if (!adapter->at(0, m).active()) continue;
        std::vector<double> d = NaiveDelta(adapter->at(0, m), out, in);
        if (density < 1.0) {
          std::vector<std::size_t> order(n);
          std::iota(order.begin(), order.end(), 0);
          std::stable_sort(order.begin(), order.end(), [&](std::size_t x, std::size_t y) {
            return std::fabs(d[x]) > std::fabs(d[y]);
          });
          const auto k = static_cast<std::size_t>(density * static_cast<double>(n));
          for (std::size_t i = k; i < n; ++i) d[order[i]] = 0.0;
        }
        trimmed.push_back(std::move(d));
        weights.push_back(w);
      }
      std::vector<double> want(n, 0.0);
      for (std::size_t e = 0; e < n; ++e) {
        double sum = 0;
        for (const auto& t : trimmed) sum += t[e];
        const double sign = sum >= 0 ? 1.0 : -1.0;
        double total = 0;
        int count = 0;
        for (std::size_t i = 0; i < trimmed.size(); ++i) {
          if (trimmed[i][e] != 0.0 && (trimmed[i][e] > 0 ? 1.0 : -1.0) == sign) {
            total += weights[i] * trimmed[i][e];
            ++count;
          }
        }
        want[e] = count ? total / count : 0.0;
      }
      MergeOptions o;
      o.method = MergeOptions::Method::kTies;
      o.density = density;
      auto got = MergedModuleDelta(all, 0, m, config, o);
      ASSERT_TRUE(got.ok()) << got.error().message();
      double worst = 0;
      std::size_t nonzero = 0;
      for (std::size_t e = 0; e < n; ++e) {
        worst = std::max(worst, std::fabs((*got)[e] - want[e]));
        nonzero += (*got)[e] != 0.0f;
      }
      EXPECT_LE(worst, 1e-5) << "density " << density << " " << LoraModuleName(m);
      EXPECT_GT(nonzero, 0u);
    }
  }
}

TEST(Merge, TiesElectsTheSignOfTheSum) {
  const LoraAdapter a = RandomAdapter(21, 2, {LoraModule::kO});
  LoraAdapter twice_negative = a;
  LoraAdapter negative = a;
  for (auto& layer : twice_negative.layers) {
    for (float& v : layer[static_cast<std::size_t>(LoraModule::kO)].b) v *= -2.0f;
  }
  for (auto& layer : negative.layers) {
    for (float& v : layer[static_cast<std::size_t>(LoraModule::kO)].b) v = -v;
  }
  MergeOptions ties;
  ties.method = MergeOptions::Method::kTies;
  const Gemma3Config config = TinyConfig();
  const auto only = [&](const LoraAdapter& x, float w) {
    const std::pair<const LoraAdapter*, float> one[] = {{&x, w}};
    return *MergedModuleDelta(one, 2, LoraModule::kO, config, MergeOptions{});
  };
  // +d and -2d: the sum is negative everywhere, only the second survives (its own mean).
  {
    const std::pair<const LoraAdapter*, float> pair[] = {{&a, 3.0f}, {&twice_negative, 0.5f}};
    auto got = MergedModuleDelta(pair, 2, LoraModule::kO, config, ties);
    ASSERT_TRUE(got.ok());
    EXPECT_LE(MaxAbsDiff(*got, only(twice_negative, 0.5f)), 1e-6);
  }
  // +d and -d: the sum is zero, which elects +; the positive one of the two survives: 3 d where
  // d > 0, 0.5 (-d) where d < 0.
  {
    const std::pair<const LoraAdapter*, float> pair[] = {{&a, 3.0f}, {&negative, 0.5f}};
    auto got = MergedModuleDelta(pair, 2, LoraModule::kO, config, ties);
    ASSERT_TRUE(got.ok());
    const std::vector<float> d = only(a, 1.0f);
    std::vector<float> want(d.size());
    for (std::size_t i = 0; i < d.size(); ++i) want[i] = d[i] > 0 ? 3.0f * d[i] : 0.5f * -d[i];
    EXPECT_LE(MaxAbsDiff(*got, want), 1e-6);
    EXPECT_GT(MaxAbsDiff(*got, only(a, 3.0f)), 0.1);
  }
}

TEST(Merge, DareKeepsADensityFractionRescaledAndIsDeterministicPerSeed) {
  const LoraAdapter a = RandomAdapter(31, 2, {LoraModule::kDown});
  const std::pair<const LoraAdapter*, float> one[] = {{&a, 0.8f}};
  const Gemma3Config config = TinyConfig();
  MergeOptions dare;
  dare.method = MergeOptions::Method::kDare;
  dare.density = 0.4;
  dare.seed = 7;
  auto first = MergedModuleDelta(one, 1, LoraModule::kDown, config, dare);
  auto again = MergedModuleDelta(one, 1, LoraModule::kDown, config, dare);
  dare.seed = 8;
  auto other = MergedModuleDelta(one, 1, LoraModule::kDown, config, dare);
  auto full = MergedModuleDelta(one, 1, LoraModule::kDown, config, MergeOptions{});
  ASSERT_TRUE(first.ok() && again.ok() && other.ok() && full.ok());
  EXPECT_EQ(*first, *again);
  EXPECT_NE(*first, *other);
  std::size_t kept = 0;
  for (std::size_t i = 0; i < first->size(); ++i) {
    if ((*first)[i] == 0.0f) continue;
    ++kept;
    EXPECT_NEAR((*first)[i], (*full)[i] / 0.4, 1e-5);
  }
  const double fraction = static_cast<double>(kept) / static_cast<double>(first->size());
  EXPECT_GT(fraction, 0.25);
  EXPECT_LT(fraction, 0.55);
  // Density 1 keeps everything.
  dare.density = 1.0;
  auto all = MergedModuleDelta(one, 1, LoraModule::kDown, config, dare);
  ASSERT_TRUE(all.ok());
  EXPECT_LE(MaxAbsDiff(*all, *full), 1e-6);
}

TEST(Merge, SparseMergedCheckpointsAreDeterministic) {
  Loaded a = LoadFixture("attn_qkvo");
  Loaded b = LoadFixture("attn_qvo_second");
  const std::pair<const LoraAdapter*, float> pair[] = {{&a.adapter, 0.7f}, {&b.adapter, 0.5f}};
  TempDir tmp;
  const auto write = [&](MergeOptions::Method method, std::uint64_t seed, const std::string& name) {
    MergeOptions o;
    o.method = method;
    o.density = 0.6;
    o.seed = seed;
    FGNET_CHECK(WriteMergedCheckpoint(*a.base, pair, o, tmp.File(name)).ok());
    return testing::ReadFile(tmp.File(name) + "/model.safetensors");
  };
  EXPECT_EQ(write(MergeOptions::Method::kDare, 5, "d1"),
            write(MergeOptions::Method::kDare, 5, "d2"));
  EXPECT_NE(write(MergeOptions::Method::kDare, 5, "d3"),
            write(MergeOptions::Method::kDare, 6, "d4"));
  EXPECT_EQ(write(MergeOptions::Method::kTies, 0, "t1"),
            write(MergeOptions::Method::kTies, 9, "t2"));
}

TEST(Merge, Refusals) {
  Loaded a = LoadFixture("attn_qkvo");
  Loaded alora = LoadFixture("alora");  // also on gqa_f32_v5
  TempDir tmp;
  const std::pair<const LoraAdapter*, float> activated[] = {{&a.adapter, 1.0f},
                                                            {&alora.adapter, 1.0f}};
  EXPECT_TRUE(FailsWith(WriteMergedCheckpoint(*a.base, activated, MergeOptions{}, tmp.File("x")),
                        {"'alora'", "activated LoRA (aLoRA, invocation tokens [17, 93, 41])",
                         "every position", "unmerged"}));
  EXPECT_TRUE(FailsWith(ConcatAdapters(activated, a.base->config()), {"aLoRA"}));
  EXPECT_TRUE(FailsWith(WriteMergedCheckpoint(*a.base, {}, MergeOptions{}, tmp.File("x")),
                        {"no adapters"}));
  const std::pair<const LoraAdapter*, float> null[] = {{nullptr, 1.0f}};
  EXPECT_TRUE(FailsWith(WriteMergedCheckpoint(*a.base, null, MergeOptions{}, tmp.File("x")),
                        {"adapter 0 is missing"}));
  const std::pair<const LoraAdapter*, float> one[] = {{&a.adapter, 1.0f}};
  for (double density : {0.0, -0.5, 1.5}) {
    EXPECT_TRUE(
        FailsWith(WriteMergedCheckpoint(*a.base, one, F32(MergeOptions::Method::kTies, density),
                                        tmp.File("x")),
                  {"density", "ties", "(0, 1]"}));
  }
  MergeOptions quantized_out;
  quantized_out.out_dtype = DType::kQ8_0;
  EXPECT_TRUE(FailsWith(WriteMergedCheckpoint(*a.base, one, quantized_out, tmp.File("x")),
                        {"Q8_0", "quantized"}));
  EXPECT_TRUE(FailsWith(WriteMergedCheckpoint(*a.base, one, MergeOptions{}, a.base->dir()),
                        {"own directory"}));
  // An adapter made for another base.
  Loaded other = LoadFixture("mlp_layers");  // untied_f16: 3 layers
  const std::pair<const LoraAdapter*, float> wrong[] = {{&other.adapter, 1.0f}};
  EXPECT_TRUE(FailsWith(WriteMergedCheckpoint(*a.base, wrong, MergeOptions{}, tmp.File("x")),
                        {"mlp_layers", "3 layers", "5"}));
  // A quantized base.
  Checkpoint::Parts parts;
  parts.path = a.base->dir();
  parts.config_path = a.base->config_path();
  parts.config = a.base->config();
  parts.tensors = a.base->tensors();
  parts.storage = a.base->storage();
  parts.quantization = "q8_0";
  auto quantized = Checkpoint::FromTensors(std::move(parts));
  ASSERT_TRUE(quantized.ok()) << quantized.error().message();
  EXPECT_TRUE(FailsWith(WriteMergedCheckpoint(*quantized, one, MergeOptions{}, tmp.File("x")),
                        {"quantized (q8_0)", "F32, BF16 or F16"}));
  EXPECT_FALSE(std::filesystem::exists(tmp.File("x") + "/model.safetensors"));
}

TEST(Merge, MethodNames) {
  for (auto m : {MergeOptions::Method::kLinear, MergeOptions::Method::kTies,
                 MergeOptions::Method::kDare, MergeOptions::Method::kConcat}) {
    EXPECT_EQ(ParseMergeMethod(MergeMethodName(m)), m);
  }
  EXPECT_FALSE(ParseMergeMethod("average").has_value());
}

}  // namespace
}  // namespace fgnet
