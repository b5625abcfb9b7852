// Models and adapters in every format are interchangeable: `fgnet convert` writes RDRR packages
// and GGUF files (quantized or not) with their adapters, and `fgnet logits` / `fgnet inspect`
// on any combination give the same results as the Hugging Face checkpoint with the PEFT adapter
// (bit-identical where the values are stored alike, within 1e-4 otherwise) and peft's own
// logits within 1e-3, activated LoRA included. Adapters made for another base are refused.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "fixture_files.h"
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

class ConvertCommandTest : public ::testing::Test {
 protected:
  // `fgnet logits` over `ids` with the given model and adapters, as floats.
  std::vector<float> Logits(const std::string& model, std::vector<std::string> adapters,
                            const std::string& ids) {
    const std::string out = dir_.path() / ("logits" + std::to_string(n_++) + ".npy");
    std::vector<std::string> args = {"logits", "--model", model, "--ids", ids, "--out", out};
    for (const std::string& a : adapters) {
      args.push_back("--adapter");
      args.push_back(a);
    }
    const Outcome r = RunApp(args);
    EXPECT_EQ(r.code, 0) << r.err;
    return r.code == 0 ? ReadFloats(out) : std::vector<float>{};
  }
  Outcome Convert(std::vector<std::string> args) {
    args.insert(args.begin(), "convert");
    return RunApp(args);
  }
  std::string Path(const std::string& name) const { return (dir_.path() / name).string(); }

  TempDir dir_;
  int n_ = 0;
};

TEST_F(ConvertCommandTest, EveryFormatOfModelAndAdapterGivesTheSameLogits) {
  const std::string ids = PromptIds(kLora + "attn_qkvo/fixture.json");
  const std::string pkg = Path("pkg");
  const std::string gguf = Path("model.gguf");
  ASSERT_EQ(Convert({"--model", kBase, "--out", pkg, "--adapter", kLora + "attn_qkvo"}).code, 0);
  ASSERT_EQ(Convert({"--model", kBase, "--out", gguf, "--format", "gguf", "--adapter",
                     kLora + "attn_qkvo"})
                .code,
            0);
  const std::vector<float> reference = Logits(kBase, {kLora + "attn_qkvo"}, ids);
  const std::vector<float> peft = ReadFloats(kLora + "attn_qkvo/logits_unmerged.npy");
  EXPECT_LE(MaxDiff(reference, peft), 1e-3);
  // The same f32 values in every container: identical logits.
  EXPECT_EQ(Logits(pkg, {pkg + "/adapters/attn_qkvo"}, ids), reference);
  EXPECT_EQ(Logits(kBase, {pkg + "/adapters/attn_qkvo"}, ids), reference);
  EXPECT_EQ(Logits(pkg, {kLora + "attn_qkvo"}, ids), reference);
  EXPECT_EQ(Logits(kBase, {Path("attn_qkvo.gguf")}, ids), reference);
  // GGUF stores the norms as 1 + w: equal up to that rounding.
  EXPECT_LE(MaxDiff(Logits(gguf, {Path("attn_qkvo.gguf")}, ids), reference), 1e-4);
  EXPECT_LE(MaxDiff(Logits(gguf, {kLora + "attn_qkvo"}, ids), reference), 1e-4);
  // A scale and a mix on the command line.
  const std::vector<float> half = Logits(pkg, {pkg + "/adapters/attn_qkvo:0.5"}, ids);
  EXPECT_GT(MaxDiff(half, reference), 1e-2);
  EXPECT_EQ(Logits(kBase, {kLora + "attn_qkvo:0.5"}, ids), half);
  EXPECT_LE(MaxDiff(Logits(kBase, {kLora + "attn_qkvo:0.7", kLora + "attn_qvo_second:0.5"},
                           PromptIds(kLora + "merges/fixture.json")),
                    ReadFloats(kLora + "merges/logits_linear.npy")),
            1e-3);
}

