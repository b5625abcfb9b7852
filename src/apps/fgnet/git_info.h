// The git commit a benchmark ran on. Read from the checkout's .git at run time (so a rebuild
// without reconfiguring still reports the right commit), falling back to the commit recorded at
// configure time. Understands plain repositories, linked worktrees (.git file with "gitdir:" and
// "commondir"), loose and packed refs, and a detached HEAD. Does not run git and cannot tell
// whether the working tree has uncommitted changes.
// Thread-safety: plain functions and values.
#pragma once

#include <string>
#include <string_view>

#include "util/status.h"

namespace fgnet::cli {

struct GitInfo {
  std::string commit = "unknown";  // full hexadecimal object name, or "unknown"
  std::string ref;                 // e.g. "refs/heads/main"; empty when detached or unknown
  std::string source = "unknown";  // "checkout", "configure" or "unknown"

  // The first 12 characters of the commit ("unknown" stays as is).
  std::string ShortCommit() const;
  // "main" for "refs/heads/main"; the ref itself otherwise.
  std::string Branch() const;
};

// Reads HEAD of the checkout rooted at `repo_root`. Errors name the file that is missing or
// malformed.
Result<GitInfo> ReadGitCheckout(const std::string& repo_root);

// ReadGitCheckout(repo_root) when it succeeds; else `configure_commit` (source "configure") when
// it is a commit name; else "unknown".
GitInfo DescribeGitCommit(const std::string& repo_root, std::string_view configure_commit);

}  // namespace fgnet::cli
