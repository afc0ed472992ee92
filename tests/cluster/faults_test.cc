// faults_test.cc — the fault matrix (ctest label `faults`): nodes killed or stopped mid-job, the
// driver killed or stopped. Each case ends with the correct result, checked, or a clear error
// naming what was lost; never a hang (every wait has a deadline); every process a test starts
// is reaped by it.
//
// Tasks here stand for work by sleeping inside the task (its compute); the tests themselves
// wait on events, or poll (bounded) what another process does.
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <prism/prism.h>

#include "cluster_fixture.h"
#include "cluster_link.h"
#include "cluster_main.h"

namespace {

using namespace std::chrono_literals;
using prism_test::Child;
using prism_test::ClusterTest;

// ---- registered functions (every node has them: the same executable) ----

// Writes "<dir>/<tag>-<pid>" holding this node's id, where another process can see it.
void mark(const std::string& dir, const std::string& tag) {
  const std::string path = dir + "/" + tag + "-" + std::to_string(getpid());
  if (FILE* f = std::fopen(path.c_str(), "w")) {
    std::fputs(prism::node_id().c_str(), f);
    std::fclose(f);
  }
}

// A leaf of the tree: `ms` of work, then a value that depends on `i`.
int64_t leaf(int64_t i, int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return i * i + 1;
}
int64_t leaf_sum(int64_t first, int n) {
  int64_t sum = 0;
  for (int64_t i = first; i < first + n; ++i) sum += i * i + 1;
  return sum;
}
// A parent: says it runs (mark), submits `n` leaves where it runs and sums them.
int64_t parent(const std::string& dir, int64_t first, int n, int ms) {
  mark(dir, "parent");
  std::vector<prism::ObjectRef<int64_t>> leaves;
  for (int64_t i = first; i < first + n; ++i) leaves.push_back(prism::task(leaf).remote(i, ms));
  int64_t sum = 0;
  for (auto& r : leaves) sum += prism::get(r, 60s);
  return sum;
}
// Says it runs, works `ms`, then says where it ran.
std::string marked_work(const std::string& dir, int ms) {
  mark(dir, "started");
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return prism::node_id();
}
// Large values (above the inline threshold: they stay on the node that made them).
std::vector<uint8_t> make_block(uint64_t n, uint32_t seed) {
  std::vector<uint8_t> v(n);
  uint32_t x = seed * 2654435761u + 1;
  for (auto& b : v) {
    x = x * 1664525u + 1013904223u;
    b = static_cast<uint8_t>(x >> 24);
  }
  return v;
}
// One link of a chain: every byte plus `k` (mod 256).
std::vector<uint8_t> shift_block(const std::vector<uint8_t>& in, int k) {
  std::vector<uint8_t> out(in);
  for (auto& b : out) b = static_cast<uint8_t>(b + k);
  return out;
}
int64_t tiny(int64_t i) { return 2 * i + 1; }
// Waits for one byte on the FIFO at `path` and returns it (-1: the FIFO failed). The test holds
// the FIFO open for writing, so the read waits until the test writes: a call that stays in
// flight on its node for as long as the test wants.
int64_t gate(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  char c = 0;
  ssize_t n = 0;
  do {
    n = read(fd, &c, 1);
  } while (n < 0 && errno == EINTR);
  close(fd);
  return n == 1 ? c : -1;
}
// ObjectRefs a node owns, lent to the caller (faults of borrowers' owners): a value put there,
// and one a task started there makes after `ms`.
prism::ObjectRef<std::vector<uint8_t>> put_block(uint64_t n, uint32_t seed) {
  return prism::put(make_block(n, seed));
}
std::vector<uint8_t> block_later(uint64_t n, uint32_t seed, int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return make_block(n, seed);
}
prism::ObjectRef<std::vector<uint8_t>> block_made_here(uint64_t n, uint32_t seed, int ms) {
  return prism::task(block_later).remote(n, seed, ms);
}
// What reading a borrowed ref where this runs gives: "size <n>", or the error's kind and text.
std::string read_borrowed(const prism::ObjectRef<std::vector<uint8_t>>& r) {
  try {
    return "size " + std::to_string(prism::get(r, 60s).size());
  } catch (const prism::OwnerDiedError& e) {
    return std::string("OwnerDiedError: ") + e.what();
  } catch (const std::exception& e) {
    return std::string("other error: ") + e.what();
  }
}
std::string node_name() { return prism::node_id(); }
uint64_t block_sum(const std::vector<uint8_t>& v) {
  uint64_t sum = 0;
  for (uint8_t b : v) sum = sum * 31 + b;
  return sum;
}
// This process's object copies: secondary now, evicted so far, spilled now.
std::vector<uint64_t> copies_here() {
  const auto s = prism::cluster::object_stats();
  return {s.secondary_objects, s.evicted_objects, s.spilled_objects};
}
// Two results (num_returns<2>), and the results this process keeps as their maker.
std::pair<std::vector<uint8_t>, std::vector<uint8_t>> two_blocks(uint64_t n, uint32_t seed) {
  return {make_block(n, seed), make_block(n + 1, seed + 1)};
}
uint64_t primaries_here() { return prism::cluster::object_stats().primary_objects; }
PRISM_REMOTE(leaf, parent, marked_work, make_block, shift_block, tiny, put_block, block_later,
             block_made_here, read_borrowed, node_name, block_sum, copies_here, two_blocks,
             primaries_here, gate);

// An actor whose state is what its constructor and calls made of it.
class Tally {
 public:
  explicit Tally(int start) : total_(start) {}
  int add(int x) { return total_ += x; }
  std::string where() const { return prism::node_id(); }
  int pid() const { return static_cast<int>(getpid()); }
  // Says it runs (mark), works `ms`, then adds 1000.
  int slow_add(const std::string& dir, int ms) {
    mark(dir, "actor");
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    return total_ += 1000;
  }

 private:
  int total_;
};
PRISM_ACTOR(Tally, &Tally::add, &Tally::where, &Tally::pid, &Tally::slow_add);

// An actor whose constructor reads a large value through an ObjectRef, and keeps the ref (its
// node borrows it for the actor's life) or not (the borrow ends with the constructor).
class Summer {
 public:
  Summer(prism::ObjectRef<std::vector<uint8_t>> data, bool keep)
      : sum_(block_sum(prism::get(data, 60s))) {
    if (keep) data_ = std::move(data);
  }
  uint64_t sum() const { return sum_; }
  // The kept ref read again (the sum when none is kept).
  uint64_t sum_again() const { return data_.valid() ? block_sum(prism::get(data_, 60s)) : sum_; }
  int pid() const { return static_cast<int>(getpid()); }

