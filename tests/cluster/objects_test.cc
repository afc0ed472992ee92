// Objects across nodes (cluster mode): large values stay where they were produced, travel once
// to the node that needs them, arrive byte for byte, and are freed on every node when the last
// ref drops; placement follows where the argument bytes are. Same driver/node set-up as
// cluster_test.cc (this file is part of the same test binary).
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>
#include <prism/gpu.h>
#include <prism/prism.h>

#include "cluster_fixture.h"
#include "cluster_link.h"

namespace {

using namespace std::chrono_literals;
using prism_test::ClusterTest;

// n bytes of a pattern that differs with `seed` and with the position (made 8 bytes at a time:
// the sanitizer builds check every access, and these values reach 260 MiB).
std::vector<uint8_t> make_bytes(uint64_t n, uint32_t seed) {
  std::vector<uint8_t> v(n);
  uint64_t x = seed * 2654435761u + 1;
  for (uint64_t i = 0; i < n; i += 8) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    const uint64_t word = x ^ (x >> 29);
    std::memcpy(v.data() + i, &word, std::min<uint64_t>(8, n - i));
  }
  return v;
}
uint64_t checksum(const std::vector<uint8_t>& v) {
  uint64_t h = 1469598103934665603ull;
  for (uint64_t i = 0; i < v.size(); i += 8) {
    uint64_t word = 0;
    std::memcpy(&word, v.data() + i, std::min<uint64_t>(8, v.size() - i));
    h = (h ^ word) * 1099511628211ull;
  }
  return h ^ v.size();
}
std::string node_here() { return prism::node_id(); }
// Where a task that reads `v` ran.
std::string read_where(const std::vector<uint8_t>& v) {
  return prism::node_id() + ":" + std::to_string(v.size());
}
// This process's object counters: primary objects, primary bytes, secondary objects, secondary
// bytes, pulls sent, bytes pulled, pulls served, bytes served.
std::vector<uint64_t> objects_here() {
  const auto s = prism::cluster::object_stats();
  return {s.primary_objects, s.primary_bytes, s.secondary_objects, s.secondary_bytes, s.pulls,
          s.pulled_bytes,    s.served,        s.served_bytes};
}
int fails_on_purpose() { throw std::runtime_error("failed on purpose on " + prism::node_id()); }
// The checksums of three values, combined (a reader of several values at once).
uint64_t checksum3(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b,
                   const std::vector<uint8_t>& c) {
  return checksum(a) * 3 + checksum(b) * 5 + checksum(c) * 7;
}
// Works for `ms` milliseconds (stands for compute), then says where it ran.
std::string slept_where(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return prism::node_id();
}
std::string after(const std::string& s) { return s; }
// On a 1-CPU node, for about `ms`: three children of `ms` each (while the parent waits, one runs
// on its lent CPU and at most one more inline in its wait, so at least one is queued), and one
// waiting for the first child's result.
std::string tasks_in_every_state(int ms) {
  std::vector<prism::ObjectRef<std::string>> children;
  for (int i = 0; i < 3; ++i) children.push_back(prism::task(slept_where).remote(ms));
  auto waiting = prism::task(after).remote(children[0]);
  std::string all = prism::get(waiting, 60s);
  for (auto& c : children) all += " " + prism::get(c, 60s);
  return all;
}
PRISM_REMOTE(make_bytes, checksum, checksum3, node_here, read_where, objects_here, fails_on_purpose,
             slept_where, after, tasks_in_every_state);

// GPU tasks (tensors cross nodes through host memory): a tensor argument arrives on the GPU the
// task was granted; the result is made there too.
prism::gpu::Tensor doubled_on_gpu(const prism::gpu::Tensor& t) {
  if (t.device() != prism::gpu::current_device() || t.device().is_host()) {
    throw std::runtime_error("the argument is on " + t.device().to_string() + ", not the task's GPU");
  }
  std::vector<double> v = t.to_vector<double>();
  for (double& x : v) x *= 2;
  return prism::gpu::Tensor::from_vector(v, t.shape());  // on the task's GPU
}
// Where a tensor argument was read: "<node> <device> <sum of its elements>".
std::string tensor_seen(const prism::gpu::Tensor& t) {
  double sum = 0;
  if (t.defined()) {
    for (double x : t.to_vector<double>()) sum += x;
  }
  return prism::node_id() + " " + t.device().to_string() + " " + std::to_string(sum);
}
PRISM_REMOTE(doubled_on_gpu, tensor_seen);

// Work the driver does not know of: on the node that runs hold_cpu (a task of no CPU), a nested
// task holds the node's CPU for `ms` (hold_cpu returns once it runs).
std::mutex g_hog_mu;
std::condition_variable g_hog_cv;
int g_hogs_started = 0;
std::optional<prism::ObjectRef<std::string>> g_hog;
std::string hog(int ms) {
  {
    std::lock_guard<std::mutex> lock(g_hog_mu);
    ++g_hogs_started;
  }
  g_hog_cv.notify_all();
  return slept_where(ms);
}
std::string hold_cpu(int ms) {
  std::unique_lock<std::mutex> lock(g_hog_mu);
  const int before = g_hogs_started;
  g_hog = prism::task(hog).remote(ms);
  if (!g_hog_cv.wait_for(lock, 30s, [&] { return g_hogs_started > before; })) {
    throw std::runtime_error("the nested task did not start");
  }
  return prism::node_id();
}
PRISM_REMOTE(hog, hold_cpu);

constexpr uint64_t kKiB = 1024;
constexpr uint64_t kMiB = 1024 * kKiB;

// Three results for num_returns<3>: a large one, a small one, another large one.
std::tuple<std::vector<uint8_t>, int, std::vector<uint8_t>> make_three(uint64_t n, uint32_t seed) {
  return {make_bytes(n, seed), static_cast<int>(seed), make_bytes(n / 2 + 1, seed + 1)};
}

// An actor that makes values where it lives.
class Maker {
 public:
  std::vector<uint8_t> make(uint64_t n, uint32_t seed) { return make_bytes(n, seed); }
  std::tuple<std::vector<uint8_t>, int, std::vector<uint8_t>> make_three(uint64_t n,
                                                                         uint32_t seed) {
    return ::make_three(n, seed);
  }
};
PRISM_ACTOR(Maker, &Maker::make, &Maker::make_three);
// Two results, the first a ref to a value put where this runs (num_returns<2>).
std::tuple<prism::ObjectRef<std::vector<uint8_t>>, std::vector<uint8_t>> put_and_make(
    uint64_t n, uint32_t seed) {
  return {prism::put(make_bytes(n, seed)), make_bytes(n, seed + 1)};
}
PRISM_REMOTE(make_three, put_and_make);

