// End-to-end numerics of the Gemma 3 forward pass against Hugging Face transformers.
//
// Each fixture under tests/fixtures/parity/<name>/ is a small random checkpoint made by
// tools/make_parity_fixtures.py together with transformers' float32 outputs on it:
//   prompt.json      {"input_ids": [...]}
//   logits.npy       f32 [n_prompt, vocab], logits at every prompt position
//   greedy.json      {"prompt_ids": [...], "generated_ids": [...]}, a greedy continuation
//   logits_full.npy  f32 [n_prompt + n_new, vocab], one forward pass over prompt + continuation
// The fixtures differ in attention layout (MQA, GQA, MHA), head_dim vs hidden/heads,
// query_pre_attn_scalar, sliding windows shorter than the prompt and than a prefill chunk,
// layer patterns, RoPE thetas and linear scaling, softcapping, tied and untied output matrices,
// stored dtype (BF16, F32, F16) and config.json shape (4.x, 5.x, multimodal text_config).
// tools/README.md lists them and the transformers behaviours they pin down, among them: a sliding
// layer's query at p sees keys p - window < k <= p; attn_logit_softcapping is ignored (as
// transformers does for Gemma 3); the embedding scale is the unrounded f32 sqrt(hidden).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include "model/checkpoint.h"
#include "model/gemma3_model.h"
#include "model/kv_cache.h"
#include "tensor/tensor.h"
#include "util/json.h"
#include "util/npy.h"
#include "util/status.h"
#include "util/thread_pool.h"

namespace fgnet {
namespace {

// Largest accepted |fgnet - transformers| for any logit.
constexpr double kTolerance = 1e-3;
constexpr std::int64_t kChunk = 5;

std::string FixtureDir(const std::string& name) {
  return std::string(FGNET_TEST_DATA_DIR) + "/parity/" + name;
}

struct Reference {
  std::vector<std::int32_t> prompt;
  std::vector<std::int32_t> generated;
  std::int64_t vocab = 0;
  std::vector<float> logits;       // [prompt.size(), vocab]
  std::vector<float> logits_full;  // [prompt.size() + generated.size(), vocab]

  std::vector<std::int32_t> full_sequence() const {
    std::vector<std::int32_t> all = prompt;
    all.insert(all.end(), generated.begin(), generated.end());
    return all;
  }
};

Result<std::vector<std::int32_t>> ReadIds(const Json& json, const char* key,
                                          const std::string& file) {
  if (!json.is_object() || !json.contains(key) || !json.at(key).is_array()) {
    return MakeError(file, ": expected an array '", key, "'");
  }
  std::vector<std::int32_t> ids;
  for (const Json& v : json.at(key)) {
    if (!v.is_number_integer()) return MakeError(file, ": '", key, "' holds a non-integer");
    ids.push_back(v.get<std::int32_t>());
  }
  return ids;
}

Result<std::vector<float>> ReadMatrix(const std::string& path, std::int64_t rows,
                                      std::int64_t cols) {
  FGNET_ASSIGN_OR_RETURN(NpyArray array, ReadNpy(path));
  if (array.shape != std::vector<std::int64_t>{rows, cols}) {
    return MakeError(path, ": shape ", ShapeToString(array.shape), ", expected ",
                     ShapeToString({rows, cols}));
  }
  return array.AsFloat32();
}

Result<Reference> LoadReference(const std::string& dir, std::int64_t vocab) {
  Reference ref;
  ref.vocab = vocab;
  FGNET_ASSIGN_OR_RETURN(Json prompt_json, ReadJsonFile(dir + "/prompt.json"));
  FGNET_ASSIGN_OR_RETURN(ref.prompt, ReadIds(prompt_json, "input_ids", dir + "/prompt.json"));
  FGNET_ASSIGN_OR_RETURN(Json greedy_json, ReadJsonFile(dir + "/greedy.json"));
  FGNET_ASSIGN_OR_RETURN(std::vector<std::int32_t> greedy_prompt,
                         ReadIds(greedy_json, "prompt_ids", dir + "/greedy.json"));
  FGNET_ASSIGN_OR_RETURN(ref.generated,
                         ReadIds(greedy_json, "generated_ids", dir + "/greedy.json"));
  if (greedy_prompt != ref.prompt) return MakeError(dir, ": greedy.json has another prompt");
  if (ref.prompt.empty() || ref.generated.empty()) return MakeError(dir, ": empty ids");
  const auto n_prompt = static_cast<std::int64_t>(ref.prompt.size());
  const auto n_full = n_prompt + static_cast<std::int64_t>(ref.generated.size());
  FGNET_ASSIGN_OR_RETURN(ref.logits, ReadMatrix(dir + "/logits.npy", n_prompt, vocab));
  FGNET_ASSIGN_OR_RETURN(ref.logits_full, ReadMatrix(dir + "/logits_full.npy", n_full, vocab));
  return ref;
}

// The worst element of a [rows, vocab] comparison; NaN counts as infinitely wrong.
struct Worst {
  double error = 0.0;
  std::int64_t row = -1;
  std::int64_t column = -1;
  float got = 0.0f;
  float want = 0.0f;
  std::int64_t row_offset = 0;  // position of row 0 in the sequence