TEST_F(ConvertCommandTest, ActivatedAdapterThroughEveryFormat) {
  const std::string ids = PromptIds(kLora + "alora/fixture.json");
  const std::string pkg = Path("pkg");
  ASSERT_EQ(Convert({"--model", kBase, "--out", pkg, "--adapter", kLora + "alora"}).code, 0);
  const std::vector<float> peft = ReadFloats(kLora + "alora/logits_unmerged.npy");
  EXPECT_LE(MaxDiff(Logits(kBase, {kLora + "alora"}, ids), peft), 1e-3);
  EXPECT_LE(MaxDiff(Logits(pkg, {pkg + "/adapters/alora"}, ids), peft), 1e-3);
  // Without the invocation in the ids, the adapter is off (and the user is told).
  const Outcome r = RunApp({"logits", "--model", kBase, "--ids", "2,3,4", "--out",
                            Path("plain.npy"), "--adapter", kLora + "alora"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("invocation sequence is not in the prompt"));
  EXPECT_EQ(ReadFloats(Path("plain.npy")), Logits(kBase, {}, "2,3,4"));
}

TEST_F(ConvertCommandTest, QuantizedConversionsStayCloseToTheFloatModel) {
  const std::string ids = PromptIds(kLora + "attn_qkvo/fixture.json");
  const std::vector<float> reference = Logits(kBase, {}, ids);
  for (const std::string quant : {"q8_0", "q4_0"}) {
    const std::string pkg = Path("pkg_" + quant);
    ASSERT_EQ(Convert({"--model", kBase, "--out", pkg, "--quant", quant}).code, 0);
    const Outcome inspect = RunApp({"inspect", pkg, "--json"});
    ASSERT_EQ(inspect.code, 0) << inspect.err;
    auto json = ParseJson(inspect.out, "inspect");
    ASSERT_TRUE(json.ok());
    EXPECT_EQ((*json)["quantization"], quant);
    EXPECT_EQ((*json)["format"], "rdrr");
    const double diff = MaxDiff(Logits(pkg, {}, ids), reference);
    EXPECT_GT(diff, 0.0) << quant;
    EXPECT_LT(diff, quant == "q8_0" ? 1.5 : 25.0) << quant;
  }
}

TEST_F(ConvertCommandTest, InspectListsAdaptersByContentOnce) {
  const std::string pkg = Path("pkg");
  ASSERT_EQ(Convert({"--model", kBase, "--out", pkg, "--adapter", kLora + "attn_qkvo", "--adapter",
                     kLora + "alora"})
                .code,
            0);
  const Outcome r = RunApp(
      {"inspect", pkg, "--json", "--hash", "--adapter", "a=" + kLora + "attn_qkvo", "--adapter",
       "b=" + pkg + "/adapters/attn_qkvo", "--adapter", pkg + "/adapters/alora"});
  ASSERT_EQ(r.code, 0) << r.err;
  auto json = ParseJson(r.out, "inspect");
  ASSERT_TRUE(json.ok());
  const Json& adapters = (*json)["adapters"];
  ASSERT_EQ(adapters.size(), 2u);
  EXPECT_EQ(adapters[0]["names"], Json::array({"a", "b"}));
  EXPECT_EQ(adapters[0]["content_hash"].get<std::string>().size(), 64u);
  EXPECT_EQ(adapters[1]["alora_invocation_tokens"], Json::array({17, 93, 41}));
  EXPECT_EQ((*json)["adapter_bytes"],
            adapters[0]["bytes"].get<std::uint64_t>() + adapters[1]["bytes"].get<std::uint64_t>());
  // The package records its content hash, the same as the checkpoint's.
  const Outcome hf = RunApp({"inspect", kBase, "--json", "--hash"});
  auto hf_json = ParseJson(hf.out, "inspect");
  ASSERT_TRUE(hf_json.ok());
  EXPECT_EQ((*json)["content_hash"], (*hf_json)["content_hash"]);
}

TEST_F(ConvertCommandTest, ErrorsAreOneLine) {
  const std::string pkg = Path("pkg");
  ASSERT_EQ(Convert({"--model", kBase, "--out", pkg, "--adapter", kLora + "attn_qkvo"}).code, 0);
  struct Case {
    std::vector<std::string> args;
    std::string fragment;
  };
  const std::string other_base = kFixtures + "parity/mqa_bf16_v4";
  const Case cases[] = {
      {{"convert", "--model", kBase, "--out", Path("x"), "--adapter", kLora + "attn_qkvo:0.5"},
       "a scale has no meaning here"},
      {{"convert", "--model", kBase, "--out", Path("x"), "--adapters-only"},
       "--adapters-only needs at least one --adapter"},
      {{"logits", "--model", other_base, "--ids", "1,2", "--out", Path("y.npy"), "--adapter",
        pkg + "/adapters/attn_qkvo"},
       "built for base"},
      {{"logits", "--model", kLora + "attn_qkvo", "--ids", "1", "--out", Path("y.npy")},
       "is a PEFT adapter, not a model"},
      {{"logits", "--model", kBase, "--ids", "1", "--out", Path("y.npy"), "--adapter", kBase},
       "is a model checkpoint, not an adapter"},
      {{"inspect", kLora + "attn_qkvo/adapter_model.safetensors"}, "not a model"},
  };
  for (const Case& c : cases) {
    const Outcome r = RunApp(c.args);
    EXPECT_NE(r.code, 0) << c.fragment;
    EXPECT_EQ(testing::CountLines(r.err), 1) << r.err;
    EXPECT_THAT(r.err, HasSubstr(c.fragment));
  }
}

}  // namespace
}  // namespace fgnet::cli