// This process's direct-pull counters: redirects it answered with, pulls it asked of the driver
// after their direct path failed, direct connections open now, and those closed when idle.
std::vector<uint64_t> direct_counts_here() {
  const auto c = prism::cluster::link_counters();
  return {c.redirected, c.direct_fallbacks, c.direct_connections, c.direct_closed_idle};
}
PRISM_REMOTE(direct_counts_here);

// The counters of the node that has `resource`.
std::vector<uint64_t> objects_on(const std::string& resource) {
  return prism::get(prism::task(objects_here).resource(resource, 1).remote(), 60s);
}

// Asks the node with `resource` for its counters until `done` holds for them (the free messages
// are on their way when the refs drop: each query is one round trip behind them), for at most
// 20 s. Returns the last counters.
template <typename Pred>
std::vector<uint64_t> objects_on_until(const std::string& resource, Pred done) {
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  std::vector<uint64_t> s = objects_on(resource);
  while (!done(s) && std::chrono::steady_clock::now() < deadline) s = objects_on(resource);
  return s;
}

TEST_F(ClusterTest, ValuesOfEverySizeCrossNodesByteForByte) {
  start(1, {{{"PRISM_RESOURCES", "a:100"}}, {{"PRISM_RESOURCES", "b:100"}}});
  const uint64_t sizes[] = {0, 1, 100 * kKiB - 1, 100 * kKiB, 100 * kKiB + 1, 100 * kMiB};
  uint32_t seed = 1;
  for (uint64_t n : sizes) {
    SCOPED_TRACE("size " + std::to_string(n));
    const std::vector<uint8_t> expected = make_bytes(n, seed);
    // Made on node1; read by a task on node2 and by get here.
    auto made = prism::task(make_bytes).resource("a", 1).remote(n, seed);
    auto sum = prism::task(checksum).resource("b", 1).remote(made);
    EXPECT_EQ(prism::get(sum, 60s), checksum(expected));
    const std::vector<uint8_t> got = prism::get(made, 60s);
    EXPECT_TRUE(got == expected) << "the value differs after crossing nodes";
    // Put here; read by a task on node2.
    auto put = prism::put(expected);
    EXPECT_EQ(prism::get(prism::task(checksum).resource("b", 1).remote(put), 60s),
              checksum(expected));
    ++seed;
  }
}

// A value larger than one message travels in parts (here parts of 64 KiB, set for the driver
// and the nodes), gathered where it arrives: to get, to a task on a node (through the driver,
// which gathers the parts and sends them on), and from a put; each pull brings it once.
TEST_F(ClusterTest, ValuesLargerThanOneMessageTravelInParts) {
  setenv("PRISM_TRANSFER_PART_BYTES", "65536", 1);
  start(1, {{{"PRISM_RESOURCES", "a:100"}}, {{"PRISM_RESOURCES", "b:100"}}});
  unsetenv("PRISM_TRANSFER_PART_BYTES");
  uint32_t seed = 11;
  for (const uint64_t n : {kMiB + 3, 3 * kMiB - 4 /* whole parts: 4 bytes of length first */}) {
    SCOPED_TRACE("size " + std::to_string(n));
    const std::vector<uint8_t> expected = make_bytes(n, seed);
    const std::vector<uint64_t> b_before = objects_on("b");
    auto made = prism::task(make_bytes).resource("a", 1).remote(n, seed);
    EXPECT_EQ(prism::get(prism::task(checksum).resource("b", 1).remote(made), 60s),
              checksum(expected));
    const std::vector<uint64_t> b_after = objects_on("b");
    EXPECT_EQ(b_after[4] - b_before[4], 1u) << "node b pulled it once";
    EXPECT_EQ(b_after[5] - b_before[5], n + 4) << "its serialized bytes, once";
    EXPECT_TRUE(prism::get(made, 60s) == expected) << "the value differs after crossing nodes";
    auto put = prism::put(expected);
    EXPECT_EQ(prism::get(prism::task(checksum).resource("b", 1).remote(put), 60s),
              checksum(expected));
    ++seed;
  }
}

// More than one message holds (256 MiB): in parts of the default size, byte for byte.
TEST_F(ClusterTest, AValueOfMoreThan256MiBCrossesNodes) {
  start(1, {{{"PRISM_RESOURCES", "a:100"}}});
  const uint64_t n = 260 * kMiB;
  auto made = prism::task(make_bytes).resource("a", 1).remote(n, 7u);
  auto sum_there = prism::task(checksum).resource("a", 1).remote(made);
  const std::vector<uint8_t> got = prism::get(made, 120s);
  ASSERT_EQ(got.size(), n);
  const uint64_t sum = checksum(got);
  EXPECT_EQ(sum, prism::get(sum_there, 120s)) << "the value differs after crossing nodes";
  EXPECT_EQ(sum, checksum(make_bytes(n, 7u)));
  auto put = prism::put(got);
  EXPECT_EQ(prism::get(prism::task(checksum).resource("a", 1).remote(put), 120s), sum);
}