 private:
  uint64_t sum_;
  prism::ObjectRef<std::vector<uint8_t>> data_;
};
PRISM_ACTOR(Summer, &Summer::sum, &Summer::sum_again, &Summer::pid);

// Calls made from a task on a node (relayed by the driver to the actor's node): a slow add, and
// what reading it gives ("value <n>", or the error's kind and text).
std::string slow_add_from(const prism::ActorHandle<Tally>& a, const std::string& dir, int ms) {
  try {
    return "value " + std::to_string(prism::get(a.task(&Tally::slow_add).remote(dir, ms), 60s));
  } catch (const prism::ActorDiedError& e) {
    return std::string("ActorDiedError: ") + e.what();
  } catch (const std::exception& e) {
    return std::string("other error: ") + e.what();
  }
}
PRISM_REMOTE(slow_add_from);

// The child whose pid a mark file names ("<dir>/<tag>-<pid>"), or null.
Child* marked_child(std::deque<Child>& children, const std::string& dir, const std::string& tag) {
  for (Child& c : children) {
    if (access((dir + "/" + tag + "-" + std::to_string(c.pid())).c_str(), F_OK) == 0) return &c;
  }
  return nullptr;
}

// Polls (bounded) until some child wrote a `tag` mark.
Child* wait_for_mark(std::deque<Child>& children, const std::string& dir, const std::string& tag,
                     std::chrono::seconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (Child* c = marked_child(children, dir, tag)) return c;
    if (std::chrono::steady_clock::now() > deadline) return nullptr;
    std::this_thread::sleep_for(10ms);  // (another process's file: no event to wait on)
  }
}

class FaultTest : public ClusterTest {
 protected:
  // Polls (bounded) until the driver counts `n` live processes (itself included): a node's
  // death, seen by the driver's link (no event to wait on from here).
  static bool node_count_becomes(int n, std::chrono::seconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (prism::node_count() != n) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(5ms);
    }
    return true;
  }
  // A spill directory for this test's nodes (made now: the job directory comes with start()).
  static std::string job_dir_root_spill() {
    const std::string dir = prism_test::fresh_job_dir("spill");
    std::filesystem::create_directories(dir);
    return dir;
  }
  void TearDown() override {
    ClusterTest::TearDown();
    unsetenv("PRISM_HEARTBEAT_TIMEOUT");
  }
};

// Case 1: SIGKILL a node while it runs parents of a two-level tree. The parents lost with it
// (and so their leaves) run again on the other node (max_retries defaults to 3); every sum is
// right.
TEST_F(FaultTest, ANodeKilledWhileItRunsATwoLevelTreeLosesNoResult) {
  // Parents need "tree", which only the nodes have; each node runs two at a time.
  start(1, {{{"PRISM_NUM_CPUS", "2"}, {"PRISM_RESOURCES", "tree:2"}},
            {{"PRISM_NUM_CPUS", "2"}, {"PRISM_RESOURCES", "tree:2"}}});
  expect_clean_exit_ = false;
  const auto before = prism::cluster::link_counters();
  constexpr int kParents = 8, kLeaves = 4, kLeafMs = 150;
  std::vector<prism::ObjectRef<int64_t>> sums;
  for (int p = 0; p < kParents; ++p) {
    sums.push_back(
        prism::task(parent).resource("tree", 1).remote(job_dir_, int64_t{p} * kLeaves, kLeaves,
                                                       kLeafMs));
  }
  // Kill the first node seen running a parent, while it runs it.
  Child* victim = wait_for_mark(children_, job_dir_, "parent", 60s);
  ASSERT_NE(victim, nullptr) << "no parent started";
  victim->kill_now();
  ASSERT_TRUE(victim->wait_exit(20s));
  const auto t0 = std::chrono::steady_clock::now();
  for (int p = 0; p < kParents; ++p) {
    EXPECT_EQ(prism::get(sums[static_cast<size_t>(p)], 120s), leaf_sum(int64_t{p} * kLeaves, kLeaves))
        << "parent " << p;
  }
  const double recovered_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("[ faults   ] node killed mid-tree: every result in %.2f s after the kill\n",
              recovered_s);
  const auto after = prism::cluster::link_counters();
  EXPECT_GE(after.lost_tasks_retried, before.lost_tasks_retried + 1)
      << "no parent was in flight on the killed node";
  EXPECT_GE(prism::stats().tasks.retried, 1u);
  EXPECT_EQ(after.epoch, before.epoch + 1) << "one node lost: one new membership epoch";
  EXPECT_EQ(prism::node_count(), 2);  // the driver and the node left
}

