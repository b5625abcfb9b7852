// `fgnet batch` and `fgnet bench-serve` end to end, in process, on tiny random models: results in
// input order, bad lines and refused requests as error lines beside completed ones, batched
// greedy output equal to `fgnet generate` and to each request run alone, and a smoke run of the
// serving benchmark.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "apps/fgnet/commands.h"
#include "apps/fgnet/serve_bench.h"
#include "model/peft.h"
#include "model/synth.h"
#include "run_app.h"
#include "test_files.h"
#include "tokenizer/functiongemma_vocab.h"
#include "util/json.h"
#include "util/mapped_file.h"

namespace fgnet::cli {
namespace {

using ::testing::HasSubstr;
using testing::NpmGemma3Tokenizer;
using testing::Outcome;
using testing::ReadFile;
using testing::RunApp;
using ::testing::StartsWith;
using testing::TempDir;
using testing::TinyFullVocabConfig;
using testing::WriteFile;
using testing::WriteTinyFunctionGemmaModel;

std::vector<Json> ReadJsonLines(const std::string& path) {
  std::vector<Json> lines;
  std::istringstream in(ReadFile(path));
  for (std::string line; std::getline(in, line);) {
    auto json = ParseJson(line, path);
    EXPECT_TRUE(json.ok()) << line;
    lines.push_back(json.ok() ? *json : Json());
  }
  return lines;
}

// A tiny random model with the full 262,144-token vocabulary, FunctionGemma's tokenizer, and a
// random adapter as a PEFT directory.
class BatchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(std::ifstream(NpmGemma3Tokenizer()).good())
        << NpmGemma3Tokenizer() << " missing: run scripts/setup.sh";
    const Status written = WriteTinyFunctionGemmaModel(model());
    ASSERT_TRUE(written.ok()) << written.error().message();
    const Gemma3Config c = TinyFullVocabConfig();
    ASSERT_TRUE(
        WritePeftAdapter(RandomLoraAdapter(c, 2, 7, "ad", 0.5f), dir_.File("adapter")).ok());
  }
  std::string model() const { return dir_.File("model"); }

  // Runs `fgnet batch` on `lines`; the result lines.
  std::vector<Json> Batch(const std::vector<std::string>& lines,
                          std::vector<std::string> extra = {}) {
    static int n = 0;
    const std::string in = dir_.File("in" + std::to_string(n) + ".jsonl");
    const std::string out = dir_.File("out" + std::to_string(n++) + ".jsonl");
    std::string text;
    for (const std::string& line : lines) text += line + "\n";
    WriteFile(in, text);
    std::vector<std::string> args = {
        "batch",      "--model",   model(),
        "--requests", in,          "--out",
        out,          "--adapter", "ad=" + dir_.File("adapter") + ":0.5",
        "--threads",  "2",         "--kv-mib",
        "8"};
    args.insert(args.end(), extra.begin(), extra.end());
    const Outcome r = RunApp(args);
    EXPECT_EQ(r.code, 0) << r.err;
    return ReadJsonLines(out);
  }

  // `fgnet generate --json` greedy: its text and completion token count.
  std::pair<std::string, int> Generate(std::vector<std::string> args) {
    std::vector<std::string> all = {"generate", "--model", model(),     "--temperature",
                                    "0",        "--json",  "--threads", "1"};
    all.insert(all.end(), args.begin(), args.end());
    const Outcome r = RunApp(all);
    EXPECT_EQ(r.code, 0) << r.err;
    auto json = ParseJson(r.out, "generate output");
    EXPECT_TRUE(json.ok()) << r.out;
    if (!json.ok()) return {};
    return {(*json)["text"].get<std::string>(), (*json)["usage"]["completion_tokens"].get<int>()};
  }

  TempDir dir_;
};