// A num_returns task's results are objects of their own: each large one stays on the node that
// computed it, is pulled (directly, node to node) only by whoever reads it, and is freed there
// when its own last ref drops; a small one comes back inline.
TEST_F(ClusterTest, NumReturnsResultsStayOnTheirNodeOneByOne) {
  start(1, {{{"PRISM_RESOURCES", "a:100"}}, {{"PRISM_RESOURCES", "b:100"}}});
  const uint64_t n = 3 * kMiB;
  const std::vector<uint8_t> first = make_bytes(n, 5), third = make_bytes(n / 2 + 1, 6);
  auto refs = prism::task(make_three).num_returns<3>().resource("a", 1).remote(n, 5u);
  EXPECT_EQ(prism::get(std::get<1>(refs), 60s), 5);
  std::vector<uint64_t> a = objects_on("a");
  EXPECT_EQ(a[0], 2u) << "node1 keeps the two large results";
  EXPECT_GE(a[1], n + n / 2);
  EXPECT_EQ(prism::cluster::object_stats().pulls, 0u) << "the driver pulled a result unasked";
  // A task on node2 reads the first: that one only crosses, from node1 directly.
  EXPECT_EQ(prism::get(prism::task(checksum).resource("b", 1).remote(std::get<0>(refs)), 60s),
            checksum(first));
  const std::vector<uint64_t> b = objects_on("b");
  EXPECT_EQ(b[4], 1u) << "node2 pulled once";
  EXPECT_GE(b[5], n);
  EXPECT_LT(b[5], n + kKiB) << "node2 pulled more than the first result";
  EXPECT_EQ(objects_on("a")[6], 1u) << "node1 served it";
  // A get here pulls the third, byte for byte.
  EXPECT_TRUE(prism::get(std::get<2>(refs), 60s) == third);
  EXPECT_TRUE(prism::get(std::get<0>(refs), 60s) == first);
  EXPECT_EQ(prism::cluster::object_stats().pulls, 2u);
  // The first's last ref drops: its copies go (node1's and node2's), the third's stay.
  std::get<0>(refs) = {};
  a = objects_on_until("a", [](const auto& c) { return c[0] == 1; });
  EXPECT_EQ(a[0], 1u) << "node1 still keeps the first result";
  EXPECT_EQ(objects_on_until("b", [](const auto& c) { return c[2] == 0; })[2], 0u)
      << "node2 still keeps its copy of the first result";
  EXPECT_TRUE(prism::get(std::get<2>(refs), 60s) == third);
  refs = {};
  EXPECT_EQ(objects_on_until("a", [](const auto& c) { return c[0] == 0; })[0], 0u)
      << "node1 keeps a result after every ref dropped";

  // Small results only: every one inline, each decoded from its own bytes.
  auto small_ones = prism::task(make_three).num_returns<3>().resource("a", 1).remote(10, 8u);
  EXPECT_TRUE(prism::get(std::get<0>(small_ones), 60s) == make_bytes(10, 8));
  EXPECT_EQ(prism::get(std::get<1>(small_ones), 60s), 8);
  EXPECT_TRUE(prism::get(std::get<2>(small_ones), 60s) == make_bytes(6, 9));
  EXPECT_EQ(objects_on("a")[0], 0u) << "node1 kept a small result";
  // A result holding a ref: the results come back inline, the ref lent with them.
  {
    auto [lent, made] =
        prism::task(put_and_make).num_returns<2>().resource("a", 1).remote(n, 20u);
    const prism::ObjectRef<std::vector<uint8_t>> inner = prism::get(lent, 60s);
    EXPECT_TRUE(prism::get(inner, 60s) == make_bytes(n, 20));
    EXPECT_TRUE(prism::get(made, 60s) == make_bytes(n, 21));
    EXPECT_EQ(prism::get(prism::task(checksum).resource("b", 1).remote(inner), 60s),
              checksum(make_bytes(n, 20)));
  }
}

TEST_F(ClusterTest, ALargeObjectReadByThreeTasksOnOneNodeTravelsOnce) {
  start(1, {{{"PRISM_RESOURCES", "a:100"}}, {{"PRISM_RESOURCES", "b:100"}, {"PRISM_NUM_CPUS", "2"}}});
  auto made = prism::task(make_bytes).resource("a", 1).remote(100 * kMiB, 7u);
  std::vector<prism::ObjectRef<uint64_t>> sums;
  for (int i = 0; i < 3; ++i) sums.push_back(prism::task(checksum).resource("b", 1).remote(made));
  const uint64_t expected = checksum(make_bytes(100 * kMiB, 7));
  for (auto& s : sums) EXPECT_EQ(prism::get(s, 60s), expected);
  const std::vector<uint64_t> b = objects_on("b");
  EXPECT_EQ(b[4], 1u) << "node2 pulled the object more than once";
  EXPECT_GE(b[5], 100 * kMiB);
  EXPECT_LT(b[5], 101 * kMiB);
  EXPECT_EQ(b[2], 1u) << "node2 keeps one secondary copy";
  const std::vector<uint64_t> a = objects_on("a");
  EXPECT_EQ(a[0], 1u) << "node1 keeps the primary copy";
  EXPECT_EQ(a[4], 0u) << "node1 pulled nothing";
  // Node to node: node2 pulled it from node1 directly, not through the driver.
  EXPECT_EQ(a[6], 1u) << "node1 served it once";
  EXPECT_GE(a[7], 100 * kMiB);
  EXPECT_EQ(prism::cluster::object_stats().pulls, 0u) << "the driver relayed it";
  EXPECT_EQ(prism::cluster::object_stats().served, 0u);
  EXPECT_EQ(prism::cluster::link_counters().redirected, 1u) << "node2 asked once";
  EXPECT_EQ(prism::get(prism::task(direct_counts_here).resource("b", 1).remote(), 60s)[1], 0u)
      << "node2's direct pull fell back to the driver";
}

// A node that needs a value another node holds pulls it from that node directly; when it
// cannot (the holder does not listen for direct pulls, or the address it gave leads nowhere),
// the value comes through the driver instead, whole, and the reader never sees the difference.
class DirectPullTest : public ClusterTest {
 protected:
  // node1 (resource a, with `holder_env`) makes a value that a task on node2 reads.
  void expect_relayed(const std::map<std::string, std::string>& holder_env) {
    std::map<std::string, std::string> a = holder_env;
    a.emplace("PRISM_RESOURCES", "a:100");
    start(1, {a, {{"PRISM_RESOURCES", "b:100"}}});
    auto made = prism::task(make_bytes).resource("a", 1).remote(3 * kMiB, 11u);
    auto sum = prism::task(checksum).resource("b", 1).remote(made);
    EXPECT_EQ(prism::get(sum, 60s), checksum(make_bytes(3 * kMiB, 11)));
    EXPECT_EQ(prism::cluster::object_stats().pulls, 1u) << "the driver pulled it for node2";
    EXPECT_EQ(prism::cluster::object_stats().served, 1u) << "and passed it on";
    const std::vector<uint64_t> b = objects_on("b");
    EXPECT_EQ(b[4], 1u) << "node2 asked once";
    EXPECT_EQ(b[2], 1u) << "and keeps its copy";
    // Read by another task there: from that copy.
    EXPECT_EQ(prism::get(prism::task(checksum).resource("b", 1).remote(made), 60s),
              checksum(make_bytes(3 * kMiB, 11)));
    EXPECT_EQ(objects_on("b")[4], 1u);
    EXPECT_EQ(objects_on("a")[6], 1u) << "node1 served it once, to the driver";
  }
  // The driver's redirects, and node2's pulls that fell back to the driver.
  std::vector<uint64_t> redirects_and_fallbacks() {
    return {prism::cluster::link_counters().redirected,
            prism::get(prism::task(direct_counts_here).resource("b", 1).remote(), 60s)[1]};
  }
};