// A task that may not run again (max_retries(0)) fails naming the node and the reason; one with
// retries left but no node that can run it waits for one (a driver by address) instead.
TEST_F(FaultTest, ATaskWithoutRetriesFailsNamingTheNode) {
  start(1, {{{"PRISM_RESOURCES", "tree:1"}}});
  expect_clean_exit_ = false;
  auto r = prism::task(marked_work).resource("tree", 1).max_retries(0).remote(job_dir_, 30000);
  Child* victim = wait_for_mark(children_, job_dir_, "started", 60s);
  ASSERT_NE(victim, nullptr) << "the task did not start";
  victim->kill_now();
  try {
    prism::get(r, 30s);
    FAIL() << "the task survived its node";
  } catch (const prism::Error& e) {
    EXPECT_EQ(e.code(), prism::ErrorCode::kUnavailable) << e.what();
    EXPECT_NE(std::string(e.what()).find("node1"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("max_retries"), std::string::npos) << e.what();
  }
  EXPECT_EQ(prism::stats().tasks.retried, 0u);
}

// Case 5: SIGSTOP a node past the heartbeat deadline: it is declared dead (once), its task runs
// again on the other node; SIGCONT: it finds itself fenced and exits, and its late result
// changes nothing.
TEST_F(FaultTest, ANodeStoppedPastTheDeadlineIsDeclaredDeadAndFenced) {
  setenv("PRISM_HEARTBEAT_TIMEOUT", "2", 1);  // (the nodes inherit it)
  start(1, {{{"PRISM_RESOURCES", "slot:1"}}, {{"PRISM_RESOURCES", "slot:1"}}});
  expect_clean_exit_ = false;
  const auto before = prism::cluster::link_counters();
  auto r = prism::task(marked_work).resource("slot", 1).remote(job_dir_, 3000);
  Child* stopped = wait_for_mark(children_, job_dir_, "started", 60s);
  ASSERT_NE(stopped, nullptr) << "the task did not start";
  const std::string stopped_node =
      prism_test::read_file_line(job_dir_ + "/started-" + std::to_string(stopped->pid()));
  ASSERT_EQ(kill(stopped->pid(), SIGSTOP), 0);
  const auto t0 = std::chrono::steady_clock::now();
  std::string ran_on;
  ASSERT_NO_THROW(ran_on = prism::get(r, 60s));
  EXPECT_NE(ran_on, stopped_node) << "the stopped node's result was taken";
  EXPECT_NE(ran_on, "node0");
  const double detected_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("[ faults   ] node stopped: retried result in %.2f s (2 s deadline + 3 s of work)\n",
              detected_s);
  auto after = prism::cluster::link_counters();
  EXPECT_EQ(after.declared_dead, before.declared_dead + 1);
  EXPECT_EQ(after.lost_tasks_retried, before.lost_tasks_retried + 1);
  EXPECT_EQ(after.epoch, before.epoch + 1);
  EXPECT_EQ(prism::node_count(), 2);
  // Woken, it finds its connection gone and exits with the status of a node that lost its
  // driver; nothing it sent late counts.
  ASSERT_EQ(kill(stopped->pid(), SIGCONT), 0);
  ASSERT_TRUE(stopped->wait_exit(30s)) << "the fenced node did not exit";
  EXPECT_EQ(stopped->exit_status(), 1);
  after = prism::cluster::link_counters();
  EXPECT_EQ(after.declared_dead, before.declared_dead + 1) << "declared dead twice";
  EXPECT_EQ(prism::node_count(), 2);
  // The cluster goes on.
  EXPECT_NE(prism::get(prism::task(marked_work).resource("slot", 1).remote(job_dir_, 0), 60s),
            stopped_node);
}

// Case 9: the node holding a value is stopped (SIGSTOP) when a task on another node reads it.
// That node pulls it from the holder directly (the driver names the holder): its pull goes
// unanswered, is given up after the heartbeat deadline and asked of the driver instead, which
// has found the holder dead by then and computes the value again from its lineage on a node
// left; the task reads it byte for byte. Both when the direct connection is new (the stopped
// node never answers its handshake) and when it was made by an earlier pull.
class DirectPullFaultTest : public FaultTest, public ::testing::WithParamInterface<bool> {};

TEST_P(DirectPullFaultTest, APullFromAStoppedNodeEndsThroughTheDriver) {
  const bool connected_first = GetParam();
  setenv("PRISM_HEARTBEAT_TIMEOUT", "2", 1);  // (the nodes inherit it)
  start(1, {{{"PRISM_RESOURCES", "a:1"}}, {{"PRISM_RESOURCES", "b:1"}}});
  expect_clean_exit_ = false;
  constexpr uint64_t kBytes = 4 << 20;
  auto made = prism::task(make_block).resource("a", 1).remote(kBytes, 77u);
  ASSERT_EQ(prism::wait(std::vector{made}, 1, 60s).first.size(), 1u);
  if (connected_first) {  // node2 pulls another value from node1 first
    auto other = prism::task(make_block).resource("a", 1).remote(kBytes, 78u);
    ASSERT_EQ(prism::get(prism::task(block_sum).resource("b", 1).remote(other), 60s),
              block_sum(make_block(kBytes, 78)));
  }
  add_node({{"PRISM_RESOURCES", "a:1"}});  // where the value is computed again
  prism::wait_for_nodes(3, 60s);
  const auto before = prism::cluster::link_counters();
  Child& holder = children_.front();
  ASSERT_EQ(kill(holder.pid(), SIGSTOP), 0);
  // kill() returns before every thread has stopped: a pull sent meanwhile could be answered
  // (CI, under load, once saw the holder's progress thread answer the direct pull).
  ASSERT_TRUE(prism_test::all_threads_stopped(holder.pid(), 10s));
  EXPECT_EQ(prism::get(prism::task(block_sum).resource("b", 1).remote(made), 60s),
            block_sum(make_block(kBytes, 77)));
  const auto after = prism::cluster::link_counters();
  EXPECT_EQ(after.declared_dead, before.declared_dead + 1);
  EXPECT_EQ(after.objects_rebuilt, before.objects_rebuilt + 1);
  holder.kill_now();  // (a stopped process dies of SIGKILL too)
  ASSERT_TRUE(holder.wait_exit(20s));
}

INSTANTIATE_TEST_SUITE_P(Faults, DirectPullFaultTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& p) {
                           return p.param ? std::string("ConnectedBefore")
                                          : std::string("NewConnection");
                         });

// Case 8: a million pending tasks (a hundred thousand under the sanitizers) spread over the
// driver and two nodes, and one node dies while they run: every result arrives, and is right.
// The nodes may keep pace with the driver's submissions (fast cores: CI once found nothing in
// flight on the node it killed), so a call that cannot end before the kill is sent there first:
// a gate, which waits for a byte the test writes only once that node is dead. It is run again
// on the other node, and reads the byte there.
TEST_F(FaultTest, ManyPendingTasksSurviveANodesDeath) {
#if defined(PRISM_TEST_SANITIZED)
  constexpr int64_t kTasks = 100'000;
#else
  constexpr int64_t kTasks = 1'000'000;
#endif
  // Only the nodes have "n": every task goes to one. Both have a "g" (the gate's; it takes no
  // CPU, so node1 runs tiny tasks beside it); node1 is alone when the gate is sent: it goes there
  // (remote() places a task without dependencies before it returns).
  start(1, {{{"PRISM_RESOURCES", "n:1,g:1"}}});
  expect_clean_exit_ = false;
  const std::string fifo = job_dir_ + "/gate";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0) << std::strerror(errno);
  const int gate_writer = open(fifo.c_str(), O_RDWR | O_CLOEXEC);  // (does not wait for a reader)
  ASSERT_GE(gate_writer, 0) << std::strerror(errno);
  // Closed however the test ends: a gate still waiting then reads end-of-file and returns, so
  // its node can exit.
  struct CloseAtEnd {
    int fd;
    ~CloseAtEnd() { close(fd); }
  } close_gate{gate_writer};
  const auto before = prism::cluster::link_counters();
  auto gated = prism::task(gate).num_cpus(0).resource("g", 1).remote(fifo);
  add_node({{"PRISM_RESOURCES", "n:1,g:1"}});
  prism::wait_for_nodes(2, 60s);
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<prism::ObjectRef<int64_t>> refs;
  refs.reserve(kTasks);
  for (int64_t i = 0; i < kTasks; ++i) {
    refs.push_back(prism::task(tiny).resource("n", 1).remote(i));
    // Half way through the submissions, once a tenth is done (a marker result), node1 dies
    // with whatever it was sent; the submissions go on while the driver finds it dead (a call
    // sent to it meanwhile is run again too).
    if (i == kTasks / 2) {
      ASSERT_EQ(prism::get(refs[kTasks / 10], 300s), 2 * (kTasks / 10) + 1);
      children_.front().kill_now();
    }
  }
  ASSERT_TRUE(children_.front().wait_exit(20s));
  ASSERT_EQ(write(gate_writer, "G", 1), 1);  // (for the gate run again on node2)
  EXPECT_EQ(prism::get(gated, 60s), 'G');
  const auto deadline = std::chrono::steady_clock::now() + 300s;
  int64_t sum = 0, wrong = 0;
  for (int64_t i = 0; i < kTasks; ++i) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    const int64_t v = prism::get(refs[static_cast<size_t>(i)], std::max(left, 1ms));
    sum += v;
    if (v != 2 * i + 1) ++wrong;
  }
  EXPECT_EQ(wrong, 0);
  EXPECT_EQ(sum, kTasks * kTasks);  // (the sum of the first n odd numbers)
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const auto after = prism::cluster::link_counters();
  std::printf("[ faults   ] %lld tasks, a node killed mid-run: all right in %.2f s; %llu run "
              "again\n",
              static_cast<long long>(kTasks), s,
              static_cast<unsigned long long>(after.lost_tasks_retried -
                                              before.lost_tasks_retried));
  EXPECT_GE(after.lost_tasks_retried, before.lost_tasks_retried + 1) << "the gate was not run again";
  EXPECT_EQ(prism::node_count(), 2);
}

