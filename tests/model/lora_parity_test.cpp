// Run-time LoRA against peft: every adapter under tests/fixtures/lora/ (made by
// tools/make_lora_fixtures.py with peft on the parity bases) is loaded from its PEFT files and
// applied unmerged; the logits at every prompt position must match peft's within 1e-3, the
// greedy continuation must be peft's token for token (each step's logits within 1e-3), a scale of
// 0 must give the base model exactly, and the activated adapter must leave every position before
// its invocation (and a prompt without it) exactly as the base. A weighted mix of two adapters
// must equal peft's delta-space linear merge of them.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "engine/generator.h"
#include "engine/model_session.h"
#include "model/checkpoint.h"
#include "model/gemma3_model.h"
#include "model/lora.h"
#include "model/merge.h"
#include "model/peft.h"
#include "tiny_checkpoint.h"
#include "util/json.h"
#include "util/npy.h"
#include "util/thread_pool.h"

namespace fgnet {
namespace {

constexpr double kTolerance = 1e-3;

std::string LoraDir(const std::string& name) {
  return std::string(FGNET_TEST_DATA_DIR) + "/lora/" + name;
}

struct Base {
  std::unique_ptr<Checkpoint> checkpoint;
  std::unique_ptr<Gemma3Model> model;
};

Base OpenBase(const std::string& name) {
  Base base;
  auto ck = Checkpoint::Open(std::string(FGNET_TEST_DATA_DIR) + "/" + name);
  EXPECT_TRUE(ck.ok()) << ck.error().message();
  base.checkpoint = std::make_unique<Checkpoint>(std::move(ck).value());
  auto model = Gemma3Model::Create(base.checkpoint->config(), base.checkpoint->weights());
  EXPECT_TRUE(model.ok()) << model.error().message();
  base.model = std::make_unique<Gemma3Model>(std::move(model).value());
  return base;
}

std::vector<std::int32_t> Ids(const Json& j) {
  std::vector<std::int32_t> ids;
  for (const Json& v : j) ids.push_back(v.get<std::int32_t>());
  return ids;
}

std::vector<float> Matrix(const std::string& path) {
  auto npy = ReadNpy(path);
  EXPECT_TRUE(npy.ok()) << npy.error().message();
  auto values = npy->AsFloat32();
  EXPECT_TRUE(values.ok());
  return *values;
}

double MaxDiff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double worst = 0.0;
  for (std::size_t i = 0; i < std::min(a.size(), b.size()); ++i)
    worst = std::max(worst, std::abs(static_cast<double>(a[i]) - b[i]));
  return worst;
}

std::vector<float> RunAll(const Gemma3Model& model, const std::vector<std::int32_t>& ids,
                          std::span<const AdapterUse> uses, ThreadPool& pool) {
  KVCache kv = model.NewKVCache(static_cast<std::int64_t>(ids.size()));
  std::vector<float> logits;
  const Status s = model.Forward(ids, kv, pool, LogitsMode::kAll, &logits, uses);
  EXPECT_TRUE(s.ok()) << s.error().message();
  return logits;
}

// A LogitsSource that records every step's logits.
class Recorder final : public LogitsSource {
 public:
  explicit Recorder(ModelSession& session) : session_(session) {}
  Status Append(std::span<const std::int32_t> tokens, std::vector<float>* last) override {
    FGNET_TRY(session_.Append(tokens, last));
    steps.push_back(*last);
    return Ok();
  }
  std::int64_t vocab_size() const override { return session_.vocab_size(); }
  std::vector<std::vector<float>> steps;