TEST_F(DirectPullTest, AHolderThatDoesNotListenIsRelayed) {
  expect_relayed({{"PRISM_PEER_LISTEN", "0"}});
  EXPECT_EQ(redirects_and_fallbacks(), (std::vector<uint64_t>{0, 0})) << "nowhere to redirect";
}

TEST_F(DirectPullTest, AnAddressThatLeadsNowhereFallsBackToTheDriver) {
  expect_relayed({{"PRISM_TEST_PEER_ADDRESS_TOLD", "127.0.0.1:1"}});
  EXPECT_EQ(redirects_and_fallbacks(), (std::vector<uint64_t>{1, 1}))
      << "redirected once, and that pull fell back";
}

// A direct connection unused for PRISM_PEER_IDLE_CLOSE_S is closed by the node that made it
// (the holder sees it go too); the next pull from that holder connects again, directly.
TEST_F(DirectPullTest, AnIdleDirectConnectionClosesAndTheNextPullConnectsAgain) {
  // (Heartbeats each second: the idle check runs with them.)
  setenv("PRISM_HEARTBEAT_TIMEOUT", "5", 1);  // (the nodes inherit it)
  start(1, {{{"PRISM_RESOURCES", "a:100"}},
            {{"PRISM_RESOURCES", "b:100"}, {"PRISM_PEER_IDLE_CLOSE_S", "0.3"}}});
  unsetenv("PRISM_HEARTBEAT_TIMEOUT");
  auto counts_on = [](const std::string& resource) {
    return prism::get(prism::task(direct_counts_here).resource(resource, 1).remote(), 60s);
  };
  // Until `done` holds for the counters of the node with `resource` (20 s at most).
  auto counts_on_until = [&](const std::string& resource, auto done) {
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    std::vector<uint64_t> c = counts_on(resource);
    while (!done(c) && std::chrono::steady_clock::now() < deadline) c = counts_on(resource);
    return c;
  };
  for (uint32_t round = 1; round <= 2; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    auto made = prism::task(make_bytes).resource("a", 1).remote(3 * kMiB, round);
    EXPECT_EQ(prism::get(prism::task(checksum).resource("b", 1).remote(made), 60s),
              checksum(make_bytes(3 * kMiB, round)));
    EXPECT_EQ(prism::cluster::link_counters().redirected, round) << "node2 pulled from node1";
    const auto b = counts_on_until("b", [&](const std::vector<uint64_t>& c) {
      return c[3] == round && c[2] == 0;
    });
    EXPECT_EQ(b[1], 0u) << "no direct pull fell back to the driver";
    EXPECT_EQ(b[2], 0u) << "node2's direct connection is still open";
    EXPECT_EQ(b[3], round) << "node2 closed it once per round";
    const auto a = counts_on_until("a", [](const std::vector<uint64_t>& c) { return c[2] == 0; });
    EXPECT_EQ(a[2], 0u) << "node1 still has node2's connection";
    EXPECT_EQ(a[3], 0u) << "node1 made none";
  }
  EXPECT_EQ(objects_on("a")[6], 2u) << "node1 served both values itself";
  EXPECT_EQ(prism::cluster::object_stats().served, 0u) << "the driver relayed a value";
}

TEST_F(ClusterTest, StatsCountRemoteTasksNodesAndTransfers) {
  start(1, {{{"PRISM_RESOURCES", "a:100"}}, {{"PRISM_RESOURCES", "b:100"}}});
  std::vector<prism::ObjectRef<std::string>> where;
  for (int i = 0; i < 10; ++i) {
    where.push_back(prism::task(node_here).resource(i % 2 == 0 ? "a" : "b", 1).remote());
  }
  for (auto& w : where) EXPECT_NE(prism::get(w, 60s), prism::node_id());
  auto made = prism::task(make_bytes).resource("a", 1).remote(2 * kMiB, 3u);
  EXPECT_EQ(prism::get(made, 60s).size(), 2 * kMiB);  // pulled from node1
  auto bad = prism::task(fails_on_purpose).resource("b", 1).remote();
  EXPECT_THROW(prism::get(bad, 60s), prism::TaskError);

  const prism::Stats s = prism::stats();
  EXPECT_EQ(s.tasks.submitted, 12u);
  EXPECT_EQ(s.tasks.done, 11u) << "tasks that ran on other nodes count as done here";
  EXPECT_EQ(s.tasks.failed, 1u);
  EXPECT_EQ(s.tasks.on_other_nodes, 0u);
  EXPECT_EQ(s.tasks.running, 0u);
  EXPECT_EQ(s.tasks.waiting_for_resources, 0u);
  ASSERT_EQ(s.nodes.size(), 3u);
  EXPECT_EQ(s.nodes[0].node, prism::node_id());
  std::vector<std::string> names{s.nodes[1].node, s.nodes[2].node};
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"node1", "node2"}));
  for (size_t i = 1; i < 3; ++i) {
    EXPECT_EQ(s.nodes[i].total.at("CPU"), 1.0);
    EXPECT_EQ(s.nodes[i].available.at("CPU"), 1.0) << "nothing runs there any more";
  }
  EXPECT_GE(s.transfers.node_pulls, 1u);
  EXPECT_GE(s.transfers.node_pulled_bytes, 2 * kMiB);
  // The failure is kept with where it happened.
  const std::vector<prism::TaskFailure> errors = prism::errors();
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].node, prism::get(where[1], 60s)) << "the node with resource b";
  EXPECT_NE(errors[0].function.find("fails_on_purpose"), std::string::npos) << errors[0].function;
  EXPECT_EQ(errors[0].type, "std::runtime_error");
  EXPECT_EQ(errors[0].message, "failed on purpose on " + errors[0].node);
}

