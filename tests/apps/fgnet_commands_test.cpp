// The fgnet subcommands: their declared options, help, usage errors and current bodies.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "apps/fgnet/commands.h"
#include "run_app.h"
#include "test_files.h"
#include "util/json.h"

namespace fgnet::cli {
namespace {

using testing::At;
using testing::CountLines;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::Outcome;
using testing::RunApp;
using ::testing::StartsWith;
using testing::TempDir;
using testing::WriteFile;

Result<ParsedArgs> Parse(const std::string& command, const std::vector<std::string>& args) {
  const App app = MakeFgnetApp();
  const CommandSpec* spec = app.FindCommand(command);
  if (spec == nullptr) return Error("no command " + command);
  return spec->Parse(args);
}

std::string ParseError(const std::string& command, const std::vector<std::string>& args) {
  auto parsed = Parse(command, args);
  return parsed.ok() ? std::string("<ok>") : parsed.error().message();
}

TEST(FgnetCommandsTest, ProgramHelpListsEveryCommand) {
  const Outcome r = RunApp({"--help"});
  EXPECT_EQ(r.code, kExitOk);
  for (const char* name : {"generate", "logits", "tokenize", "inspect", "synth", "bench"}) {
    EXPECT_THAT(r.out, HasSubstr(std::string("\n  ") + name + " ")) << name;
  }
}

TEST(FgnetCommandsTest, EveryCommandDeclaresItsOptions) {
  const std::map<std::string, std::vector<std::string>> expected = {
      {"generate",
       {"--model PATH", "--adapter [NAME=]PATH[:SCALE]", "--prompt TEXT|@FILE",
        "--messages FILE.json", "--tools FILE.json", "--max-tokens N", "--temperature X",
        "--top-k K", "--top-p P", "--min-p P", "--repetition-penalty X", "--seed N", "--threads N",
        "--raw", "--json"}},
      {"logits",
       {"--model PATH", "--adapter [NAME=]PATH[:SCALE]", "--ids IDS|@FILE", "--out FILE.npy",
        "--threads N"}},
      {"tokenize", {"--tokenizer PATH", "--jsonl FILE", "--decode"}},
      {"inspect", {"MODEL", "--adapter [NAME=]PATH[:SCALE]", "--hash", "--json"}},
      {"synth",
       {"--like gemma-3-270m|functiongemma-270m", "--out DIR", "--seed N", "--dtype bf16|f32",
        "--tokenizer PATH"}},
      {"bench",
       {"--model PATH", "--adapter [NAME=]PATH[:SCALE]", "--lora-rank R", "--quant q8_0|q4_0|q4_k",
        "--threads N", "--prompt-tokens N", "--decode-tokens N", "--json FILE", "--repeat N",
        "--bandwidth-mib N", "--skip-bandwidth"}},
  };
  for (const auto& [command, synopses] : expected) {
    const Outcome r = RunApp({command, "--help"});
    EXPECT_EQ(r.code, kExitOk) << command;
    EXPECT_THAT(r.out, StartsWith("Usage: fgnet " + command)) << command;
    for (const std::string& s : synopses) {
      // A row starts with the synopsis, followed by the text or, when too long, a line break.
      const bool listed = r.out.find("\n  " + s + " ") != std::string::npos ||
                          r.out.find("\n  " + s + "\n") != std::string::npos;
      EXPECT_TRUE(listed) << command << ": " << s << "\n" << r.out;
    }
  }
}

TEST(FgnetCommandsTest, UsageLinesAndDefaults) {
  EXPECT_THAT(RunApp({"generate", "--help"}).out,
              StartsWith("Usage: fgnet generate --model PATH (--prompt TEXT|@FILE | --messages "
                         "FILE.json) [options]\n"));
  EXPECT_THAT(RunApp({"logits", "--help"}).out,
              StartsWith("Usage: fgnet logits --model PATH --ids IDS|@FILE --out FILE.npy "
                         "[options]\n"));
  EXPECT_THAT(RunApp({"inspect", "--help"}).out,
              StartsWith("Usage: fgnet inspect MODEL [options]\n"));
  const std::string bench = RunApp({"bench", "--help"}).out;
  EXPECT_THAT(bench, HasSubstr("(default: 512)"));
  EXPECT_THAT(bench, HasSubstr("(default: 128)"));
  EXPECT_THAT(bench, HasSubstr("(default: all available cores)"));
  EXPECT_THAT(RunApp({"generate", "--help"}).out,
              HasSubstr("(default: from generation_config.json)"));
  EXPECT_THAT(RunApp({"synth", "--help"}).out, HasSubstr("(default: bf16)"));
}

TEST(FgnetCommandsTest, MinimalInvocationsParse) {
  auto generate = Parse("generate", {"--model", "m", "--prompt", "hi"});
  ASSERT_TRUE(generate.ok()) << generate.error().message();
  EXPECT_EQ(generate->Int("seed"), 0);
  EXPECT_EQ(generate->OptInt("max-tokens"), std::nullopt);
  EXPECT_EQ(generate->OptFloat("temperature"), std::nullopt);
  EXPECT_EQ(generate->OptInt("threads"), std::nullopt);

  auto logits = Parse("logits", {"--model", "m", "--ids", "2,105", "--out", "x.npy"});
  ASSERT_TRUE(logits.ok()) << logits.error().message();
  EXPECT_THAT(logits->IntList("ids"), ElementsAre(2, 105));

  auto tokenize = Parse("tokenize", {"--tokenizer", "t.json", "--jsonl", "-", "--decode"});
  ASSERT_TRUE(tokenize.ok()) << tokenize.error().message();
  EXPECT_EQ(tokenize->String("jsonl"), "-");
  EXPECT_TRUE(tokenize->Switch("decode"));

  auto inspect = Parse("inspect", {"ckpt", "--json"});
  ASSERT_TRUE(inspect.ok()) << inspect.error().message();
  EXPECT_EQ(inspect->Positional("MODEL"), "ckpt");

  auto synth = Parse("synth", {"--like", "functiongemma-270m", "--out", "d"});
  ASSERT_TRUE(synth.ok()) << synth.error().message();
  EXPECT_EQ(synth->String("dtype"), "bf16");
  EXPECT_EQ(synth->Int("seed"), 0);

  auto bench = Parse("bench", {});
  ASSERT_TRUE(bench.ok()) << bench.error().message();
  EXPECT_EQ(bench->Int("prompt-tokens"), 512);
  EXPECT_EQ(bench->Int("decode-tokens"), 128);
  EXPECT_EQ(bench->Int("repeat"), 5);
  EXPECT_EQ(bench->Int("bandwidth-mib"), 1024);

  auto full = Parse("generate", {"--model",
                                 "m",
                                 "--messages",
                                 "chat.json",
                                 "--tools",
                                 "a.json",
                                 "--tools",
                                 "b.json",
                                 "--max-tokens",
                                 "64",
                                 "--temperature",
                                 "0.7",
                                 "--top-k",
                                 "40",
                                 "--top-p",
                                 "0.95",
                                 "--min-p",
                                 "0.05",
                                 "--repetition-penalty",
                                 "1.1",
                                 "--seed",
                                 "7",
                                 "--threads",
                                 "2",
                                 "--json"});
  ASSERT_TRUE(full.ok()) << full.error().message();
  EXPECT_THAT(full->Strings("tools"), ElementsAre("a.json", "b.json"));
  EXPECT_EQ(full->Int("max-tokens"), 64);
  EXPECT_DOUBLE_EQ(full->Float("top-p"), 0.95);
  EXPECT_DOUBLE_EQ(full->Float("repetition-penalty"), 1.1);
}

TEST(FgnetCommandsTest, DocumentedErrorMessages) {
  const Outcome missing = RunApp({"logits", "--ids", "1,2", "--out", "x.npy"});
  EXPECT_EQ(missing.code, kExitUsage);
  EXPECT_EQ(missing.err, "fgnet logits: missing required option --model\n");

  const Outcome hot = RunApp({"generate", "--model", "m", "--prompt", "p", "--temperature", "hot"});
  EXPECT_EQ(hot.code, kExitUsage);
  EXPECT_EQ(hot.err, "fgnet generate: --temperature expects a number, got 'hot'\n");

  const Outcome typo = RunApp({"generat"});
  EXPECT_EQ(typo.code, kExitUsage);
  EXPECT_EQ(typo.err, "fgnet: unknown command 'generat' (did you mean 'generate'?)\n");
}

TEST(FgnetCommandsTest, GenerateConstraints) {
  EXPECT_EQ(ParseError("generate", {"--model", "m"}),
            "fgnet generate: one of --prompt or --messages is required");
  EXPECT_EQ(ParseError("generate", {"--model", "m", "--prompt", "p", "--messages", "c.json"}),
            "fgnet generate: --prompt and --messages cannot be used together");
  EXPECT_EQ(ParseError("generate", {"--model", "m", "--messages", "c.json", "--raw"}),
            "fgnet generate: --raw and --messages cannot be used together");
  EXPECT_EQ(ParseError("generate", {"--model", "m", "--prompt", "p", "--raw", "--tools", "t"}),
            "fgnet generate: --raw and --tools cannot be used together");
  EXPECT_EQ(ParseError("generate", {"--model", "m", "--prompt", "p", "--top-p", "1.5"}),
            "fgnet generate: --top-p must be between 0 and 1, got 1.5");
  EXPECT_EQ(ParseError("generate", {"--model", "m", "--prompt", "p", "--temperature", "-1"}),
            "fgnet generate: --temperature must be at least 0, got -1");
  EXPECT_EQ(ParseError("generate", {"--model", "m", "--prompt", "p", "--repetition-penalty", "0"}),
            "fgnet generate: --repetition-penalty must be greater than 0, got 0");
  EXPECT_EQ(ParseError("generate", {"--model", "m", "--prompt", "p", "--max-tokens", "0"}),
            "fgnet generate: --max-tokens must be at least 1, got 0");
  EXPECT_EQ(ParseError("generate", {"--model", "m", "--prompt", "p", "--threads", "0"}),
            "fgnet generate: --threads must be between 1 and 1024, got 0");
  EXPECT_EQ(ParseError("generate", {"--model", "m", "--prompt", "p", "--seed", "-3"}),
            "fgnet generate: --seed must be at least 0, got -3");
}

TEST(FgnetCommandsTest, LogitsIdsFromFile) {
  TempDir dir;
  WriteFile(dir.File("ids.json"), "[2, 105, 2364, 236761]");
  auto parsed =
      Parse("logits", {"--model", "m", "--ids", At(dir.File("ids.json")), "--out", "x.npy"});
  ASSERT_TRUE(parsed.ok()) << parsed.error().message();
  EXPECT_THAT(parsed->IntList("ids"), ElementsAre(2, 105, 2364, 236761));
  EXPECT_EQ(ParseError("logits", {"--model", "m", "--ids", "1,-1", "--out", "x.npy"}),
            "fgnet logits: --ids: item 1 must be at least 0, got -1");
}

TEST(FgnetCommandsTest, SynthChoices) {
  EXPECT_EQ(ParseError("synth", {"--like", "gemma3", "--out", "d"}),
            "fgnet synth: --like expects one of gemma-3-270m, functiongemma-270m, got 'gemma3'");
  EXPECT_EQ(ParseError("synth", {"--like", "gemma-3-270m", "--out", "d", "--dtype", "f16"}),
            "fgnet synth: --dtype expects one of bf16, f32, got 'f16' (did you mean 'bf16'?)");
}

TEST(FgnetCommandsTest, MissingInputsFailWithOneLineNamingThePath) {
  const std::vector<std::vector<std::string>> invocations = {
      {"generate", "--model", "no-such-model", "--prompt", "p"},
      {"logits", "--model", "no-such-model", "--ids", "1", "--out", "x.npy"},
      {"tokenize", "--tokenizer", "no-such-tokenizer.json", "--jsonl", "-"},
      {"inspect", "no-such-model"},
      {"synth", "--like", "gemma-3-270m", "--out", "d", "--tokenizer", "no-such-tokenizer.json"},
  };
  for (const auto& args : invocations) {
    const Outcome r = RunApp(args);
    EXPECT_EQ(r.code, kExitFailure) << args[0];
    EXPECT_THAT(r.err, StartsWith("fgnet " + args[0] + ": no-such-")) << r.err;
    EXPECT_EQ(CountLines(r.err), 1) << r.err;
    EXPECT_EQ(r.out, "");
  }
}

TEST(FgnetCommandsTest, BenchModelOptions) {
  const Outcome both = RunApp({"bench", "--model", "m", "--skip-model"});
  EXPECT_EQ(both.code, kExitUsage);
  EXPECT_EQ(CountLines(both.err), 1);
  const Outcome missing = RunApp({"bench", "--model", "no-such-model", "--skip-bandwidth"});
  EXPECT_EQ(missing.code, kExitFailure);
  EXPECT_THAT(missing.err, StartsWith("fgnet bench: no-such-model: "));
  EXPECT_EQ(CountLines(missing.err), 1);
}

TEST(FgnetCommandsTest, BenchPrintsReportAndWritesJson) {
  TempDir dir;
  const std::string json_path = dir.File("bench.json");
  const Outcome r = RunApp({"bench", "--skip-model", "--bandwidth-mib", "4", "--repeat", "2",
                            "--threads", "2", "--json", json_path});
  ASSERT_EQ(r.code, kExitOk) << r.err;
  EXPECT_THAT(r.out, HasSubstr("| Field | Value |"));
  EXPECT_THAT(r.out, HasSubstr("| memory read bandwidth | "));
  EXPECT_THAT(r.out, HasSubstr("| memory copy bandwidth | "));
  EXPECT_THAT(r.out, HasSubstr("best of 2, 4 MiB buffer, 2 threads"));

  auto json = ReadJsonFile(json_path);
  ASSERT_TRUE(json.ok()) << json.error().message();
  EXPECT_EQ((*json)["schema"], "fgnet-bench/1");
  EXPECT_EQ((*json)["settings"]["threads"], 2);
  EXPECT_EQ((*json)["settings"]["repeat"], 2);
  EXPECT_EQ((*json)["settings"]["bandwidth_buffer_mib"], 4);
  ASSERT_EQ((*json)["results"].size(), 2u);
  EXPECT_GT((*json)["results"][0]["value"].get<double>(), 0.0);

  const Outcome skip = RunApp({"bench", "--skip-bandwidth", "--skip-model"});
  ASSERT_EQ(skip.code, kExitOk) << skip.err;
  EXPECT_THAT(skip.out, ::testing::Not(HasSubstr("memory read bandwidth")));

  const Outcome unwritable =
      RunApp({"bench", "--skip-bandwidth", "--skip-model", "--json", dir.File("no/such.json")});
  EXPECT_EQ(unwritable.code, kExitFailure);
  EXPECT_EQ(unwritable.err, "fgnet bench: " + dir.File("no/such.json") +
                                ": cannot open for writing: No such file or directory\n");
}

}  // namespace
}  // namespace fgnet::cli

