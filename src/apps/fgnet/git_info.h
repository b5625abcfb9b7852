// The git commit a benchmark ran on: the commit the binary was built from (recorded by every
// build), with its branch where the checkout's .git, read at run time, still has it checked out;
// the checkout's commit where the build recorded none. Understands plain repositories, linked
// worktrees (.git file with "gitdir:" and "commondir"), loose and packed refs, and a detached HEAD.
// Does not run git and cannot tell whether the working tree had uncommitted changes.
// Thread-safety: plain functions and values.
#pragma once

#include <string>
#include <string_view>

#include "util/status.h"

namespace fgnet::cli {

struct GitInfo {
  std::string commit = "unknown";  // full hexadecimal object name, or "unknown"
  std::string ref;                 // e.g. "refs/heads/main"; empty when detached or unknown
  std::string source = "unknown";  // "checkout", "build" or "unknown"

  // The first 12 characters of the commit ("unknown" stays as is).
  std::string ShortCommit() const;
  // "main" for "refs/heads/main"; the ref itself otherwise.
  std::string Branch() const;
};

// Reads HEAD of the checkout rooted at `repo_root`. Errors name the file that is missing or
// malformed.
Result<GitInfo> ReadGitCheckout(const std::string& repo_root);

// Where `build_commit` is a commit name: ReadGitCheckout(repo_root) when it succeeds and its HEAD
// is that commit (source "checkout", with its ref), else that commit alone (source "build": the
// checkout has moved on or cannot be read). Otherwise ReadGitCheckout(repo_root) when it succeeds,
// else "unknown".
GitInfo DescribeGitCommit(const std::string& repo_root, std::string_view build_commit);

}  // namespace fgnet::cli
