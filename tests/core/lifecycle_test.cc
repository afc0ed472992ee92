// Runtime lifecycle: init/shutdown, several runtimes, refs outliving their runtime, shutdown with
// queued work, and what a running task knows about itself.

#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "prism/prism.h"
#include "test_util.h"

namespace {

using prism_test::kTimeout;

int lifecycle_add(int a, int b) { return a + b; }
PRISM_REMOTE(lifecycle_add);

struct LifecycleHolder {
  int ping() { return 1; }
};
PRISM_ACTOR(LifecycleHolder, &LifecycleHolder::ping);

// Stops the global runtime at the end of a test even when it fails early.
struct GlobalShutdownGuard {
  ~GlobalShutdownGuard() { prism::shutdown(); }
};

TEST(LifecycleTest, InitTwiceIsAnError) {
  GlobalShutdownGuard guard;
  ASSERT_FALSE(prism::is_initialized());
  prism::init({.num_cpus = 1});
  EXPECT_TRUE(prism::is_initialized());
  try {
    prism::init({.num_cpus = 1});
    FAIL() << "init() twice was accepted";
  } catch (const prism::Error& e) {
    EXPECT_EQ(e.code(), prism::ErrorCode::kInvalidArgument);
  }
  // The first runtime still works.
  EXPECT_TRUE(prism::is_initialized());
  EXPECT_EQ(prism::get(prism::task(lifecycle_add).remote(1, 1), kTimeout), 2);
}

TEST(LifecycleTest, ShutdownIsIdempotent) {
  GlobalShutdownGuard guard;
  prism::init({.num_cpus = 2});
  EXPECT_EQ(prism::get(prism::task(lifecycle_add).remote(2, 2), kTimeout), 4);
  prism::shutdown();
  EXPECT_FALSE(prism::is_initialized());
  EXPECT_NO_THROW(prism::shutdown());
  EXPECT_FALSE(prism::is_initialized());
}

TEST(LifecycleTest, InitAfterShutdownWorks) {
  GlobalShutdownGuard guard;
  for (int round = 0; round < 3; ++round) {
    prism::init({.num_cpus = 2});
    EXPECT_TRUE(prism::is_initialized());
    EXPECT_EQ(prism::get(prism::task(lifecycle_add).remote(round, 10), kTimeout), round + 10);
    auto h = prism::actor<LifecycleHolder>().remote();
    EXPECT_EQ(prism::get(h.task(&LifecycleHolder::ping).remote(), kTimeout), 1);
    prism::shutdown();
    EXPECT_FALSE(prism::is_initialized());
  }
}

TEST(LifecycleTest, SubmittingAfterShutdownIsAnError) {
  {
    GlobalShutdownGuard guard;
    prism::init({.num_cpus = 1});
  }
  EXPECT_THROW(prism::task(lifecycle_add).remote(1, 2), prism::Error);

  prism::Runtime rt({.num_cpus = 1});
  auto caller = rt.task(lifecycle_add);
  rt.shutdown();
  try {
    caller.remote(1, 2);
    FAIL() << "a stopped runtime accepted a task";
  } catch (const prism::Error& e) {
    EXPECT_EQ(e.code(), prism::ErrorCode::kUnavailable);
  }
  EXPECT_THROW(rt.put(1), prism::Error);
  EXPECT_NO_THROW(rt.shutdown());
}

TEST(LifecycleTest, SeveralRuntimesInOneProcess) {
  prism::Runtime a({.num_cpus = 1});
  prism::Runtime b({.num_cpus = 2});
  EXPECT_NE(a.node_id(), b.node_id());
  EXPECT_DOUBLE_EQ(a.cluster_resources().at("CPU"), 1);
  EXPECT_DOUBLE_EQ(b.cluster_resources().at("CPU"), 2);
  std::vector<prism::ObjectRef<int>> ra, rb;
  for (int i = 0; i < 100; ++i) {
    ra.push_back(a.task(lifecycle_add).remote(i, 1));
    rb.push_back(b.task(lifecycle_add).remote(i, 2));
  }
  const auto va = prism::get(ra, kTimeout);
  const auto vb = prism::get(rb, kTimeout);
  for (int i = 0; i < 100; ++i) {
    EXPECT_EQ(va[i], i + 1);
    EXPECT_EQ(vb[i], i + 2);
  }
  // Each task sees the node of its own runtime.
  auto na = a.task([] { return prism::node_id(); }).remote();
  auto nb = b.task([] { return prism::node_id(); }).remote();
  EXPECT_EQ(prism::get(na, kTimeout), a.node_id());
  EXPECT_EQ(prism::get(nb, kTimeout), b.node_id());
  // Stopping one leaves the other running.
  a.shutdown();
  EXPECT_EQ(prism::get(b.task(lifecycle_add).remote(5, 5), kTimeout), 10);
}

TEST(LifecycleTest, LocalRuntimeAlongsideTheGlobalOne) {
  GlobalShutdownGuard guard;
  prism::init({.num_cpus = 1});
  prism::Runtime local({.num_cpus = 1});
  EXPECT_NE(local.node_id(), prism::global_runtime().node_id());
  EXPECT_EQ(prism::get(local.task(lifecycle_add).remote(1, 2), kTimeout), 3);
  EXPECT_EQ(prism::get(prism::task(lifecycle_add).remote(3, 4), kTimeout), 7);
  EXPECT_EQ(prism::global_runtime().node_id(), prism::node_id());
}

TEST(LifecycleTest, RefsOutliveTheirRuntime) {
  prism::ObjectRef<int> computed;
  prism::ObjectRef<std::string> stored;
  {
    prism::Runtime rt({.num_cpus = 2});
    computed = rt.task(lifecycle_add).remote(20, 22);
    stored = rt.put(std::string("kept"));
    EXPECT_EQ(prism::get(computed, kTimeout), 42);
  }
  EXPECT_TRUE(computed.is_ready());
  EXPECT_EQ(prism::get(computed, kTimeout), 42);
  EXPECT_EQ(prism::get(stored, kTimeout), "kept");
  EXPECT_EQ(*prism::get_shared(stored), "kept");
}

TEST(LifecycleTest, RefsOutliveTheGlobalRuntime) {
  prism::ObjectRef<int> r;
  {
    GlobalShutdownGuard guard;
    prism::init({.num_cpus = 1});
    r = prism::task(lifecycle_add).remote(1, 2);
    EXPECT_EQ(prism::get(r, kTimeout), 3);
  }
  EXPECT_FALSE(prism::is_initialized());
  EXPECT_EQ(prism::get(r, kTimeout), 3);
}

TEST(LifecycleTest, ShutdownFailsQueuedTasksInsteadOfHanging) {
  auto runs = std::make_shared<std::atomic<int>>(0);
  std::vector<prism::ObjectRef<int>> queued;
  prism::ObjectRef<int> dependent;
  {
    prism::Runtime rt({.num_cpus = 1});
    // The actor holds the only CPU for its lifetime, so the tasks below can never start.
    auto holder = rt.actor<LifecycleHolder>().num_cpus(1).remote();
    ASSERT_EQ(prism::get(holder.task(&LifecycleHolder::ping).remote(), kTimeout), 1);
    ASSERT_DOUBLE_EQ(rt.available_resources().at("CPU"), 0);
    for (int i = 0; i < 10; ++i) {
      queued.push_back(rt.task([runs, i] {
                           runs->fetch_add(1);
                           return i;
                         }).remote());
    }
    dependent = rt.task(lifecycle_add).remote(queued[0], 1);
    EXPECT_THROW(prism::get(queued[0], std::chrono::milliseconds(20)), prism::TimeoutError);
    rt.shutdown();
  }
  for (const auto& r : queued) {
    try {
      prism::get(r, kTimeout);
      ADD_FAILURE() << "a task queued at shutdown returned a value";
    } catch (const prism::ObjectLostError& e) {
      EXPECT_EQ(e.code(), prism::ErrorCode::kUnavailable);
    }
  }
  EXPECT_THROW(prism::get(dependent, kTimeout), prism::ObjectLostError);
  EXPECT_EQ(runs->load(), 0);
}

TEST(LifecycleTest, ShutdownLetsRunningTasksFinish) {
  prism::ObjectRef<int> running;
  {
    prism::Runtime rt({.num_cpus = 1});
    prism_test::Gate started;
    prism_test::Gate release;
    running = rt.task([started, release] {
                  started.open();
                  return release.wait() ? 1 : -1;
                }).remote();
    ASSERT_TRUE(started.wait());
    release.open();
    rt.shutdown();
  }
  EXPECT_EQ(prism::get(running, kTimeout), 1);
}

TEST(LifecycleTest, ShutdownFromInsideOwnTaskIsAnError) {
  prism::Runtime rt({.num_cpus = 1});
  auto r = rt.task([&rt] {
               try {
                 rt.shutdown();
                 return false;
               } catch (const prism::Error& e) {
                 return e.code() == prism::ErrorCode::kInvalidArgument;
               }
             }).remote();
  EXPECT_TRUE(prism::get(r, kTimeout));
  EXPECT_EQ(prism::get(rt.task(lifecycle_add).remote(1, 1), kTimeout), 2);
}

TEST(LifecycleTest, ShutdownWithLiveActorsAndRefs) {
  prism::ObjectRef<int> after;
  {
    prism::Runtime rt({.num_cpus = 2});
    std::vector<prism::ActorHandle<LifecycleHolder>> actors;
    for (int i = 0; i < 10; ++i) actors.push_back(rt.actor<LifecycleHolder>().remote());
    EXPECT_EQ(prism::get(actors[0].task(&LifecycleHolder::ping).remote(), kTimeout), 1);
    after = rt.task(lifecycle_add).remote(1, 2);
    EXPECT_EQ(prism::get(after, kTimeout), 3);
    rt.shutdown();
    // Calls on an actor of a stopped runtime fail instead of hanging.
    EXPECT_THROW(prism::get(actors[1].task(&LifecycleHolder::ping).remote(), kTimeout),
                 prism::Error);
  }
  EXPECT_EQ(prism::get(after, kTimeout), 3);
}

class LifecycleContextTest : public prism_test::CpuSweepTest {};

TEST_P(LifecycleContextTest, TaskKnowsItIsInATask) {
  EXPECT_FALSE(prism::in_task());
  EXPECT_TRUE(prism::current_task_id().is_nil());
  auto a = prism::task([] { return prism::current_task_id(); }).remote();
  auto b = prism::task([] { return prism::current_task_id(); }).remote();
  auto inside = prism::task([] { return prism::in_task(); }).remote();
  const prism::TaskId ida = prism::get(a, kTimeout);
  const prism::TaskId idb = prism::get(b, kTimeout);
  EXPECT_FALSE(ida.is_nil());
  EXPECT_FALSE(idb.is_nil());
  EXPECT_FALSE(ida == idb);
  EXPECT_FALSE(ida.to_string().empty());
  EXPECT_TRUE(prism::get(inside, kTimeout));
}

TEST_P(LifecycleContextTest, NodeIdInsideAndOutsideTasks) {
  const std::string node = prism::node_id();
  EXPECT_FALSE(node.empty());
  EXPECT_EQ(node, prism::global_runtime().node_id());
  EXPECT_EQ(prism::get(prism::task([] { return prism::node_id(); }).remote(), kTimeout), node);
}

PRISM_TEST_SWEEP_CPUS(LifecycleContextTest);

}  // namespace

TEST(LifecycleRuntimes, RefOfAnotherRuntimeIsRejectedAsATaskArgument) {
  prism::Runtime a({.num_cpus = 1});
  prism::Runtime b({.num_cpus = 1});
  auto r = a.put(41);
  try {
    b.task([](int x) { return x + 1; }).remote(r);
    FAIL() << "a ref of runtime a was accepted by runtime b";
  } catch (const prism::Error& e) {
    EXPECT_EQ(e.code(), prism::ErrorCode::kInvalidArgument);
  }
  // The same ref works in its own runtime.
  EXPECT_EQ(prism::get(a.task([](int x) { return x + 1; }).remote(r), kTimeout),
            42);
}
