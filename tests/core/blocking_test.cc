// Tasks blocked in get()/wait(), end to end: nesting of any depth without a thread per blocked
// task, no over-subscription when a blocked task resumes, CPU lent by actors and GPU tasks (to
// tasks only), waiting requests that are neither hidden behind others nor starved by them, and a
// stress of actor calls with nested tasks mixed with plain tasks.

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <deque>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "api/runtime_core.h"
#include "prism/prism.h"
#include "test_util.h"

namespace {

using prism_test::ConcurrencyTracker;
using prism_test::Gate;
using prism_test::kTimeout;

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif

int threads_in_process() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("Threads:", 0) == 0) return std::stoi(line.substr(8));
  }
  return -1;
}

void busy_for(std::chrono::microseconds d) {
  const auto end = std::chrono::steady_clock::now() + d;
  while (std::chrono::steady_clock::now() < end) {
  }
}

int blk_fib(int n) {
  if (n < 2) return n;
  auto a = prism::task(blk_fib).remote(n - 1);
  auto b = prism::task(blk_fib).remote(n - 2);
  return prism::get(a, kTimeout) + prism::get(b, kTimeout);
}

int blk_depth(int depth) {
  if (depth == 0) return 0;
  return prism::get(prism::task(blk_depth).remote(depth - 1), kTimeout) + 1;
}

// Each level's child asks for both CPUs: it never fits in what its parent holds, so it cannot be
// run inline; the parent must lend its CPU (and, at the thread cap, help).
int blk_wide_depth(int depth) {
  if (depth == 0) return 0;
  return prism::get(prism::task(blk_wide_depth).num_cpus(2).remote(depth - 1), kTimeout) + 1;
}

int blk_twice(int x) { return 2 * x; }

int blk_parent_of_two(int x) {
  auto a = prism::task(blk_twice).remote(x);
  auto b = prism::task(blk_twice).remote(x + 1);
  return prism::get(a, kTimeout) + prism::get(b, kTimeout);
}

// Tasks with a fractional request run from their shape's queue under leases.
int blk_half_fib(int n) {
  if (n < 2) return n;
  auto a = prism::task(blk_half_fib).num_cpus(0.5).remote(n - 1);
  auto b = prism::task(blk_half_fib).num_cpus(0.5).remote(n - 2);
  return prism::get(a, kTimeout) + prism::get(b, kTimeout);
}

int blk_inc(int x) { return x + 1; }

// get(c) runs c inline on this lease's thread; d becomes ready as c completes, on this thread,
// which then blocks on e (after d) instead of running d next.
int blk_half_parent(int x) {
  auto c = prism::task(blk_inc).num_cpus(0.5).remote(x);
  auto d = prism::task(blk_inc).num_cpus(0.5).remote(c);
  auto e = prism::task(blk_inc).remote(d);
  return prism::get(c, kTimeout) + prism::get(e, kTimeout);
}

PRISM_REMOTE(blk_fib, blk_depth, blk_wide_depth, blk_twice, blk_parent_of_two, blk_half_fib,
             blk_inc, blk_half_parent);

int scheduler_threads(prism::Runtime& rt) { return rt.core()->scheduler().thread_count(); }

// ---- nesting without a thread per blocked task ----

TEST(BlockingTest, NestedFib25OnTwoCpusUsesAtMost64Threads) {
  prism::Runtime rt({.num_cpus = 2});
  EXPECT_EQ(prism::get(rt.task(blk_fib).remote(25), kTimeout), 75025);
  // Worker threads only exit at shutdown: what exists now is the peak.
  EXPECT_LE(threads_in_process(), 64) << scheduler_threads(rt) << " worker threads";
}

TEST(BlockingTest, NestedFib10WithOneCpuAndOneThread) {
  prism::Runtime rt({.num_cpus = 1, .max_threads = 1});
  EXPECT_EQ(prism::get(rt.task(blk_fib).remote(10), kTimeout), 55);
  EXPECT_EQ(scheduler_threads(rt), 1);
}

TEST(BlockingTest, DeepChainWithOneThread) {
  prism::Runtime rt({.num_cpus = 1, .max_threads = 1});
  EXPECT_EQ(prism::get(rt.task(blk_depth).remote(300), kTimeout), 300);
}

TEST(BlockingTest, ChildrenThatCannotRunInlineWithTheThreadCapReached) {
  for (int max_threads : {1, 2, 3}) {
    SCOPED_TRACE(std::to_string(max_threads) + " threads");
    prism::Runtime rt({.num_cpus = 2, .max_threads = max_threads});
    EXPECT_EQ(prism::get(rt.task(blk_wide_depth).num_cpus(2).remote(20), kTimeout), 20);
    EXPECT_LE(scheduler_threads(rt), max_threads);
  }
}