// Each node reports its own counts to the driver (about every second while they change):
// what ran and failed there, the values it keeps, its threads; freed values leave its count.
TEST_F(ClusterTest, EachNodeReportsItsOwnCountsToTheDriver) {
  // (Nested tasks stay on their node, queued there: PRISM_NESTED_SPILL=0.)
  start(1, {{{"PRISM_RESOURCES", "a:100"}, {"PRISM_NESTED_SPILL", "0"}},
            {{"PRISM_RESOURCES", "b:100"}, {"PRISM_NESTED_SPILL", "0"}}});
  const std::string a = prism::get(prism::task(node_here).resource("a", 1).remote(), 60s);
  const std::string b = prism::get(prism::task(node_here).resource("b", 1).remote(), 60s);
  auto bad = prism::task(fails_on_purpose).resource("b", 1).remote();
  EXPECT_THROW(prism::get(bad, 60s), prism::TaskError);
  // Stays on node a (not read here).
  std::optional<prism::ObjectRef<std::vector<uint8_t>>> kept =
      prism::task(make_bytes).resource("a", 1).remote(3 * kMiB, 5u);
  ASSERT_EQ(prism::wait(std::vector{*kept}, 1, 60s).first.size(), 1u);

  // The driver's stats until `done` holds for the entries of nodes a and b (20 s at most).
  auto node_stats_until = [&](auto done) {
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    for (;;) {
      const prism::Stats s = prism::stats();
      const prism::NodeStats* na = nullptr;
      const prism::NodeStats* nb = nullptr;
      for (const auto& n : s.nodes) {
        if (n.node == a) na = &n;
        if (n.node == b) nb = &n;
      }
      if ((na != nullptr && nb != nullptr && done(*na, *nb)) ||
          std::chrono::steady_clock::now() >= deadline) {
        return s;
      }
      std::this_thread::yield();
    }
  };
  auto find = [](const prism::Stats& s, const std::string& name) {
    for (const auto& n : s.nodes) {
      if (n.node == name) return n;
    }
    return prism::NodeStats{};
  };
  prism::Stats s = node_stats_until([](const prism::NodeStats& na, const prism::NodeStats& nb) {
    return na.reported && nb.reported && na.tasks_done >= 2 && na.primary_bytes >= 3 * kMiB &&
           nb.tasks_failed >= 1;
  });
  EXPECT_TRUE(s.nodes.front().reported) << "the driver's own entry";
  EXPECT_EQ(s.nodes.front().node, prism::node_id());
  prism::NodeStats na = find(s, a);
  prism::NodeStats nb = find(s, b);
  ASSERT_TRUE(na.reported);
  ASSERT_TRUE(nb.reported);
  EXPECT_EQ(na.tasks_done, 2u) << "node_here and make_bytes ran there";
  EXPECT_EQ(na.tasks_failed, 0u);
  EXPECT_GE(na.primary_bytes, 3 * kMiB) << "the kept result";
  EXPECT_GE(na.objects, 1u);
  EXPECT_EQ(nb.tasks_done, 1u);
  EXPECT_EQ(nb.tasks_failed, 1u);
  EXPECT_EQ(na.tasks_running, 0u);
  EXPECT_GE(na.threads, 1);
  EXPECT_GT(na.capacity_bytes, 0u);
  EXPECT_EQ(na.tasks_queued, 0u);
  EXPECT_EQ(na.tasks_waiting_for_arguments, 0u);
  // The last ref drops: the node frees the value and says so.
  kept.reset();
  s = node_stats_until([](const prism::NodeStats& na2, const prism::NodeStats&) {
    return na2.primary_bytes < 3 * kMiB;
  });
  EXPECT_LT(find(s, a).primary_bytes, 3 * kMiB) << "node a still counts the freed value";
  // Tasks by state on the node: nested tasks queued there and waiting for arguments there.
  auto states = prism::task(tasks_in_every_state).resource("a", 1).remote(2500);
  s = node_stats_until([](const prism::NodeStats& na2, const prism::NodeStats&) {
    return na2.tasks_queued >= 1 && na2.tasks_waiting_for_arguments >= 1;
  });
  na = find(s, a);
  EXPECT_GE(na.tasks_queued, 1u);
  EXPECT_EQ(na.tasks_waiting_for_arguments, 1u);
  EXPECT_GE(na.tasks_running, 1u);
  EXPECT_EQ(prism::get(states, 60s), a + " " + a + " " + a + " " + a);
  s = node_stats_until([](const prism::NodeStats& na2, const prism::NodeStats&) {
    return na2.tasks_queued == 0 && na2.tasks_waiting_for_arguments == 0 &&
           na2.tasks_running == 0;
  });
  na = find(s, a);
  EXPECT_EQ(na.tasks_queued + na.tasks_waiting_for_arguments + na.tasks_running, 0u);
  EXPECT_EQ(na.tasks_done, 2u + 5u) << "the parent and its four children";
}

TEST_F(ClusterTest, EveryCopyIsFreedOnEveryNodeWhenTheLastRefDrops) {
  start(1, {{{"PRISM_RESOURCES", "a:100"}}, {{"PRISM_RESOURCES", "b:100"}}});
  {
    auto made = prism::task(make_bytes).resource("a", 1).remote(8 * kMiB, 3u);
    auto put = prism::put(make_bytes(4 * kMiB, 4));
    auto s1 = prism::task(checksum).resource("b", 1).remote(made);
    auto s2 = prism::task(checksum).resource("b", 1).remote(put);
    EXPECT_EQ(prism::get(s1, 60s), checksum(make_bytes(8 * kMiB, 3)));
    EXPECT_EQ(prism::get(s2, 60s), checksum(make_bytes(4 * kMiB, 4)));
    EXPECT_EQ(prism::get(made, 60s).size(), 8 * kMiB);  // fetched here too
    EXPECT_EQ(objects_on("a")[0], 1u);
    EXPECT_EQ(objects_on("b")[2], 2u);
    EXPECT_EQ(prism::cluster::object_stats().primary_objects, 1u);  // the put, serialized once
  }
  // The refs are gone (and so, once their records go, are the tasks' own).
  const auto a = objects_on_until("a", [](const auto& s) { return s[0] == 0 && s[2] == 0; });
  EXPECT_EQ(a[0], 0u) << "node1 still holds the primary copy";
  EXPECT_EQ(a[1], 0u);
  const auto b = objects_on_until("b", [](const auto& s) { return s[2] == 0; });
  EXPECT_EQ(b[2], 0u) << "node2 still holds its pulled copies";
  EXPECT_EQ(b[3], 0u);
  EXPECT_EQ(prism::cluster::object_stats().primary_objects, 0u);
}

