// The core API, the same test bodies in both modes: embedded (one process, 2 CPUs) and cluster
// (this process as driver with 1 CPU, and two node processes with 2 CPUs each). Work that asks
// for the "remote" resource runs where that resource is: in the embedded runtime itself, or on
// the nodes only (the driver declares none), so in cluster mode it must cross processes; the
// tests assert where it ran (node ids in results). Same driver/node set-up as cluster_test.cc
// (this file is part of the same test binary).
#include <atomic>
#include <chrono>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>
#include <prism/prism.h>

#include "cluster_fixture.h"

namespace {

using namespace std::chrono_literals;

// ---- registered functions and an actor (names are this file's: one registry per binary) ----

int modes_add(int a, int b) { return a + b; }
// Works for `ms` milliseconds (stands for compute), then says where it ran.
std::string modes_where(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return prism::node_id();
}
std::vector<int64_t> modes_range(int n) {
  std::vector<int64_t> v(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) v[static_cast<size_t>(i)] = i;
  return v;
}
int64_t modes_sum(const std::vector<int64_t>& v) {
  int64_t s = 0;
  for (int64_t x : v) s += x;
  return s;
}
std::tuple<int, int> modes_divmod(int a, int b) { return {a / b, a % b}; }
int modes_fails(int x) {
  if (x > 0) throw std::invalid_argument("bad input " + std::to_string(x));
  return x;
}
void modes_nothing(int) {}
std::string modes_echo(const std::string& s) { return s; }
// Nested tasks, two per level: fib(n) tasks wait on their children (runs where it is submitted).
int modes_fib(int n) {
  if (n < 2) return n;
  auto a = prism::task(modes_fib).remote(n - 1);
  auto b = prism::task(modes_fib).remote(n - 2);
  return prism::get(a, 60s) + prism::get(b, 60s);
}
// A chain of nested tasks `depth` deep, each level one task waiting on the next.
int modes_deep(int depth) {
  if (depth == 0) return 0;
  return prism::get(prism::task(modes_deep).remote(depth - 1), 60s) + 1;
}
// A heterogeneous function (prism/variants.h) with two CPU variants; each says where it ran.
std::string modes_here_a(int x) { return prism::node_id() + "/" + std::to_string(x * 2); }
std::string modes_here_b(int x) { return prism::node_id() + "/" + std::to_string(x + x); }
auto modes_variants() {
  return prism::variants(prism::cpu_variant("a", modes_here_a), prism::cpu_variant("b", modes_here_b))
      .name("modes_here");
}
// Submits `n` variant calls where it runs and returns "<node>:<variant>..." per call.
std::vector<std::string> modes_run_variants(int n) {
  std::vector<prism::ObjectRef<std::string>> refs;
  for (int i = 0; i < n; ++i) refs.push_back(prism::task(modes_variants()).remote(i));
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i) {
    const std::string got = prism::get(refs[static_cast<size_t>(i)], 60s);
    const std::string want = prism::node_id() + "/" + std::to_string(2 * i);
    out.push_back(got == want ? got + ":" + prism::variant_of(refs[static_cast<size_t>(i)])
                              : "wrong " + got + " instead of " + want);
  }
  return out;
}
// A heterogeneous function registered for the cluster (PRISM_VARIANTS): a CPU and a GPU variant
// of y = 3x + 1, each saying where it ran ("<node>/<y>"), the CPU one 4x slower.
std::string modes_scale_cpu(int x) {
  std::this_thread::sleep_for(40ms);
  return prism::node_id() + "/" + std::to_string(3 * x + 1);
}
std::string modes_scale_gpu(int x) {
  std::this_thread::sleep_for(10ms);
  return prism::node_id() + "/" + std::to_string(x * 3 + 1);
}
const auto modes_scale = prism::variants(modes_scale_cpu, modes_scale_gpu).name("modes_scale");
PRISM_VARIANTS(modes_scale);
// Its GPU variant always throws.
std::string modes_broken_gpu(int) { throw std::runtime_error("no kernel for that"); }
const auto modes_broken =
    prism::variants(modes_scale_cpu, modes_broken_gpu).name("modes_broken");