// Case 7: a node's result arrives damaged (the transport's test hook corrupts or truncates its
// third result frame). The driver cannot trust that connection any more: it drops it, as if the
// node had died, and the tasks in flight there run again on the other node; every result is
// right. (A message that cannot be decoded from a peer that never proved the token is only
// dropped and counted: cluster_test.cc.)
class DamagedStreamTest : public FaultTest, public ::testing::WithParamInterface<const char*> {};

TEST_P(DamagedStreamTest, ADamagedResultDropsTheConnectionAndItsTasksRunAgain) {
  start(1, {{{"PRISM_RESOURCES", "n:1"},
             {"PRISM_TEST_DAMAGE_RESULT", std::string(GetParam()) + ":3"}},
            {{"PRISM_RESOURCES", "n:1"}}});
  expect_clean_exit_ = false;
  const auto before = prism::cluster::link_counters();
  std::vector<prism::ObjectRef<int64_t>> refs;
  for (int64_t i = 0; i < 40; ++i) refs.push_back(prism::task(tiny).resource("n", 1).remote(i));
  for (int64_t i = 0; i < 40; ++i) {
    EXPECT_EQ(prism::get(refs[static_cast<size_t>(i)], 60s), 2 * i + 1) << i;
  }
  const auto after = prism::cluster::link_counters();
  EXPECT_EQ(after.dropped_connections, before.dropped_connections + 1);
  EXPECT_GE(after.malformed, before.malformed + 1);
  EXPECT_EQ(after.declared_dead, before.declared_dead) << "(dropped for the damage, not silence)";
  EXPECT_EQ(prism::node_count(), 2);
  // The damaged node finds its connection gone and exits.
  ASSERT_TRUE(children_.front().wait_exit(30s)) << "the node whose stream was damaged lives on";
  EXPECT_EQ(children_.front().exit_status(), 1);
}

INSTANTIATE_TEST_SUITE_P(Faults, DamagedStreamTest, ::testing::Values("corrupt", "truncate"));

