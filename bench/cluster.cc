// bench/cluster — first cluster-mode figures on one machine (loopback): a driver and node
// processes of this same executable (started here by address, as the tests do).
//
//   build/release/bench/cluster [--tasks=20000] [--round_trips=2000] [--nodes=2]
//
// Rows: remote empty tasks async (the driver has no CPU, so every task goes to a node), sync
// round trip of one remote task (p50/p99), remote actor calls (sync p50, async rate), and the
// same rows embedded (one process) for reference. UCX is pinned to loopback. Not yet in
// run_all.sh (the cluster benchmark of "Cluster mode, part 2" adds transfers and peers).
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <prism/prism.h>

extern char** environ;

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

int noop(int x) { return x; }
PRISM_REMOTE(noop);

struct Echo {
  int echo(int x) { return x; }
};
PRISM_ACTOR(Echo, &Echo::echo);

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

struct Percentiles {
  double p50_us, p99_us;
};
Percentiles percentiles(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return {v[v.size() / 2] * 1e6, v[std::min(v.size() - 1, v.size() * 99 / 100)] * 1e6};
}

// The figures of one configuration: `remote` selects tasks and actors on a node.
void measure(const char* label, int tasks, int round_trips, bool remote) {
  // Remote rows ask for the nodes' custom resource: every task and the actor go there.
  auto task = [&] {
    auto t = prism::task(noop);
    if (remote) t.resource("node", 0.0001);
    return t;
  };
  for (int i = 0; i < 1000; ++i) prism::get(task().remote(i), 60s);  // warm-up
  auto t0 = Clock::now();
  std::vector<prism::ObjectRef<int>> refs;
  refs.reserve(static_cast<size_t>(tasks));
  for (int i = 0; i < tasks; ++i) refs.push_back(task().remote(i));
  for (auto& r : refs) prism::get(r, 120s);
  const double async_rate = tasks / seconds_since(t0);
  std::vector<double> rt;
  for (int i = 0; i < round_trips; ++i) {
    const auto s = Clock::now();
    prism::get(task().remote(i), 60s);
    rt.push_back(seconds_since(s));
  }
  const Percentiles p = percentiles(rt);
  auto creator = prism::actor<Echo>();
  if (remote) creator.resource("node", 0.0001);
  auto echo = creator.remote();
  for (int i = 0; i < 1000; ++i) prism::get(echo.task(&Echo::echo).remote(i), 60s);
  std::vector<double> ar;
  for (int i = 0; i < round_trips; ++i) {
    const auto s = Clock::now();
    prism::get(echo.task(&Echo::echo).remote(i), 60s);
    ar.push_back(seconds_since(s));
  }
  const Percentiles ap = percentiles(ar);
  t0 = Clock::now();
  std::vector<prism::ObjectRef<int>> calls;
  calls.reserve(static_cast<size_t>(tasks));
  for (int i = 0; i < tasks; ++i) calls.push_back(echo.task(&Echo::echo).remote(i));
  for (auto& c : calls) prism::get(c, 120s);
  const double actor_rate = tasks / seconds_since(t0);
  std::printf("%-34s %12.0f %9.1f %9.1f %12.1f %14.0f\n", label, async_rate, p.p50_us, p.p99_us,
              ap.p50_us, actor_rate);
  std::fflush(stdout);
}

int arg(int argc, char** argv, const char* name, int fallback) {
  const size_t n = std::strlen(name);
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], name, n) == 0 && argv[i][n] == '=') return std::atoi(argv[i] + n + 1);
  }
  return fallback;
}

std::string read_line(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "r");
  if (f == nullptr) return {};
  char buf[256] = {};
  if (std::fgets(buf, sizeof buf, f) == nullptr) buf[0] = '\0';
  std::fclose(f);
  std::string s = buf;
  while (!s.empty() && s.back() == '\n') s.pop_back();
  return s;
}

pid_t spawn_node(const std::string& address, const std::string& token_file) {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    if (std::strncmp(*e, "PRISM_", 6) != 0) env.emplace_back(*e);
  }
  env.push_back("PRISM_ADDRESS=" + address);
  env.push_back("PRISM_TOKEN_FILE=" + token_file);
  env.push_back("PRISM_NUM_CPUS=1");
  env.push_back("PRISM_RESOURCES=node:1");
  std::vector<char*> envp;
  for (auto& s : env) envp.push_back(s.data());
  envp.push_back(nullptr);
  char self[4096] = {};
  if (readlink("/proc/self/exe", self, sizeof self - 1) <= 0) return -1;
  char* argv[] = {self, nullptr};
  pid_t pid = -1;
  return posix_spawn(&pid, self, nullptr, nullptr, argv, envp.data()) == 0 ? pid : -1;
}

}  // namespace

int main(int argc, char** argv) {
  setenv("UCX_NET_DEVICES", "lo", 0);
  prism::serve();  // a node: serves the driver below, then exits
  const int tasks = arg(argc, argv, "--tasks", 20000);
  const int round_trips = arg(argc, argv, "--round_trips", 2000);
  const int nodes = arg(argc, argv, "--nodes", 2);
  std::printf("%-34s %12s %9s %9s %12s %14s\n", "configuration", "tasks/s", "rt p50us",
              "rt p99us", "actor p50us", "actor calls/s");

  prism::init({.num_cpus = 1});
  measure("embedded (1 CPU)", tasks, round_trips, false);
  prism::shutdown();

  const std::string dir = "/tmp/prism-bench-cluster-" + std::to_string(getpid());
  setenv("PRISM_JOB_DIR", dir.c_str(), 1);
  prism::init({.num_cpus = 1, .listen = "127.0.0.1:0"});
  std::vector<pid_t> children;
  for (int i = 0; i < nodes; ++i) {
    children.push_back(spawn_node(read_line(dir + "/address"), dir + "/token"));
  }
  prism::wait_for_nodes(nodes, 60s);
  char label[64];
  std::snprintf(label, sizeof label, "driver + %d node(s), on a node", nodes);
  measure(label, tasks, round_trips, true);
  prism::shutdown();  // the nodes exit
  for (pid_t pid : children) {
    int status = 0;
    const auto deadline = Clock::now() + 20s;
    while (waitpid(pid, &status, WNOHANG) == 0) {
      if (Clock::now() > deadline) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        break;
      }
      std::this_thread::sleep_for(10ms);  // (another process: nothing to wait on)
    }
  }
  std::printf("(%d tasks, %d round trips; %u hardware threads; UCX_NET_DEVICES=%s)\n", tasks,
              round_trips, std::thread::hardware_concurrency(), std::getenv("UCX_NET_DEVICES"));
  return 0;
}