PRISM_VARIANTS(modes_broken);

PRISM_REMOTE(modes_add, modes_where, modes_range, modes_sum, modes_divmod, modes_fails,
             modes_nothing, modes_echo, modes_fib, modes_deep, modes_run_variants);

class ModesCounter {
 public:
  explicit ModesCounter(int start) : total_(start) {}
  int add(int x) {
    total_ += x;
    seen_.push_back(x);
    return total_;
  }
  std::vector<int> seen() const { return seen_; }
  std::string where() const { return prism::node_id(); }
  int fail(int code) { throw std::runtime_error("counter error " + std::to_string(code)); }

 private:
  int total_;
  std::vector<int> seen_;
};
PRISM_ACTOR(ModesCounter, &ModesCounter::add, &ModesCounter::seen, &ModesCounter::where,
            &ModesCounter::fail);

enum class Mode { kEmbedded, kCluster };

class ApiModes : public prism_test::ClusterTest, public ::testing::WithParamInterface<Mode> {
 protected:
  void SetUp() override {
    if (!cluster()) {
      prism::init({.num_cpus = 2, .resources = {{"remote", 100}}});
      return;
    }
    const std::map<std::string, std::string> node{{"PRISM_RESOURCES", "remote:100"},
                                                  {"PRISM_NUM_CPUS", "2"}};
    start(1, {node, node});
  }
  bool cluster() const { return GetParam() == Mode::kCluster; }
  // Whether `node` is one that may run "remote" work in this mode.
  bool remote_node(const std::string& node) const {
    return cluster() ? node == "node1" || node == "node2" : node == prism::node_id();
  }
};

class ClusterVariants : public prism_test::ClusterTest {};

TEST_P(ApiModes, TasksRefsAndChains) {
  auto a = prism::task(modes_add).resource("remote", 1).remote(1, 2);
  auto b = prism::task(modes_add).resource("remote", 1).remote(a, 10);  // a ref argument
  auto c = prism::task(modes_add).remote(b, 100);                        // anywhere
  EXPECT_EQ(prism::get(c, 60s), 113);
  auto [q, r] = prism::task(modes_divmod).num_returns<2>().resource("remote", 1).remote(17, 5);
  EXPECT_EQ(prism::get(q, 60s), 3);
  EXPECT_EQ(prism::get(r, 60s), 2);
  EXPECT_NO_THROW(prism::get(prism::task(modes_nothing).resource("remote", 1).remote(1), 60s));
  // Values below and above the inline threshold, made there and read here and there.
  for (const int n : {10, 1 << 18}) {
    auto range = prism::task(modes_range).resource("remote", 1).remote(n);
    const int64_t expected = int64_t{n} * (n - 1) / 2;
    EXPECT_EQ(prism::get(prism::task(modes_sum).resource("remote", 1).remote(range), 60s), expected);
    const std::vector<int64_t> here = prism::get(range, 60s);
    ASSERT_EQ(here.size(), static_cast<size_t>(n));
    EXPECT_EQ(here.back(), n - 1);
    // A value put here, read there.
    auto put = prism::put(here);
    EXPECT_EQ(prism::get(prism::task(modes_sum).resource("remote", 1).remote(put), 60s), expected);
  }
  // Work really spreads: 12 tasks of 100 ms, 4 slots.
  std::vector<prism::ObjectRef<std::string>> refs;
  for (int i = 0; i < 12; ++i) refs.push_back(prism::task(modes_where).resource("remote", 1).remote(100));
  std::set<std::string> nodes;
  for (auto& ref : refs) nodes.insert(prism::get(ref, 60s));
  for (const auto& n : nodes) EXPECT_TRUE(remote_node(n)) << n;
  EXPECT_EQ(nodes.size(), cluster() ? 2u : 1u) << "tasks ran on " << nodes.size() << " node(s)";
}