// Case 2: the node holding the only copies of a chain of results dies, after the driver dropped
// its refs to all but the last. Reading the last computes it again from its lineage, after its
// lost arguments, recursively, on the node left; byte for byte the same. A result whose task may
// not be retried is lost for good: ObjectLostError naming it.
TEST_F(FaultTest, LostObjectsAreComputedAgainFromTheirLineage) {
  start(1, {{{"PRISM_RESOURCES", "a:1"}}});
  expect_clean_exit_ = false;
  constexpr uint64_t kBytes = 1 << 20;
  std::vector<uint8_t> expected = make_block(kBytes, 42);
  for (int k = 1; k <= 3; ++k) expected = shift_block(expected, k);
  prism::ObjectRef<std::vector<uint8_t>> last;
  {
    auto x = prism::task(make_block).resource("a", 1).remote(kBytes, 42u);
    for (int k = 1; k <= 3; ++k) x = prism::task(shift_block).resource("a", 1).remote(x, k);
    last = x;
  }  // (the refs to the first three are gone: only their lineage is left)
  auto unretried = prism::task(make_block).resource("a", 1).max_retries(0).remote(kBytes, 7u);
  ASSERT_EQ(prism::wait(std::vector{last, unretried}, 2, 60s).first.size(), 2u);
  // A node to compute them again; then the one holding them dies.
  add_node({{"PRISM_RESOURCES", "a:1"}});
  prism::wait_for_nodes(2, 60s);
  const auto before = prism::cluster::link_counters();
  children_.front().kill_now();
  ASSERT_TRUE(children_.front().wait_exit(20s));
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(prism::get(last, 120s) == expected) << "the rebuilt value differs";
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("[ faults   ] a lost chain of 4 objects (1 MiB each) rebuilt and read in %.3f s\n",
              s);
  EXPECT_EQ(prism::cluster::link_counters().objects_rebuilt, before.objects_rebuilt + 4);
  try {
    prism::get(unretried, 60s);
    FAIL() << "a result whose task may not run again was read after its node died";
  } catch (const prism::ObjectLostError& e) {
    EXPECT_EQ(e.code(), prism::ErrorCode::kUnavailable);
    EXPECT_NE(std::string(e.what()).find("max_retries"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("node1"), std::string::npos) << e.what();
  }
  // A task reading the rebuilt value on the node left.
  EXPECT_EQ(prism::get(prism::task(shift_block).resource("a", 1).remote(last, 0), 60s), expected);
}

// The results of a num_returns task that stayed on a node that died are computed again one at
// a time, each when it is read: the node left keeps the one that was read, not its sibling.
TEST_F(FaultTest, ALostResultOfANumReturnsTaskIsComputedAgainAlone) {
  start(1, {{{"PRISM_RESOURCES", "a:1"}}});
  expect_clean_exit_ = false;
  constexpr uint64_t kBytes = 1 << 20;
  auto [first, second] =
      prism::task(two_blocks).num_returns<2>().resource("a", 1).remote(kBytes, 5u);
  ASSERT_EQ(prism::wait(std::vector{first, second}, 2, 60s).first.size(), 2u);
  add_node({{"PRISM_RESOURCES", "a:1"}});
  prism::wait_for_nodes(2, 60s);
  const auto before = prism::cluster::link_counters();
  children_.front().kill_now();
  ASSERT_TRUE(children_.front().wait_exit(20s));
  EXPECT_TRUE(prism::get(second, 120s) == make_block(kBytes + 1, 6)) << "the rebuilt value differs";
  EXPECT_EQ(prism::cluster::link_counters().objects_rebuilt, before.objects_rebuilt + 1);
  EXPECT_EQ(prism::get(prism::task(primaries_here).resource("a", 1).remote(), 60s), 1u)
      << "the node left keeps more than the result that was read";
  EXPECT_TRUE(prism::get(first, 120s) == make_block(kBytes, 5)) << "the rebuilt value differs";
  EXPECT_EQ(prism::cluster::link_counters().objects_rebuilt, before.objects_rebuilt + 2);
  EXPECT_EQ(prism::get(prism::task(primaries_here).resource("a", 1).remote(), 60s), 2u);
}

// As above, but the lost chain is first needed by a task on the node left (which asks the
// driver for its argument), not by a get here.
TEST_F(FaultTest, ALostArgumentOfATaskIsComputedAgainFromItsLineage) {
  start(1, {{{"PRISM_RESOURCES", "a:1"}}});
  expect_clean_exit_ = false;
  constexpr uint64_t kBytes = 1 << 20;
  std::vector<uint8_t> expected = make_block(kBytes, 5);
  prism::ObjectRef<std::vector<uint8_t>> last;
  {
    auto x = prism::task(make_block).resource("a", 1).remote(kBytes, 5u);
    for (int k = 1; k <= 7; ++k) {
      x = prism::task(shift_block).resource("a", 1).remote(x, k);
      expected = shift_block(expected, k);
    }
    last = x;
  }
  ASSERT_EQ(prism::get(prism::task(shift_block).resource("a", 1).remote(last, 1), 60s),
            shift_block(expected, 1));
  add_node({{"PRISM_RESOURCES", "a:1"}});
  prism::wait_for_nodes(2, 60s);
  const auto before = prism::cluster::link_counters();
  children_.front().kill_now();
  EXPECT_EQ(prism::get(prism::task(shift_block).resource("a", 1).remote(last, 2), 120s),
            shift_block(expected, 2));
  EXPECT_EQ(prism::cluster::link_counters().objects_rebuilt, before.objects_rebuilt + 8);
}

// Case 6: a node whose object store is too small for the results it keeps: they go to files
// in its spill directory (PRISM_SPILL_DIR) and are read back when pulled, byte for byte; the
// node reports the spilled bytes; its directory is gone once it exits.
TEST_F(FaultTest, ResultsBeyondANodesStoreSpillToDiskAndComeBackIntact) {
  const std::string spill = job_dir_root_spill();
  start(1, {{{"PRISM_RESOURCES", "a:1"},
             {"PRISM_OBJECT_STORE_BYTES", std::to_string(4 << 20)},
             {"PRISM_SPILL_DIR", spill}}});
  constexpr uint64_t kBytes = 1 << 20;
  constexpr uint32_t kResults = 12;  // 12 MiB kept for the driver, in a 4 MiB store
  std::vector<prism::ObjectRef<std::vector<uint8_t>>> refs;
  for (uint32_t i = 0; i < kResults; ++i) {
    refs.push_back(prism::task(make_block).resource("a", 1).remote(kBytes, i));
  }
  ASSERT_EQ(prism::wait(refs, static_cast<int>(kResults), 60s).first.size(), kResults);
  // The node says what it spilled (its report comes each second while its counts change; one
  // sent while the results were still being made says less).
  constexpr uint64_t kMustSpill = (kResults - 4) * kBytes;
  uint64_t spilled = 0;
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (spilled < kMustSpill && std::chrono::steady_clock::now() < deadline) {
    for (const prism::NodeStats& n : prism::stats().nodes) {
      if (n.node != "node0") spilled = std::max<uint64_t>(spilled, n.spilled_bytes);
    }
    if (spilled < kMustSpill) std::this_thread::sleep_for(50ms);  // (another process's report)
  }
  EXPECT_GE(spilled, kMustSpill) << "the node did not spill what did not fit";
  const auto t0 = std::chrono::steady_clock::now();
  for (uint32_t i = 0; i < kResults; ++i) {
    EXPECT_TRUE(prism::get(refs[i], 60s) == make_block(kBytes, i)) << "result " << i << " changed";
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("[ faults   ] %u MiB kept in a 4 MiB store: %llu MiB spilled, all read back in "
              "%.3f s\n",
              kResults, static_cast<unsigned long long>(spilled >> 20), s);
  // The node's spill directory goes when it exits.
  prism::shutdown();
  ASSERT_TRUE(children_.front().wait_exit(30s));
  std::error_code ec;
  size_t left = 0;
  for (const auto& e : std::filesystem::recursive_directory_iterator(spill, ec)) {
    left += e.is_regular_file() ? 1 : 0;
  }
  EXPECT_EQ(left, 0u) << "spilled files left in " << spill;
}

// Case 3: the node holding actors dies. One with max_restarts(1) is built again on the other
// node (its constructor runs again with its original arguments: the state it had is gone), its
// handle and its name keep working, and a call in flight is sent again (max_task_retries); one
// with the default (0) dies: its calls fail with ActorDiedError. Past its restarts, the first
// dies too.
TEST_F(FaultTest, ActorsRestartUnderMaxRestartsAndDieWithout) {
  start(1, {{{"PRISM_RESOURCES", "vault:3"}}});
  expect_clean_exit_ = false;
  // All three on node1 (the only node that has "vault").
  auto kept = prism::actor<Tally>(100).resource("vault", 1).name("kept").max_restarts(1).remote();
  auto retried =
      prism::actor<Tally>(0).resource("vault", 1).max_restarts(1).max_task_retries(1).remote();
  auto mortal = prism::actor<Tally>(7).resource("vault", 1).remote();
  EXPECT_EQ(prism::get(kept.task(&Tally::add).remote(5), 60s), 105);
  EXPECT_EQ(prism::get(mortal.task(&Tally::add).remote(1), 60s), 8);
  const int victim_pid = prism::get(kept.task(&Tally::pid).remote(), 60s);
  const std::string victim_node = prism::get(kept.task(&Tally::where).remote(), 60s);
  ASSERT_EQ(prism::get(retried.task(&Tally::pid).remote(), 60s), victim_pid);
  ASSERT_EQ(prism::get(mortal.task(&Tally::pid).remote(), 60s), victim_pid);
  // A second node that can hold them.
  Child& second = add_node({{"PRISM_RESOURCES", "vault:3"}});
  prism::wait_for_nodes(2, 60s);
  // A call in flight on `retried` when node1 dies.
  auto in_flight = retried.task(&Tally::slow_add).remote(job_dir_, 2000);
  Child* victim = wait_for_mark(children_, job_dir_, "actor", 60s);
  ASSERT_NE(victim, nullptr) << "the call did not start";
  ASSERT_EQ(victim->pid(), victim_pid);
  const auto before = prism::cluster::link_counters();
  const auto t0 = std::chrono::steady_clock::now();
  victim->kill_now();
  ASSERT_TRUE(victim->wait_exit(20s));
  // (A call made before the driver saw the death would be in flight there, and fail with it.)
  ASSERT_TRUE(node_count_becomes(2, 20s)) << "the driver did not see node1 die";
  // Rebuilt from its constructor's arguments (100): the 5 it had is gone.
  EXPECT_EQ(prism::get(kept.task(&Tally::add).remote(1), 60s), 101);
  const double restart_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("[ faults   ] actor restarted and answered %.3f s after its node was killed\n",
              restart_s);
  EXPECT_NE(prism::get(kept.task(&Tally::where).remote(), 60s), victim_node);
  EXPECT_EQ(prism::get(kept.task(&Tally::pid).remote(), 60s), second.pid());
  // Found by name.
  EXPECT_EQ(prism::get(prism::get_actor<Tally>("kept").task(&Tally::add).remote(1), 60s), 102);
  // The call in flight ran again there, on the rebuilt state.
  EXPECT_EQ(prism::get(in_flight, 60s), 1000);
  EXPECT_EQ(prism::get(retried.task(&Tally::add).remote(1), 60s), 1001);
  // The mortal one is dead.
  EXPECT_THROW(prism::get(mortal.task(&Tally::add).remote(1), 60s), prism::ActorDiedError);
  EXPECT_EQ(prism::cluster::link_counters().actor_restarts, before.actor_restarts + 2);
  // Its one restart used, it dies with its second node.
  second.kill_now();
  ASSERT_TRUE(second.wait_exit(20s));
  ASSERT_TRUE(node_count_becomes(1, 20s)) << "the driver did not see node2 die";
  EXPECT_THROW(prism::get(kept.task(&Tally::add).remote(1), 60s), prism::ActorDiedError);
  EXPECT_EQ(prism::cluster::link_counters().actor_restarts, before.actor_restarts + 2);
}

// Case 3, with refs: an actor whose constructor takes an ObjectRef restarts too. The object
// stays while the actor may restart (the caller kept no ref of its own, and the constructor
// may not keep it either), is lent to the new node with the creation, and read there again;
// once the actor is gone it is freed.
TEST_F(FaultTest, AnActorWhoseConstructorTakesARefRestartsAndReadsItAgain) {
  start(1, {{{"PRISM_RESOURCES", "vault:3"}}});
  expect_clean_exit_ = false;
  const uint64_t n = 3 << 20;
  const uint64_t sum_kept = block_sum(make_block(n, 4)), sum_read = block_sum(make_block(n, 5));
  const uint64_t objects_before = prism::stats().objects.objects;
  {
    // One keeps the ref (its node borrows it throughout), one only reads it (its node's borrow
    // ends with its constructor: only the restart recipe keeps the value then).
    auto kept = prism::actor<Summer>(prism::put(make_block(n, 4)), true)
                    .resource("vault", 1)
                    .max_restarts(1)
                    .remote();
    auto read = prism::actor<Summer>(prism::put(make_block(n, 5)), false)
                    .resource("vault", 1)
                    .max_restarts(2)
                    .remote();
    EXPECT_EQ(prism::get(kept.task(&Summer::sum_again).remote(), 60s), sum_kept);
    EXPECT_EQ(prism::get(read.task(&Summer::sum).remote(), 60s), sum_read);
    EXPECT_EQ(prism::stats().objects.objects, objects_before + 2)
        << "a value an actor may need again was freed (or another one kept)";
    Child& first = children_.front();
    ASSERT_EQ(prism::get(kept.task(&Summer::pid).remote(), 60s), first.pid());
    ASSERT_EQ(prism::get(read.task(&Summer::pid).remote(), 60s), first.pid());
    Child& second = add_node({{"PRISM_RESOURCES", "vault:3"}});
    prism::wait_for_nodes(2, 60s);
    const auto before = prism::cluster::link_counters();
    first.kill_now();
    ASSERT_TRUE(first.wait_exit(20s));
    ASSERT_TRUE(node_count_becomes(2, 20s)) << "the driver did not see node1 die";
    // Built again on node2 from the same refs: their constructors read the values there.
    EXPECT_EQ(prism::get(kept.task(&Summer::sum).remote(), 60s), sum_kept);
    EXPECT_EQ(prism::get(kept.task(&Summer::sum_again).remote(), 60s), sum_kept);
    EXPECT_EQ(prism::get(read.task(&Summer::sum).remote(), 60s), sum_read);
    EXPECT_EQ(prism::get(kept.task(&Summer::pid).remote(), 60s), second.pid());
    EXPECT_EQ(prism::get(read.task(&Summer::pid).remote(), 60s), second.pid());
    EXPECT_EQ(prism::cluster::link_counters().actor_restarts, before.actor_restarts + 2);
    EXPECT_EQ(prism::stats().objects.objects, objects_before + 2)
        << "a value a restarted actor may need again was freed";
    prism::kill(kept);
    prism::kill(read);
  }
  // The actors gone (node2 released its borrow, the recipes let theirs go), the values are freed.
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (prism::stats().objects.objects != objects_before &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);  // (the node's release and the watchdog: no event here)
  }
  EXPECT_EQ(prism::stats().objects.objects, objects_before) << "a value outlived its actor";
  EXPECT_EQ(prism::cluster::object_stats().primary_objects, 0u)
      << "a copy kept for the borrowers outlived them";
}

// Case 3, called from nodes: a call that a task on another node made, in flight when the actor's
// node dies, is sent again to the restarted actor under max_task_retries (the driver relays it);
// without retries its caller gets a clear error saying so. The node is killed (its death seen
// by the network thread) or stopped past the heartbeat deadline (seen by the watchdog thread).
class RelayedActorCallsTest : public FaultTest, public ::testing::WithParamInterface<bool> {};

TEST_P(RelayedActorCallsTest, AreRetriedOnTheRestartedActor) {
  const bool stop = GetParam();
  if (stop) setenv("PRISM_HEARTBEAT_TIMEOUT", "2", 1);  // (the nodes inherit it)
  start(1, {{{"PRISM_RESOURCES", "vault:2"}}, {{"PRISM_RESOURCES", "caller:2"}, {"PRISM_NUM_CPUS", "2"}}});
  expect_clean_exit_ = false;
  auto retried =
      prism::actor<Tally>(0).resource("vault", 1).max_restarts(1).max_task_retries(1).remote();
  auto once = prism::actor<Tally>(50).resource("vault", 1).max_restarts(1).remote();
  const int victim_pid = prism::get(retried.task(&Tally::pid).remote(), 60s);
  ASSERT_EQ(prism::get(once.task(&Tally::pid).remote(), 60s), victim_pid);
  Child& second = add_node({{"PRISM_RESOURCES", "vault:2"}});
  prism::wait_for_nodes(3, 60s);
  // From the caller node, one slow call to each, both in flight on node1 when it dies.
  std::filesystem::create_directories(job_dir_ + "/r");
  std::filesystem::create_directories(job_dir_ + "/o");
  auto from_retried =
      prism::task(slow_add_from).resource("caller", 1).remote(retried, job_dir_ + "/r", 2000);
  auto from_once =
      prism::task(slow_add_from).resource("caller", 1).remote(once, job_dir_ + "/o", 2000);
  Child* victim = wait_for_mark(children_, job_dir_ + "/r", "actor", 60s);
  ASSERT_NE(victim, nullptr) << "the call to the retried actor did not start";
  ASSERT_EQ(wait_for_mark(children_, job_dir_ + "/o", "actor", 60s), victim);
  ASSERT_EQ(victim->pid(), victim_pid);
  const auto before = prism::cluster::link_counters();
  const auto t0 = std::chrono::steady_clock::now();
  if (stop) {
    ASSERT_EQ(kill(victim->pid(), SIGSTOP), 0);
  } else {
    victim->kill_now();
    ASSERT_TRUE(victim->wait_exit(20s));
  }
  // Ran again on the rebuilt actor (state 0 + 1000), on the second node.
  EXPECT_EQ(prism::get(from_retried, 60s), "value 1000");
  std::printf("[ faults   ] a call from a node answered by the restarted actor %.3f s after its "
              "node was %s\n",
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
              stop ? "stopped (2 s deadline)" : "killed");
  EXPECT_EQ(prism::get(retried.task(&Tally::pid).remote(), 60s), second.pid());
  EXPECT_EQ(prism::get(retried.task(&Tally::add).remote(1), 60s), 1001)
      << "the retried call ran more than once, or not on the rebuilt state";
  // Without max_task_retries the call is not sent again; its caller is told so.
  const std::string lost = prism::get(from_once, 60s);
  EXPECT_EQ(lost.rfind("other error: ", 0), 0u) << lost;  // (the actor lives on: not died)
  EXPECT_NE(lost.find("max_task_retries"), std::string::npos) << lost;
  // The actor itself was restarted, and later calls reach it.
  EXPECT_EQ(prism::get(once.task(&Tally::add).remote(1), 60s), 51);
  EXPECT_GE(prism::cluster::link_counters().actor_restarts, before.actor_restarts + 2);
  if (stop) {
    EXPECT_EQ(prism::cluster::link_counters().declared_dead, before.declared_dead + 1);
    // Woken, it is fenced: it exits, and its late results (both calls' ends) change nothing.
    ASSERT_EQ(kill(victim->pid(), SIGCONT), 0);
    ASSERT_TRUE(victim->wait_exit(30s)) << "the fenced node did not exit";
    EXPECT_EQ(victim->exit_status(), 1);
    EXPECT_EQ(prism::get(retried.task(&Tally::add).remote(1), 60s), 1002);
  }
}

INSTANTIATE_TEST_SUITE_P(Faults, RelayedActorCallsTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? std::string("NodeStopped")
                                             : std::string("NodeKilled");
                         });