TEST(BlockingTest, ManyBlockedParentsWithFewThreads) {
  for (int max_threads : {1, 2, 4}) {
    SCOPED_TRACE(std::to_string(max_threads) + " threads");
    prism::Runtime rt({.num_cpus = 2, .max_threads = max_threads});
    std::vector<prism::ObjectRef<int>> parents;
    for (int i = 0; i < 100; ++i) parents.push_back(rt.task(blk_parent_of_two).remote(i));
    const std::vector<int> values = prism::get(parents, kTimeout);
    for (int i = 0; i < 100; ++i) ASSERT_EQ(values[i], 4 * i + 2);
  }
}

TEST(BlockingTest, WaitInsideATaskRunsTheChildrenItWaitsFor) {
  prism::Runtime rt({.num_cpus = 1, .max_threads = 1});
  auto r = rt.task([] {
               std::vector<prism::ObjectRef<int>> refs;
               for (int i = 0; i < 10; ++i) refs.push_back(prism::task(blk_twice).remote(i));
               auto [ready, rest] = prism::wait(refs, refs.size(), kTimeout);
               return static_cast<int>(ready.size());
             }).remote();
  EXPECT_EQ(prism::get(r, kTimeout), 10);
}

TEST(BlockingTest, NestedFractionalTasksWithFewThreads) {
  for (int max_threads : {1, 2, 64}) {
    SCOPED_TRACE(std::to_string(max_threads) + " threads");
    prism::Runtime rt({.num_cpus = 1, .max_threads = max_threads});
    EXPECT_EQ(prism::get(rt.task(blk_half_fib).num_cpus(0.5).remote(14), kTimeout), 377);
    EXPECT_LE(scheduler_threads(rt), max_threads);
  }
}

TEST(BlockingTest, ALeaseHolderBlockedAfterAnInlineChildLeavesItsShapeToOthers) {
  for (int max_threads : {1, 4}) {
    SCOPED_TRACE(std::to_string(max_threads) + " threads");
    prism::Runtime rt({.num_cpus = 1, .max_threads = max_threads});
    EXPECT_EQ(prism::get(rt.task(blk_half_parent).num_cpus(0.5).remote(1), kTimeout), 2 + 4);
  }
}

// ---- no over-subscription ----

TEST(BlockingTest, NeverMoreCpuTasksThanCpusWhenABlockedTaskResumes) {
  prism::Runtime rt({.num_cpus = 1});
  ConcurrencyTracker cpu_tasks;  // tasks holding a CPU, counted while they hold it
  Gate child_started, release_child, first_busy_ran;
  auto parent = rt.task([=] {
                  prism::ObjectRef<int> child;
                  {
                    ConcurrencyTracker::Scope s(cpu_tasks);
                    // A zero-CPU child, running (not queued) when the parent blocks on it.
                    child = prism::task([=] {
                              child_started.open();
                              return release_child.wait() ? 1 : -1;
                            }).num_cpus(0).remote();
                    if (!child_started.wait()) return -2;
                  }
                  const int v = prism::get(child, kTimeout);  // lends the CPU meanwhile
                  ConcurrencyTracker::Scope s(cpu_tasks);    // holds it again from here
                  busy_for(std::chrono::microseconds(500));
                  return v;
                }).remote();
  ASSERT_TRUE(child_started.wait());
  std::vector<prism::ObjectRef<int>> busy;
  for (int i = 0; i < 200; ++i) {
    busy.push_back(rt.task([=] {
                       ConcurrencyTracker::Scope s(cpu_tasks);
                       first_busy_ran.open();
                       busy_for(std::chrono::microseconds(50));
                       return i;
                     }).remote());
  }
  // The busy tasks run on the CPU the parent lent; let the parent go on while they do.
  ASSERT_TRUE(first_busy_ran.wait());
  release_child.open();
  EXPECT_EQ(prism::get(parent, kTimeout), 1);
  const std::vector<int> values = prism::get(busy, kTimeout);
  for (int i = 0; i < 200; ++i) ASSERT_EQ(values[i], i);
  EXPECT_EQ(cpu_tasks.max(), 1);
}

// ---- lending by actors and GPU tasks ----

struct BlkHolder {
  int nested(int x) { return prism::get(prism::task(blk_twice).remote(x), kTimeout); }
  // The child asks for resource "x", which the actor does not hold: it cannot run inline.
  int nested_elsewhere(int x) {
    return prism::get(prism::task(blk_twice).resource("x", 1).remote(x), kTimeout);
  }
  int wait_for(const prism::ObjectRef<int>& r) { return prism::get(r, kTimeout); }
  int ping() { return 1; }
};
PRISM_ACTOR(BlkHolder, &BlkHolder::nested, &BlkHolder::nested_elsewhere, &BlkHolder::wait_for,
            &BlkHolder::ping);

