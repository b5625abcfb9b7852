// Runs a program as a child process: argv without a shell, text on its stdin, stdout and stderr
// captured in full. Both output pipes are drained while stdin is written, so a child writing
// more than a pipe buffer before reading all of its input cannot deadlock the caller. The child
// runs in its own process group; on timeout the whole group is killed (SIGKILL).
// Thread-safety: RunProcess may be called from several threads at once (every descriptor it
// opens is close-on-exec, so concurrent children do not inherit each other's pipes).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "util/status.h"

namespace fgnet {

struct ProcessResult {
  int exit_code = 0;  // the exit status; 128 + N when killed by signal N
  std::string stdout_text;
  std::string stderr_text;
  bool timed_out = false;  // killed after `timeout_ms`
};

// Runs argv[0] (looked up in PATH unless it contains a '/') with argv, writing `stdin_text` to
// its stdin and then closing it. `env` adds (or replaces) environment variables of the child.
// timeout_ms <= 0: no limit. Errors: empty argv, a program not found or not executable
// ("node: not found in PATH"), a failed exec, pipe or fork.
Result<ProcessResult> RunProcess(const std::vector<std::string>& argv, std::string_view stdin_text,
                                 const std::vector<std::pair<std::string, std::string>>& env,
                                 std::int64_t timeout_ms);

}  // namespace fgnet
