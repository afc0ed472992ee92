// cluster_fixture.h — a loopback cluster for tests: this test process is the driver, and node
// processes are this same executable started with PRISM_ADDRESS (its main calls prism::serve()
// first, so a node never runs the tests).
//
// Every child is reaped by the fixture, even when a test fails (it waits on a pidfd): killed with SIGKILL if it has not
// exited by the deadline. Every test gets its own job directory (under the build's temp dir).
// Ports come from the OS (127.0.0.1:0); UCX is pinned to loopback (UCX_NET_DEVICES=lo).
#pragma once

#include <signal.h>
#include <spawn.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <fstream>
#include <thread>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <prism/prism.h>

#include "common/child.h"

extern char** environ;

// Sanitizer builds (GCC or clang, ASan or TSan): load tests run smaller there.
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define PRISM_TEST_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
#define PRISM_TEST_SANITIZED 1
#endif
#endif

namespace prism_test {

using namespace std::chrono_literals;

inline std::string self_exe() {
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
}

inline std::string read_file_line(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "r");
  if (f == nullptr) return {};
  char buf[512] = {};
  const bool ok = std::fgets(buf, sizeof buf, f) != nullptr;
  std::fclose(f);
  std::string s = ok ? buf : "";
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  return s;
}

// Polls (bounded) for a file another process writes.
inline bool wait_for_file(const std::string& path, std::chrono::seconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (access(path.c_str(), F_OK) != 0) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(10ms);  // (another process's file: no event to wait on)
  }
  return true;
}

// Whether every thread of process `pid` is stopped (state T in /proc) within `timeout`.
inline bool all_threads_stopped(pid_t pid, std::chrono::seconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  const std::string dir = "/proc/" + std::to_string(pid) + "/task";
  for (;;) {
    bool all = true;
    std::error_code ec;
    for (const auto& t : std::filesystem::directory_iterator(dir, ec)) {
      std::ifstream in(t.path() / "stat");
      std::string line;
      std::getline(in, line);
      const size_t close = line.rfind(')');  // "tid (name) S ...": the state follows the name
      if (close == std::string::npos || close + 2 >= line.size() || line[close + 2] != 'T') {
        all = false;
      }
    }
    if (ec) return false;
    if (all) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::yield();
  }
}

// Where the tests' job directories go.
inline std::string job_root() {
  const char* tmp = std::getenv("TMPDIR");
  return std::string(tmp != nullptr && *tmp ? tmp : "/tmp") + "/prism-cluster-tests";
}

// A job directory for this process, `name`-pid under job_root(), empty: one left by an earlier
// process with the same pid is removed first (its address or ready file would be taken for this
// run's).
inline std::string fresh_job_dir(const std::string& name) {
  mkdir(job_root().c_str(), 0700);
  const std::string dir = job_root() + "/" + name + "-" + std::to_string(getpid());
  std::error_code ignored;
  std::filesystem::remove_all(dir, ignored);
  return dir;
}

// A driver (this process) and nodes started by address.
class ClusterTest : public ::testing::Test {
 protected:
  // Starts the driver with `cpus` CPUs, and one node per entry of `nodes` (its environment:
  // PRISM_NUM_CPUS, PRISM_RESOURCES, ...), and waits until they joined.
  void start(double cpus, const std::vector<std::map<std::string, std::string>>& nodes) {
    std::string name = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::replace(name.begin(), name.end(), '/', '-');  // parameterized tests: "Test/Param"
    job_dir_ = fresh_job_dir(name);
    setenv("PRISM_JOB_DIR", job_dir_.c_str(), 1);
    prism::init({.num_cpus = cpus, .listen = "127.0.0.1:0"});
    address_ = read_file_line(job_dir_ + "/address");
    ASSERT_FALSE(address_.empty()) << "no address file in " << job_dir_;
    for (const auto& env : nodes) add_node(env);
    prism::wait_for_nodes(static_cast<int>(nodes.size()), 60s);
  }
  Child& add_node(std::map<std::string, std::string> env, const std::string& exe = self_exe()) {
    env.emplace("PRISM_ADDRESS", address_);
    env.emplace("PRISM_TOKEN_FILE", job_dir_ + "/token");
    env.emplace("PRISM_NUM_CPUS", "1");
    children_.emplace_back(exe, env);
    EXPECT_TRUE(children_.back().started()) << "cannot start " << exe;
    return children_.back();
  }
  void TearDown() override {
    prism::shutdown();
    // The driver's job ended: every node exits with status 0 within the deadline.
    for (Child& c : children_) {
      if (!c.started()) continue;
      EXPECT_TRUE(c.wait_exit(20s)) << "node pid " << c.pid() << " did not exit";
      if (expect_clean_exit_) {
        EXPECT_EQ(c.exit_status(), 0) << "node pid " << c.pid();
      }
    }
    children_.clear();
    unsetenv("PRISM_JOB_DIR");
  }
  static std::string job_root() { return prism_test::job_root(); }
  // The driver's timeline (prism::timeline), written into the job directory, as text.
  std::string timeline_json() {
    const std::string path = job_dir_ + "/timeline.json";
    prism::timeline(path);
    std::ifstream in(path);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  }
  // PRISM_TIMELINE=1 while it lives (nodes started meanwhile inherit it: they record too).
  struct RecordTimelines {
    RecordTimelines() { setenv("PRISM_TIMELINE", "1", 1); }
    ~RecordTimelines() { unsetenv("PRISM_TIMELINE"); }
  };

  std::string job_dir_;
  std::string address_;
  std::deque<Child> children_;  // (references stay valid as nodes are added)
  bool expect_clean_exit_ = true;
};

}  // namespace prism_test
