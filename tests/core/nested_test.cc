// Nested tasks: tasks that submit tasks and block on them. A task blocked in get()/wait() lends
// its CPU slot back, so nested graphs never deadlock, even with one CPU.

#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <numeric>
#include <stdexcept>
#include <vector>

#include "prism/prism.h"
#include "test_util.h"

namespace {

using prism_test::kTimeout;

int nested_leaf(int x) { return x * 10; }

int nested_parent(int x) {
  auto a = prism::task(nested_leaf).remote(x);
  auto b = prism::task(nested_leaf).remote(x + 1);
  return prism::get(a, kTimeout) + prism::get(b, kTimeout);
}

int nested_grandparent(int x) {
  auto p = prism::task(nested_parent).remote(x);
  return prism::get(p, kTimeout) + 1;
}

// Recursive Fibonacci: every call above the leaves submits two children and blocks on them.
int nested_fib(int n) {
  if (n < 2) return n;
  auto a = prism::task(nested_fib).remote(n - 1);
  auto b = prism::task(nested_fib).remote(n - 2);
  return prism::get(a, kTimeout) + prism::get(b, kTimeout);
}

// A chain of nested calls `depth` deep, each blocked on the next.
int nested_depth(int depth) {
  if (depth == 0) return 0;
  return prism::get(prism::task(nested_depth).remote(depth - 1), kTimeout) + 1;
}

int nested_wait_then_sum(int n) {
  std::vector<prism::ObjectRef<int>> refs;
  for (int i = 0; i < n; ++i) refs.push_back(prism::task(nested_leaf).remote(i));
  auto [ready, not_ready] = prism::wait(refs, refs.size(), kTimeout);
  if (!not_ready.empty()) return -1;
  const std::vector<int> values = prism::get(ready, kTimeout);
  return std::accumulate(values.begin(), values.end(), 0);
}

int nested_throws(int) { throw std::logic_error("nested_throws"); }

int nested_gets_failed_child(int x) {
  return prism::get(prism::task(nested_throws).remote(x), kTimeout);
}

PRISM_REMOTE(nested_leaf, nested_parent, nested_grandparent, nested_fib, nested_depth,
             nested_wait_then_sum, nested_throws, nested_gets_failed_child);

class NestedTest : public prism_test::CpuSweepTest {};

TEST_P(NestedTest, TaskSubmitsAndGetsTasks) {
  EXPECT_EQ(prism::get(prism::task(nested_parent).remote(1), kTimeout), 30);
}

TEST_P(NestedTest, TwoLevelsOfNesting) {
  EXPECT_EQ(prism::get(prism::task(nested_grandparent).remote(2), kTimeout), 51);
}

TEST_P(NestedTest, MoreBlockedParentsThanCpus) {
  // Every parent blocks in get(): without lending slots this would deadlock at any num_cpus.
  std::vector<prism::ObjectRef<int>> parents;
  for (int i = 0; i < 4 * cpus() + 4; ++i) parents.push_back(prism::task(nested_parent).remote(i));
  const std::vector<int> values = prism::get(parents, kTimeout);
  for (size_t i = 0; i < values.size(); ++i) {
    EXPECT_EQ(values[i], static_cast<int>(10 * i + 10 * (i + 1)));
  }
}

TEST_P(NestedTest, RecursiveFibonacci) {
  EXPECT_EQ(prism::get(prism::task(nested_fib).remote(10), kTimeout), 55);
}

TEST_P(NestedTest, NestingTenDeep) {
  EXPECT_EQ(prism::get(prism::task(nested_depth).remote(10), kTimeout), 10);
}

TEST_P(NestedTest, WaitInsideATask) {
  EXPECT_EQ(prism::get(prism::task(nested_wait_then_sum).remote(8), kTimeout), 280);
}

TEST_P(NestedTest, ManyTasksWaitingInsideTasks) {
  std::vector<prism::ObjectRef<int>> refs;
  for (int i = 0; i < 3 * cpus() + 2; ++i) {
    refs.push_back(prism::task(nested_wait_then_sum).remote(4));
  }
  for (int v : prism::get(refs, kTimeout)) EXPECT_EQ(v, 60);
}

TEST_P(NestedTest, LambdaSubmittingLambdas) {
  auto outer = prism::task([] {
                 std::vector<prism::ObjectRef<int>> inner;
                 for (int i = 0; i < 5; ++i) {
                   inner.push_back(prism::task([i] { return i * i; }).remote());
                 }
                 int sum = 0;
                 for (int v : prism::get(inner, kTimeout)) sum += v;
                 return sum;
               }).remote();
  EXPECT_EQ(prism::get(outer, kTimeout), 30);
}

TEST_P(NestedTest, NestedTaskPassesRefsOnward) {
  // The parent builds a graph and returns its value; the children depend on each other.
  auto r = prism::task([] {
             auto a = prism::task(nested_leaf).remote(1);
             auto b = prism::task([](int x) { return x + 5; }).remote(a);
             return prism::get(b, kTimeout);
           }).remote();
  EXPECT_EQ(prism::get(r, kTimeout), 15);
}

TEST_P(NestedTest, FailedChildSurfacesInTheParent) {
  auto r = prism::task(nested_gets_failed_child).remote(1);
  try {
    prism::get(r, kTimeout);
    FAIL() << "the parent of a failed child returned a value";
  } catch (const prism::TaskError& e) {
    // A prism::Error raised inside the task (the child's TaskError) is passed on as it is.
    EXPECT_EQ(e.function_name(), "nested_throws");
    EXPECT_EQ(e.type_name(), "std::logic_error");
  }
}

TEST_P(NestedTest, InnerTaskSeesItsOwnTaskId) {
  auto r = prism::task([] {
             const prism::TaskId outer = prism::current_task_id();
             auto inner = prism::task([] { return prism::current_task_id(); }).remote();
             const prism::TaskId inner_id = prism::get(inner, kTimeout);
             return !outer.is_nil() && !inner_id.is_nil() && !(outer == inner_id);
           }).remote();
  EXPECT_TRUE(prism::get(r, kTimeout));
}

PRISM_TEST_SWEEP_CPUS(NestedTest);

// Nested tasks on a local Runtime: the inner prism::task() uses the runtime running the task.
TEST(NestedLocalRuntimeTest, InnerTasksUseTheRuntimeOfTheirParent) {
  ASSERT_FALSE(prism::is_initialized());
  prism::Runtime rt({.num_cpus = 1});
  auto r = rt.task(nested_fib).remote(8);
  EXPECT_EQ(prism::get(r, kTimeout), 21);
  auto node = rt.task([] { return prism::node_id(); }).remote();
  EXPECT_EQ(prism::get(node, kTimeout), rt.node_id());
}

}  // namespace
