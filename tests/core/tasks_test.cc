// Remote functions: free functions, lambdas, functors; void and multiple results; arguments by
// value, by ObjectRef (resolved to const T&), vectors of refs, and refs passed unresolved.

#include <gtest/gtest.h>
#include <sched.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <numeric>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "prism/prism.h"
#include "test_util.h"

namespace {

using prism_test::kTimeout;

int tasks_add(int a, int b) { return a + b; }
std::string tasks_concat(const std::string& a, const std::string& b) { return a + b; }
std::pair<int, int> tasks_divmod(int a, int b) { return {a / b, a % b}; }
std::tuple<int, std::string, double> tasks_three(int n) {
  return {n * 2, std::to_string(n), n / 2.0};
}
int tasks_sum(const std::vector<int>& v) { return std::accumulate(v.begin(), v.end(), 0); }
int tasks_sum_by_value(std::vector<int> v) { return std::accumulate(v.begin(), v.end(), 0); }
size_t tasks_count_refs(const std::vector<prism::ObjectRef<int>>& refs) { return refs.size(); }
int tasks_no_args() { return 42; }

PRISM_REMOTE(tasks_add, tasks_concat, tasks_divmod, tasks_three, tasks_sum, tasks_sum_by_value,
             tasks_count_refs, tasks_no_args);

struct Multiplier {
  int factor;
  int operator()(int x) const { return x * factor; }
};

// The address of the argument the task received: shows that a ref argument arrives as a
// reference to the stored value, not a copy.
uintptr_t tasks_address_of(const std::vector<int>& v) { return reinterpret_cast<uintptr_t>(&v); }
PRISM_REMOTE(tasks_address_of);

class TasksTest : public prism_test::CpuSweepTest {};

TEST_P(TasksTest, FreeFunctionReturnsItsResult) {
  prism::ObjectRef<int> r = prism::task(tasks_add).remote(1, 2);
  ASSERT_TRUE(r.valid());
  EXPECT_EQ(prism::get(r, kTimeout), 3);
  EXPECT_TRUE(r.is_ready());
}

TEST_P(TasksTest, FunctionWithoutArguments) {
  EXPECT_EQ(prism::get(prism::task(tasks_no_args).remote(), kTimeout), 42);
}

TEST_P(TasksTest, LambdaAndCapturingLambda) {
  auto twice = prism::task([](int x) { return 2 * x; }).remote(21);
  const std::string prefix = "id-";
  auto named = prism::task([prefix](int x) { return prefix + std::to_string(x); }).remote(7);
  EXPECT_EQ(prism::get(twice, kTimeout), 42);
  EXPECT_EQ(prism::get(named, kTimeout), "id-7");
}

TEST_P(TasksTest, FunctorKeepsItsState) {
  auto r3 = prism::task(Multiplier{3}).remote(5);
  auto r10 = prism::task(Multiplier{10}).remote(5);
  EXPECT_EQ(prism::get(r3, kTimeout), 15);
  EXPECT_EQ(prism::get(r10, kTimeout), 50);
}

TEST_P(TasksTest, VoidResultCompletesAfterTheSideEffect) {
  auto counter = std::make_shared<std::atomic<int>>(0);
  std::vector<prism::ObjectRef<void>> refs;
  for (int i = 0; i < 10; ++i) {
    refs.push_back(prism::task([counter, i] { counter->fetch_add(i); }).remote());
  }
  for (const auto& r : refs) prism::get(r, kTimeout);
  EXPECT_EQ(counter->load(), 45);
}

TEST_P(TasksTest, VoidResultAsDependencyOrdersTasks) {
  auto value = std::make_shared<std::atomic<int>>(0);
  prism::ObjectRef<void> first = prism::task([value] { value->store(7); }).remote();
  // An ObjectRef<void> argument is a dependency passed as the ref itself.
  auto second = prism::task([value](const prism::ObjectRef<void>&) { return value->load(); })
                    .remote(first);
  EXPECT_EQ(prism::get(second, kTimeout), 7);
}

TEST_P(TasksTest, PairResultSplitsIntoTwoRefs) {
  auto [q, r] = prism::task(tasks_divmod).num_returns<2>().remote(17, 5);
  static_assert(std::is_same_v<decltype(q), prism::ObjectRef<int>>);
  EXPECT_EQ(prism::get(q, kTimeout), 3);
  EXPECT_EQ(prism::get(r, kTimeout), 2);
}

TEST_P(TasksTest, TupleResultOfMixedTypes) {
  auto [a, b, c] = prism::task(tasks_three).num_returns<3>().remote(5);
  static_assert(std::is_same_v<decltype(b), prism::ObjectRef<std::string>>);
  EXPECT_EQ(prism::get(a, kTimeout), 10);
  EXPECT_EQ(prism::get(b, kTimeout), "5");
  EXPECT_DOUBLE_EQ(prism::get(c, kTimeout), 2.5);
}

TEST_P(TasksTest, MultipleResultsFeedOtherTasks) {
  auto [q, r] = prism::task(tasks_divmod).num_returns<2>().remote(17, 5);
  auto sum = prism::task(tasks_add).remote(q, r);
  EXPECT_EQ(prism::get(sum, kTimeout), 5);
}

TEST_P(TasksTest, ArgumentsByValueAreStoredInTheTask) {
  std::string a = "hello ";
  auto r = prism::task(tasks_concat).remote(a, std::string("world"));
  a = "changed after submission";  // the task holds its own copy
  EXPECT_EQ(prism::get(r, kTimeout), "hello world");
}

TEST_P(TasksTest, RefArgumentsAreResolvedToValues) {
  auto a = prism::task(tasks_add).remote(1, 2);
  auto b = prism::task(tasks_add).remote(a, 10);           // ref and value
  auto c = prism::task(tasks_add).remote(a, b);            // two refs
  auto d = prism::task(tasks_add).remote(prism::put(100), c);  // a put ref
  EXPECT_EQ(prism::get(b, kTimeout), 13);
  EXPECT_EQ(prism::get(c, kTimeout), 16);
  EXPECT_EQ(prism::get(d, kTimeout), 116);
}

TEST_P(TasksTest, RefArgumentArrivesWithoutACopy) {
  auto data = prism::put(std::vector<int>(1000, 1));
  const uintptr_t stored = reinterpret_cast<uintptr_t>(prism::get_shared(data).get());
  EXPECT_EQ(prism::get(prism::task(tasks_address_of).remote(data), kTimeout), stored);
  // A task result passed on is not copied either.
  auto produced = prism::task([] { return std::vector<int>(1000, 2); }).remote();
  auto seen = prism::task(tasks_address_of).remote(produced);
  EXPECT_EQ(prism::get(seen, kTimeout),
            reinterpret_cast<uintptr_t>(prism::get_shared(produced).get()));
}

TEST_P(TasksTest, VectorOfRefsBecomesVectorOfValues) {
  std::vector<prism::ObjectRef<int>> refs;
  for (int i = 1; i <= 20; ++i) refs.push_back(prism::task(tasks_add).remote(i, 0));
  EXPECT_EQ(prism::get(prism::task(tasks_sum).remote(refs), kTimeout), 210);
  EXPECT_EQ(prism::get(prism::task(tasks_sum_by_value).remote(refs), kTimeout), 210);
  // Lambdas too, and put refs mixed in.
  refs.push_back(prism::put(1000));
  auto r = prism::task([](std::vector<int> v) { return static_cast<int>(v.size()) + v.back(); })
               .remote(refs);
  EXPECT_EQ(prism::get(r, kTimeout), 1021);
}

TEST_P(TasksTest, EmptyVectorOfRefs) {
  std::vector<prism::ObjectRef<int>> none;
  EXPECT_EQ(prism::get(prism::task(tasks_sum).remote(none), kTimeout), 0);
}

TEST_P(TasksTest, VectorOfRefsIsPassedAsIsWhenTheFunctionTakesRefs) {
  std::vector<prism::ObjectRef<int>> refs;
  for (int i = 0; i < 5; ++i) refs.push_back(prism::put(i));
  EXPECT_EQ(prism::get(prism::task(tasks_count_refs).remote(refs), kTimeout), 5u);
}

TEST_P(TasksTest, RefIsPassedUnresolvedWhenTheFunctionTakesARef) {
  if (cpus() < 2) GTEST_SKIP() << "needs a second CPU slot: the producer holds one while blocked";
  prism_test::Gate gate;
  prism_test::Gate started;
  auto producer = prism::task([gate, started] {
                    started.open();
                    return gate.wait() ? 5 : -1;
                  }).remote();
  ASSERT_TRUE(started.wait());
  // The consumer takes the ref itself: it must run while the producer is still blocked.
  auto consumer =
      prism::task([](prism::ObjectRef<int> r) { return r.valid() && !r.is_ready(); })
          .remote(producer);
  EXPECT_TRUE(prism::get(consumer, kTimeout));
  gate.open();
  // And a task taking the ref may get() it itself.
  auto getter =
      prism::task([](prism::ObjectRef<int> r) { return prism::get(r, kTimeout) + 1; })
          .remote(producer);
  EXPECT_EQ(prism::get(getter, kTimeout), 6);
  EXPECT_EQ(prism::get(producer, kTimeout), 5);
}

TEST_P(TasksTest, MoveOnlyArgumentIsPassedByConstReference) {
  auto r = prism::task([](const std::unique_ptr<int>& p) { return *p + 1; })
               .remote(std::make_unique<int>(41));
  EXPECT_EQ(prism::get(r, kTimeout), 42);
}

TEST_P(TasksTest, ManyIndependentTasks) {
  std::vector<prism::ObjectRef<int>> refs;
  for (int i = 0; i < 1000; ++i) refs.push_back(prism::task(tasks_add).remote(i, i));
  const std::vector<int> values = prism::get(refs, kTimeout);
  ASSERT_EQ(values.size(), 1000u);
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(values[i], 2 * i);
}

TEST_P(TasksTest, SharedTaskCallerCanBeReused) {
  const auto caller = prism::task(tasks_add).name("tasks_add_named");
  auto a = caller.remote(1, 1);
  auto b = caller.remote(2, 2);
  EXPECT_EQ(prism::get(a, kTimeout) + prism::get(b, kTimeout), 6);
}

PRISM_TEST_SWEEP_CPUS(TasksTest);

// A local Runtime object, without the global one.
TEST(TasksLocalRuntimeTest, TasksRunOnAnExplicitRuntime) {
  ASSERT_FALSE(prism::is_initialized());
  prism::Runtime rt({.num_cpus = 2});
  auto a = rt.task(tasks_add).remote(2, 3);
  auto b = rt.task(tasks_add).remote(a, rt.put(10));
  EXPECT_EQ(prism::get(b, kTimeout), 15);
  auto [q, r] = rt.task(tasks_divmod).num_returns<2>().remote(9, 4);
  EXPECT_EQ(prism::get(q, kTimeout), 2);
  EXPECT_EQ(prism::get(r, kTimeout), 1);
}

}  // namespace

