// prism::stats() and prism::errors() in embedded mode: tasks counted in each state while they
// are held there by gates, failures kept with their cause (cascades left out) and bounded, the
// object store and the node's resources; and TaskCounters driven directly from many threads.

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "core/test_util.h"
#include "observability/task_counters.h"
#include "prism/prism.h"

namespace {

using prism_test::Gate;
using prism_test::kTimeout;

// Reads stats until `pred` holds (counts move as tasks start and finish), for at most kTimeout.
template <typename Pred>
prism::Stats stats_when(prism::Runtime& rt, Pred pred) {
  const auto deadline = std::chrono::steady_clock::now() + kTimeout;
  prism::Stats s = rt.stats();
  while (!pred(s) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::yield();
    s = rt.stats();
  }
  return s;
}

TEST(StatsTest, TasksAreCountedInEachState) {
  prism::Runtime rt({.num_cpus = 1});
  Gate release;
  Gate started;
  // Running: holds the only CPU until released.
  auto blocker = rt.task([release, started]() mutable {
                   started.open();
                   return release.wait() ? 1 : 0;
                 }).remote();
  ASSERT_TRUE(started.wait());
  // Waiting for their argument (the blocker's result), and for a CPU.
  std::vector<prism::ObjectRef<int>> after, queued;
  for (int i = 0; i < 3; ++i) after.push_back(rt.task([](int x) { return x + 1; }).remote(blocker));
  for (int i = 0; i < 5; ++i) queued.push_back(rt.task([] { return 2; }).remote());
  const prism::Stats held = stats_when(rt, [](const prism::Stats& s) {
    return s.tasks.running == 1 && s.tasks.waiting_for_arguments == 3 &&
           s.tasks.waiting_for_resources == 5;
  });
  EXPECT_EQ(held.tasks.submitted, 9u);
  EXPECT_EQ(held.tasks.running, 1u);
  EXPECT_EQ(held.tasks.waiting_for_arguments, 3u);
  EXPECT_EQ(held.tasks.waiting_for_resources, 5u);
  EXPECT_EQ(held.tasks.done, 0u);
  EXPECT_EQ(held.tasks.failed, 0u);
  EXPECT_EQ(held.tasks.on_other_nodes, 0u);

  release.open();
  for (auto& r : after) EXPECT_EQ(prism::get(r, kTimeout), 2);
  for (auto& r : queued) EXPECT_EQ(prism::get(r, kTimeout), 2);
  const prism::Stats end = stats_when(rt, [](const prism::Stats& s) { return s.tasks.done == 9; });
  EXPECT_EQ(end.tasks.done, 9u);
  EXPECT_EQ(end.tasks.running, 0u);
  EXPECT_EQ(end.tasks.waiting_for_arguments, 0u);
  EXPECT_EQ(end.tasks.waiting_for_resources, 0u);
  EXPECT_GE(end.threads, 1);
}

TEST(StatsTest, FailuresAreKeptWithTheirCauseAndCascadesAreNot) {
  prism::Runtime rt({.num_cpus = 2});
  const auto before = std::chrono::system_clock::now();
  auto bad = rt.task([]() -> int { throw std::runtime_error("boom"); }).name("exploder").remote();
  auto dependent = rt.task([](int x) { return x; }).name("dependent").remote(bad);
  EXPECT_THROW(prism::get(dependent, kTimeout), prism::TaskError);
  const prism::Stats s = stats_when(rt, [](const prism::Stats& x) { return x.tasks.failed == 2; });
  EXPECT_EQ(s.tasks.failed, 2u) << "the task and its dependent both failed";
  const std::vector<prism::TaskFailure> errors = rt.errors();
  ASSERT_EQ(errors.size(), 1u) << "only the root cause is kept";
  const prism::TaskFailure& f = errors.front();
  EXPECT_EQ(f.function, "exploder");
  EXPECT_EQ(f.type, "std::runtime_error");
  EXPECT_EQ(f.message, "boom");
  EXPECT_EQ(f.node, rt.node_id());
  EXPECT_FALSE(f.task.is_nil());
  EXPECT_GE(f.time, before);
  EXPECT_LE(f.time, std::chrono::system_clock::now());

  // A cancelled task is kept as well, with Prism's error type.
  Gate hold;
  auto blocker = rt.task([hold] { return hold.wait() ? 1 : 0; }).remote();
  auto waiting = rt.task([](int x) { return x; }).name("cancelled_one").remote(blocker);
  prism::cancel(waiting);
  hold.open();
  EXPECT_EQ(prism::get(blocker, kTimeout), 1);
  EXPECT_THROW(prism::get(waiting, kTimeout), prism::TaskCancelledError);
  const auto later = [&rt] {
    const auto deadline = std::chrono::steady_clock::now() + kTimeout;
    std::vector<prism::TaskFailure> e = rt.errors();
    while (e.size() < 2 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::yield();
      e = rt.errors();
    }
    return e;
  }();
  ASSERT_EQ(later.size(), 2u);
  EXPECT_EQ(later.back().function, "cancelled_one");
  EXPECT_EQ(later.back().type, "prism::TaskCancelledError");
}

TEST(StatsTest, ErrorsKeepTheMostRecentOnly) {
  prism::Runtime rt({.num_cpus = 2});
  const size_t n = prism::kMaxErrorsKept + 100;
  // One at a time, so that the order of the failures is known.
  for (size_t i = 0; i < n; ++i) {
    auto r = rt.task([i]() -> int { throw std::runtime_error(std::to_string(i)); }).remote();
    EXPECT_ANY_THROW(prism::get(r, kTimeout));
  }
  const std::vector<prism::TaskFailure> errors = rt.errors();
  ASSERT_EQ(errors.size(), prism::kMaxErrorsKept);
  EXPECT_EQ(rt.stats().tasks.failed, n);
  // The oldest 100 were dropped; the rest are kept in order.
  for (size_t k = 0; k < errors.size(); ++k) {
    ASSERT_EQ(errors[k].message, std::to_string(n - prism::kMaxErrorsKept + k));
  }
}

TEST(StatsTest, ObjectStoreAndNodeResources) {
  prism::Runtime rt({.num_cpus = 2, .memory = int64_t{1} << 30, .resources = {{"disk", 3}}});
  auto big = rt.put(std::vector<uint8_t>(1 << 20, 7));
  const prism::Stats s = rt.stats();
  EXPECT_GE(s.objects.objects, 1u);
  EXPECT_GE(s.objects.primary_bytes, uint64_t{1} << 20);
  EXPECT_GT(s.objects.capacity_bytes, 0u);
  EXPECT_EQ(s.objects.secondary_bytes, 0u);
  EXPECT_EQ(s.objects.spilled_bytes, 0u);
  ASSERT_EQ(s.nodes.size(), 1u);
  EXPECT_EQ(s.nodes[0].node, rt.node_id());
  EXPECT_EQ(s.nodes[0].total.at("CPU"), 2.0);
  EXPECT_EQ(s.nodes[0].total.at("disk"), 3.0);
  EXPECT_EQ(s.nodes[0].available.at("disk"), 3.0);
  EXPECT_EQ(s.transfers.node_pulls, 0u);
}

// ---- TaskCounters, driven directly ----

TEST(TaskCountersTest, SumsAreExactWithMoreThreadsThanShards) {
  prism::internal::TaskCounters counters;
  constexpr int kThreads = prism::internal::TaskCounters::kShards + 16;  // overflow shard too
  constexpr int kEach = 2000;
  std::atomic<int> go{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      go.fetch_add(1);
      while (go.load() < kThreads) std::this_thread::yield();  // all alive at once
      for (int i = 0; i < kEach; ++i) {
        counters.add(prism::internal::TaskCounters::kSubmitted);
        if (i % 2 == 0) counters.add(prism::internal::TaskCounters::kDone);
      }
    });
  }
  for (auto& th : threads) th.join();
  const auto sum = counters.sum();
  EXPECT_EQ(sum[prism::internal::TaskCounters::kSubmitted], uint64_t{kThreads} * kEach);
  EXPECT_EQ(sum[prism::internal::TaskCounters::kDone], uint64_t{kThreads} * kEach / 2);
  EXPECT_EQ(sum[prism::internal::TaskCounters::kFailedRunning], 0u);
  // Shards of exited threads are reused by new ones, and their counts stay.
  std::thread([&] { counters.add(prism::internal::TaskCounters::kReady); }).join();
  EXPECT_EQ(counters.sum()[prism::internal::TaskCounters::kReady], 1u);
  EXPECT_EQ(counters.sum()[prism::internal::TaskCounters::kSubmitted], uint64_t{kThreads} * kEach);
}

}  // namespace
