// Stress: many tiny tasks, many submitting threads, many actors. Sizes are kept so that the
// suite stays fast under ThreadSanitizer; every wait is bounded.

#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <exception>
#include <string>
#include <thread>
#include <vector>

#include "prism/prism.h"
#include "test_util.h"

namespace {

using prism_test::kTimeout;

int stress_tiny(int x) { return x + 1; }
PRISM_REMOTE(stress_tiny);

struct StressCounter {
  int64_t add(int64_t k) { return total += k; }
  int64_t total = 0;
};
PRISM_ACTOR(StressCounter, &StressCounter::add);

class StressTest : public prism_test::GlobalRuntimeTest {
 protected:
  prism::InitOptions options() const override { return {.num_cpus = 4}; }
};

TEST_F(StressTest, HundredThousandTinyTasks) {
  constexpr int kTasks = 100000;
  std::vector<prism::ObjectRef<int>> refs;
  refs.reserve(kTasks);
  for (int i = 0; i < kTasks; ++i) refs.push_back(prism::task(stress_tiny).remote(i));
  const std::vector<int> values = prism::get(refs, kTimeout);
  ASSERT_EQ(values.size(), size_t{kTasks});
  int64_t sum = 0;
  for (int v : values) sum += v;
  EXPECT_EQ(sum, int64_t{kTasks} * (kTasks + 1) / 2);
}

TEST_F(StressTest, ManyThreadsSubmittingAtOnce) {
  constexpr int kThreads = 4;
  constexpr int kPerThread = 10000;
  std::vector<int64_t> sums(kThreads, -1);
  std::vector<std::string> errors(kThreads);
  prism_test::Rendezvous start(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      try {
        if (!start.arrive_and_wait()) throw std::runtime_error("threads never started together");
        std::vector<prism::ObjectRef<int>> refs;
        refs.reserve(kPerThread);
        for (int i = 0; i < kPerThread; ++i) {
          refs.push_back(prism::task(stress_tiny).remote(t * kPerThread + i));
        }
        int64_t sum = 0;
        for (int v : prism::get(refs, kTimeout)) sum += v;
        sums[t] = sum;
      } catch (const std::exception& e) {
        errors[t] = e.what();
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(errors[t], "") << "thread " << t;
    // sum over i of (t*k + i + 1)
    const int64_t base = int64_t{t} * kPerThread;
    EXPECT_EQ(sums[t], base * kPerThread + int64_t{kPerThread} * (kPerThread + 1) / 2)
        << "thread " << t;
  }
}

TEST_F(StressTest, ManyThreadsPuttingAndReading) {
  constexpr int kThreads = 4;
  constexpr int kPerThread = 5000;
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      try {
        std::vector<prism::ObjectRef<int>> refs;
        for (int i = 0; i < kPerThread; ++i) refs.push_back(prism::put(t * kPerThread + i));
        for (int i = 0; i < kPerThread; ++i) {
          if (*prism::get_shared(refs[i]) != t * kPerThread + i) bad.fetch_add(1);
        }
      } catch (const std::exception&) {
        bad.fetch_add(1);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad.load(), 0);
}

TEST_F(StressTest, ThousandActors) {
  constexpr int kActors = 1000;
  constexpr int kCalls = 5;
  std::vector<prism::ActorHandle<StressCounter>> actors;
  actors.reserve(kActors);
  for (int i = 0; i < kActors; ++i) actors.push_back(prism::actor<StressCounter>().remote());
  std::vector<prism::ObjectRef<int64_t>> last(kActors);
  for (int c = 0; c < kCalls; ++c) {
    for (int i = 0; i < kActors; ++i) last[i] = actors[i].task(&StressCounter::add).remote(i);
  }
  const std::vector<int64_t> totals = prism::get(last, kTimeout);
  for (int i = 0; i < kActors; ++i) ASSERT_EQ(totals[i], int64_t{kCalls} * i) << "actor " << i;
}

TEST_F(StressTest, ManyThreadsCallingManyActors) {
  constexpr int kThreads = 4;
  constexpr int kActors = 100;
  constexpr int kCallsPerThread = 20;
  std::vector<prism::ActorHandle<StressCounter>> actors;
  for (int i = 0; i < kActors; ++i) actors.push_back(prism::actor<StressCounter>().remote());
  std::atomic<int> errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      try {
        std::vector<prism::ObjectRef<int64_t>> refs;
        for (int c = 0; c < kCallsPerThread; ++c) {
          for (auto& a : actors) refs.push_back(a.task(&StressCounter::add).remote(1));
        }
        prism::get(refs, kTimeout);
      } catch (const std::exception&) {
        errors.fetch_add(1);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(errors.load(), 0);
  std::vector<prism::ObjectRef<int64_t>> finals;
  for (auto& a : actors) finals.push_back(a.task(&StressCounter::add).remote(0));
  for (int64_t v : prism::get(finals, kTimeout)) EXPECT_EQ(v, kThreads * kCallsPerThread);
}

}  // namespace
