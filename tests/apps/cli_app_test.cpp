// App dispatch: help, version, unknown commands, exit codes and caught exceptions.
#include "apps/fgnet/cli_app.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <new>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "test_files.h"

namespace fgnet::cli {
namespace {

using testing::CountLines;
using ::testing::HasSubstr;

App MakeApp() {
  App app("prog", "A test program.", "1.2.3");
  CommandSpec& greet =
      app.AddCommand("greet", "Say hello.", [](const ParsedArgs& args, CommandIo& io) -> Status {
        io.out << "hello " << args.String("name") << "\n";
        return Ok();
      });
  greet.AddString("name", "NAME", "Who to greet.").Required();
  app.AddCommand("fail", "Fail at run time.", [](const ParsedArgs&, CommandIo&) -> Status {
    return Error("disk.bin: disk full");
  });
  app.AddCommand(
      "multiline", "Fail with a two-line message.",
      [](const ParsedArgs&, CommandIo&) -> Status { return Error("first line\nsecond line\n"); });
  app.AddCommand("oom", "Run out of memory.",
                 [](const ParsedArgs&, CommandIo&) -> Status { throw std::bad_alloc(); });
  app.AddCommand("throws", "Throw an exception.", [](const ParsedArgs&, CommandIo&) -> Status {
    throw std::runtime_error("boom\nat depth");
  });
  app.AddCommand("throws-int", "Throw a non-exception.",
                 [](const ParsedArgs&, CommandIo&) -> Status { throw 42; });
  return app;
}

struct Outcome {
  int code;
  std::string out;
  std::string err;
};

Outcome RunApp(const std::vector<std::string>& args) {
  const App app = MakeApp();
  std::ostringstream out, err;
  const int code = app.Run(args, out, err);
  return {code, out.str(), err.str()};
}

TEST(CliAppTest, ProgramHelp) {
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"--help"}, {"-h"}, {"help"}}) {
    const Outcome r = RunApp(args);
    EXPECT_EQ(r.code, kExitOk);
    EXPECT_EQ(r.err, "");
    EXPECT_TRUE(r.out.starts_with("Usage: prog <command> [options]\n")) << r.out;
    EXPECT_THAT(r.out, HasSubstr("A test program."));
    EXPECT_THAT(r.out, HasSubstr("  greet        Say hello.\n"));
    EXPECT_THAT(r.out, HasSubstr("  fail         Fail at run time.\n"));
    EXPECT_THAT(r.out, HasSubstr("Run 'prog <command> --help'"));
  }
}

TEST(CliAppTest, CommandHelp) {
  // Help wins over missing required options and parse errors.
  for (const std::vector<std::string>& args : {std::vector<std::string>{"greet", "--help"},
                                               {"greet", "-h"},
                                               {"help", "greet"},
                                               {"greet", "--bogus", "--help"}}) {
    const Outcome r = RunApp(args);
    EXPECT_EQ(r.code, kExitOk);
    EXPECT_EQ(r.err, "");
    EXPECT_TRUE(r.out.starts_with("Usage: prog greet --name NAME\n\nSay hello.\n")) << r.out;
  }
  // After "--", --help is an ordinary argument.
  const Outcome r = RunApp({"greet", "--name", "x", "--", "--help"});
  EXPECT_EQ(r.code, kExitUsage);
  EXPECT_EQ(r.err, "prog greet: unexpected argument '--help'\n");
}

TEST(CliAppTest, Version) {
  const Outcome r = RunApp({"--version"});
  EXPECT_EQ(r.code, kExitOk);
  EXPECT_EQ(r.out, "prog 1.2.3\n");
}

TEST(CliAppTest, UsageErrorsExitTwoWithOneLine) {
  const Outcome none = RunApp({});
  EXPECT_EQ(none.code, kExitUsage);
  EXPECT_EQ(none.err, "prog: missing command (run 'prog --help' for the list of commands)\n");

  const Outcome typo = RunApp({"gret"});
  EXPECT_EQ(typo.code, kExitUsage);
  EXPECT_EQ(typo.err, "prog: unknown command 'gret' (did you mean 'greet'?)\n");

  const Outcome far = RunApp({"serve"});
  EXPECT_EQ(far.code, kExitUsage);
  EXPECT_EQ(far.err,
            "prog: unknown command 'serve' (run 'prog --help' for the list of commands)\n");

  const Outcome help_unknown = RunApp({"help", "gret"});
  EXPECT_EQ(help_unknown.code, kExitUsage);
  EXPECT_EQ(help_unknown.err, "prog: unknown command 'gret' (did you mean 'greet'?)\n");

  const Outcome option_first = RunApp({"--name", "x", "greet"});
  EXPECT_EQ(option_first.code, kExitUsage);
  EXPECT_EQ(option_first.err,
            "prog: expected a command before '--name' (run 'prog --help' for the list of "
            "commands)\n");

  const Outcome missing = RunApp({"greet"});
  EXPECT_EQ(missing.code, kExitUsage);
  EXPECT_EQ(missing.err, "prog greet: missing required option --name\n");
  EXPECT_EQ(missing.out, "");
}

TEST(CliAppTest, RunsCommand) {
  const Outcome r = RunApp({"greet", "--name", "Ada"});
  EXPECT_EQ(r.code, kExitOk);
  EXPECT_EQ(r.out, "hello Ada\n");
  EXPECT_EQ(r.err, "");
}

TEST(CliAppTest, RuntimeErrorsExitOneWithOneLine) {
  const Outcome fail = RunApp({"fail"});
  EXPECT_EQ(fail.code, kExitFailure);
  EXPECT_EQ(fail.err, "prog fail: disk.bin: disk full\n");

  const Outcome multi = RunApp({"multiline"});
  EXPECT_EQ(multi.code, kExitFailure);
  EXPECT_EQ(multi.err, "prog multiline: first line second line\n");
}

TEST(CliAppTest, ExceptionsAreCaught) {
  const Outcome oom = RunApp({"oom"});
  EXPECT_EQ(oom.code, kExitFailure);
  EXPECT_EQ(oom.err, "prog oom: out of memory\n");

  const Outcome thrown = RunApp({"throws"});
  EXPECT_EQ(thrown.code, kExitFailure);
  EXPECT_EQ(thrown.err, "prog throws: internal error: boom at depth\n");

  const Outcome odd = RunApp({"throws-int"});
  EXPECT_EQ(odd.code, kExitFailure);
  EXPECT_EQ(odd.err, "prog throws-int: internal error: unknown exception\n");
  EXPECT_EQ(CountLines(odd.err), 1);
}

TEST(CliAppTest, FailedOutputStreamIsAnError) {
  const App app = MakeApp();
  std::ostringstream out, err;
  out.setstate(std::ios::badbit);
  EXPECT_EQ(app.Run(std::vector<std::string>{"greet", "--name", "x"}, out, err), kExitFailure);
  EXPECT_EQ(err.str(), "prog greet: cannot write the output\n");
}

TEST(CliAppTest, OneLine) {
  EXPECT_EQ(OneLine("a\nb\tc\r\n"), "a b c");
  EXPECT_EQ(OneLine("plain"), "plain");
}

}  // namespace
}  // namespace fgnet::cli
