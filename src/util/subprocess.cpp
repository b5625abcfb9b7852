#include "util/subprocess.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>

extern char** environ;

namespace fgnet {
namespace {

// Closes a descriptor once; -1 means closed.
void CloseFd(int* fd) {
  if (*fd >= 0) {
    ::close(*fd);
    *fd = -1;
  }
}

bool IsExecutableFile(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(path.c_str(), X_OK) == 0;
}

// The program's path: argv0 itself when it names a path, else the first PATH entry holding it.
Result<std::string> FindProgram(const std::string& argv0) {
  if (argv0.find('/') != std::string::npos) {
    if (!IsExecutableFile(argv0)) return MakeError(argv0, ": not found or not executable");
    return argv0;
  }
  const char* path_env = std::getenv("PATH");
  std::string path = path_env != nullptr ? path_env : "/usr/local/bin:/usr/bin:/bin";
  std::size_t start = 0;
  while (start <= path.size()) {
    std::size_t end = path.find(':', start);
    if (end == std::string::npos) end = path.size();
    std::string dir = path.substr(start, end - start);
    std::string candidate = (end == start ? std::string(".") : dir) + "/" + argv0;
    if (IsExecutableFile(candidate)) return candidate;
    start = end + 1;
  }
  return MakeError(argv0, ": not found in PATH");
}

// The child's environment: ours with `env` added or replaced.
std::vector<std::string> BuildEnvironment(
    const std::vector<std::pair<std::string, std::string>>& env) {
  std::vector<std::string> out;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    std::string entry = *e;
    std::string key = entry.substr(0, entry.find('='));
    bool replaced = false;
    for (const auto& [k, v] : env) replaced = replaced || k == key;
    if (!replaced) out.push_back(std::move(entry));
  }
  for (const auto& [k, v] : env) out.push_back(k + "=" + v);
  return out;
}

void SetNonBlocking(int fd) { ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK); }

