// The tutorial workloads, scaled down. The sleeps here are the workload itself; the timing
// assertions are ratios with wide margins (see STYLE.md, "Tests").

#include <gtest/gtest.h>

#include <chrono>
#include <numeric>
#include <thread>
#include <vector>

#include "prism/prism.h"
#include "test_util.h"

namespace {

using namespace std::chrono_literals;
using prism_test::kTimeout;
using Clock = std::chrono::steady_clock;

double seed_sleep_seconds(double seconds) {
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  return seconds;
}

int seed_slow_add(int a, int b) {
  std::this_thread::sleep_for(50ms);
  return a + b;
}

int seed_sleep_ms(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return ms;
}

PRISM_REMOTE(seed_sleep_seconds, seed_slow_add, seed_sleep_ms);

struct SeedCounter {
  explicit SeedCounter(int start) : value(start) {}
  int increment() { return ++value; }
  int value;
};
PRISM_ACTOR(SeedCounter, &SeedCounter::increment);

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

class SeedWorkloadTest : public ::testing::Test {
 protected:
  void TearDown() override { prism::shutdown(); }
};

// 16 sleeping tasks on two CPUs finish in well under their serial total.
TEST_F(SeedWorkloadTest, ParallelSleepsBeatTheSerialTotal) {
  prism::init({.num_cpus = 2});
  const std::vector<double> tutorial = {0.1, 0.2, 0.1, 0.5, 0.7, 0.9, 0.5, 0.4,
                                        1.5, 1.3, 1.0, 0.3, 0.7, 0.6, 0.3, 0.8};
  std::vector<double> durations;
  for (double d : tutorial) durations.push_back(d / 20);
  const double serial = std::accumulate(durations.begin(), durations.end(), 0.0);

  const auto start = Clock::now();
  std::vector<prism::ObjectRef<double>> refs;
  for (double d : durations) refs.push_back(prism::task(seed_sleep_seconds).remote(d));
  const std::vector<double> results = prism::get(refs, kTimeout);
  const double elapsed = SecondsSince(start);

  EXPECT_EQ(results, durations);
  EXPECT_LT(elapsed, 0.75 * serial) << "serial total " << serial << " s, took " << elapsed << " s";
}

// Adding 8 values with a 50 ms add: a chain takes 7 adds in a row, a tree 3 levels.
TEST_F(SeedWorkloadTest, TreeAddBeatsChainAdd) {
  prism::init({.num_cpus = 4});
  std::vector<prism::ObjectRef<int>> values;
  for (int i = 1; i <= 8; ++i) values.push_back(prism::put(i));

  auto start = Clock::now();
  prism::ObjectRef<int> chain = values[0];
  for (size_t i = 1; i < values.size(); ++i) {
    chain = prism::task(seed_slow_add).remote(chain, values[i]);
  }
  EXPECT_EQ(prism::get(chain, kTimeout), 36);
  const double chain_seconds = SecondsSince(start);

  start = Clock::now();
  std::vector<prism::ObjectRef<int>> level = values;
  while (level.size() > 1) {
    std::vector<prism::ObjectRef<int>> next;
    for (size_t i = 0; i + 1 < level.size(); i += 2) {
      next.push_back(prism::task(seed_slow_add).remote(level[i], level[i + 1]));
    }
    level = std::move(next);
  }
  EXPECT_EQ(prism::get(level[0], kTimeout), 36);
  const double tree_seconds = SecondsSince(start);

  EXPECT_GT(chain_seconds / tree_seconds, 1.5)
      << "chain " << chain_seconds << " s, tree " << tree_seconds << " s";
}

// Two counters, called alternately: each actor's calls run in order.
TEST_F(SeedWorkloadTest, CounterActorsInterleave) {
  prism::init({.num_cpus = 2});
  auto c1 = prism::actor<SeedCounter>(0).remote();
  auto c2 = prism::actor<SeedCounter>(100).remote();
  std::vector<prism::ObjectRef<int>> refs;
  for (int i = 0; i < 3; ++i) {
    refs.push_back(c1.task(&SeedCounter::increment).remote());
    refs.push_back(c2.task(&SeedCounter::increment).remote());
  }
  EXPECT_EQ(prism::get(refs, kTimeout), (std::vector<int>{1, 101, 2, 102, 3, 103}));
}

// wait() returns the two fastest of three sleeps, in the order given.
TEST_F(SeedWorkloadTest, WaitReturnsTheFastestInTheOrderGiven) {
  prism::init({.num_cpus = 3});
  std::vector<prism::ObjectRef<int>> refs = {prism::task(seed_sleep_ms).remote(150),
                                             prism::task(seed_sleep_ms).remote(250),
                                             prism::task(seed_sleep_ms).remote(100)};
  auto [ready, not_ready] = prism::wait(refs, 2, kTimeout);
  ASSERT_EQ(ready.size(), 2u);
  ASSERT_EQ(not_ready.size(), 1u);
  EXPECT_EQ(prism::get(ready, kTimeout), (std::vector<int>{150, 100}));
  EXPECT_TRUE(not_ready[0] == refs[1]);
  EXPECT_EQ(prism::get(not_ready[0], kTimeout), 250);
}

}  // namespace