// A variant call runs on the node that submits it, chosen by that node's own model.
TEST_P(ApiModes, VariantCallsRunWhereTheyAreSubmitted) {
  const std::vector<std::string> there =
      prism::get(prism::task(modes_run_variants).resource("remote", 1).remote(8), 60s);
  ASSERT_EQ(there.size(), 8u);
  std::set<std::string> variants;
  std::string node;
  for (const std::string& s : there) {
    const size_t slash = s.find('/');
    const size_t colon = s.rfind(':');
    ASSERT_TRUE(slash != std::string::npos && colon != std::string::npos) << s;
    if (node.empty()) node = s.substr(0, slash);
    EXPECT_EQ(s.substr(0, slash), node) << "one call's calls ran on several nodes: " << s;
    variants.insert(s.substr(colon + 1));
  }
  EXPECT_TRUE(remote_node(node)) << node;
  // 8 calls at once on a node that never saw the function: both variants calibrate.
  EXPECT_EQ(variants, (std::set<std::string>{"a", "b"}));
  // Submitted here: runs here.
  auto here = prism::task(modes_variants()).remote(21);
  EXPECT_EQ(prism::get(here, 60s), prism::node_id() + "/42");
  EXPECT_FALSE(prism::variant_of(here).empty());
}

// A driver's calls of a registered variant set are placed across the cluster by the driver's
// planner: every (variant, node) is calibrated, the GPU variant runs only where a GPU is, and a
// forced variant this process cannot run goes to a node that can.
TEST_F(ClusterVariants, RegisteredVariantCallsArePlacedAcrossNodes) {
  // The driver: 1 CPU, no GPU. Nodes: one with 1 CPU and 1 (logical) GPU, one with 1 CPU.
  start(1, {{{"PRISM_NUM_GPUS", "1"}}, {}});
  // Options: cpu here, cpu and gpu on the GPU node, cpu on the other: 4, calibrated 3 times.
  std::vector<prism::ObjectRef<std::string>> refs;
  for (int i = 0; i < 12; ++i) refs.push_back(prism::task(modes_scale).remote(i));
  std::map<std::string, int> per_place;  // "<variant>@<node>"
  std::string gpu_node;
  for (int i = 0; i < 12; ++i) {
    const std::string got = prism::get(refs[static_cast<size_t>(i)], 60s);
    const size_t slash = got.find('/');
    ASSERT_NE(slash, std::string::npos) << got;
    EXPECT_EQ(got.substr(slash + 1), std::to_string(3 * i + 1)) << got;
    const std::string node = got.substr(0, slash);
    const std::string variant = prism::variant_of(refs[static_cast<size_t>(i)]);
    ++per_place[variant + "@" + node];
    if (variant == "gpu") {
      if (gpu_node.empty()) gpu_node = node;
      EXPECT_EQ(node, gpu_node) << "the GPU variant ran on two nodes";
    } else {
      EXPECT_EQ(variant, "cpu");
    }
  }
  ASSERT_FALSE(gpu_node.empty()) << "the GPU variant never ran";
  EXPECT_NE(gpu_node, prism::node_id());
  EXPECT_EQ(per_place.size(), 4u) << "each (variant, node) is calibrated";
  for (const auto& [place, n] : per_place) EXPECT_EQ(n, 3) << place;
  // The GPU node is the one that declared a GPU.
  const prism::Stats stats = prism::stats();
  bool found = false;
  for (const auto& n : stats.nodes) {
    if (n.node != gpu_node) continue;
    found = true;
    EXPECT_EQ(n.total.count("GPU") ? n.total.at("GPU") : 0.0, 1.0);
  }
  EXPECT_TRUE(found) << gpu_node;
  // The driver's stats count the runs per variant and node.
  uint64_t runs = 0;
  for (const auto& v : stats.variants) {
    if (v.function != "modes_scale") continue;
    runs += v.runs;
    EXPECT_EQ(v.runs, 3u) << v.variant << "@" << v.node;
    if (v.variant == "gpu") {
      EXPECT_EQ(v.node, gpu_node);
    }
  }
  EXPECT_EQ(runs, 12u);
  // Forced to the GPU variant, which this process cannot run: the GPU node runs it.
  auto forced = prism::task(modes_scale).variant("gpu").remote(100);
  EXPECT_EQ(prism::get(forced, 60s), gpu_node + "/301");
  EXPECT_EQ(prism::variant_of(forced), "gpu");
  // A variant that throws on another node: its calls fail with the node's error, and its runs
  // count as failed calibration runs there, so later calls go elsewhere.
  std::vector<prism::ObjectRef<std::string>> broken;
  for (int i = 0; i < 12; ++i) broken.push_back(prism::task(modes_broken).remote(i));
  int failed = 0;
  for (auto& r : broken) {
    try {
      const std::string got = prism::get(r, 60s);
      EXPECT_EQ(prism::variant_of(r), "cpu") << got;
    } catch (const prism::TaskError& e) {
      ++failed;
      EXPECT_EQ(e.node_id(), gpu_node);
      EXPECT_EQ(e.message(), "no kernel for that");
    }
  }
  EXPECT_EQ(failed, 3) << "the broken variant was calibrated three times, then avoided";
  for (int i = 0; i < 4; ++i) {
    auto r = prism::task(modes_broken).remote(i);
    EXPECT_EQ(prism::get(r, 60s).substr(prism::get(r, 60s).find('/') + 1),
              std::to_string(3 * i + 1));
    EXPECT_EQ(prism::variant_of(r), "cpu");
  }
  // An unregistered set whose only runnable variant is elsewhere cannot go there: a clear error.
  auto unregistered = prism::variants(modes_scale_cpu, modes_scale_gpu).name("unregistered");
  EXPECT_THROW(prism::task(unregistered).variant("gpu").remote(1), prism::InfeasibleError);
}

