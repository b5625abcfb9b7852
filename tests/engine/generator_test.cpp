#include "engine/generator.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

namespace fgnet {
namespace {

// A deterministic sequence model: the next token after t is (t + 1) % vocab with logit 10, every
// other token 0 (or a fixed table when `fixed` is set). Records every Append call.
class CountingSource : public LogitsSource {
 public:
  explicit CountingSource(std::int64_t vocab) : vocab_(vocab) {}

  Status Append(std::span<const std::int32_t> tokens, std::vector<float>* last_logits) override {
    appended_.emplace_back(tokens.begin(), tokens.end());
    if (fail_at_call_ >= 0 && static_cast<int>(appended_.size()) - 1 == fail_at_call_) {
      return MakeError("KV cache full");
    }
    if (!fixed_.empty()) {
      *last_logits = fixed_;
    } else {
      last_logits->assign(static_cast<std::size_t>(vocab_ + wrong_size_), 0.0f);
      (*last_logits)[static_cast<std::size_t>((tokens.back() + 1) % vocab_)] = 10.0f;
    }
    return Ok();
  }
  std::int64_t vocab_size() const override { return vocab_; }

  std::vector<std::vector<std::int32_t>> appended_;
  std::vector<float> fixed_;
  int fail_at_call_ = -1;
  int wrong_size_ = 0;

 private:
  std::int64_t vocab_;
};

SamplingParams Greedy() {
  SamplingParams p;
  p.do_sample = false;
  return p;
}

TEST(Generator, StopsOnAStopIdWithoutAppendingIt) {
  CountingSource source(16);
  const std::vector<std::int32_t> prompt = {2, 3};
  const std::vector<std::int32_t> stops = {106, 8, 1};
  std::vector<std::int32_t> streamed;
  GenerateRequest req;
  req.prompt = prompt;
  req.params = Greedy();
  req.stop_ids = stops;
  req.max_new_tokens = 100;
  req.on_token = [&](std::int32_t id) {
    streamed.push_back(id);
    return true;
  };
  const Result<GenerationResult> r = Generate(source, req);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->ids, (std::vector<std::int32_t>{4, 5, 6, 7}));
  EXPECT_EQ(r->finish_reason, FinishReason::kStop);
  EXPECT_EQ(r->stop_id, 8);
  EXPECT_EQ(streamed, r->ids);
  EXPECT_EQ(source.appended_, (std::vector<std::vector<std::int32_t>>{{2, 3}, {4}, {5}, {6}, {7}}));
  EXPECT_EQ(FinishReasonName(r->finish_reason), "stop");
}

TEST(Generator, LengthLimit) {
  CountingSource source(16);
  const std::vector<std::int32_t> prompt = {3};
  GenerateRequest req;
  req.prompt = prompt;
  req.params = Greedy();
  req.max_new_tokens = 3;
  const Result<GenerationResult> r = Generate(source, req);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->ids, (std::vector<std::int32_t>{4, 5, 6}));
  EXPECT_EQ(r->finish_reason, FinishReason::kLength);
  EXPECT_FALSE(r->stop_id.has_value());
  // The last token's logits are never needed, so it is not appended.
  EXPECT_EQ(source.appended_, (std::vector<std::vector<std::int32_t>>{{3}, {4}, {5}}));

  CountingSource untouched(16);
  req.max_new_tokens = 0;
  const Result<GenerationResult> none = Generate(untouched, req);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->ids.empty());
  EXPECT_EQ(none->finish_reason, FinishReason::kLength);
  EXPECT_TRUE(untouched.appended_.empty());
}

TEST(Generator, CallbackCancels) {
  CountingSource source(16);
  const std::vector<std::int32_t> prompt = {0};
  GenerateRequest req;
  req.prompt = prompt;
  req.params = Greedy();
  req.max_new_tokens = 10;
  int calls = 0;
  req.on_token = [&](std::int32_t) { return ++calls < 2; };
  const Result<GenerationResult> r = Generate(source, req);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->ids, (std::vector<std::int32_t>{1, 2}));
  EXPECT_EQ(r->finish_reason, FinishReason::kCancelled);
  EXPECT_EQ(FinishReasonName(r->finish_reason), "cancelled");
}

