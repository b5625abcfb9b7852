// End-to-end: runs the built fgnet executable and checks exit codes, stdout and stderr.
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <spawn.h>
#include <sys/wait.h>

#include <string>
#include <vector>

#include "test_files.h"
#include "util/json.h"

extern char** environ;

namespace fgnet::cli {
namespace {

using testing::CountLines;
using ::testing::HasSubstr;
using testing::ReadFile;
using ::testing::StartsWith;
using testing::TempDir;

struct Outcome {
  int code = -1;  // exit status; -1 when killed by a signal or not started
  std::string out;
  std::string err;
};

std::string FgnetPath() { return std::string(FGNET_BINARY_DIR) + "/bin/fgnet"; }

Outcome RunFgnet(const std::vector<std::string>& args) {
  TempDir dir;
  const std::string out_path = dir.File("stdout"), err_path = dir.File("stderr");
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0644);
  posix_spawn_file_actions_addopen(&actions, 2, err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0644);
  const std::string exe = FgnetPath();
  std::vector<std::string> argv_storage = {exe};
  argv_storage.insert(argv_storage.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& a : argv_storage) argv.push_back(a.data());
  argv.push_back(nullptr);

  Outcome outcome;
  pid_t pid = 0;
  const int spawn_error = posix_spawn(&pid, exe.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (spawn_error != 0) {
    outcome.err = "cannot start " + exe;
    return outcome;
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status)) outcome.code = WEXITSTATUS(status);
  outcome.out = ReadFile(out_path);
  outcome.err = ReadFile(err_path);
  return outcome;
}

TEST(FgnetBinaryTest, Help) {
  const Outcome r = RunFgnet({"--help"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, StartsWith("Usage: fgnet <command> [options]\n"));
  EXPECT_THAT(r.out, HasSubstr("generate"));
  EXPECT_THAT(r.out, HasSubstr("bench"));
  EXPECT_EQ(r.err, "");

  const Outcome command_help = RunFgnet({"logits", "--help"});
  ASSERT_EQ(command_help.code, 0) << command_help.err;
  EXPECT_THAT(command_help.out, StartsWith("Usage: fgnet logits --model PATH"));
}

TEST(FgnetBinaryTest, NoCommand) {
  const Outcome r = RunFgnet({});
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(CountLines(r.err), 1) << r.err;
  EXPECT_THAT(r.err, StartsWith("fgnet: missing command"));
  EXPECT_EQ(r.out, "");
}

TEST(FgnetBinaryTest, BadCommand) {
  const Outcome r = RunFgnet({"generat", "--model", "m"});
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(r.err, "fgnet: unknown command 'generat' (did you mean 'generate'?)\n");
  EXPECT_EQ(r.out, "");
}

TEST(FgnetBinaryTest, BadFlags) {
  const Outcome typed =
      RunFgnet({"generate", "--model", "m", "--prompt", "hi", "--temperature", "hot"});
  EXPECT_EQ(typed.code, 2);
  EXPECT_EQ(typed.err, "fgnet generate: --temperature expects a number, got 'hot'\n");

  const Outcome missing = RunFgnet({"logits", "--ids", "1,2", "--out", "x.npy"});
  EXPECT_EQ(missing.code, 2);
  EXPECT_EQ(missing.err, "fgnet logits: missing required option --model\n");

  const Outcome unknown = RunFgnet({"bench", "--thread", "2"});
  EXPECT_EQ(unknown.code, 2);
  EXPECT_EQ(unknown.err, "fgnet bench: unknown option --thread (did you mean --threads?)\n");
}

TEST(FgnetBinaryTest, RuntimeErrorIsOneLine) {
  const Outcome r = RunFgnet({"inspect", "some-dir"});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(CountLines(r.err), 1) << r.err;
  EXPECT_THAT(r.err, StartsWith("fgnet inspect: some-dir: "));
}

TEST(FgnetBinaryTest, BenchWritesReport) {
  TempDir dir;
  const std::string json_path = dir.File("bench.json");
  const Outcome r = RunFgnet(
      {"bench", "--skip-model", "--bandwidth-mib", "2", "--repeat", "1", "--json", json_path});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("| memory read bandwidth |"));
  auto json = ReadJsonFile(json_path);
  ASSERT_TRUE(json.ok()) << json.error().message();
  EXPECT_EQ((*json)["schema"], "fgnet-bench/1");
  EXPECT_EQ((*json)["results"].size(), 2u);
}

TEST(FgnetBinaryTest, Version) {
  const Outcome r = RunFgnet({"--version"});
  EXPECT_EQ(r.code, 0);
  EXPECT_THAT(r.out, StartsWith("fgnet "));
  EXPECT_EQ(CountLines(r.out), 1);
}

}  // namespace
}  // namespace fgnet::cli