struct BlkBuilt {
  explicit BlkBuilt(std::shared_ptr<std::atomic<bool>> flag) { flag->store(true); }
  int ping() { return 2; }
};
PRISM_ACTOR(BlkBuilt, &BlkBuilt::ping);

TEST(BlockingTest, ActorHoldingTheOnlyCpuGetsNestedTasks) {
  prism::Runtime rt({.num_cpus = 1, .resources = {{"x", 1}}});
  auto actor = rt.actor<BlkHolder>().num_cpus(1).remote();
  EXPECT_EQ(prism::get(actor.task(&BlkHolder::nested).remote(4), kTimeout), 8);
  // This child runs on the CPU the blocked method lends (it cannot run inside the actor).
  EXPECT_EQ(prism::get(actor.task(&BlkHolder::nested_elsewhere).remote(5), kTimeout), 10);
  EXPECT_EQ(prism::get(actor.task(&BlkHolder::ping).remote(), kTimeout), 1);
}

TEST(BlockingTest, LentCpuIsNeverGivenToANewActor) {
  prism::Runtime rt({.num_cpus = 1});
  Gate release;
  auto a = rt.actor<BlkHolder>().num_cpus(1).remote();
  ASSERT_EQ(prism::get(a.task(&BlkHolder::ping).remote(), kTimeout), 1);
  auto child = rt.task([release] { return release.wait() ? 7 : -1; }).num_cpus(0).remote();
  auto blocked_call = a.task(&BlkHolder::wait_for).remote(child);  // lends the actor's CPU
  auto built = std::make_shared<std::atomic<bool>>(false);
  auto b = rt.actor<BlkBuilt>(built).num_cpus(1).remote();
  // A task may use the lent CPU ...
  EXPECT_EQ(prism::get(rt.task(blk_twice).remote(21), kTimeout), 42);
  // ... a new actor may not: it would keep it.
  EXPECT_FALSE(built->load());
  release.open();
  EXPECT_EQ(prism::get(blocked_call, kTimeout), 7);
  prism::kill(a);  // frees the CPU for good: now B is built
  EXPECT_EQ(prism::get(b.task(&BlkBuilt::ping).remote(), kTimeout), 2);
  EXPECT_TRUE(built->load());
}

TEST(BlockingTest, GpuTaskLendsItsCpuButKeepsItsGpu) {
  prism::Runtime rt({.num_cpus = 1, .num_gpus = 1, .resources = {{"x", 1}}});
  std::atomic<int> order{0};
  std::atomic<int> parent_end{-1}, second_start{-1};
  auto parent = rt.task([&] {
                  // Needs "x", which the GPU task does not hold: runs on the lent CPU.
                  const int v =
                      prism::get(prism::task(blk_twice).resource("x", 1).remote(3), kTimeout);
                  parent_end.store(order.fetch_add(1));
                  return v;
                }).num_gpus(1).remote();
  auto second = rt.task([&] {
                  second_start.store(order.fetch_add(1));
                  return prism::gpu_ids().size();
                }).num_gpus(1).num_cpus(0).remote();
  EXPECT_EQ(prism::get(parent, kTimeout), 6);
  EXPECT_EQ(prism::get(second, kTimeout), 1u);
  EXPECT_LT(parent_end.load(), second_start.load());  // the GPU was never lent
}

// ---- waiting requests ----

TEST(BlockingTest, AHalfCpuTaskIsNotHiddenBehindTasksWaitingForAGpu) {
  prism::Runtime rt({.num_cpus = 4, .num_gpus = 1});
  Gate release;
  auto holder = rt.task([release] { return release.wait() ? 1 : -1; })
                    .num_gpus(1)
                    .num_cpus(0.5)
                    .remote();
  std::vector<prism::ObjectRef<int>> gpu_waiters;
  for (int i = 0; i < 40; ++i) {
    gpu_waiters.push_back(rt.task([i] { return i; }).num_gpus(1).num_cpus(0).remote());
  }
  // 3.5 CPUs are free: the half-CPU task runs although 40 GPU tasks wait before it.
  EXPECT_EQ(prism::get(rt.task(blk_twice).num_cpus(0.5).remote(8), kTimeout), 16);
  release.open();
  EXPECT_EQ(prism::get(holder, kTimeout), 1);
  const std::vector<int> values = prism::get(gpu_waiters, kTimeout);
  for (int i = 0; i < 40; ++i) ASSERT_EQ(values[i], i);
}

