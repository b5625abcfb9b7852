#include "util/subprocess.h"

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>

namespace fgnet {
namespace {

TEST(SubprocessTest, ExitCodeAndOutputs) {
  auto r = RunProcess({"sh", "-c", "echo out; echo err >&2; exit 3"}, "", {}, 5000);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->exit_code, 3);
  EXPECT_EQ(r->stdout_text, "out\n");
  EXPECT_EQ(r->stderr_text, "err\n");
  EXPECT_FALSE(r->timed_out);
}

TEST(SubprocessTest, StdinIsPassedAndEnvAdded) {
  auto r = RunProcess({"sh", "-c", "cat; printf %s \"$FGNET_SUBPROCESS_TEST\""}, "hello\n",
                      {{"FGNET_SUBPROCESS_TEST", "yes"}}, 5000);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->exit_code, 0);
  EXPECT_EQ(r->stdout_text, "hello\nyes");
}

TEST(SubprocessTest, LargeInputAndOutputDoNotDeadlock) {
  // The child echoes 4 MB back while the input is still being written: both pipes fill up
  // unless the caller drains stdout while writing stdin.
  std::string input(4 << 20, 'x');
  for (std::size_t i = 0; i < input.size(); i += 1000) input[i] = '\n';
  auto r = RunProcess({"cat"}, input, {}, 20000);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->exit_code, 0);
  EXPECT_EQ(r->stdout_text.size(), input.size());
  EXPECT_TRUE(r->stdout_text == input);
}

TEST(SubprocessTest, LargeOutputWithoutInput) {
  auto r = RunProcess({"sh", "-c", "head -c 3000000 /dev/zero; head -c 200000 /dev/zero >&2"}, "",
                      {}, 20000);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->stdout_text.size(), 3000000u);
  EXPECT_EQ(r->stderr_text.size(), 200000u);
}

TEST(SubprocessTest, TimeoutKillsTheProcessGroup) {
  auto start = std::chrono::steady_clock::now();
  // The background sleep keeps the output pipe open: only killing the group ends it.
  auto r = RunProcess({"sh", "-c", "sleep 30 & echo started; wait"}, "", {}, 300);
  auto seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_TRUE(r->timed_out);
  EXPECT_EQ(r->exit_code, 128 + 9);
  EXPECT_EQ(r->stdout_text, "started\n");
  EXPECT_LT(seconds, 20.0);  // not a timing assertion: only that the 30 s sleep did not run out
}

TEST(SubprocessTest, ChildThatStopsReadingEarly) {
  std::string input(1 << 20, 'y');
  auto r = RunProcess({"sh", "-c", "head -c 10 >/dev/null; echo done"}, input, {}, 5000);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->stdout_text, "done\n");
}

TEST(SubprocessTest, MissingBinaryIsAnErrorNamingIt) {
  auto r = RunProcess({"fgnet-no-such-program"}, "", {}, 1000);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("fgnet-no-such-program"), std::string::npos);
  auto r2 = RunProcess({"/nonexistent/dir/prog"}, "", {}, 1000);
  ASSERT_FALSE(r2.ok());
  EXPECT_NE(r2.error().message().find("/nonexistent/dir/prog"), std::string::npos);
  EXPECT_FALSE(RunProcess({}, "", {}, 1000).ok());
}

std::size_t OpenDescriptors() {
  std::size_t n = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    (void)entry;
    ++n;
  }
  return n;
}

TEST(SubprocessTest, NoDescriptorLeaks) {
  // An executable file that is not a program: exec itself fails in the child.
  const std::string bad = ::testing::TempDir() + "fgnet_subprocess_not_a_program";
  { std::ofstream(bad) << "\x01\x02 not a program"; }
  std::filesystem::permissions(bad, std::filesystem::perms::owner_all);
  const std::size_t before = OpenDescriptors();
  for (int i = 0; i < 5; ++i) {
    EXPECT_TRUE(RunProcess({"sh", "-c", "cat"}, "abc", {}, 5000).ok());
    EXPECT_FALSE(RunProcess({"fgnet-no-such-program"}, "", {}, 1000).ok());
    auto exec_failed = RunProcess({bad}, "input", {}, 1000);
    ASSERT_FALSE(exec_failed.ok());
    EXPECT_NE(exec_failed.error().message().find("cannot execute"), std::string::npos);
  }
  EXPECT_TRUE(RunProcess({"sleep", "5"}, "", {}, 50)->timed_out);
  EXPECT_EQ(OpenDescriptors(), before);
}

}  // namespace
}  // namespace fgnet