TEST(Generator, FunctionGemmaStopTokens) {
  // Logits favour <start_function_response> (50) after the call tokens.
  CountingSource source(262);
  source.fixed_.assign(262, 0.0f);
  source.fixed_[50] = 5.0f;
  const std::vector<std::int32_t> prompt = {2, 105};
  const std::vector<std::int32_t> stops = {106, 1, 50};
  GenerateRequest req;
  req.prompt = prompt;
  req.params = Greedy();
  req.stop_ids = stops;
  req.max_new_tokens = 5;
  const Result<GenerationResult> r = Generate(source, req);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->ids.empty());
  EXPECT_EQ(r->stop_id, 50);
}

TEST(Generator, RepetitionPenaltyCoversPromptAndGeneratedIds) {
  CountingSource source(4);
  source.fixed_ = {2.0f, 1.9f, -1.0f, -3.0f};
  std::vector<std::int32_t> prompt = {3};
  GenerateRequest req;
  req.prompt = prompt;
  req.params = Greedy();
  req.params.repetition_penalty = 1.5f;
  req.max_new_tokens = 4;
  Result<GenerationResult> r = Generate(source, req);
  ASSERT_TRUE(r.ok());
  // 0 wins, is penalised to 1.33 < 1.9 so 1 wins, then 0 (1.33) beats 1 (1.27) for good.
  EXPECT_EQ(r->ids, (std::vector<std::int32_t>{0, 1, 0, 0}));
  prompt = {0};
  CountingSource again(4);
  again.fixed_ = source.fixed_;
  r = Generate(again, req);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->ids.front(), 1);
}

TEST(Generator, SeededSamplingIsReproducible) {
  std::vector<float> logits(64);
  for (std::size_t i = 0; i < logits.size(); ++i) logits[i] = std::sin(static_cast<float>(i));
  const std::vector<std::int32_t> prompt = {1};
  const auto run = [&](std::uint64_t seed) {
    CountingSource source(64);
    source.fixed_ = logits;
    GenerateRequest req;
    req.prompt = prompt;
    req.params.seed = seed;
    req.params.top_k = 20;
    req.max_new_tokens = 50;
    const Result<GenerationResult> r = Generate(source, req);
    EXPECT_TRUE(r.ok());
    return r.ok() ? r->ids : std::vector<std::int32_t>();
  };
  EXPECT_EQ(run(5), run(5));
  EXPECT_NE(run(5), run(6));
  EXPECT_EQ(run(5).size(), 50u);
}

TEST(Generator, Errors) {
  const std::vector<std::int32_t> prompt = {1};
  GenerateRequest req;
  req.prompt = prompt;
  req.params = Greedy();
  req.max_new_tokens = 5;

  CountingSource failing(16);
  failing.fail_at_call_ = 2;
  Result<GenerationResult> r = Generate(failing, req);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message(), "generation step 1: KV cache full");

  CountingSource failing_prompt(16);
  failing_prompt.fail_at_call_ = 0;
  r = Generate(failing_prompt, req);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message(), "prompt: KV cache full");

  CountingSource wrong(16);
  wrong.wrong_size_ = 1;
  r = Generate(wrong, req);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("expected the vocab size 16"), std::string::npos);

  CountingSource source(16);
  GenerateRequest empty = req;
  empty.prompt = {};
  EXPECT_FALSE(Generate(source, empty).ok());
  GenerateRequest negative = req;
  negative.max_new_tokens = -1;
  EXPECT_FALSE(Generate(source, negative).ok());
  GenerateRequest bad = req;
  bad.params.top_p = 2.0f;
  r = Generate(source, bad);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("sampling parameters: top_p"), std::string::npos);

  CountingSource dead(4);
  dead.fixed_.assign(4, -std::numeric_limits<float>::infinity());
  r = Generate(dead, req);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("generation step 0"), std::string::npos);
}

}  // namespace
}  // namespace fgnet