// A stream of one-CPU tasks that never lets the ready queue run dry: each task submits its
// successor before it finishes, until the big task ran or a cap is reached.
struct BlkStream {
  std::atomic<bool> big_done{false};
  std::atomic<int> count{0};
  std::atomic<int> chains{0};
  Gate running;  // the stream has run a while: both CPUs are busy with it
  Gate all_chains_ended;
  static constexpr int kCap = 40000;
};

void blk_stream_step(const std::shared_ptr<BlkStream>& s) {
  busy_for(std::chrono::microseconds(20));
  const int n = s->count.fetch_add(1);
  if (n == 100) s->running.open();
  if (s->big_done.load() || n >= BlkStream::kCap) {
    if (s->chains.fetch_sub(1) == 1) s->all_chains_ended.open();
    return;
  }
  prism::task(blk_stream_step).remote(s);
}
PRISM_REMOTE(blk_stream_step);

TEST(BlockingTest, ATwoCpuTaskIsNotStarvedByAStreamOfOneCpuTasks) {
  prism::Runtime rt({.num_cpus = 2});
  auto stream = std::make_shared<BlkStream>();
  constexpr int kChains = 4;
  stream->chains.store(kChains);
  for (int i = 0; i < kChains; ++i) rt.task(blk_stream_step).remote(stream);
  ASSERT_TRUE(stream->running.wait());
  auto big = rt.task([stream] {
                 stream->big_done.store(true);
                 return stream->count.load();
               }).num_cpus(2).remote();
  const int seen = prism::get(big, kTimeout);
  EXPECT_LT(seen, BlkStream::kCap) << "the 2-CPU task only ran once the stream ran dry";
  ASSERT_TRUE(stream->all_chains_ended.wait());
}

// ---- stress: actor calls with nested tasks, mixed with plain tasks ----

struct BlkCounter {
  int64_t add_nested(int64_t k) {
    total += prism::get(prism::task(blk_twice).remote(static_cast<int>(k)), kTimeout);
    return total;
  }
  int64_t read() const { return total; }
  int64_t total = 0;
};
PRISM_ACTOR(BlkCounter, &BlkCounter::add_nested, &BlkCounter::read);

class BlockingStressTest : public ::testing::TestWithParam<int> {};

TEST_P(BlockingStressTest, ActorCallsWithNestedTasksMixedWithPlainTasks) {
  const int cpus = GetParam();
  const int iterations = kSanitized ? 20000 : 100000;
  constexpr int kClients = 4;
  prism::Runtime rt({.num_cpus = static_cast<double>(cpus)});
  std::vector<prism::ActorHandle<BlkCounter>> actors;
  actors.push_back(rt.actor<BlkCounter>().remote());
  actors.push_back(rt.actor<BlkCounter>().num_cpus(cpus == 2 ? 0.5 : 0).remote());
  std::vector<std::string> errors(kClients);
  std::vector<int64_t> sent(kClients * actors.size(), 0);
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      try {
        std::deque<prism::ObjectRef<int64_t>> calls;
        std::deque<std::pair<prism::ObjectRef<int>, int>> plain;
        for (int i = c; i < iterations; i += kClients) {
          const size_t a = static_cast<size_t>(i) % actors.size();
          calls.push_back(actors[a].task(&BlkCounter::add_nested).remote(1));
          sent[c * actors.size() + a] += 2;
          plain.emplace_back(rt.task(blk_twice).remote(i), 2 * i);
          if (calls.size() > 32) {
            prism::get(calls.front(), kTimeout);
            calls.pop_front();
          }
          if (plain.size() > 32) {
            if (prism::get(plain.front().first, kTimeout) != plain.front().second) {
              throw std::runtime_error("wrong value from a plain task");
            }
            plain.pop_front();
          }
        }
        for (auto& r : calls) prism::get(r, kTimeout);
        for (auto& [r, v] : plain) {
          if (prism::get(r, kTimeout) != v) throw std::runtime_error("wrong value");
        }
      } catch (const std::exception& e) {
        errors[c] = e.what();
      }
    });
  }
  for (auto& t : clients) t.join();
  for (int c = 0; c < kClients; ++c) EXPECT_EQ(errors[c], "") << "client " << c;
  for (size_t a = 0; a < actors.size(); ++a) {
    int64_t expected = 0;
    for (int c = 0; c < kClients; ++c) expected += sent[c * actors.size() + a];
    EXPECT_EQ(prism::get(actors[a].task(&BlkCounter::read).remote(), kTimeout), expected)
        << "actor " << a;
  }
}

INSTANTIATE_TEST_SUITE_P(Cpus, BlockingStressTest, ::testing::Values(1, 2),
                         prism_test::CpuParamName);

}  // namespace
