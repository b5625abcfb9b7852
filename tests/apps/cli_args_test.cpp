// CommandSpec parsing, error messages and help text on a test command.
#include "apps/fgnet/cli_args.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "test_files.h"

namespace fgnet::cli {
namespace {

using testing::At;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::TempDir;
using testing::WriteFile;

CommandSpec MakeSpec() {
  CommandSpec c("prog", "run", "Run the thing.");
  c.Description("A longer description of what running does.");
  c.AddString("model", "DIR", "Model directory.").Required();
  c.AddFloat("temperature", "X", "Sampling temperature.").FloatRange(0, 2);
  c.AddInt("count", "N", "How many.").IntRange(1, 10).Default("3");
  c.AddInt("offset", "N", "Any integer.");
  c.AddIntList("ids", "IDS", "Token ids.").IntRange(0).AllowFile();
  c.AddString("tag", "TAG", "A tag.").Repeatable();
  c.AddString("mode", "MODE", "Speed.").Choices({"fast", "slow"}).Default("fast");
  c.AddString("prompt", "TEXT", "The prompt.").AllowFile();
  c.AddFloat("scale", "S", "A scale.").FloatRange(0.5).DefaultNote("from the config");
  c.AddSwitch("verbose", "Print more.");
  c.AddPositional("INPUT", "The input file.", /*required=*/false);
  c.Example("--model m input.txt");
  return c;
}

Result<ParsedArgs> Parse(const CommandSpec& spec, const std::vector<std::string>& args) {
  return spec.Parse(args);
}

// The error message of a parse that must fail.
std::string ParseError(const std::vector<std::string>& args) {
  const CommandSpec spec = MakeSpec();
  auto parsed = Parse(spec, args);
  if (parsed.ok()) return "<parsed without error>";
  return parsed.error().message();
}

TEST(CliArgsTest, SpaceAndEqualsForms) {
  const CommandSpec spec = MakeSpec();
  auto a = Parse(spec, {"--model", "m1", "--temperature=0.5"});
  ASSERT_TRUE(a.ok()) << a.error().message();
  EXPECT_EQ(a->String("model"), "m1");
  EXPECT_DOUBLE_EQ(a->Float("temperature"), 0.5);

  auto b = Parse(spec, {"--model=m2", "--prompt=a=b", "--offset", "-7"});
  ASSERT_TRUE(b.ok()) << b.error().message();
  EXPECT_EQ(b->String("model"), "m2");
  EXPECT_EQ(b->String("prompt"), "a=b");  // only the first '=' separates
  EXPECT_EQ(b->Int("offset"), -7);        // a negative number is a value, not an option

  // A value starting with "--" needs the '=' form.
  auto c = Parse(spec, {"--model=--odd"});
  ASSERT_TRUE(c.ok()) << c.error().message();
  EXPECT_EQ(c->String("model"), "--odd");
}

TEST(CliArgsTest, DefaultsAndPresence) {
  const CommandSpec spec = MakeSpec();
  auto a = Parse(spec, {"--model", "m"});
  ASSERT_TRUE(a.ok()) << a.error().message();
  EXPECT_TRUE(a->Given("model"));
  EXPECT_FALSE(a->Given("count"));
  EXPECT_TRUE(a->Has("count"));
  EXPECT_EQ(a->Int("count"), 3);
  EXPECT_EQ(a->String("mode"), "fast");
  EXPECT_FALSE(a->Has("temperature"));
  EXPECT_EQ(a->OptFloat("temperature"), std::nullopt);
  EXPECT_EQ(a->OptFloat("scale"), std::nullopt);  // a default note supplies no value
  EXPECT_EQ(a->OptInt("offset"), std::nullopt);
  EXPECT_EQ(a->OptString("prompt"), std::nullopt);
  EXPECT_FALSE(a->Switch("verbose"));
  EXPECT_TRUE(a->IntList("ids").empty());
  EXPECT_TRUE(a->Strings("tag").empty());
  EXPECT_EQ(a->Positional("INPUT"), std::nullopt);

  auto b = Parse(spec, {"--model", "m", "--count", "7", "--mode", "slow", "--verbose", "in.txt"});
  ASSERT_TRUE(b.ok()) << b.error().message();
  EXPECT_EQ(b->Int("count"), 7);
  EXPECT_EQ(b->OptInt("count"), 7);
  EXPECT_EQ(b->String("mode"), "slow");
  EXPECT_TRUE(b->Switch("verbose"));
  EXPECT_EQ(b->Positional("INPUT"), "in.txt");
}

TEST(CliArgsTest, RepeatableOptionKeepsEveryValue) {
  const CommandSpec spec = MakeSpec();
  auto a = Parse(spec, {"--tag", "x", "--model", "m", "--tag=y", "--tag", "z"});
  ASSERT_TRUE(a.ok()) << a.error().message();
  EXPECT_THAT(a->Strings("tag"), ElementsAre("x", "y", "z"));
  EXPECT_EQ(a->String("tag"), "z");
}

TEST(CliArgsTest, NonRepeatableOptionGivenTwice) {
  EXPECT_EQ(ParseError({"--model", "a", "--model", "b"}), "prog run: --model given more than once");
  EXPECT_EQ(ParseError({"--model", "a", "--verbose", "--verbose"}),
            "prog run: --verbose given more than once");
}

TEST(CliArgsTest, MissingRequiredOption) {
  EXPECT_EQ(ParseError({}), "prog run: missing required option --model");
  EXPECT_EQ(ParseError({"--count", "2"}), "prog run: missing required option --model");
}

TEST(CliArgsTest, MissingValue) {
  EXPECT_EQ(ParseError({"--model"}), "prog run: --model expects a value (--model DIR)");
  EXPECT_EQ(ParseError({"--model", "--verbose"}),
            "prog run: --model expects a value (--model DIR)");
  EXPECT_EQ(ParseError({"--model", "m", "--ids"}),
            "prog run: --ids expects a value (--ids IDS|@FILE)");
}

TEST(CliArgsTest, UnknownOptions) {
  EXPECT_EQ(ParseError({"--model", "m", "--temprature", "1"}),
            "prog run: unknown option --temprature (did you mean --temperature?)");
  EXPECT_EQ(ParseError({"--model", "m", "--zzzzzz"}),
            "prog run: unknown option --zzzzzz (see 'prog run --help')");
  EXPECT_EQ(ParseError({"--model", "m", "-v"}),
            "prog run: unknown option '-v' (options start with '--')");
}

TEST(CliArgsTest, SwitchTakesNoValue) {
  EXPECT_EQ(ParseError({"--model", "m", "--verbose=yes"}),
            "prog run: --verbose is a switch and takes no value");
}

TEST(CliArgsTest, TypedValueErrors) {
  EXPECT_EQ(ParseError({"--model", "m", "--temperature", "hot"}),
            "prog run: --temperature expects a number, got 'hot'");
  EXPECT_EQ(ParseError({"--model", "m", "--temperature", "0.5x"}),
            "prog run: --temperature expects a number, got '0.5x'");
  EXPECT_EQ(ParseError({"--model", "m", "--temperature", "inf"}),
            "prog run: --temperature expects a finite number, got 'inf'");
  EXPECT_EQ(ParseError({"--model", "m", "--temperature", "nan"}),
            "prog run: --temperature expects a finite number, got 'nan'");
  EXPECT_EQ(ParseError({"--model", "m", "--temperature", ""}),
            "prog run: --temperature expects a number, got ''");
  EXPECT_EQ(ParseError({"--model", "m", "--count", "1.5"}),
            "prog run: --count expects an integer, got '1.5'");
  EXPECT_EQ(ParseError({"--model", "m", "--count", "three"}),
            "prog run: --count expects an integer, got 'three'");
  EXPECT_EQ(ParseError({"--model", "m", "--offset", "99999999999999999999"}),
            "prog run: --offset expects a 64-bit integer, got '99999999999999999999'");
}

TEST(CliArgsTest, RangeErrors) {
  EXPECT_EQ(ParseError({"--model", "m", "--count", "0"}),
            "prog run: --count must be between 1 and 10, got 0");
  EXPECT_EQ(ParseError({"--model", "m", "--count", "11"}),
            "prog run: --count must be between 1 and 10, got 11");
  EXPECT_EQ(ParseError({"--model", "m", "--temperature", "2.5"}),
            "prog run: --temperature must be between 0 and 2, got 2.5");
  EXPECT_EQ(ParseError({"--model", "m", "--scale", "0.25"}),
            "prog run: --scale must be at least 0.5, got 0.25");
  EXPECT_EQ(ParseError({"--model", "m", "--ids", "1,-2"}),
            "prog run: --ids: item 1 must be at least 0, got -2");
  // Bounds are inclusive; a leading '+' is accepted.
  const CommandSpec spec = MakeSpec();
  auto ok = Parse(spec, {"--model", "m", "--count", "+10", "--temperature", "2"});
  ASSERT_TRUE(ok.ok()) << ok.error().message();
  EXPECT_EQ(ok->Int("count"), 10);
}

TEST(CliArgsTest, Choices) {
  EXPECT_EQ(ParseError({"--model", "m", "--mode", "fats"}),
            "prog run: --mode expects one of fast, slow, got 'fats' (did you mean 'fast'?)");
  EXPECT_EQ(ParseError({"--model", "m", "--mode", "medium"}),
            "prog run: --mode expects one of fast, slow, got 'medium'");
}

TEST(CliArgsTest, IntLists) {
  const CommandSpec spec = MakeSpec();
  auto a = Parse(spec, {"--model", "m", "--ids", "1,2,3"});
  ASSERT_TRUE(a.ok()) << a.error().message();
  EXPECT_THAT(a->IntList("ids"), ElementsAre(1, 2, 3));

  auto b = Parse(spec, {"--model", "m", "--ids", " 4, 5 ,6 "});
  ASSERT_TRUE(b.ok()) << b.error().message();
  EXPECT_THAT(b->IntList("ids"), ElementsAre(4, 5, 6));

  auto c = Parse(spec, {"--model", "m", "--ids=7"});
  ASSERT_TRUE(c.ok()) << c.error().message();
  EXPECT_THAT(c->IntList("ids"), ElementsAre(7));

  EXPECT_EQ(ParseError({"--model", "m", "--ids", "1,x,3"}),
            "prog run: --ids expects a comma-separated list of integers, got '1,x,3' ('x' is not "
            "a 64-bit integer)");
  EXPECT_EQ(ParseError({"--model", "m", "--ids", "1,,3"}),
            "prog run: --ids expects a comma-separated list of integers, got '1,,3' (the list "
            "has an empty item)");
  EXPECT_EQ(ParseError({"--model", "m", "--ids", "1,2,"}),
            "prog run: --ids expects a comma-separated list of integers, got '1,2,' (the list "
            "has an empty item)");
  EXPECT_EQ(ParseError({"--model", "m", "--ids", ""}),
            "prog run: --ids expects a comma-separated list of integers, got '' (the list is "
            "empty)");
}

TEST(CliArgsTest, IntListFromFile) {
  TempDir dir;
  const CommandSpec spec = MakeSpec();
  WriteFile(dir.File("ids.json"), "[2, 105, 2364]\n");
  WriteFile(dir.File("ids.txt"), "2 105\n2364,7\n");
  auto a = Parse(spec, {"--model", "m", "--ids", At(dir.File("ids.json"))});
  ASSERT_TRUE(a.ok()) << a.error().message();
  EXPECT_THAT(a->IntList("ids"), ElementsAre(2, 105, 2364));
  auto b = Parse(spec, {"--model", "m", "--ids=" + At(dir.File("ids.txt"))});
  ASSERT_TRUE(b.ok()) << b.error().message();
  EXPECT_THAT(b->IntList("ids"), ElementsAre(2, 105, 2364, 7));

  WriteFile(dir.File("bad.json"), "[1, \"two\"]");
  EXPECT_EQ(ParseError({"--model", "m", "--ids", At(dir.File("bad.json"))}),
            "prog run: --ids: " + dir.File("bad.json") +
                ": element 1 is not a 64-bit integer: "
                "\"two\"");
  WriteFile(dir.File("broken.json"), "[1, 2");
  EXPECT_THAT(ParseError({"--model", "m", "--ids", At(dir.File("broken.json"))}),
              HasSubstr("prog run: --ids: " + dir.File("broken.json") + ": invalid JSON"));
  WriteFile(dir.File("empty.json"), "[]");
  EXPECT_EQ(ParseError({"--model", "m", "--ids", At(dir.File("empty.json"))}),
            "prog run: --ids: " + dir.File("empty.json") + ": the list is empty");
  WriteFile(dir.File("words.txt"), "1 2 three");
  EXPECT_EQ(ParseError({"--model", "m", "--ids", At(dir.File("words.txt"))}),
            "prog run: --ids: " + dir.File("words.txt") + ": 'three' is not a 64-bit integer");
  EXPECT_EQ(
      ParseError({"--model", "m", "--ids", At(dir.File("missing.json"))}),
      "prog run: --ids: " + dir.File("missing.json") + ": cannot open: No such file or directory");
  EXPECT_EQ(ParseError({"--model", "m", "--ids", "@"}),
            "prog run: --ids: '@' must be followed by a file path");
}

TEST(CliArgsTest, StringFromFileAndLiteralAt) {
  TempDir dir;
  const CommandSpec spec = MakeSpec();
  WriteFile(dir.File("prompt.txt"), "line one\nline two");
  auto a = Parse(spec, {"--model", "m", "--prompt", At(dir.File("prompt.txt"))});
  ASSERT_TRUE(a.ok()) << a.error().message();
  EXPECT_EQ(a->String("prompt"), "line one\nline two");

  auto b = Parse(spec, {"--model", "m", "--prompt", "@@handle"});
  ASSERT_TRUE(b.ok()) << b.error().message();
  EXPECT_EQ(b->String("prompt"), "@handle");

  // Options without AllowFile take '@' literally.
  auto c = Parse(spec, {"--model", "@m"});
  ASSERT_TRUE(c.ok()) << c.error().message();
  EXPECT_EQ(c->String("model"), "@m");
}

TEST(CliArgsTest, Positionals) {
  const CommandSpec spec = MakeSpec();
  EXPECT_EQ(ParseError({"--model", "m", "a", "b"}), "prog run: unexpected argument 'b'");
  auto dash = Parse(spec, {"--model", "m", "-"});
  ASSERT_TRUE(dash.ok()) << dash.error().message();
  EXPECT_EQ(dash->Positional("INPUT"), "-");
  // After "--" everything is positional.
  auto sep = Parse(spec, {"--model", "m", "--", "--verbose"});
  ASSERT_TRUE(sep.ok()) << sep.error().message();
  EXPECT_EQ(sep->Positional("INPUT"), "--verbose");
  EXPECT_FALSE(sep->Switch("verbose"));

  CommandSpec required("prog", "inspect", "Inspect.");
  required.AddPositional("DIR", "Directory.");
  auto missing = required.Parse(std::vector<std::string>{});
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().message(), "prog inspect: missing required argument DIR");
}

TEST(CliArgsTest, GroupsAndValidators) {
  CommandSpec c("prog", "gen", "Generate.");
  c.AddString("prompt", "TEXT", "Prompt.");
  c.AddString("messages", "FILE", "Messages.");
  c.AddString("chat", "FILE", "Chat.");
  c.AddSwitch("raw", "Raw.");
  c.AddInt("n", "N", "N.");
  c.ExactlyOneOf({"prompt", "messages", "chat"});
  c.AtMostOneOf({"raw", "messages"});
  c.Validate([](const ParsedArgs& args) -> Status {
    if (args.OptInt("n") == 13) return Error("--n must not be 13");
    return Ok();
  });
  const auto error = [&](const std::vector<std::string>& args) {
    auto r = c.Parse(args);
    return r.ok() ? std::string("<ok>") : r.error().message();
  };
  EXPECT_EQ(error({}), "prog gen: one of --prompt, --messages or --chat is required");
  EXPECT_EQ(error({"--prompt", "p", "--messages", "m"}),
            "prog gen: --prompt and --messages cannot be used together");
  EXPECT_EQ(error({"--prompt", "p", "--messages", "m", "--chat", "c"}),
            "prog gen: --prompt, --messages and --chat cannot be used together");
  EXPECT_EQ(error({"--messages", "m", "--raw"}),
            "prog gen: --raw and --messages cannot be used together");
  EXPECT_EQ(error({"--prompt", "p", "--n", "13"}), "prog gen: --n must not be 13");
  EXPECT_EQ(error({"--prompt", "p", "--raw", "--n", "12"}), "<ok>");
  EXPECT_EQ(c.Usage(), "Usage: prog gen (--prompt TEXT | --messages FILE | --chat FILE) [options]");
}

TEST(CliArgsTest, HelpText) {
  const CommandSpec spec = MakeSpec();
  const std::string help = spec.Help();
  EXPECT_TRUE(help.starts_with("Usage: prog run [INPUT] --model DIR [options]\n\nRun the thing.\n"))
      << help;
  EXPECT_THAT(help, HasSubstr("A longer description of what running does."));
  EXPECT_THAT(help, HasSubstr("Arguments:\n  INPUT"));
  EXPECT_THAT(help, HasSubstr("The input file. (optional)"));
  EXPECT_THAT(help, HasSubstr("Options:\n"));
  EXPECT_THAT(help, HasSubstr("  --model DIR"));
  EXPECT_THAT(help, HasSubstr("Model directory. (required)"));
  EXPECT_THAT(help, HasSubstr("  --count N"));
  EXPECT_THAT(help, HasSubstr("How many. (default: 3)"));
  EXPECT_THAT(help, HasSubstr("  --ids IDS|@FILE"));
  EXPECT_THAT(help, HasSubstr("  --tag TAG"));
  EXPECT_THAT(help, HasSubstr("A tag. (repeatable)"));
  EXPECT_THAT(help, HasSubstr("  --mode fast|slow"));
  EXPECT_THAT(help, HasSubstr("Speed. (default: fast)"));
  EXPECT_THAT(help, HasSubstr("A scale. (default: from the config)"));
  EXPECT_THAT(help, HasSubstr("  --verbose "));
  EXPECT_THAT(help, HasSubstr("  -h, --help"));
  EXPECT_THAT(help, HasSubstr("Examples:\n  prog run --model m input.txt\n"));
  // Every option is listed, and no line is wider than 100 columns except example lines.
  for (const OptionSpec& o : spec.options()) EXPECT_THAT(help, HasSubstr(o.Synopsis()));
  std::istringstream lines(help);
  for (std::string line; std::getline(lines, line);) {
    if (!line.starts_with("  prog ")) {
      EXPECT_LE(line.size(), 100u) << line;
    }
  }
}

TEST(CliArgsTest, WrapText) {
  EXPECT_EQ(WrapText("aaa bbb ccc", 7, 0, 2), "aaa bbb\n  ccc");
  EXPECT_EQ(WrapText("aaa bbb", 100, 4, 4), "    aaa bbb");
  EXPECT_EQ(WrapText("one\ntwo", 100, 1, 3), " one\n   two");
  EXPECT_EQ(WrapText("averyveryverylongword x", 5, 0, 0), "averyveryverylongword\nx");
}

TEST(CliArgsTest, EditDistanceAndSuggestions) {
  EXPECT_EQ(EditDistance("", ""), 0u);
  EXPECT_EQ(EditDistance("abc", ""), 3u);
  EXPECT_EQ(EditDistance("generat", "generate"), 1u);
  EXPECT_EQ(EditDistance("tokneize", "tokenize"), 1u);  // transposition
  EXPECT_EQ(EditDistance("kitten", "sitting"), 3u);
  const std::vector<std::string> commands = {"generate", "logits", "tokenize", "inspect"};
  EXPECT_EQ(SuggestClosest("generat", commands), "generate");
  EXPECT_EQ(SuggestClosest("logit", commands), "logits");
  EXPECT_EQ(SuggestClosest("insp", commands), "inspect");  // unique prefix
  EXPECT_EQ(SuggestClosest("serve", commands), std::nullopt);
  EXPECT_EQ(SuggestClosest("", commands), std::nullopt);
}

TEST(CliArgsDeathTest, DeclarationMistakesAbort) {
  EXPECT_DEATH(
      {
        CommandSpec c("prog", "run", "Run.");
        c.AddString("model", "DIR", "a");
        c.AddInt("model", "N", "b");
      },
      "declared twice");
  EXPECT_DEATH(
      {
        const CommandSpec c = MakeSpec();
        auto args = c.Parse(std::vector<std::string>{"--model", "m"});
        (void)args->Int("model");
      },
      "wrong type");
  EXPECT_DEATH(
      {
        const CommandSpec c = MakeSpec();
        auto args = c.Parse(std::vector<std::string>{"--model", "m"});
        (void)args->Given("nonexistent");
      },
      "not declared");
  EXPECT_DEATH(
      {
        CommandSpec c("prog", "run", "Run.");
        c.AddInt("n", "N", "n").Default("many");
        (void)c.Parse(std::vector<std::string>{});
      },
      "bad default");
}

}  // namespace
}  // namespace fgnet::cli