 private:
  ModelSession& session_;
};

class LoraParityTest : public ::testing::TestWithParam<std::string> {};

TEST_P(LoraParityTest, UnmergedMatchesPeft) {
  const std::string dir = LoraDir(GetParam());
  auto fixture = ReadJsonFile(dir + "/fixture.json");
  ASSERT_TRUE(fixture.ok()) << fixture.error().message();
  const Json& f = *fixture;
  const Base base = OpenBase(f.at("base").get<std::string>());
  auto adapter = LoadPeftAdapter(dir, base.checkpoint->config());
  ASSERT_TRUE(adapter.ok()) << adapter.error().message();
  ThreadPool pool(2);
  const std::vector<std::int32_t> prompt = Ids(f.at("prompt_ids"));
  const std::size_t vocab = static_cast<std::size_t>(base.checkpoint->config().vocab_size);

  // Every prompt position, unmerged, in one pass.
  std::int64_t start = 0;
  if (adapter->is_activated())
    start = AloraStart(prompt, adapter->config.alora_invocation_tokens).value();
  const AdapterUse use{&*adapter, 1.0f, start};
  const std::vector<float> logits = RunAll(*base.model, prompt, std::span(&use, 1), pool);
  const std::vector<float> want = Matrix(dir + "/" + f.at("logits_unmerged").get<std::string>());
  const double diff = MaxDiff(logits, want);
  EXPECT_LE(diff, kTolerance);
  std::printf("%s: max |fgnet - peft| over the prompt logits %.3g\n", GetParam().c_str(), diff);

  // Scale 0 is the base exactly.
  const AdapterUse off{&*adapter, 0.0f, 0};
  EXPECT_EQ(RunAll(*base.model, prompt, std::span(&off, 1), pool),
            RunAll(*base.model, prompt, {}, pool));

  // Greedy continuation through the generation loop, prompt prefilled at once.
  const std::vector<std::int32_t> generated = Ids(f.at("generated_ids"));
  ModelSession session(*base.model, pool,
                       static_cast<std::int64_t>(prompt.size() + generated.size()),
                       {{&*adapter, 1.0f, 0}});
  Recorder recorder(session);
  GenerateRequest request;
  request.prompt = prompt;
  request.params.do_sample = false;
  request.max_new_tokens = static_cast<std::int64_t>(generated.size());
  auto result = Generate(recorder, request);
  ASSERT_TRUE(result.ok()) << result.error().message();
  EXPECT_EQ(result->ids, generated);
  const std::vector<float> steps =
      Matrix(dir + "/" + f.at("greedy_step_logits").get<std::string>());
  ASSERT_EQ(steps.size(), recorder.steps.size() * vocab);
  std::vector<float> got;
  for (const auto& s : recorder.steps) got.insert(got.end(), s.begin(), s.end());
  EXPECT_LE(MaxDiff(got, steps), kTolerance);
}

std::vector<std::string> Fixtures() {
  return {"attn_qkvo", "all_linear_rslora", "mlp_layers", "alora", "regex_mm", "attn_qvo_second"};
}

INSTANTIATE_TEST_SUITE_P(Fixtures, LoraParityTest, ::testing::ValuesIn(Fixtures()),
                         [](const auto& param_info) { return param_info.param; });

TEST(LoraParityTest, ActivatedAdapterLeavesTheBaseAloneBeforeItsInvocation) {
  const std::string dir = LoraDir("alora");
  auto fixture = ReadJsonFile(dir + "/fixture.json");
  ASSERT_TRUE(fixture.ok());
  const Json& a = fixture->at("alora");
  const Base base = OpenBase(fixture->at("base").get<std::string>());
  auto adapter = LoadPeftAdapter(dir, base.checkpoint->config());
  ASSERT_TRUE(adapter.ok()) << adapter.error().message();
  ASSERT_TRUE(adapter->is_activated());
  ThreadPool pool(2);
  const std::vector<std::int32_t> prompt = Ids(a.at("prompt_ids"));
  const std::int64_t start = AloraStart(prompt, adapter->config.alora_invocation_tokens).value();
  EXPECT_EQ(start, a.at("peft_start").get<std::int64_t>());
  const AdapterUse use{&*adapter, 1.0f, start};
  const std::vector<float> with = RunAll(*base.model, prompt, std::span(&use, 1), pool);
  const std::vector<float> without = RunAll(*base.model, prompt, {}, pool);
  const std::size_t vocab = static_cast<std::size_t>(base.checkpoint->config().vocab_size);
  const auto split = static_cast<std::ptrdiff_t>(static_cast<std::size_t>(start) * vocab);
  EXPECT_TRUE(std::equal(with.begin(), with.begin() + split, without.begin()));
  EXPECT_GT(MaxDiff(std::vector<float>(with.begin() + split, with.end()),
                    std::vector<float>(without.begin() + split, without.end())),
            1.0);
  // A prompt without the invocation: the session leaves the adapter off, exactly the base.
  const std::vector<std::int32_t> plain = Ids(a.at("no_invocation_prompt_ids"));
  std::vector<float> adapted, reference;
  ModelSession session(*base.model, pool, 64, {{&*adapter, 1.0f, 0}});
  ASSERT_TRUE(session.Append(plain, &adapted).ok());
  EXPECT_EQ(session.inactive_adapters().size(), 1u);
  ModelSession plain_session(*base.model, pool, 64);
  ASSERT_TRUE(plain_session.Append(plain, &reference).ok());
  EXPECT_EQ(adapted, reference);
}

TEST(LoraParityTest, WeightedMixEqualsPeftLinearMerge) {
  const std::string dir = LoraDir("merges");
  auto fixture = ReadJsonFile(dir + "/fixture.json");
  ASSERT_TRUE(fixture.ok());
  const Json& f = *fixture;
  const Base base = OpenBase(f.at("base").get<std::string>());
  std::vector<LoraAdapter> adapters;
  std::vector<AdapterUse> uses;
  for (const Json& a : f.at("adapters")) {
    auto adapter =
        LoadPeftAdapter(LoraDir(a.at("name").get<std::string>()), base.checkpoint->config());
    ASSERT_TRUE(adapter.ok()) << adapter.error().message();
    adapters.push_back(std::move(adapter).value());
  }
  std::size_t i = 0;
  for (const Json& a : f.at("adapters")) {
    uses.push_back({&adapters[i++], a.at("weight").get<float>(), 0});
  }
  ThreadPool pool(2);
  const std::vector<float> logits = RunAll(*base.model, Ids(f.at("prompt_ids")), uses, pool);
  EXPECT_LE(MaxDiff(logits, Matrix(dir + "/" + f.at("logits_linear").get<std::string>())),
            kTolerance);
}

}  // namespace
}  // namespace fgnet