const std::vector<std::string> kRequests = {
    R"({"id": "a", "prompt": "<bos>Once upon a time", "max_tokens": 6, "temperature": 0})",
    R"({"id": "b", "messages": [{"role": "user", "content": "Hi there"}], "max_tokens": 5,)"
    R"( "temperature": 0})",
    R"(this is not JSON)",
    R"({"id": "d", "prompt": "x", "prompt_ids": [2, 3]})",
    R"({"id": "e", "prompt": "<bos>Hello", "adapters": [{"name": "nope"}], "max_tokens": 2})",
    R"({"id": 6, "prompt_ids": [2, 1000, 2000, 3000], "max_tokens": 7, "temperature": 0})",
    R"({"id": "g", "prompt": "<bos>Tell me", "max_tokens": 4, "temperature": 0,)"
    R"( "adapters": [{"name": "ad"}]})",
    R"({"id": "h", "prompt": "<bos>Tell me", "max_tokens": 4, "temperature": 0, "colour": 1})",
    R"({"id": "i", "prompt": "<bos>Tell me", "max_tokens": 4, "temperature": 0})",
};

TEST_F(BatchTest, ResultsInInputOrderWithErrorLines) {
  const std::vector<Json> out = Batch(kRequests);
  ASSERT_EQ(out.size(), kRequests.size());
  EXPECT_EQ(out[0]["id"], "a");
  EXPECT_EQ(out[1]["id"], "b");
  EXPECT_FALSE(out[2].contains("id"));
  EXPECT_THAT(out[2]["error"].get<std::string>(), StartsWith("line 3: invalid JSON"));
  EXPECT_EQ(out[3]["id"], "d");
  EXPECT_EQ(out[3]["error"],
            "line 4: more than one prompt: give only one of prompt, messages or prompt_ids");
  // The engine refuses an unknown adapter; the request's line says so.
  EXPECT_EQ(out[4]["id"], "e");
  EXPECT_THAT(out[4]["error"].get<std::string>(), StartsWith("line 5: "));
  EXPECT_THAT(out[4]["error"].get<std::string>(), HasSubstr("nope"));
  EXPECT_EQ(out[5]["id"], 6);
  EXPECT_EQ(out[6]["id"], "g");
  EXPECT_EQ(out[7]["error"], "line 8: unknown field 'colour'");
  EXPECT_EQ(out[8]["id"], "i");
  for (int i : {0, 1, 5, 6, 8}) {
    SCOPED_TRACE(i);
    EXPECT_FALSE(out[i].contains("error")) << out[i].dump();
    EXPECT_EQ(out[i]["finish_reason"], "length");
    EXPECT_EQ(out[i]["usage"]["completion_tokens"], out[i]["ids"].size());
    EXPECT_GT(out[i]["usage"]["prompt_tokens"].get<int>(), 0);
    EXPECT_TRUE(out[i]["timings"].contains("time_to_first_token_ms"));
    EXPECT_EQ(out[i]["text"].is_string(), true);
  }
  EXPECT_EQ(out[0]["ids"].size(), 6u);
  EXPECT_EQ(out[5]["ids"].size(), 7u);
  EXPECT_EQ(out[5]["usage"]["prompt_tokens"], 4);
}

TEST_F(BatchTest, BatchedGreedyOutputEqualsGenerateAndEachRequestAlone) {
  const std::vector<Json> together = Batch(kRequests);
  ASSERT_EQ(together.size(), kRequests.size());
  // The text requests through `fgnet generate` (one sequence, its own contiguous KV cache).
  const auto a = Generate({"--raw", "--prompt", "Once upon a time", "--max-tokens", "6"});
  EXPECT_EQ(a.first, together[0]["text"]);
  EXPECT_EQ(a.second, 6);
  const auto b = Generate({"--prompt", "Hi there", "--max-tokens", "5"});
  EXPECT_EQ(b.first, together[1]["text"]);
  const auto g = Generate({"--raw", "--prompt", "Tell me", "--max-tokens", "4", "--adapter",
                           "ad=" + dir_.File("adapter") + ":0.5"});
  EXPECT_EQ(g.first, together[6]["text"]);
  // The adapter (scale 0.5 from --adapter) changes the output of the same prompt.
  EXPECT_NE(together[6]["ids"], together[8]["ids"]);
  // The token-id request alone in the engine.
  const std::vector<Json> alone = Batch({kRequests[5]});
  ASSERT_EQ(alone.size(), 1u);
  EXPECT_EQ(alone[0]["ids"], together[5]["ids"]);
  EXPECT_EQ(alone[0]["text"], together[5]["text"]);
}

