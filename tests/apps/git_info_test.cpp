// Reading the commit from .git without running git: plain repositories, linked worktrees, packed
// refs, detached HEAD, and the configure-time fallback.
#include "apps/fgnet/git_info.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "test_files.h"

namespace fgnet::cli {
namespace {

using ::testing::HasSubstr;
using testing::TempDir;
using testing::WriteFile;

constexpr const char* kCommitA = "0123456789abcdef0123456789abcdef01234567";
constexpr const char* kCommitB = "fedcba9876543210fedcba9876543210fedcba98";

TEST(GitInfoTest, LooseRef) {
  TempDir dir;
  WriteFile(dir.File(".git/HEAD"), "ref: refs/heads/main\n");
  WriteFile(dir.File(".git/refs/heads/main"), std::string(kCommitA) + "\n");
  auto info = ReadGitCheckout(dir.path().string());
  ASSERT_TRUE(info.ok()) << info.error().message();
  EXPECT_EQ(info->commit, kCommitA);
  EXPECT_EQ(info->ref, "refs/heads/main");
  EXPECT_EQ(info->Branch(), "main");
  EXPECT_EQ(info->source, "checkout");
  EXPECT_EQ(info->ShortCommit(), "0123456789ab");
}

TEST(GitInfoTest, PackedRef) {
  TempDir dir;
  WriteFile(dir.File(".git/HEAD"), "ref: refs/heads/topic\n");
  WriteFile(dir.File(".git/packed-refs"), "# pack-refs with: peeled fully-peeled sorted\n" +
                                              std::string(kCommitB) + " refs/heads/other\n" +
                                              kCommitA + " refs/heads/topic\n^" + kCommitB + "\n");
  auto info = ReadGitCheckout(dir.path().string());
  ASSERT_TRUE(info.ok()) << info.error().message();
  EXPECT_EQ(info->commit, kCommitA);
  EXPECT_EQ(info->Branch(), "topic");
}

TEST(GitInfoTest, LooseRefWinsOverPackedRef) {
  TempDir dir;
  WriteFile(dir.File(".git/HEAD"), "ref: refs/heads/main\n");
  WriteFile(dir.File(".git/refs/heads/main"), std::string(kCommitB) + "\n");
  WriteFile(dir.File(".git/packed-refs"), std::string(kCommitA) + " refs/heads/main\n");
  auto info = ReadGitCheckout(dir.path().string());
  ASSERT_TRUE(info.ok()) << info.error().message();
  EXPECT_EQ(info->commit, kCommitB);
}

TEST(GitInfoTest, DetachedHead) {
  TempDir dir;
  WriteFile(dir.File(".git/HEAD"), std::string(kCommitB) + "\n");
  auto info = ReadGitCheckout(dir.path().string());
  ASSERT_TRUE(info.ok()) << info.error().message();
  EXPECT_EQ(info->commit, kCommitB);
  EXPECT_EQ(info->ref, "");
  EXPECT_EQ(info->Branch(), "");
}

TEST(GitInfoTest, LinkedWorktree) {
  TempDir dir;
  // The main repository holds the refs; the worktree's private git dir holds HEAD.
  WriteFile(dir.File("main/.git/refs/heads/feature"), std::string(kCommitA) + "\n");
  WriteFile(dir.File("main/.git/worktrees/wt/HEAD"), "ref: refs/heads/feature\n");
  WriteFile(dir.File("main/.git/worktrees/wt/commondir"), "../..\n");
  WriteFile(dir.File("wt/.git"), "gitdir: " + dir.File("main/.git/worktrees/wt") + "\n");
  auto info = ReadGitCheckout(dir.File("wt"));
  ASSERT_TRUE(info.ok()) << info.error().message();
  EXPECT_EQ(info->commit, kCommitA);
  EXPECT_EQ(info->Branch(), "feature");

  // A relative gitdir is resolved against the worktree root.
  WriteFile(dir.File("wt/.git"), "gitdir: ../main/.git/worktrees/wt\n");
  auto relative = ReadGitCheckout(dir.File("wt"));
  ASSERT_TRUE(relative.ok()) << relative.error().message();
  EXPECT_EQ(relative->commit, kCommitA);
}

TEST(GitInfoTest, Errors) {
  TempDir dir;
  auto none = ReadGitCheckout(dir.path().string());
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.error().message(), (dir.path() / ".git").string() + ": not found");

  WriteFile(dir.File(".git/HEAD"), "ref: refs/heads/gone\n");
  auto gone = ReadGitCheckout(dir.path().string());
  ASSERT_FALSE(gone.ok());
  EXPECT_THAT(gone.error().message(), HasSubstr("ref 'refs/heads/gone' not found"));

  WriteFile(dir.File(".git/HEAD"), "garbage\n");
  auto garbage = ReadGitCheckout(dir.path().string());
  ASSERT_FALSE(garbage.ok());
  EXPECT_EQ(garbage.error().message(),
            dir.File(".git/HEAD") + ": neither a ref nor a commit name: 'garbage'");

  WriteFile(dir.File(".git/HEAD"), "ref: refs/heads/main\n");
  WriteFile(dir.File(".git/refs/heads/main"), "not-a-hash\n");
  auto bad_ref = ReadGitCheckout(dir.path().string());
  ASSERT_FALSE(bad_ref.ok());
  EXPECT_EQ(bad_ref.error().message(),
            dir.File(".git/refs/heads/main") + ": not a commit name: 'not-a-hash'");

  TempDir file_dir;
  WriteFile(file_dir.File(".git"), "something else\n");
  auto bad_file = ReadGitCheckout(file_dir.path().string());
  ASSERT_FALSE(bad_file.ok());
  EXPECT_EQ(bad_file.error().message(), file_dir.File(".git") + ": expected 'gitdir: <path>'");
}

TEST(GitInfoTest, ReportsTheCommitTheBuildRecorded) {
  TempDir dir;  // no .git
  const GitInfo built = DescribeGitCommit(dir.path().string(), kCommitB);
  EXPECT_EQ(built.commit, kCommitB);
  EXPECT_EQ(built.source, "build");

  const GitInfo unknown = DescribeGitCommit(dir.path().string(), "unknown");
  EXPECT_EQ(unknown.commit, "unknown");
  EXPECT_EQ(unknown.source, "unknown");
  EXPECT_EQ(unknown.ShortCommit(), "unknown");
  EXPECT_EQ(DescribeGitCommit("", "").source, "unknown");

  // A checkout that has moved on since the build: the build's commit.
  WriteFile(dir.File(".git/HEAD"), std::string(kCommitA) + "\n");
  const GitInfo moved = DescribeGitCommit(dir.path().string(), kCommitB);
  EXPECT_EQ(moved.commit, kCommitB);
  EXPECT_EQ(moved.source, "build");
  // The checkout of the build's commit; and the checkout where the build recorded none.
  const GitInfo checkout = DescribeGitCommit(dir.path().string(), kCommitA);
  EXPECT_EQ(checkout.commit, kCommitA);
  EXPECT_EQ(checkout.source, "checkout");
  const GitInfo unrecorded = DescribeGitCommit(dir.path().string(), "unknown");
  EXPECT_EQ(unrecorded.commit, kCommitA);
  EXPECT_EQ(unrecorded.source, "checkout");
}

}  // namespace
}  // namespace fgnet::cli