namespace fgnet {
namespace {

// Merged output equals unmerged output: the checkpoint `WriteMergedCheckpoint` writes (f32) gives
// the logits of the same adapters applied at run time, for one adapter and a weighted pair.
TEST(LoraParityTest, MergedCheckpointEqualsUnmergedAdapters) {
  const Base base = OpenBase("parity/gqa_f32_v5");
  std::vector<LoraAdapter> adapters;
  for (const char* name : {"attn_qkvo", "attn_qvo_second"}) {
    auto adapter = LoadPeftAdapter(LoraDir(name), base.checkpoint->config());
    ASSERT_TRUE(adapter.ok()) << adapter.error().message();
    adapters.push_back(std::move(adapter).value());
  }
  const std::vector<std::vector<std::pair<const LoraAdapter*, float>>> cases = {
      {{&adapters[0], 1.0f}}, {{&adapters[0], 0.7f}, {&adapters[1], -0.5f}}};
  ThreadPool pool(2);
  const std::vector<std::int32_t> prompt = {2, 17, 93, 41, 200, 5, 77, 130, 9, 11, 250, 3};
  for (const auto& weighted : cases) {
    testing::TempDir dir;
    MergeOptions options;
    options.out_dtype = DType::kF32;
    ASSERT_TRUE(WriteMergedCheckpoint(*base.checkpoint, weighted, options, dir.path()).ok());
    auto ck = Checkpoint::Open(dir.path());
    ASSERT_TRUE(ck.ok()) << ck.error().message();
    auto model = Gemma3Model::Create(ck->config(), ck->weights());
    ASSERT_TRUE(model.ok());
    std::vector<AdapterUse> uses;
    for (const auto& [adapter, w] : weighted) uses.push_back({adapter, w, 0});
    const double diff =
        MaxDiff(RunAll(*model, prompt, {}, pool), RunAll(*base.model, prompt, uses, pool));
    EXPECT_LE(diff, kTolerance);
    std::printf("merged vs unmerged (%zu adapters): max |difference| %.3g\n", weighted.size(),
                diff);
  }
}

}  // namespace
}  // namespace fgnet