TEST(FaultOptions, NegativeRestartCountsAreRefused) {
  prism::Runtime rt({.num_cpus = 1});
  EXPECT_THROW(rt.actor<Tally>(1).max_restarts(-2).remote(), prism::Error);
  EXPECT_THROW(rt.actor<Tally>(1).max_task_retries(-2).remote(), prism::Error);
  EXPECT_THROW(rt.task(leaf).max_retries(-2).remote(1, 0), prism::Error);
  // Embedded mode: the options are kept, and the actor works.
  auto a = rt.actor<Tally>(1).max_restarts(-1).max_task_retries(-1).remote();
  EXPECT_EQ(prism::get(a.task(&Tally::add).remote(2), 60s), 3);
}

// Case 4: the driver is killed: its node exits (a peer error, no timer needed).
TEST(FaultDriverDeath, NodesExitWhenTheDriverIsKilled) {
  const std::string dir = prism_test::fresh_job_dir("driver-death");
  Child driver(prism_test::self_exe(), {{"PRISM_TEST_DRIVER", "1"}, {"PRISM_JOB_DIR", dir}});
  ASSERT_TRUE(driver.started());
  ASSERT_TRUE(prism_test::wait_for_file(dir + "/address", 60s)) << "the driver did not start";
  Child node(prism_test::self_exe(), {{"PRISM_ADDRESS", prism_test::read_file_line(dir + "/address")},
                                      {"PRISM_TOKEN_FILE", dir + "/token"},
                                      {"PRISM_NUM_CPUS", "1"}});
  ASSERT_TRUE(prism_test::wait_for_file(dir + "/ready", 60s)) << "the node did not join";
  driver.kill_now();
  ASSERT_TRUE(driver.wait_exit(20s));
  ASSERT_TRUE(node.wait_exit(20s)) << "the node outlived its driver";
  EXPECT_EQ(node.exit_status(), 1) << "a node that lost its driver exits with status 1";
}