  std::string Describe() const {
    std::ostringstream os;
    os << "max |fgnet - transformers| = " << error << " at position " << row_offset + row
       << ", token " << column << " (fgnet " << got << ", transformers " << want << ")";
    return os.str();
  }
};

Worst Compare(std::span<const float> got, std::span<const float> want, std::int64_t vocab,
              std::int64_t row_offset) {
  Worst worst;
  worst.row_offset = row_offset;
  for (std::size_t i = 0; i < want.size(); ++i) {
    double error = std::fabs(static_cast<double>(got[i]) - static_cast<double>(want[i]));
    if (std::isnan(error)) error = std::numeric_limits<double>::infinity();
    if (worst.row < 0 || error > worst.error) {
      worst.error = error;
      worst.row = static_cast<std::int64_t>(i) / vocab;
      worst.column = static_cast<std::int64_t>(i) % vocab;
      worst.got = got[i];
      worst.want = want[i];
    }
  }
  return worst;
}

// Index of the largest logit; the first one wins a tie.
std::int32_t Argmax(std::span<const float> logits) {
  std::size_t best = 0;
  for (std::size_t i = 1; i < logits.size(); ++i) {
    if (logits[i] > logits[best]) best = i;
  }
  return static_cast<std::int32_t>(best);
}

class ParityTest : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    dir_ = FixtureDir(GetParam());
    auto checkpoint = Checkpoint::Open(dir_);
    ASSERT_TRUE(checkpoint.ok()) << checkpoint.error().message();
    checkpoint_ = std::make_unique<Checkpoint>(std::move(checkpoint).value());
    auto model = Gemma3Model::Create(checkpoint_->config(), checkpoint_->weights());
    ASSERT_TRUE(model.ok()) << model.error().message();
    model_ = std::make_unique<Gemma3Model>(std::move(model).value());
    auto reference = LoadReference(dir_, checkpoint_->config().vocab_size);
    ASSERT_TRUE(reference.ok()) << reference.error().message();
    ref_ = std::move(reference).value();
  }

  std::int64_t n_prompt() const { return static_cast<std::int64_t>(ref_.prompt.size()); }
  std::int64_t n_full() const {
    return n_prompt() + static_cast<std::int64_t>(ref_.generated.size());
  }
  std::span<const float> FullRow(std::int64_t position) const {
    return std::span<const float>(ref_.logits_full)
        .subspan(static_cast<std::size_t>(position * ref_.vocab),
                 static_cast<std::size_t>(ref_.vocab));
  }

  std::string dir_;
  std::unique_ptr<Checkpoint> checkpoint_;  // outlives model_, never moved after Create
  std::unique_ptr<Gemma3Model> model_;
  Reference ref_;
  ThreadPool pool_{2};
};