TEST_P(ApiModes, NestedTasksAndDeepNesting) {
  // fib(12): 465 tasks, each waiting on its two children, on 2 CPUs: waiting lends the CPU.
  EXPECT_EQ(prism::get(prism::task(modes_fib).resource("remote", 1).remote(12), 60s), 144);
  // 200 levels, each holding a blocked task.
  EXPECT_EQ(prism::get(prism::task(modes_deep).resource("remote", 1).remote(200), 60s), 200);
  // Both at once, from two submitters.
  auto f = prism::task(modes_fib).resource("remote", 1).remote(10);
  auto d = prism::task(modes_deep).resource("remote", 1).remote(100);
  EXPECT_EQ(prism::get(f, 60s), 55);
  EXPECT_EQ(prism::get(d, 60s), 100);
}

TEST_P(ApiModes, ActorsKeepStateAndOrder) {
  auto counter = prism::actor<ModesCounter>(100).resource("remote", 1).name("modes").remote();
  const std::string where = prism::get(counter.task(&ModesCounter::where).remote(), 60s);
  EXPECT_TRUE(remote_node(where)) << where;
  std::vector<prism::ObjectRef<int>> totals;
  for (int i = 1; i <= 50; ++i) totals.push_back(counter.task(&ModesCounter::add).remote(i));
  int expected = 100;
  for (int i = 1; i <= 50; ++i) {
    expected += i;
    EXPECT_EQ(prism::get(totals[static_cast<size_t>(i - 1)], 60s), expected);
  }
  const std::vector<int> seen = prism::get(counter.task(&ModesCounter::seen).remote(), 60s);
  ASSERT_EQ(seen.size(), 50u);
  for (int i = 1; i <= 50; ++i) EXPECT_EQ(seen[static_cast<size_t>(i - 1)], i);
  // A ref argument; the actor found by name.
  auto five = prism::task(modes_add).remote(2, 3);
  auto found = prism::get_actor<ModesCounter>("modes");
  EXPECT_EQ(prism::get(found.task(&ModesCounter::add).remote(five), 60s), expected + 5);
  // A method that throws: a TaskError naming the node; the actor lives on.
  try {
    prism::get(counter.task(&ModesCounter::fail).remote(7), 60s);
    ADD_FAILURE() << "no error";
  } catch (const prism::TaskError& e) {
    EXPECT_EQ(e.node_id(), where);
    EXPECT_EQ(e.message(), "counter error 7");
  }
  EXPECT_EQ(prism::get(counter.task(&ModesCounter::add).remote(0), 60s), expected + 5);
  prism::kill(counter);
  EXPECT_THROW(prism::get(counter.task(&ModesCounter::add).remote(1), 60s), prism::ActorDiedError);
}