TEST_F(BatchTest, SeedsConstraintsAndMetrics) {
  const std::string line =
      R"({"prompt": "<bos>Hello", "max_tokens": 8, "temperature": 1, "top_k": 0, "seed": 5})";
  const std::vector<Json> out =
      Batch({line, line,
             R"({"prompt": "<bos>Hello", "max_tokens": 8, "temperature": 1,)"
             R"( "top_k": 0, "seed": 6})",
             R"({"id": "json", "messages": [{"role": "user", "content": "A number?"}],)"
             R"( "max_tokens": 24, "temperature": 0, "json_schema": {"type": "object",)"
             R"( "properties": {"n": {"type": "integer"}}, "required": ["n"]}})"},
            {"--metrics", dir_.File("metrics.json")});
  ASSERT_EQ(out.size(), 4u);
  EXPECT_EQ(out[0]["ids"], out[1]["ids"]);
  EXPECT_NE(out[0]["ids"], out[2]["ids"]);
  // The schema reaches the engine: the random model's output is a complete object.
  ASSERT_FALSE(out[3].contains("error")) << out[3].dump();
  EXPECT_EQ(out[3]["finish_reason"], "stop");
  auto object = ParseJson(out[3]["text"].get<std::string>(), "constrained output");
  ASSERT_TRUE(object.ok()) << out[3]["text"];
  EXPECT_TRUE((*object)["n"].is_number_integer()) << object->dump();

  auto metrics = ReadJsonFile(dir_.File("metrics.json"));
  ASSERT_TRUE(metrics.ok()) << metrics.error().message();
  EXPECT_EQ((*metrics)["requests"]["submitted"], 4);
  EXPECT_EQ((*metrics)["requests"]["finished"], 4);
  EXPECT_EQ((*metrics)["generated_tokens"], 24 + out[3]["ids"].size());
  EXPECT_EQ((*metrics)["running"], 0);
}

// bf16 KV blocks are for GPUs: on the CPU, batch and generate fail with one clear line and write
// nothing.
TEST_F(BatchTest, Bf16KeysAndValuesNeedAGpu) {
  const std::string in = dir_.File("bf16.jsonl"), out = dir_.File("bf16_out.jsonl");
  WriteFile(in, kRequests[0] + "\n");
  const Outcome batch = RunApp({"batch", "--model", model(), "--requests", in, "--out", out,
                                "--threads", "1", "--kv-dtype", "bf16"});
  EXPECT_EQ(batch.code, kExitFailure);
  EXPECT_EQ(batch.err,
            "fgnet batch: engine: BF16 keys and values are not supported on cpu (F32 only)\n");
  const Outcome generate = RunApp(
      {"generate", "--model", model(), "--prompt", "Hi", "--threads", "1", "--kv-dtype", "bf16"});
  EXPECT_EQ(generate.code, kExitFailure);
  EXPECT_EQ(generate.err,
            "fgnet generate: prompt: KV cache: BF16 keys and values are not supported on cpu (F32 "
            "only)\n");
  const Outcome f16 =
      RunApp({"generate", "--model", model(), "--prompt", "Hi", "--kv-dtype", "f16"});
  EXPECT_EQ(f16.code, kExitUsage);
  EXPECT_THAT(f16.err, HasSubstr("--kv-dtype"));
}