// A large result of an actor call stays on the actor's node, as a task's does: pulled by who
// reads it, freed there when the last ref drops.
TEST_F(ClusterTest, ALargeActorResultStaysOnTheActorsNode) {
  start(1, {{{"PRISM_RESOURCES", "a:100"}}, {{"PRISM_RESOURCES", "b:100"}}});
  auto maker = prism::actor<Maker>().resource("a", 1).remote();
  const std::vector<uint8_t> expected = make_bytes(3 * kMiB, 9);
  {
    auto made = maker.task(&Maker::make).remote(3 * kMiB, 9u);
    ASSERT_EQ(prism::wait(std::vector{made}, 1, 60s).first.size(), 1u);
    const std::vector<uint64_t> a = objects_on("a");
    EXPECT_EQ(a[0], 1u) << "the result is kept where the actor is";
    EXPECT_GE(a[1], 3 * kMiB);
    EXPECT_EQ(prism::get(prism::task(checksum).resource("b", 1).remote(made), 60s),
              checksum(expected));
    EXPECT_TRUE(prism::get(made, 60s) == expected);
    // Small results still travel with the answer.
    auto small = maker.task(&Maker::make).remote(100u, 1u);
    EXPECT_TRUE(prism::get(small, 60s) == make_bytes(100, 1));
    EXPECT_EQ(objects_on("a")[0], 1u);
  }
  const auto a = objects_on_until("a", [](const auto& s) { return s[0] == 0; });
  EXPECT_EQ(a[0], 0u) << "the actor's node still holds the result";
  EXPECT_EQ(a[1], 0u);
}

// So do the large results of an actor's num_returns call, each as an object of its own: pulled
// only by its reader, freed on its own.
TEST_F(ClusterTest, AnActorsNumReturnsResultsStayOnItsNodeOneByOne) {
  start(1, {{{"PRISM_RESOURCES", "a:100"}}, {{"PRISM_RESOURCES", "b:100"}}});
  auto maker = prism::actor<Maker>().resource("a", 1).remote();
  const uint64_t n = 3 * kMiB;
  const std::vector<uint8_t> first = make_bytes(n, 5), third = make_bytes(n / 2 + 1, 6);
  auto refs = maker.task(&Maker::make_three).num_returns<3>().remote(n, 5u);
  EXPECT_EQ(prism::get(std::get<1>(refs), 60s), 5);
  std::vector<uint64_t> a = objects_on("a");
  EXPECT_EQ(a[0], 2u) << "the actor's node keeps the two large results";
  EXPECT_GE(a[1], n + n / 2);
  EXPECT_EQ(prism::cluster::object_stats().pulls, 0u) << "the driver pulled a result unasked";
  // A task on node2 reads the first: that one only crosses, from node1 directly.
  EXPECT_EQ(prism::get(prism::task(checksum).resource("b", 1).remote(std::get<0>(refs)), 60s),
            checksum(first));
  const std::vector<uint64_t> b = objects_on("b");
  EXPECT_EQ(b[4], 1u) << "node2 pulled once";
  EXPECT_GE(b[5], n);
  EXPECT_LT(b[5], n + kKiB) << "node2 pulled more than the first result";
  EXPECT_TRUE(prism::get(std::get<2>(refs), 60s) == third);
  EXPECT_EQ(prism::cluster::object_stats().pulls, 1u);
  // The first's last ref drops: its copies go (node1's and node2's), the third's stays.
  std::get<0>(refs) = {};
  a = objects_on_until("a", [](const auto& c) { return c[0] == 1; });
  EXPECT_EQ(a[0], 1u) << "node1 still keeps the first result";
  EXPECT_EQ(objects_on_until("b", [](const auto& c) { return c[2] == 0; })[2], 0u)
      << "node2 still keeps its copy of the first result";
  EXPECT_TRUE(prism::get(std::get<2>(refs), 60s) == third);
  refs = {};
  EXPECT_EQ(objects_on_until("a", [](const auto& c) { return c[0] == 0; })[0], 0u)
      << "node1 keeps a result after every ref dropped";
  // Small results only: every one inline, each decoded from its own bytes; and a call of one
  // result beside them still keeps its large result whole.
  auto small_ones = maker.task(&Maker::make_three).num_returns<3>().remote(10, 8u);
  auto whole = maker.task(&Maker::make).remote(n, 3u);
  EXPECT_TRUE(prism::get(std::get<0>(small_ones), 60s) == make_bytes(10, 8));
  EXPECT_EQ(prism::get(std::get<1>(small_ones), 60s), 8);
  EXPECT_TRUE(prism::get(std::get<2>(small_ones), 60s) == make_bytes(6, 9));
  EXPECT_TRUE(prism::get(whole, 60s) == make_bytes(n, 3));
  EXPECT_EQ(objects_on("a")[0], 1u) << "node1 kept a small result, or not the whole one";
}

TEST_F(ClusterTest, PlacementFollowsTheArgumentBytes) {
  // A driver without CPUs: each reader goes to a node; both nodes have room, so it goes where
  // its argument is.
  start(0, {{{"PRISM_RESOURCES", "a:100"}}, {{"PRISM_RESOURCES", "b:100"}}});
  for (int i = 0; i < 4; ++i) {
    const std::string res = i % 2 == 0 ? "a" : "b";
    auto made = prism::task(make_bytes).resource(res, 1).remote(2 * kMiB, uint32_t(i));
    const std::string maker = prism::get(prism::task(node_here).resource(res, 1).remote(), 60s);
    auto reader = prism::task(read_where).remote(made);
    EXPECT_EQ(prism::get(reader, 60s), maker + ":" + std::to_string(2 * kMiB));
  }
}

// Spillback: the driver sends a reader where its argument is, but that node turns out to have
// no room (a nested task the driver did not send holds its CPU): it sends the task back, and the
// driver places it on a node with room; if none has room, back where it was, to wait there.
TEST_F(ClusterTest, ATaskSpillsBackFromANodeThatTurnsOutFull) {
  // (The hog, a nested task, must stay on its node: PRISM_NESTED_SPILL=0.)
  start(0, {{{"PRISM_RESOURCES", "a:100"}, {"PRISM_NESTED_SPILL", "0"}},
            {{"PRISM_RESOURCES", "b:100"}, {"PRISM_NESTED_SPILL", "0"}}});
  const std::string a = prism::get(prism::task(node_here).resource("a", 1).remote(), 60s);
  const std::string b = prism::get(prism::task(node_here).resource("b", 1).remote(), 60s);
  auto made = prism::task(make_bytes).resource("a", 1).remote(2 * kMiB, 3u);
  ASSERT_EQ(prism::wait(std::vector{made}, 1, 60s).first.size(), 1u);
  const std::string size = ":" + std::to_string(2 * kMiB);
  const uint64_t spilled = prism::cluster::link_counters().spilled;
  // Node a is full (for 5 s), b has room: the reader spills from a to b (which pulls the
  // argument).
  EXPECT_EQ(prism::get(prism::task(hold_cpu).num_cpus(0).resource("a", 1).remote(5000), 60s), a);
  EXPECT_EQ(prism::get(prism::task(read_where).remote(made), 60s), b + size);
  EXPECT_EQ(prism::cluster::link_counters().spilled, spilled + 1);
  // Both full (b by a task the driver sent, so the driver knows): back to a, where it waits for
  // the CPU.
  auto busy_b = prism::task(slept_where).resource("b", 1).remote(6000);
  EXPECT_EQ(prism::get(prism::task(read_where).remote(made), 60s), a + size);
  EXPECT_EQ(prism::cluster::link_counters().spilled, spilled + 2);
  EXPECT_EQ(prism::get(busy_b, 60s), b);
}

