// child.h — a child process for tests, reaped by its owner even when a test fails: it waits on
// a pidfd (bounded), and kills with SIGKILL what has not exited by then.
//
// Thread-safe: no; one owner.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

extern char** environ;

namespace prism_test {

using namespace std::chrono_literals;

// A child process; reaped (killed first if need be) when destroyed.
class Child {
 public:
  Child() = default;
  // Runs `exe` with this process's environment, less the cluster settings a child must not
  // inherit (PRISM_LISTEN, PRISM_MIN_NODES), plus `env_overrides`; `args` after argv[0];
  // stdout and stderr to `output` when it is not empty.
  Child(const std::string& exe, const std::map<std::string, std::string>& env_overrides,
        const std::vector<std::string>& args = {}, const std::string& output = {}) {
    std::map<std::string, std::string> env;
    for (char** e = environ; *e != nullptr; ++e) {
      const std::string kv = *e;
      const size_t eq = kv.find('=');
      if (eq != std::string::npos) env[kv.substr(0, eq)] = kv.substr(eq + 1);
    }
    env.erase("PRISM_LISTEN");
    env.erase("PRISM_MIN_NODES");
    for (const auto& [k, v] : env_overrides) env[k] = v;
    std::vector<std::string> strings;
    for (const auto& [k, v] : env) strings.push_back(k + "=" + v);
    std::vector<char*> envp;
    for (auto& s : strings) envp.push_back(s.data());
    envp.push_back(nullptr);
    std::vector<std::string> arg_strings{exe};
    arg_strings.insert(arg_strings.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : arg_strings) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    if (!output.empty()) {
      posix_spawn_file_actions_addopen(&actions, 1, output.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      posix_spawn_file_actions_adddup2(&actions, 1, 2);
    }
    if (posix_spawn(&pid_, exe.c_str(), &actions, nullptr, argv.data(), envp.data()) != 0) {
      pid_ = -1;
    }
    posix_spawn_file_actions_destroy(&actions);
  }
  // Takes charge of a child this process forked itself.
  static Child adopt(pid_t forked) {
    Child c;
    c.pid_ = forked;
    return c;
  }
  Child(Child&& o) noexcept : pid_(o.pid_), status_(o.status_) { o.pid_ = -1; }
  Child& operator=(Child&&) = delete;
  ~Child() {
    if (pid_ > 0 && !wait_exit(0s)) {
      kill(pid_, SIGKILL);
      wait_exit(10s);
    }
  }
  pid_t pid() const { return pid_; }
  bool started() const { return pid_ > 0; }
  void kill_now() { if (pid_ > 0) kill(pid_, SIGKILL); }
  // True once the child exited (then exit_status() says how), false if still running at the
  // deadline.
  bool wait_exit(std::chrono::milliseconds timeout) {
    if (pid_ <= 0) return true;
    // A pidfd becomes readable when the child exits: wait on it (bounded), then reap.
    const int fd = static_cast<int>(syscall(SYS_pidfd_open, pid_, 0));
    if (fd >= 0) {
      pollfd p{fd, POLLIN, 0};
      const int ms = static_cast<int>(std::min<int64_t>(timeout.count(), INT32_MAX));
      while (poll(&p, 1, ms) < 0 && errno == EINTR) {
      }
      close(fd);
    }
    int st = 0;
    const pid_t r = waitpid(pid_, &st, WNOHANG);
    if (r == 0) return false;  // still running at the deadline
    if (r == pid_) status_ = st;
    pid_ = -1;
    return true;
  }
  // The exit code, or -signal if killed.
  int exit_status() const {
    if (WIFEXITED(status_)) return WEXITSTATUS(status_);
    if (WIFSIGNALED(status_)) return -WTERMSIG(status_);
    return -1000;
  }

 private:
  pid_t pid_ = -1;
  int status_ = 0;
};

}  // namespace prism_test