namespace fgnet::cli {
namespace {

TEST(AdapterArgTest, ParsesNamePathAndScale) {
  auto plain = ParseAdapterArg("experts/math");
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(plain->name, "");
  EXPECT_EQ(plain->path, "experts/math");
  EXPECT_EQ(plain->scale, 1.0f);
  EXPECT_FALSE(plain->scale_given);

  auto full = ParseAdapterArg("math=experts/math:0.5");
  ASSERT_TRUE(full.ok());
  EXPECT_EQ(full->name, "math");
  EXPECT_EQ(full->path, "experts/math");
  EXPECT_EQ(full->scale, 0.5f);
  EXPECT_TRUE(full->scale_given);

  auto negative = ParseAdapterArg("a.gguf:-1.25e0");
  ASSERT_TRUE(negative.ok());
  EXPECT_EQ(negative->scale, -1.25f);
  // A ':' or '=' that is part of the path stays in the path.
  auto colon = ParseAdapterArg("/data/run:3b/adapter");
  ASSERT_TRUE(colon.ok());
  EXPECT_EQ(colon->path, "/data/run:3b/adapter");
  EXPECT_FALSE(colon->scale_given);
  auto eq = ParseAdapterArg("/data/lr=1e-4/adapter:2");
  ASSERT_TRUE(eq.ok());
  EXPECT_EQ(eq->name, "");
  EXPECT_EQ(eq->path, "/data/lr=1e-4/adapter");
  EXPECT_EQ(eq->scale, 2.0f);
}

TEST(AdapterArgTest, RejectsEmptyPartsAndNonFiniteScales) {
  const auto message = [](std::string_view text) {
    auto r = ParseAdapterArg(text);
    return r.ok() ? std::string("ok") : r.error().message();
  };
  EXPECT_EQ(message("=x"), "--adapter '=x': the name before '=' is empty");
  EXPECT_EQ(message("math=:0.5"), "--adapter 'math=:0.5': no adapter path");
  EXPECT_EQ(message("a:inf"), "--adapter 'a:inf': the scale inf is not a finite number");
  EXPECT_EQ(message(":2"), "--adapter ':2': no adapter path");
}

}  // namespace
}  // namespace fgnet::cli
