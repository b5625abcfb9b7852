#include "apps/fgnet/git_info.h"

#include <algorithm>
#include <filesystem>

#include "util/mapped_file.h"

namespace fgnet::cli {
namespace {

namespace fs = std::filesystem;

std::string_view TrimLine(std::string_view s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) {
    s.remove_suffix(1);
  }
  while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
  return s;
}

bool IsObjectName(std::string_view s) {
  return (s.size() == 40 || s.size() == 64) && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

// Finds `ref` as a loose ref under `gitdir` or `common`, then in common/packed-refs.
Result<std::string> ResolveRef(const fs::path& gitdir, const fs::path& common,
                               const std::string& ref) {
  for (const fs::path& base : {gitdir, common}) {
    const fs::path loose = base / ref;
    std::error_code ec;
    if (!fs::is_regular_file(loose, ec)) continue;
    FGNET_ASSIGN_OR_RETURN(std::string text, ReadFileToString(loose.string()));
    const std::string_view value = TrimLine(text);
    if (!IsObjectName(value)) {
      return MakeError(loose.string(), ": not a commit name: '", value, "'");
    }
    return std::string(value);
  }
  const fs::path packed = common / "packed-refs";
  std::error_code ec;
  if (fs::is_regular_file(packed, ec)) {
    FGNET_ASSIGN_OR_RETURN(std::string text, ReadFileToString(packed.string()));
    std::string_view rest = text;
    while (!rest.empty()) {
      std::size_t end = rest.find('\n');
      if (end == std::string_view::npos) end = rest.size();
      const std::string_view line = TrimLine(rest.substr(0, end));
      rest.remove_prefix(std::min(rest.size(), end + 1));
      if (line.empty() || line.front() == '#' || line.front() == '^') continue;
      const std::size_t space = line.find(' ');
      if (space == std::string_view::npos) continue;
      if (line.substr(space + 1) == ref && IsObjectName(line.substr(0, space))) {
        return std::string(line.substr(0, space));
      }
    }
  }
  return MakeError(gitdir.string(), ": ref '", ref, "' not found");
}

}  // namespace

std::string GitInfo::ShortCommit() const {
  return IsObjectName(commit) ? commit.substr(0, 12) : commit;
}

std::string GitInfo::Branch() const {
  constexpr std::string_view kHeads = "refs/heads/";
  return ref.starts_with(kHeads) ? ref.substr(kHeads.size()) : ref;
}

Result<GitInfo> ReadGitCheckout(const std::string& repo_root) {
  const fs::path dot_git = fs::path(repo_root) / ".git";
  std::error_code ec;
  fs::path gitdir;
  if (fs::is_directory(dot_git, ec)) {
    gitdir = dot_git;
  } else if (fs::is_regular_file(dot_git, ec)) {
    // A linked worktree or submodule: ".git" holds "gitdir: <path>".
    FGNET_ASSIGN_OR_RETURN(std::string text, ReadFileToString(dot_git.string()));
    const std::string_view line = TrimLine(text);
    constexpr std::string_view kPrefix = "gitdir: ";
    if (!line.starts_with(kPrefix)) {
      return MakeError(dot_git.string(), ": expected 'gitdir: <path>'");
    }
    gitdir = fs::path(std::string(line.substr(kPrefix.size())));
    if (gitdir.is_relative()) gitdir = fs::path(repo_root) / gitdir;
  } else {
    return MakeError(dot_git.string(), ": not found");
  }

  fs::path common = gitdir;
  const fs::path commondir_file = gitdir / "commondir";
  if (fs::is_regular_file(commondir_file, ec)) {
    FGNET_ASSIGN_OR_RETURN(std::string text, ReadFileToString(commondir_file.string()));
    fs::path dir = fs::path(std::string(TrimLine(text)));
    common = dir.is_relative() ? gitdir / dir : dir;
  }

  const fs::path head_file = gitdir / "HEAD";
  FGNET_ASSIGN_OR_RETURN(std::string head_text, ReadFileToString(head_file.string()));
  const std::string_view head = TrimLine(head_text);
  GitInfo info;
  info.source = "checkout";
  constexpr std::string_view kRefPrefix = "ref: ";
  if (head.starts_with(kRefPrefix)) {
    info.ref = std::string(TrimLine(head.substr(kRefPrefix.size())));
    FGNET_ASSIGN_OR_RETURN(info.commit, ResolveRef(gitdir, common, info.ref));
  } else if (IsObjectName(head)) {
    info.commit = std::string(head);
  } else {
    return MakeError(head_file.string(), ": neither a ref nor a commit name: '", head, "'");
  }
  return info;
}

GitInfo DescribeGitCommit(const std::string& repo_root, std::string_view build_commit) {
  Result<GitInfo> checkout =
      repo_root.empty() ? Result<GitInfo>(MakeError("no checkout")) : ReadGitCheckout(repo_root);
  const std::string_view built = TrimLine(build_commit);
  if (!IsObjectName(built)) return checkout.ok() ? std::move(checkout).value() : GitInfo{};
  if (checkout.ok() && checkout->commit == built) return std::move(checkout).value();
  GitInfo info;
  info.commit = std::string(built);
  info.source = "build";
  return info;
}

}  // namespace fgnet::cli