TEST_P(ApiModes, GetAndWaitTimeouts) {
  auto slow = prism::task(modes_where).resource("remote", 1).remote(1500);
  auto fast = prism::task(modes_where).resource("remote", 1).remote(10);
  auto [ready, pending] =
      prism::wait(std::vector<prism::ObjectRef<std::string>>{slow, fast}, 1, 30s);
  ASSERT_EQ(ready.size(), 1u);
  EXPECT_EQ(ready[0].id(), fast.id());
  ASSERT_EQ(pending.size(), 1u);
  EXPECT_EQ(pending[0].id(), slow.id());
  EXPECT_THROW(prism::get(slow, 50ms), prism::TimeoutError);
  auto [none, both] = prism::wait(std::vector<prism::ObjectRef<std::string>>{slow}, 1, 10ms);
  EXPECT_TRUE(none.empty());
  // A timeout loses nothing: the value arrives later.
  EXPECT_TRUE(remote_node(prism::get(slow, 60s)));
}

TEST_P(ApiModes, ErrorsReachGetAndDependents) {
  auto bad = prism::task(modes_fails).resource("remote", 1).remote(7);
  try {
    prism::get(bad, 60s);
    ADD_FAILURE() << "no error";
  } catch (const prism::TaskError& e) {
    EXPECT_TRUE(remote_node(e.node_id())) << e.node_id();
    EXPECT_EQ(e.function_name(), "modes_fails");
    EXPECT_NE(e.type_name().find("invalid_argument"), std::string::npos) << e.type_name();
    EXPECT_EQ(e.message(), "bad input 7");
  }
  // A dependent fails with the same error, without running.
  auto dependent = prism::task(modes_add).resource("remote", 1).remote(bad, 1);
  try {
    prism::get(dependent, 60s);
    ADD_FAILURE() << "the dependent of a failed task ran";
  } catch (const prism::TaskError& e) {
    EXPECT_EQ(e.message(), "bad input 7");
  }
  EXPECT_EQ(prism::get(prism::task(modes_fails).resource("remote", 1).remote(0), 60s), 0);
}

TEST_P(ApiModes, CancelFailsTheRefAndItsDependents) {
  // A running (or still queued) task: its result is dropped, its dependent fails without running.
  auto victim = prism::task(modes_where).resource("remote", 1).remote(2000);
  auto dependent = prism::task(modes_echo).resource("remote", 1).remote(victim);
  EXPECT_TRUE(prism::cancel(victim));
  EXPECT_THROW(prism::get(victim, 30s), prism::TaskCancelledError);
  EXPECT_THROW(prism::get(dependent, 30s), prism::TaskCancelledError);
  // A ready value: nothing to cancel, the value stays.
  auto done = prism::task(modes_add).resource("remote", 1).remote(1, 1);
  EXPECT_EQ(prism::get(done, 60s), 2);
  EXPECT_FALSE(prism::cancel(done));
  EXPECT_EQ(prism::get(done, 60s), 2);
  // Work goes on.
  EXPECT_TRUE(remote_node(prism::get(prism::task(modes_echo).resource("remote", 1).remote(
      prism::task(modes_where).resource("remote", 1).remote(1)), 60s)));
}

TEST_P(ApiModes, ManyThreadsSubmitting) {
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([t, &wrong] {
      std::vector<prism::ObjectRef<int>> refs;
      for (int i = 0; i < 300; ++i) {
        refs.push_back(prism::task(modes_add).resource("remote", 1).remote(t, i));
      }
      for (int i = 0; i < 300; ++i) {
        if (prism::get(refs[static_cast<size_t>(i)], 60s) != t + i) ++wrong;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(wrong.load(), 0);
}

INSTANTIATE_TEST_SUITE_P(EmbeddedAndCluster, ApiModes,
                         ::testing::Values(Mode::kEmbedded, Mode::kCluster),
                         [](const ::testing::TestParamInfo<Mode>& mode) {
                           return mode.param == Mode::kEmbedded ? std::string("Embedded")
                                                                : std::string("Cluster");
                         });

}  // namespace
