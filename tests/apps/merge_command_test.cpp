// `fgnet merge` end to end, in process, on the committed peft fixtures: a merged checkpoint gives
// peft's merge_and_unload() logits through `fgnet logits`; concat writes a PEFT adapter that
// reloads and merges to the linear reference; bad adapters and options fail with one line.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "fixture_files.h"
#include "model/checkpoint.h"
#include "model/lora.h"
#include "model/peft.h"
#include "run_app.h"
#include "test_files.h"
#include "util/json.h"
#include "util/npy.h"

namespace fgnet::cli {
namespace {

using ::testing::HasSubstr;
using testing::MaxDiff;
using testing::Outcome;
using testing::PromptIds;
using testing::ReadFloats;
using testing::RunApp;
using testing::TempDir;

const std::string kFixtures = std::string(FGNET_TEST_DATA_DIR) + "/";
const std::string kLora = kFixtures + "lora/";
const std::string kBase = kFixtures + "parity/gqa_f32_v5";

TEST(MergeCommand, MergedCheckpointGivesPeftsMergedLogits) {
  TempDir tmp;
  const std::string out = tmp.File("merged");
  const Outcome m = RunApp({"merge", "--model", kBase, "--adapter", kLora + "attn_qkvo", "--out",
                            out, "--dtype", "f32"});
  ASSERT_EQ(m.code, 0) << m.err;
  EXPECT_THAT(m.err, HasSubstr("merged 1 adapter (linear)"));
  const Outcome l =
      RunApp({"logits", "--model", out, "--ids", PromptIds(kLora + "attn_qkvo/fixture.json"),
              "--out", tmp.File("l.npy"), "--threads", "2"});
  ASSERT_EQ(l.code, 0) << l.err;
  EXPECT_LE(MaxDiff(tmp.File("l.npy"), kLora + "attn_qkvo/logits_merged.npy"), 1e-3);
}

TEST(MergeCommand, ConcatWritesAnAdapterThatMergesLikeTheLinearReference) {
  TempDir tmp;
  const std::string cat = tmp.File("cat");
  const Outcome c =
      RunApp({"merge", "--model", kBase, "--adapter", kLora + "attn_qkvo:0.7", "--adapter",
              kLora + "attn_qvo_second:0.5", "--method", "concat", "--out", cat});
  ASSERT_EQ(c.code, 0) << c.err;
  EXPECT_THAT(c.err, HasSubstr("a PEFT adapter"));
  EXPECT_TRUE(std::filesystem::exists(cat + "/adapter_config.json"));
  EXPECT_FALSE(std::filesystem::exists(cat + "/model.safetensors"));
  auto base = Checkpoint::Open(kBase);
  ASSERT_TRUE(base.ok());
  auto adapter = LoadPeftAdapter(cat, base->config());
  ASSERT_TRUE(adapter.ok()) << adapter.error().message();
  EXPECT_EQ(adapter->at(0, LoraModule::kQ).rank, 6u);
  EXPECT_EQ(adapter->at(0, LoraModule::kK).rank, 4u);

  const std::string merged = tmp.File("merged");
  const Outcome m =
      RunApp({"merge", "--model", kBase, "--adapter", cat, "--out", merged, "--dtype", "f32"});
  ASSERT_EQ(m.code, 0) << m.err;
  const Outcome l = RunApp({"logits", "--model", merged, "--ids",
                            PromptIds(kLora + "merges/fixture.json"), "--out", tmp.File("l.npy")});
  ASSERT_EQ(l.code, 0) << l.err;
  EXPECT_LE(MaxDiff(tmp.File("l.npy"), kLora + "merges/logits_linear.npy"), 1e-3);
}

TEST(MergeCommand, TiesWithDensityMatchesTheReference) {
  TempDir tmp;
  const Outcome m = RunApp({"merge", "--model", kBase, "--adapter", kLora + "attn_qkvo:0.7",
                            "--adapter", kLora + "attn_qvo_second:0.5", "--method", "ties",
                            "--density", "0.5", "--dtype", "f32", "--out", tmp.File("t")});
  ASSERT_EQ(m.code, 0) << m.err;
  const Outcome l = RunApp({"logits", "--model", tmp.File("t"), "--ids",
                            PromptIds(kLora + "merges/fixture.json"), "--out", tmp.File("l.npy")});
  ASSERT_EQ(l.code, 0) << l.err;
  EXPECT_LE(MaxDiff(tmp.File("l.npy"), kLora + "merges/logits_ties.npy"), 1e-3);
}

TEST(MergeCommand, FailuresAreOneLine) {
  TempDir tmp;
  const std::string out = tmp.File("o");
  struct Case {
    std::vector<std::string> args;
    int code;
    std::vector<std::string> fragments;
  };
  const Case cases[] = {
      {{"--adapter", kLora + "alora"}, kExitFailure, {"fgnet merge: ", "aLoRA", "every position"}},
      {{"--adapter", kLora + "missing:0.5"}, kExitFailure, {"lora/missing", "cannot open adapter"}},
      {{"--adapter", kLora + "attn_qkvo:inf"}, kExitFailure, {"scale inf", "not a finite number"}},
      {{"--adapter", kLora + "mlp_layers"},
       kExitFailure,
       {"mlp_layers", "adapter_model.safetensors"}},
      {{"--adapter", kLora + "attn_qkvo", "--method", "average"}, kExitUsage, {"--method"}},
      {{"--adapter", kLora + "attn_qkvo", "--density", "0.5"},
       kExitUsage,
       {"--density applies to --method ties and dare only"}},
      {{"--adapter", kLora + "attn_qkvo", "--method", "dare", "--density", "0"},
       kExitUsage,
       {"--density must be in (0, 1]"}},
      {{"--adapter", kLora + "attn_qkvo", "--method", "concat", "--dtype", "f32"},
       kExitUsage,
       {"--dtype does not apply to --method concat"}},
      {{}, kExitUsage, {"--adapter"}},
  };
  for (const Case& c : cases) {
    std::vector<std::string> args = {"merge", "--model", kBase, "--out", out};
    args.insert(args.end(), c.args.begin(), c.args.end());
    const Outcome r = RunApp(args);
    EXPECT_EQ(r.code, c.code) << r.err;
    EXPECT_EQ(testing::CountLines(r.err), 1) << r.err;
    for (const std::string& f : c.fragments) EXPECT_THAT(r.err, HasSubstr(f));
  }
  EXPECT_FALSE(std::filesystem::exists(out + "/model.safetensors"));
}

}  // namespace
}  // namespace fgnet::cli