// Case 4, stopped instead of killed: its connections stay open, so only the silence shows; the
// node declares the driver dead past the deadline and exits.
TEST(FaultDriverDeath, NodesExitWhenTheDriverStopsAnswering) {
  const std::string dir = prism_test::fresh_job_dir("driver-stop");
  Child driver(prism_test::self_exe(), {{"PRISM_TEST_DRIVER", "1"}, {"PRISM_JOB_DIR", dir},
                                        {"PRISM_HEARTBEAT_TIMEOUT", "2"}});
  ASSERT_TRUE(driver.started());
  ASSERT_TRUE(prism_test::wait_for_file(dir + "/address", 60s)) << "the driver did not start";
  Child node(prism_test::self_exe(), {{"PRISM_ADDRESS", prism_test::read_file_line(dir + "/address")},
                                      {"PRISM_TOKEN_FILE", dir + "/token"},
                                      {"PRISM_NUM_CPUS", "1"},
                                      {"PRISM_HEARTBEAT_TIMEOUT", "2"}});
  ASSERT_TRUE(prism_test::wait_for_file(dir + "/ready", 60s)) << "the node did not join";
  ASSERT_EQ(kill(driver.pid(), SIGSTOP), 0);
  const auto t0 = std::chrono::steady_clock::now();
  const bool exited = node.wait_exit(30s);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  kill(driver.pid(), SIGKILL);  // (a stopped process dies of SIGKILL too)
  ASSERT_TRUE(driver.wait_exit(20s));
  ASSERT_TRUE(exited) << "the node outlived its stopped driver";
  EXPECT_EQ(node.exit_status(), 1);
  std::printf("[ faults   ] driver stopped: its node exited after %.2f s (2 s deadline)\n", s);
}