// Files are checked before the model is loaded.
TEST(BatchCommand, FileErrorsFailTheCommand) {
  TempDir dir;
  const std::string model = dir.File("model");
  const Outcome missing = RunApp({"batch", "--model", model, "--requests", dir.File("none.jsonl"),
                                  "--out", dir.File("o.jsonl")});
  EXPECT_EQ(missing.code, kExitFailure);
  EXPECT_THAT(missing.err, StartsWith("fgnet batch: " + dir.File("none.jsonl") + ": "));
  EXPECT_EQ(testing::CountLines(missing.err), 1);

  WriteFile(dir.File("in.jsonl"), "{\"prompt\": \"x\"}\n");
  const Outcome unwritable = RunApp({"batch", "--model", model, "--requests", dir.File("in.jsonl"),
                                     "--out", dir.File("no/such.jsonl")});
  EXPECT_EQ(unwritable.code, kExitFailure);
  EXPECT_THAT(unwritable.err,
              StartsWith("fgnet batch: " + dir.File("no/such.jsonl") + ": cannot open"));

  const Outcome no_model = RunApp({"batch", "--model", model, "--requests", dir.File("in.jsonl"),
                                   "--out", dir.File("o.jsonl")});
  EXPECT_EQ(no_model.code, kExitFailure);
  EXPECT_THAT(no_model.err, StartsWith("fgnet batch: " + model));
  EXPECT_EQ(testing::CountLines(no_model.err), 1);
}

TEST(BatchCommand, HelpDescribesTheFormatsAndTheExitStatus) {
  const Outcome r = RunApp({"batch", "--help"});
  EXPECT_EQ(r.code, kExitOk);
  EXPECT_THAT(r.out, StartsWith("Usage: fgnet batch --model PATH --requests FILE.jsonl --out "
                                "FILE.jsonl [options]"));
  for (const char* s : {"--adapter [NAME=]PATH[:SCALE]", "--metrics FILE.json", "--kv-mib N",
                        "--max-batch-tokens N", "--block-size N", "--max-running N", "--threads N",
                        "Exit status: 0 when the file was processed"}) {
    EXPECT_THAT(r.out, HasSubstr(s));
  }
  EXPECT_THAT(RunApp({"--help"}).out, HasSubstr("\n  batch "));
  EXPECT_THAT(RunApp({"--help"}).out, HasSubstr("\n  bench-serve "));
}

TEST(BenchServe, PrintsTheTableOnATinyModel) {
  ASSERT_TRUE(std::ifstream(NpmGemma3Tokenizer()).good())
      << NpmGemma3Tokenizer() << " missing: run scripts/setup.sh";
  TempDir dir;
  ASSERT_TRUE(WriteRandomCheckpoint(TinyFullVocabConfig(), SynthOptions{}, dir.File("m")).ok());
  // With a tokenizer, the grammar masks are measured too.
  std::filesystem::copy_file(NpmGemma3Tokenizer(), dir.File("m/tokenizer.json"));
  const Outcome r = RunApp({"bench-serve",
                            "--model",
                            dir.File("m"),
                            "--concurrency",
                            "1,3",
                            "--lora-rank",
                            "2",
                            "--prompt-tokens",
                            "3",
                            "--decode-tokens",
                            "3",
                            "--prefix-tokens",
                            "40",
                            "--suffix-tokens",
                            "2",
                            "--context-tokens",
                            "24",
                            "--kv-sequences",
                            "2",
                            "--kv-mib",
                            "4",
                            "--block-size",
                            "8",
                            "--threads",
                            "1",
                            "--json",
                            dir.File("serve.json")});
  ASSERT_EQ(r.code, 0) << r.err;
  for (const char* row :
       {"| CPU |", "| decode, 1 sequence, base |", "| scheduler time a decode step, 1 sequence |",
        "| decode, 3 sequences, 3 adapters |", "| adapter overhead, 3 sequences |",
        "| time to first token, cold |", "| time to first token, prefix cached |",
        "| time to first token, pinned prefix |", "| cold / cached time to first token |",
        "| KV memory per sequence |", "| grammar mask per token, fresh grammar |",
        "| grammar mask per token, warm grammar |"}) {
    EXPECT_THAT(r.out, HasSubstr(row));
  }
  auto json = ReadJsonFile(dir.File("serve.json"));
  ASSERT_TRUE(json.ok()) << json.error().message();
  EXPECT_EQ((*json)["schema"], "fgnet-bench/1");
  EXPECT_EQ((*json)["settings"]["concurrency"], Json::array({1, 3}));
  // 40 prefix tokens in blocks of 8: the cached run reuses the 5 whole blocks.
  EXPECT_THAT(r.out, HasSubstr("(40 prompt tokens reused)"));
  for (const Json& m : (*json)["results"]) {
    if (m["name"] == "KV memory per sequence") {
      EXPECT_GT(m["value"].get<double>(), 0);
    }
    if (m["name"] == "scheduler time a decode step, 3 sequences") {
      EXPECT_GT(m["value"].get<double>(), 0);  // the steps outlast their forward passes
    }
  }
}