TEST_F(ClusterTest, TensorsCrossNodesThroughHostMemory) {
  // Only node1 has GPUs (logical ones here: the host backend), so GPU tasks go there.
  start(1, {{{"PRISM_NUM_GPUS", "2"}}});
  ASSERT_EQ(prism::cluster_resources().at("GPU"), 2.0);
  for (const int64_t n : {int64_t{6}, int64_t{1} << 15}) {  // inline, and above 100 KiB
    std::vector<double> v(static_cast<size_t>(n));
    for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<double>(i % 1000) + 0.5;
    const auto t = prism::gpu::Tensor::from_vector(v, {2, n / 2}, prism::gpu::Device::host());
    auto doubled = prism::task(doubled_on_gpu).num_gpus(1).remote(t);
    // Chained: the ref's value goes back to node1 from wherever it is kept.
    auto quadrupled = prism::task(doubled_on_gpu).num_gpus(1).remote(doubled);
    const prism::gpu::Tensor back = prism::get(quadrupled, 60s);
    EXPECT_TRUE(back.device().is_host()) << "read by get() on the driver: on its host";
    EXPECT_EQ(back.shape(), (std::vector<int64_t>{2, n / 2}));
    const std::vector<double> out = back.to_vector<double>();
    ASSERT_EQ(out.size(), v.size());
    for (size_t i = 0; i < v.size(); ++i) ASSERT_EQ(out[i], 4 * v[i]) << "element " << i;
    double sum = 0;
    for (double x : out) sum += x;
    EXPECT_EQ(prism::get(prism::task(tensor_seen).num_gpus(1).remote(quadrupled), 60s),
              "node1 gpu:0 " + std::to_string(sum))
        << "read by a one-GPU task on node1: on its GPU";
  }
  // An empty tensor crosses too.
  EXPECT_EQ(prism::get(prism::task(tensor_seen).num_gpus(1).remote(prism::gpu::Tensor()), 60s),
            "node1 host 0.000000");
  // A large tensor put here and read by three GPU tasks on node1, one after the other, travels
  // once (by reference, pulled once, kept there), placed on each task's GPU.
  const int64_t n = int64_t{1} << 17;  // 1 MiB of float64
  const auto big = prism::put(prism::gpu::Tensor::from_vector(std::vector<double>(n, 0.25), {n},
                                                               prism::gpu::Device::host()));
  const uint64_t served = prism::stats().transfers.node_served;
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(prism::get(prism::task(tensor_seen).num_gpus(1).remote(big), 60s),
              "node1 gpu:0 " + std::to_string(0.25 * static_cast<double>(n)));
  }
  EXPECT_EQ(prism::stats().transfers.node_served, served + 1) << "the tensor was sent again";
}

TEST_F(ClusterTest, GetOfAValueOnAStoppedNodeKeepsItsDeadline) {
  start(1, {{{"PRISM_RESOURCES", "a:100"}}});
  auto made = prism::task(make_bytes).resource("a", 1).remote(1 * kMiB, 5u);
  auto [ready, pending] = prism::wait(std::vector{made}, 1, 60s);
  ASSERT_EQ(ready.size(), 1u);
  ASSERT_EQ(kill(children_.front().pid(), SIGSTOP), 0);
  // kill() returns before every thread has stopped: a pull sent meanwhile could be answered.
  ASSERT_TRUE(prism_test::all_threads_stopped(children_.front().pid(), 10s));
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_THROW(prism::get(made, 500ms), prism::TimeoutError);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
  ASSERT_EQ(kill(children_.front().pid(), SIGCONT), 0);
  // The pull went on: the value arrives once the node runs again.
  EXPECT_TRUE(prism::get(made, 60s) == make_bytes(1 * kMiB, 5));
}

// A node that pulled a value directly from another tells the driver it keeps the copy: the
// transfer is on the driver's timeline (on the driver's clock, though the holder's clock is an
// hour off), and the copy serves later readers, so the value outlives its maker's death without
// being computed again.
TEST_F(ClusterTest, ADirectPullIsOnTheTimelineAndItsCopyOutlivesTheMaker) {
  RecordTimelines recording;
  const auto began = std::chrono::steady_clock::now();
  start(1, {{{"PRISM_RESOURCES", "a:100"}, {"PRISM_TEST_CLOCK_SKEW_NS", "3600000000000"}},
            {{"PRISM_RESOURCES", "b:100"}, {"PRISM_TEST_CLOCK_SKEW_NS", "-3600000000000"}}});
  expect_clean_exit_ = false;
  const std::string a = prism::get(prism::task(node_here).resource("a", 1).remote(), 60s);
  const std::string b = prism::get(prism::task(node_here).resource("b", 1).remote(), 60s);
  auto made = prism::task(make_bytes).resource("a", 1).remote(2 * kMiB, 21u);
  const uint64_t expected = checksum(make_bytes(2 * kMiB, 21));
  EXPECT_EQ(prism::get(prism::task(checksum).resource("b", 1).remote(made), 60s), expected);
  EXPECT_EQ(prism::cluster::object_stats().pulls, 0u) << "relayed through the driver";
  // (node b's word that it keeps the copy came before its task's answer, on one connection)
  const double elapsed_us =
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - began).count();
  const std::string json = timeline_json();
  const size_t at = json.find(" " + a + " -> " + b + "\",\"cat\":\"transfer\"");
  ASSERT_NE(at, std::string::npos) << json;
  const std::string event = json.substr(at, json.find('}', at) - at);
  const size_t ts_at = event.find("\"ts\":");
  ASSERT_NE(ts_at, std::string::npos) << event;
  const double ts = std::stod(event.substr(ts_at + 5));
  EXPECT_GE(ts, 0) << event;
  EXPECT_LE(ts, elapsed_us + 1000) << event;

  const auto before = prism::cluster::link_counters();
  children_.front().kill_now();  // the maker (node a: the first started)
  ASSERT_TRUE(children_.front().wait_exit(20s));
  EXPECT_EQ(checksum(prism::get(made, 60s)), expected);
  EXPECT_EQ(prism::cluster::link_counters().objects_rebuilt, before.objects_rebuilt)
      << "computed again, though node b kept a copy";
}

