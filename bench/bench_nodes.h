// bench/bench_nodes.h — a benchmark that measures a loopback cluster starts its own nodes: this
// program again, as a node of the driver it is (prism::serve() at the top of main makes the copy
// serve, then exit).
//
//   const std::string dir = "/tmp/prism-bench-x-" + std::to_string(getpid());
//   setenv("PRISM_JOB_DIR", dir.c_str(), 1);
//   prism::init({.num_cpus = 1, .listen = "127.0.0.1:0"});
//   pid_t node = bench::spawn_node(dir, {"PRISM_NUM_CPUS=0", "PRISM_NUM_GPUS=1"});
//   ...
//   prism::shutdown();      // the nodes exit when the driver's job ends
//   bench::reap({node});
//
// Thread-safe: no; used from a benchmark's main thread.
#pragma once

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.h"

extern char** environ;

namespace bench {

// The first line of a file ("" if it cannot be read).
inline std::string read_line(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "r");
  if (f == nullptr) return {};
  char buf[256] = {};
  if (std::fgets(buf, sizeof buf, f) == nullptr) buf[0] = '\0';
  std::fclose(f);
  std::string s = buf;
  while (!s.empty() && s.back() == '\n') s.pop_back();
  return s;
}

// Starts this program as a node of the driver whose job directory is `job_dir` (its address and
// token files), with this environment less every PRISM_* variable, plus `env` ("NAME=value":
// the node's shape). Returns its pid, or -1.
inline pid_t spawn_node(const std::string& job_dir, const std::vector<std::string>& env) {
  std::vector<std::string> all;
  for (char** e = environ; *e != nullptr; ++e) {
    if (std::strncmp(*e, "PRISM_", 6) != 0) all.emplace_back(*e);
  }
  all.push_back("PRISM_ADDRESS=" + read_line(job_dir + "/address"));
  all.push_back("PRISM_TOKEN_FILE=" + job_dir + "/token");
  all.insert(all.end(), env.begin(), env.end());
  std::vector<char*> envp;
  for (auto& s : all) envp.push_back(s.data());
  envp.push_back(nullptr);
  char self[4096] = {};
  if (readlink("/proc/self/exe", self, sizeof self - 1) <= 0) return -1;
  char* argv[] = {self, nullptr};
  pid_t pid = -1;
  return posix_spawn(&pid, self, nullptr, nullptr, argv, envp.data()) == 0 ? pid : -1;
}

// Waits up to 20 s for each node to exit (the driver's job ended), then kills it.
inline void reap(const std::vector<pid_t>& children) {
  for (pid_t pid : children) {
    if (pid <= 0) continue;
    int status = 0;
    const double deadline = now_s() + 20;
    while (waitpid(pid, &status, WNOHANG) == 0) {
      if (now_s() > deadline) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));  // (another process)
    }
  }
}

}  // namespace bench