// Without --kv-mib the pool holds the largest decode run whole: 64 sequences of 128 + 128 tokens
// of FunctionGemma-270M (36 KB of f32 KV a position) need more than the engine's 512 MiB.
TEST(BenchServe, DefaultPoolHoldsTheLargestDecodeRun) {
  const Gemma3Config config = Gemma3_270MConfig();
  EngineOptions engine;
  ServeBenchOptions o;
  o.prompt_tokens = 128;
  o.decode_tokens = 128;
  o.concurrency = {1, 16, 64};
  const std::int64_t bytes_per_position = 18 * 2 * 256 * 4;
  EXPECT_EQ(ServeBenchKVMemoryMiB(config, engine, o),
            (64 * (128 + 128 + 16) * bytes_per_position + (1 << 20) - 1) >> 20);
  // Runs that fit keep the engine's default; bf16 KV halves the need.
  o.concurrency = {1, 16};
  EXPECT_EQ(ServeBenchKVMemoryMiB(config, engine, o), DefaultKVMemoryMiB(config, engine));
  EXPECT_EQ(DefaultKVMemoryMiB(config, engine), 512);
  o.concurrency = {64};
  engine.kv_dtype = DType::kBF16;
  EXPECT_EQ(ServeBenchKVMemoryMiB(config, engine, o), 512);
  // Past max_running, sequences wait their turn: the pool holds max_running of them.
  engine.kv_dtype = DType::kF32;
  engine.max_running = 128;
  o.concurrency = {1024};
  EXPECT_EQ(ServeBenchKVMemoryMiB(config, engine, o),
            (128 * (128 + 128 + 16) * bytes_per_position + (1 << 20) - 1) >> 20);
}

TEST(BenchServe, SizesOfZeroSkipMeasurements) {
  TempDir dir;
  ASSERT_TRUE(WriteRandomCheckpoint(TinyFullVocabConfig(), SynthOptions{}, dir.File("m")).ok());
  const Outcome r = RunApp({"bench-serve", "--model", dir.File("m"), "--concurrency", "2",
                            "--lora-rank", "0", "--decode-tokens", "2", "--prefix-tokens", "0",
                            "--context-tokens", "0", "--kv-mib", "4", "--threads", "1"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("| decode, 2 sequences, base |"));
  EXPECT_THAT(r.out, ::testing::Not(HasSubstr("adapters")));
  EXPECT_THAT(r.out, ::testing::Not(HasSubstr("time to first token")));
  EXPECT_THAT(r.out, ::testing::Not(HasSubstr("KV memory")));
  EXPECT_THAT(r.out, ::testing::Not(HasSubstr("grammar mask")));
  EXPECT_THAT(r.err,
              HasSubstr("no tokenizer.json beside the model: grammar masks are not measured"));
}

}  // namespace
}  // namespace fgnet::cli