// Reads what is available; returns false at end of file or on error.
bool ReadSome(int fd, std::string* out) {
  char buffer[65536];
  for (;;) {
    ssize_t n = ::read(fd, buffer, sizeof(buffer));
    if (n > 0) {
      out->append(buffer, static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
    return false;
  }
}

}  // namespace

Result<ProcessResult> RunProcess(const std::vector<std::string>& argv, std::string_view stdin_text,
                                 const std::vector<std::pair<std::string, std::string>>& env,
                                 std::int64_t timeout_ms) {
  if (argv.empty()) return MakeError("RunProcess: empty argv");
  FGNET_ASSIGN_OR_RETURN(std::string program, FindProgram(argv[0]));

  // Everything the child needs is prepared before fork: after it only async-signal-safe calls.
  std::vector<char*> child_argv;
  for (const std::string& a : argv) child_argv.push_back(const_cast<char*>(a.c_str()));
  child_argv.push_back(nullptr);
  std::vector<std::string> env_strings = BuildEnvironment(env);
  std::vector<char*> child_env;
  for (std::string& e : env_strings) child_env.push_back(e.data());
  child_env.push_back(nullptr);

  // stdin is a socket so that writing to a child that exited early fails with EPIPE instead of
  // raising SIGPIPE in this process (MSG_NOSIGNAL).
  int in_fds[2] = {-1, -1};
  int out_fds[2] = {-1, -1};
  int err_fds[2] = {-1, -1};
  int exec_fds[2] = {-1, -1};  // the child writes errno here when exec fails
  auto close_all = [&] {
    for (int* fd : {&in_fds[0], &in_fds[1], &out_fds[0], &out_fds[1], &err_fds[0], &err_fds[1],
                    &exec_fds[0], &exec_fds[1]}) {
      CloseFd(fd);
    }
  };
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, in_fds) != 0 ||
      ::pipe2(out_fds, O_CLOEXEC) != 0 || ::pipe2(err_fds, O_CLOEXEC) != 0 ||
      ::pipe2(exec_fds, O_CLOEXEC) != 0) {
    int error = errno;
    close_all();
    return MakeError(argv[0], ": cannot create pipes: ", std::strerror(error));
  }

  pid_t pid = ::fork();
  if (pid < 0) {
    int error = errno;
    close_all();
    return MakeError(argv[0], ": fork failed: ", std::strerror(error));
  }
  if (pid == 0) {
    ::setpgid(0, 0);
    ::signal(SIGPIPE, SIG_DFL);
    ::dup2(in_fds[1], 0);
    ::dup2(out_fds[1], 1);
    ::dup2(err_fds[1], 2);
    ::execve(program.c_str(), child_argv.data(), child_env.data());
    int error = errno;
    ssize_t ignored = ::write(exec_fds[1], &error, sizeof(error));
    (void)ignored;
    ::_exit(127);
  }
  ::setpgid(pid, pid);  // also set here so that a timeout never races the child's own setpgid
  CloseFd(&in_fds[1]);
  CloseFd(&out_fds[1]);
  CloseFd(&err_fds[1]);
  CloseFd(&exec_fds[1]);

  int exec_errno = 0;
  ssize_t got;
  do {
    got = ::read(exec_fds[0], &exec_errno, sizeof(exec_errno));
  } while (got < 0 && errno == EINTR);
  CloseFd(&exec_fds[0]);
  if (got == static_cast<ssize_t>(sizeof(exec_errno))) {
    close_all();
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return MakeError(argv[0], ": cannot execute ", program, ": ", std::strerror(exec_errno));
  }

  SetNonBlocking(in_fds[0]);
  SetNonBlocking(out_fds[0]);
  SetNonBlocking(err_fds[0]);
  std::size_t written = 0;
  if (stdin_text.empty()) CloseFd(&in_fds[0]);

  ProcessResult result;
  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (out_fds[0] >= 0 || err_fds[0] >= 0) {
    pollfd fds[3];
    int n = 0;
    int out_index = -1, err_index = -1, in_index = -1;
    if (out_fds[0] >= 0) {
      out_index = n;
      fds[n++] = pollfd{out_fds[0], POLLIN, 0};
    }
    if (err_fds[0] >= 0) {
      err_index = n;
      fds[n++] = pollfd{err_fds[0], POLLIN, 0};
    }
    if (in_fds[0] >= 0) {
      in_index = n;
      fds[n++] = pollfd{in_fds[0], POLLOUT, 0};
    }
    int wait_ms = -1;
    if (timeout_ms > 0) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) {
        result.timed_out = true;
        break;
      }
      wait_ms = static_cast<int>(std::min<std::int64_t>(left.count() + 1, 1 << 30));
    }
    int ready = ::poll(fds, static_cast<nfds_t>(n), wait_ms);
    if (ready < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (out_index >= 0 && fds[out_index].revents != 0 &&
        !ReadSome(out_fds[0], &result.stdout_text)) {
      CloseFd(&out_fds[0]);
    }
    if (err_index >= 0 && fds[err_index].revents != 0 &&
        !ReadSome(err_fds[0], &result.stderr_text)) {
      CloseFd(&err_fds[0]);
    }
    if (in_index >= 0 && fds[in_index].revents != 0) {
      if ((fds[in_index].revents & (POLLERR | POLLHUP)) != 0) {
        CloseFd(&in_fds[0]);
      } else {
        ssize_t w = ::send(in_fds[0], stdin_text.data() + written, stdin_text.size() - written,
                           MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) written += static_cast<std::size_t>(w);
        if ((w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) ||
            written == stdin_text.size()) {
          CloseFd(&in_fds[0]);
        }
      }
    }
  }
  close_all();
  // The child may still run after closing its outputs: wait for it within the deadline.
  int status = 0;
  for (;;) {
    if (result.timed_out) {
      ::kill(-pid, SIGKILL);
      while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
      break;
    }
    pid_t done = ::waitpid(pid, &status, timeout_ms > 0 ? WNOHANG : 0);
    if (done == pid) break;
    if (done < 0 && errno != EINTR) break;
    if (done == 0) {
      if (Clock::now() >= deadline) {
        result.timed_out = true;
        continue;
      }
      ::usleep(2000);
    }
  }
  if (WIFEXITED(status)) {
    result.exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    result.exit_code = 128 + WTERMSIG(status);
  }
  return result;
}

}  // namespace fgnet