TEST_P(ParityTest, PromptLogitsMatchAtEveryPosition) {
  KVCache kv = model_->NewKVCache(n_full());
  std::vector<float> logits;
  Status status = model_->Forward(ref_.prompt, kv, pool_, LogitsMode::kAll, &logits);
  ASSERT_TRUE(status.ok()) << status.error().message();
  ASSERT_EQ(logits.size(), ref_.logits.size());
  EXPECT_EQ(kv.length(), n_prompt());
  const Worst worst = Compare(logits, ref_.logits, ref_.vocab, 0);
  EXPECT_LE(worst.error, kTolerance) << GetParam() << ": " << worst.Describe();
}

TEST_P(ParityTest, FullSequenceLogitsMatchInOnePass) {
  KVCache kv = model_->NewKVCache(n_full());
  std::vector<float> logits;
  const std::vector<std::int32_t> tokens = ref_.full_sequence();
  Status status = model_->Forward(tokens, kv, pool_, LogitsMode::kAll, &logits);
  ASSERT_TRUE(status.ok()) << status.error().message();
  ASSERT_EQ(logits.size(), ref_.logits_full.size());
  const Worst worst = Compare(logits, ref_.logits_full, ref_.vocab, 0);
  EXPECT_LE(worst.error, kTolerance) << GetParam() << ": " << worst.Describe();
}

TEST_P(ParityTest, PrefillInChunksOfFiveMatches) {
  KVCache kv = model_->NewKVCache(n_full());
  const std::vector<std::int32_t> tokens = ref_.full_sequence();
  Worst overall;
  for (std::int64_t start = 0; start < n_full(); start += kChunk) {
    const std::int64_t count = std::min(kChunk, n_full() - start);
    std::vector<float> logits;
    Status status =
        model_->Forward(std::span<const std::int32_t>(tokens).subspan(
                            static_cast<std::size_t>(start), static_cast<std::size_t>(count)),
                        kv, pool_, LogitsMode::kAll, &logits);
    ASSERT_TRUE(status.ok()) << "chunk at " << start << ": " << status.error().message();
    ASSERT_EQ(static_cast<std::int64_t>(logits.size()), count * ref_.vocab);
    ASSERT_EQ(kv.length(), start + count);
    const Worst worst =
        Compare(logits,
                std::span<const float>(ref_.logits_full)
                    .subspan(static_cast<std::size_t>(start * ref_.vocab), logits.size()),
                ref_.vocab, start);
    if (overall.row < 0 || worst.error > overall.error) overall = worst;
  }
  EXPECT_LE(overall.error, kTolerance) << GetParam() << ": " << overall.Describe();
}

TEST_P(ParityTest, GreedyContinuationMatches) {
  KVCache kv = model_->NewKVCache(n_full());
  std::vector<float> logits;
  Status status = model_->Forward(ref_.prompt, kv, pool_, LogitsMode::kLast, &logits);
  ASSERT_TRUE(status.ok()) << status.error().message();
  std::vector<std::int32_t> generated;
  Worst overall;
  for (std::size_t step = 0; step < ref_.generated.size(); ++step) {
    ASSERT_EQ(static_cast<std::int64_t>(logits.size()), ref_.vocab) << "step " << step;
    const std::int64_t position = n_prompt() - 1 + static_cast<std::int64_t>(step);
    const Worst worst = Compare(logits, FullRow(position), ref_.vocab, position);
    if (overall.row < 0 || worst.error > overall.error) overall = worst;
    const std::int32_t next = Argmax(logits);
    generated.push_back(next);
    ASSERT_EQ(next, ref_.generated[step])
        << GetParam() << ": greedy token " << step << " (position " << position + 1
        << ") differs; logits so far: " << overall.Describe();
    status = model_->Forward(std::span<const std::int32_t>(&next, 1), kv, pool_, LogitsMode::kLast,
                             &logits);
    ASSERT_TRUE(status.ok()) << "step " << step << ": " << status.error().message();
  }
  EXPECT_EQ(generated, ref_.generated);
  EXPECT_LE(overall.error, kTolerance) << GetParam() << " (decode steps): " << overall.Describe();
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ParityTest,
                         ::testing::Values("mqa_bf16_v4", "gqa_f32_v5", "nested_mm", "untied_f16"),
                         [](const ::testing::TestParamInfo<const char*>& param_info) {
                           return std::string(param_info.param);
                         });

}  // namespace
}  // namespace fgnet
