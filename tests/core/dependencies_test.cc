// Task graphs built from refs: chains, diamonds, deep chains, wide fan-in, failure propagation.

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <numeric>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "prism/prism.h"
#include "test_util.h"

namespace {

using prism_test::kTimeout;

int deps_inc(int x) { return x + 1; }
int deps_add(int a, int b) { return a + b; }
int deps_mul(int a, int b) { return a * b; }
int64_t deps_sum(const std::vector<int>& v) {
  return std::accumulate(v.begin(), v.end(), int64_t{0});
}
int deps_fail(int) { throw std::runtime_error("deps_fail failed"); }
PRISM_REMOTE(deps_inc, deps_add, deps_mul, deps_sum, deps_fail);

class DependenciesTest : public prism_test::CpuSweepTest {};

TEST_P(DependenciesTest, Chain) {
  auto a = prism::task(deps_add).remote(1, 2);   // 3
  auto b = prism::task(deps_mul).remote(a, 4);   // 12
  auto c = prism::task(deps_add).remote(b, a);   // 15
  auto d = prism::task(deps_inc).remote(c);      // 16
  EXPECT_EQ(prism::get(d, kTimeout), 16);
  EXPECT_EQ(prism::get(a, kTimeout), 3);
}

TEST_P(DependenciesTest, ChainSubmittedBeforeItsRootIsReady) {
  prism_test::Gate gate;
  auto root = prism::task([gate] { return gate.wait() ? 0 : -1000; }).remote();
  prism::ObjectRef<int> r = root;
  for (int i = 0; i < 100; ++i) r = prism::task(deps_inc).remote(r);
  EXPECT_FALSE(r.is_ready());
  gate.open();
  EXPECT_EQ(prism::get(r, kTimeout), 100);
}

// A chain submitted before its root is ready: each link becomes ready when the link before it
// publishes its result, on the thread that ran it, which runs it next (the hand-off) instead of
// queueing it for whichever thread comes. A link that blocks hands nothing off.
TEST_P(DependenciesTest, AChainsLinksAreHandedToTheThreadThatMadeTheirInput) {
  prism_test::Gate gate;
  auto root = prism::task([gate] { return gate.wait() ? 0 : -1000; }).remote();
  constexpr int kLinks = 200;
  prism::ObjectRef<int> r = root;
  for (int i = 0; i < kLinks; ++i) r = prism::task(deps_inc).remote(r);
  const uint64_t before = prism::stats().tasks.handed_off;
  gate.open();
  EXPECT_EQ(prism::get(r, kTimeout), kLinks);
  // Every link but those after kMaxHandOffs in a row (1 in 33): the root's result readies the
  // first link too.
  EXPECT_GE(prism::stats().tasks.handed_off - before, uint64_t{kLinks * 9 / 10});

  // A task that waits inside its body for tasks it submitted, whose results ready one another
  // (while it blocks, they run inline or on other threads): the chain still finishes.
  auto parent = prism::task([] {
    auto a = prism::task(deps_add).remote(1, 2);
    auto b = prism::task(deps_inc).remote(a);
    return prism::get(b, kTimeout) + prism::get(prism::task(deps_inc).remote(b), kTimeout);
  }).remote();
  EXPECT_EQ(prism::get(parent, kTimeout), 9);
}

// The same for tasks with a resource request: a lease of their shape runs each link after the
// one that made its input, on the same thread and grant, instead of queueing it for another
// lease.
TEST_P(DependenciesTest, AShapedChainsLinksAreHandedToTheLeaseThatMadeTheirInput) {
  prism_test::Gate gate;
  auto root = prism::task([gate] { return gate.wait() ? 0 : -1000; }).num_cpus(0.25).remote();
  constexpr int kLinks = 200;
  prism::ObjectRef<int> r = root;
  for (int i = 0; i < kLinks; ++i) r = prism::task(deps_inc).num_cpus(0.25).remote(r);
  const uint64_t before = prism::stats().tasks.handed_off;
  gate.open();
  EXPECT_EQ(prism::get(r, kTimeout), kLinks);
  EXPECT_GE(prism::stats().tasks.handed_off - before, uint64_t{kLinks * 9 / 10});
}

// A chain whose links ask for different resources (default, fractions of a CPU, half a GPU, a
// custom resource): a link handed to the thread that made its input runs only in a loop of its
// own request, so each runs under its own grant (a GPU link has its GPU; the link holding "x"
// sees none left; the others see it come free: the "x" lease that ran the link before gives it
// back when its loop ends, a few microseconds later, or never while it runs a link it was
// wrongly handed).
TEST(DependenciesMixedTest, AMixedChainRunsEachLinkUnderItsOwnRequest) {
  prism::Runtime rt({.num_cpus = 2, .num_gpus = 1, .resources = {{"x", 1}}});
  prism_test::Gate gate;
  std::atomic<int> wrong{0};
  auto check = [&wrong](bool gpu, bool x) {
    if (prism::gpu_ids().size() != (gpu ? 1u : 0u)) wrong.fetch_add(1);
    if (x) {
      if (prism::available_resources()["x"] != 0.0) wrong.fetch_add(1);
      return;
    }
    // (Polled: the lease's loop end has no event to wait on; bounded.)
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    while (prism::available_resources()["x"] != 1.0) {
      if (std::chrono::steady_clock::now() > give_up) {
        wrong.fetch_add(1);
        return;
      }
      std::this_thread::yield();
    }
  };
  prism::ObjectRef<int> r = rt.task([gate] { return gate.wait() ? 0 : -1000; }).remote();
  constexpr int kLinks = 100;
  for (int i = 0; i < kLinks; ++i) {
    auto link = [check](int v, bool gpu, bool x) {
      check(gpu, x);
      return v + 1;
    };
    switch ((i / 2) % 5) {  // (each twice in a row: the second is handed over)
      case 0: r = rt.task([link](int v) { return link(v, false, false); }).remote(r); break;
      case 1:
        r = rt.task([link](int v) { return link(v, false, false); }).num_cpus(0.25).remote(r);
        break;
      case 2:
        r = rt.task([link](int v) { return link(v, false, false); }).num_cpus(0.5).remote(r);
        break;
      case 3:
        r = rt.task([link](int v) { return link(v, true, false); })
                .num_gpus(0.5)
                .num_cpus(0)
                .remote(r);
        break;
      default:
        r = rt.task([link](int v) { return link(v, false, true); })
                .resource("x", 1)
                .num_cpus(0.25)
                .remote(r);
    }
  }
  gate.open();
  EXPECT_EQ(prism::get(r, kTimeout), kLinks);
  EXPECT_EQ(wrong.load(), 0);
}

// A chain of half-GPU tasks whose lease must yield (a whole-GPU task waits for the device): the
// task handed to the yielding lease is queued again, and both the chain and the task finish.
TEST(DependenciesMixedTest, AHandedTaskOfAYieldingLeaseStillRuns) {
  prism::Runtime rt({.num_cpus = 2, .num_gpus = 1});
  for (int round = 0; round < 5; ++round) {
    prism_test::Gate gate;
    prism::ObjectRef<int> r =
        rt.task([gate] { return gate.wait() ? 0 : -1000; }).num_gpus(0.5).num_cpus(0).remote();
    constexpr int kLinks = 300;
    for (int i = 0; i < kLinks; ++i) {
      r = rt.task([](int v) { return v + 1; }).num_gpus(0.5).num_cpus(0).remote(r);
    }
    gate.open();
    auto whole = rt.task([] { return static_cast<int>(prism::gpu_ids().size()); })
                     .num_gpus(1)
                     .num_cpus(0)
                     .remote();
    EXPECT_EQ(prism::get(whole, kTimeout), 1);
    EXPECT_EQ(prism::get(r, kTimeout), kLinks);
  }
}

TEST_P(DependenciesTest, Diamond) {
  auto top = prism::task(deps_add).remote(2, 3);        // 5
  auto left = prism::task(deps_mul).remote(top, 2);     // 10
  auto right = prism::task(deps_add).remote(top, 100);  // 105
  auto bottom = prism::task(deps_add).remote(left, right);
  EXPECT_EQ(prism::get(bottom, kTimeout), 115);
}

TEST_P(DependenciesTest, SameRefTwiceInOneCall) {
  auto a = prism::task(deps_add).remote(3, 4);
  EXPECT_EQ(prism::get(prism::task(deps_mul).remote(a, a), kTimeout), 49);
  std::vector<prism::ObjectRef<int>> same(10, a);
  EXPECT_EQ(prism::get(prism::task(deps_sum).remote(same), kTimeout), 70);
}

TEST_P(DependenciesTest, DeepChainOf10k) {
  constexpr int kDepth = 10000;
  prism::ObjectRef<int> r = prism::put(0);
  for (int i = 0; i < kDepth; ++i) r = prism::task(deps_inc).remote(r);
  EXPECT_EQ(prism::get(r, kTimeout), kDepth);
}

TEST_P(DependenciesTest, WideFanInOf10kIntoOneTask) {
  constexpr int kWidth = 10000;
  std::vector<prism::ObjectRef<int>> refs;
  refs.reserve(kWidth);
  for (int i = 0; i < kWidth; ++i) refs.push_back(prism::task(deps_add).remote(i, 0));
  auto total = prism::task(deps_sum).remote(refs);
  EXPECT_EQ(prism::get(total, kTimeout), int64_t{kWidth} * (kWidth - 1) / 2);
}

TEST_P(DependenciesTest, FanOutThenFanIn) {
  auto source = prism::task(deps_add).remote(1, 1);  // 2
  std::vector<prism::ObjectRef<int>> mids;
  for (int i = 0; i < 100; ++i) mids.push_back(prism::task(deps_mul).remote(source, i));
  EXPECT_EQ(prism::get(prism::task(deps_sum).remote(mids), kTimeout), 2 * 4950);
}

TEST_P(DependenciesTest, FailurePropagatesWithoutRunningDependents) {
  auto runs = std::make_shared<std::atomic<int>>(0);
  auto counted_inc = [runs](int x) {
    runs->fetch_add(1);
    return x + 1;
  };
  auto failed = prism::task(deps_fail).remote(1);
  auto b = prism::task(counted_inc).remote(failed);
  auto c = prism::task(counted_inc).remote(b);
  auto d = prism::task(deps_add).remote(c, 5);
  for (const auto& ref : {failed, b, c, d}) {
    try {
      prism::get(ref, kTimeout);
      ADD_FAILURE() << "a task downstream of a failure returned a value";
    } catch (const prism::TaskError& e) {
      // Dependents fail with the same error: it names the task that threw.
      EXPECT_EQ(e.function_name(), "deps_fail");
      EXPECT_EQ(e.message(), "deps_fail failed");
    }
  }
  EXPECT_EQ(runs->load(), 0);
}

TEST_P(DependenciesTest, FailureInOneBranchOfADiamond) {
  auto runs = std::make_shared<std::atomic<int>>(0);
  auto top = prism::task(deps_add).remote(1, 2);
  auto good = prism::task(deps_inc).remote(top);
  auto bad = prism::task(deps_fail).remote(top);
  auto bottom = prism::task([runs](int a, int b) {
                  runs->fetch_add(1);
                  return a + b;
                }).remote(good, bad);
  EXPECT_EQ(prism::get(good, kTimeout), 4);
  EXPECT_THROW(prism::get(bottom, kTimeout), prism::TaskError);
  EXPECT_EQ(runs->load(), 0);
}

TEST_P(DependenciesTest, FailureInAFanInFailsTheJoin) {
  auto runs = std::make_shared<std::atomic<int>>(0);
  std::vector<prism::ObjectRef<int>> refs;
  for (int i = 0; i < 100; ++i) {
    refs.push_back(i == 37 ? prism::task(deps_fail).remote(i) : prism::task(deps_inc).remote(i));
  }
  auto join = prism::task([runs](const std::vector<int>& v) {
                runs->fetch_add(1);
                return static_cast<int>(v.size());
              }).remote(refs);
  try {
    prism::get(join, kTimeout);
    FAIL() << "the join ran despite a failed input";
  } catch (const prism::TaskError& e) {
    EXPECT_EQ(e.function_name(), "deps_fail");
  }
  EXPECT_EQ(runs->load(), 0);
  // get() of the whole vector throws the failed object's error too.
  EXPECT_THROW(prism::get(refs, kTimeout), prism::TaskError);
}

TEST_P(DependenciesTest, ManyIndependentDiamonds) {
  std::vector<prism::ObjectRef<int>> bottoms;
  for (int i = 0; i < 200; ++i) {
    auto top = prism::task(deps_inc).remote(i);
    auto l = prism::task(deps_mul).remote(top, 2);
    auto r = prism::task(deps_mul).remote(top, 3);
    bottoms.push_back(prism::task(deps_add).remote(l, r));
  }
  const auto values = prism::get(bottoms, kTimeout);
  for (int i = 0; i < 200; ++i) ASSERT_EQ(values[i], 5 * (i + 1));
}

PRISM_TEST_SWEEP_CPUS(DependenciesTest);

}  // namespace