// The owner of borrowed objects dies (DESIGN §3): refs to what it owned fail with
// OwnerDiedError where they are read (the driver, and a node the driver lent them on to), a
// pending one as soon as the death is known; a value read before the death stays readable.
TEST_F(FaultTest, RefsWhoseOwnerDiedFailWithOwnerDiedError) {
  start(1, {{{"PRISM_RESOURCES", "a:1"}, {"PRISM_NESTED_SPILL", "0"}},
            {{"PRISM_RESOURCES", "b:1"}}});
  expect_clean_exit_ = false;
  constexpr uint64_t kBytes = 1 << 20;
  using Ref = prism::ObjectRef<std::vector<uint8_t>>;
  const std::string owner = prism::get(prism::task(node_name).resource("a", 1).remote(), 60s);
  {
    const Ref unread = prism::get(prism::task(put_block).resource("a", 1).remote(kBytes, 1u), 60s);
    const Ref read = prism::get(prism::task(put_block).resource("a", 1).remote(kBytes, 2u), 60s);
    EXPECT_TRUE(prism::get(read, 60s) == make_block(kBytes, 2));
    const Ref pending =
        prism::get(prism::task(block_made_here).resource("a", 1).remote(kBytes, 3u, 60000), 60s);
    EXPECT_FALSE(pending.is_ready());
    // A task on the other node waits for the pending one (lent on to it by the driver).
    auto waiter = prism::task(read_borrowed).resource("b", 1).max_retries(0).remote(pending);

    children_.front().kill_now();
    ASSERT_TRUE(children_.front().wait_exit(20s));
    ASSERT_TRUE(node_count_becomes(2, 30s)) << "the driver did not see " << owner << " die";

    for (const Ref* r : {&unread, &pending}) {
      try {
        prism::get(*r, 30s);
        FAIL() << "a value whose owner died was read";
      } catch (const prism::OwnerDiedError& e) {
        EXPECT_EQ(e.code(), prism::ErrorCode::kUnavailable) << e.what();
        EXPECT_NE(std::string(e.what()).find(owner), std::string::npos) << e.what();
      }
    }
    EXPECT_TRUE(prism::get(read, 60s) == make_block(kBytes, 2)) << "a value already here was lost";
    const std::string there = prism::get(waiter, 60s);
    EXPECT_EQ(there.rfind("OwnerDiedError: ", 0), 0u) << there;
  }
  // Nothing of the dead node's stays lent or borrowed once the refs go (node2's release of the
  // ref lent on to it may still be on its way: bounded poll).
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  auto s = prism::cluster::object_stats();
  while ((s.lent_refs != 0 || s.borrowed_refs != 0) &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
    s = prism::cluster::object_stats();
  }
  EXPECT_EQ(s.lent_refs, 0u);
  EXPECT_EQ(s.borrowed_refs, 0u);
}

// Memory pressure on a node that reads: its secondary copies (values pulled from another node)
// are let go, least recently used first, before any primary copy is spilled; a reader that
// later asks that node for one it let go gets it from elsewhere (here: its producer is dead,
// so it is computed again from its lineage on a node that joins).
TEST_F(FaultTest, SecondaryCopiesAreEvictedBeforeAnythingSpills) {
  const std::string spill = job_dir_root_spill();
  start(1, {{{"PRISM_RESOURCES", "a:1"}},
            {{"PRISM_RESOURCES", "b:1"},
             {"PRISM_OBJECT_STORE_BYTES", std::to_string(4 << 20)},
             {"PRISM_SPILL_DIR", spill}}});
  expect_clean_exit_ = false;
  constexpr uint64_t kBytes = 1 << 20;
  constexpr uint32_t kValues = 8;  // 8 MiB read on a node of 4 MiB
  std::vector<prism::ObjectRef<std::vector<uint8_t>>> refs;
  for (uint32_t i = 0; i < kValues; ++i) {
    refs.push_back(prism::task(make_block).resource("a", 1).remote(kBytes, i + 100));
  }
  for (uint32_t i = 0; i < kValues; ++i) {
    EXPECT_EQ(prism::get(prism::task(block_sum).resource("b", 1).remote(refs[i]), 60s),
              block_sum(make_block(kBytes, i + 100)));
  }
  const std::vector<uint64_t> b =
      prism::get(prism::task(copies_here).resource("b", 1).remote(), 60s);
  EXPECT_LE(b[0], 4u) << "secondary copies beyond the node's store";
  EXPECT_GE(b[1], kValues - 4) << "evicted";
  EXPECT_EQ(b[2], 0u) << "a node that could evict spilled instead";
  std::printf("[ faults   ] %u MiB read on a 4 MiB node: %llu copies kept, %llu evicted, %llu "
              "spilled\n",
              kValues, static_cast<unsigned long long>(b[0]),
              static_cast<unsigned long long>(b[1]), static_cast<unsigned long long>(b[2]));

  // The producer dies: node b's copies are the only ones left, some of them let go.
  add_node({{"PRISM_RESOURCES", "a:1"}});
  prism::wait_for_nodes(3, 60s);
  const auto before = prism::cluster::link_counters();
  children_.front().kill_now();
  ASSERT_TRUE(children_.front().wait_exit(20s));
  ASSERT_TRUE(node_count_becomes(3, 30s));
  for (uint32_t i = 0; i < kValues; ++i) {
    EXPECT_TRUE(prism::get(refs[i], 60s) == make_block(kBytes, i + 100)) << "value " << i;
  }
  // Those node b kept came from it; those it had let go (it said so when asked) were rebuilt.
  EXPECT_EQ(prism::cluster::link_counters().objects_rebuilt, before.objects_rebuilt + b[1]);
}

}  // namespace

int main(int argc, char** argv) { return prism_test::cluster_test_main(argc, argv); }