// A long random mix on three nodes: values of random sizes made on random nodes, read by tasks
// on random nodes (three values each, often the same one twice, while other readers of them are
// in flight), refs dropped along the way. Every reader gets the right bytes (most pulled node to
// node), and once the last refs drop no node keeps a copy.
// 36 values of random sizes made on random nodes of three, 72 readers of three values each on
// random nodes, refs dropped while readers are in flight: every reader right, and no copy left
// anywhere once the last refs drop. `between_rounds` runs after each round's readers are done.
void random_mix(const std::function<void()>& between_rounds) {
  const char* nodes[] = {"n1", "n2", "n3"};
  uint64_t x = 12345;
  auto next = [&](uint64_t n) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    return (x >> 33) % n;
  };
  {
    std::vector<prism::ObjectRef<std::vector<uint8_t>>> values;
    std::vector<uint64_t> sums;
    std::vector<std::pair<prism::ObjectRef<uint64_t>, uint64_t>> readers;
    for (uint32_t round = 0; round < 6; ++round) {
      for (int i = 0; i < 6; ++i) {
        const uint64_t bytes = 100 * kKiB + next(3 * kMiB);
        const uint32_t seed = static_cast<uint32_t>(values.size());
        values.push_back(prism::task(make_bytes).resource(nodes[next(3)], 1).remote(bytes, seed));
        sums.push_back(checksum(make_bytes(bytes, seed)));
      }
      for (int i = 0; i < 12; ++i) {
        const size_t a = next(values.size()), b = next(values.size()), c = next(values.size());
        readers.emplace_back(prism::task(checksum3).resource(nodes[next(3)], 1)
                                 .remote(values[a], values[b], values[c]),
                             sums[a] * 3 + sums[b] * 5 + sums[c] * 7);
      }
      // Some values lose their driver's ref while readers of them may still be in flight.
      for (int i = 0; i < 2 && !values.empty(); ++i) {
        const size_t k = next(values.size());
        values.erase(values.begin() + static_cast<long>(k));
        sums.erase(sums.begin() + static_cast<long>(k));
      }
      if (between_rounds) {
        for (auto& [r, want] : readers) EXPECT_EQ(prism::get(r, 120s), want);
        between_rounds();
      }
    }
    for (auto& [r, want] : readers) EXPECT_EQ(prism::get(r, 120s), want);
    uint64_t served_by_nodes = 0;
    for (const char* n : nodes) served_by_nodes += objects_on(n)[6];
    EXPECT_GT(served_by_nodes, 0u);
    std::printf("[ cluster  ] %zu readers of 36 values on 3 nodes: driver relayed %llu, nodes "
                "served %llu pulls\n",
                readers.size(),
                static_cast<unsigned long long>(prism::cluster::object_stats().served),
                static_cast<unsigned long long>(served_by_nodes));
  }
  for (const char* n : nodes) {
    const auto left = objects_on_until(n, [](const auto& c) { return c[0] == 0 && c[2] == 0; });
    EXPECT_EQ(left[0], 0u) << n << " keeps values made there";
    EXPECT_EQ(left[2], 0u) << n << " keeps pulled copies";
  }
}

TEST_F(ClusterTest, ARandomMixOfValuesAndReadersAcrossThreeNodes) {
  start(0, {{{"PRISM_RESOURCES", "n1:100"}},
            {{"PRISM_RESOURCES", "n2:100"}},
            {{"PRISM_RESOURCES", "n3:100"}}});
  random_mix(nullptr);
}

// The same mix while the nodes close every direct connection as soon as it is idle (checked
// with the heartbeats, 2.5 times a second): after each round the test waits until some node closed one more, so
// the next round's pulls connect again while closes may race with them. Every reader is right
// whichever way its pull went (directly, or through the driver after a close).
TEST_F(ClusterTest, ARandomMixWhileDirectConnectionsCloseWhenIdle) {
  setenv("PRISM_HEARTBEAT_TIMEOUT", "2", 1);  // (the nodes inherit it)
  setenv("PRISM_PEER_IDLE_CLOSE_S", "0.001", 1);
  start(0, {{{"PRISM_RESOURCES", "n1:100"}},
            {{"PRISM_RESOURCES", "n2:100"}},
            {{"PRISM_RESOURCES", "n3:100"}}});
  unsetenv("PRISM_HEARTBEAT_TIMEOUT");
  unsetenv("PRISM_PEER_IDLE_CLOSE_S");
  auto closed = [] {
    uint64_t n = 0;
    for (const char* r : {"n1", "n2", "n3"}) {
      n += prism::get(prism::task(direct_counts_here).resource(r, 1).remote(), 60s)[3];
    }
    return n;
  };
  uint64_t closes = 0;
  random_mix([&] {
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    uint64_t now = closed();
    while (now == closes && std::chrono::steady_clock::now() < deadline) now = closed();
    EXPECT_GT(now, closes) << "no direct connection closed after the round";
    closes = now;
  });
  uint64_t fallbacks = 0;
  for (const char* r : {"n1", "n2", "n3"}) {
    fallbacks += prism::get(prism::task(direct_counts_here).resource(r, 1).remote(), 60s)[1];
  }
  std::printf("[ cluster  ] %llu direct connections closed when idle, %llu pulls fell back to "
              "the driver\n",
              static_cast<unsigned long long>(closes), static_cast<unsigned long long>(fallbacks));
}

TEST_F(ClusterTest, AValueLostWithItsNodeFailsClearly) {
  start(1, {{{"PRISM_RESOURCES", "a:100"}}});
  expect_clean_exit_ = false;
  auto made = prism::task(make_bytes).resource("a", 1).remote(1 * kMiB, 9u);
  auto [ready, pending] = prism::wait(std::vector{made}, 1, 60s);
  ASSERT_EQ(ready.size(), 1u);  // done, but its value is on node1
  children_.front().kill_now();
  ASSERT_TRUE(children_.front().wait_exit(20s));
  try {
    prism::get(made, 30s);
    FAIL() << "a value whose only copy was lost was read";
  } catch (const prism::Error& e) {
    EXPECT_EQ(e.code(), prism::ErrorCode::kUnavailable) << e.what();
    EXPECT_NE(std::string(e.what()).find("node1"), std::string::npos) << e.what();
  }
}

}  // namespace