// Worker threads run under SCHED_BATCH (docs/semantics.md, "Threads"), unless the environment
// asks for the default policy, the process runs under another policy, or the system refuses it.
int tasks_sched_policy() { return sched_getscheduler(0); }
PRISM_REMOTE(tasks_sched_policy);

TEST(TasksWorkerPolicyTest, TasksRunUnderTheBatchPolicy) {
  const char* env = std::getenv("PRISM_WORKER_SCHED");
  if (env != nullptr && std::string(env) == "normal") GTEST_SKIP() << "PRISM_WORKER_SCHED=normal";
  const int mine = sched_getscheduler(0);
  if (mine != SCHED_OTHER) GTEST_SKIP() << "this process runs under policy " << mine;
  bool allowed = false;  // (a thread of our own may take it: some sandboxes refuse it)
  std::thread([&allowed] {
    sched_param none{};
    allowed = sched_setscheduler(0, SCHED_BATCH, &none) == 0;
  }).join();
  if (!allowed) GTEST_SKIP() << "SCHED_BATCH is refused here";
  prism::Runtime rt({.num_cpus = 2});
  EXPECT_EQ(prism::get(rt.task(tasks_sched_policy).remote(), prism_test::kTimeout), SCHED_BATCH);
  // The caller's own thread keeps its policy.
  EXPECT_EQ(sched_getscheduler(0), mine);
}
