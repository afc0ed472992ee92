// Runtime lifetime: API objects (TaskCaller, ActorHandle, ActorCreator) that outlive their
// runtime's shutdown or destruction, refs of an earlier runtime, remote() racing with shutdown,
// and actor names released by kill() and by a failed construction.

#include <gtest/gtest.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "prism/prism.h"
#include "test_util.h"

namespace {

using prism_test::kTimeout;

int lifetime_add(int a, int b) { return a + b; }
int lifetime_echo(int x) { return x; }
int lifetime_fail() { throw std::runtime_error("lifetime constructor argument failed"); }
PRISM_REMOTE(lifetime_add, lifetime_echo, lifetime_fail);

struct LifetimeCounter {
  LifetimeCounter() = default;
  explicit LifetimeCounter(int start) : n(start) {}
  int ping() { return ++n; }
  int echo(int x) { return x; }
  int n = 0;
};
PRISM_ACTOR(LifetimeCounter, &LifetimeCounter::ping, &LifetimeCounter::echo);

struct LifetimeBlocker {
  int ping() { return ++calls; }
  // Signals `started`, then blocks until `release` opens.
  int block(prism_test::Gate started, prism_test::Gate release) {
    started.open();
    return release.wait() ? 100 + ++calls : -1;
  }
  int calls = 0;
};
PRISM_ACTOR(LifetimeBlocker, &LifetimeBlocker::ping, &LifetimeBlocker::block);

// Stops the global runtime at the end of a test even when it fails early.
struct GlobalShutdownGuard {
  ~GlobalShutdownGuard() { prism::shutdown(); }
};

// Joins every thread it holds when the test scope ends, also after a failed assertion; `stop`
// tells bounded client loops to end early in that case.
struct ThreadJoiner {
  std::vector<std::thread> threads;
  std::atomic<bool> stop{false};
  ~ThreadJoiner() { join(); }
  void join() {
    stop.store(true);
    for (auto& t : threads) {
      if (t.joinable()) t.join();
    }
  }
};

// Passes if `f` throws a prism::Error with `code`.
template <typename F>
::testing::AssertionResult ThrowsCode(F&& f, prism::ErrorCode code) {
  try {
    f();
  } catch (const prism::Error& e) {
    if (e.code() == code) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure()
           << "threw prism::Error with code " << prism::error_code_name(e.code())
           << " instead of " << prism::error_code_name(code) << ": " << e.what();
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "threw a non-Prism exception: " << e.what();
  } catch (...) {
    return ::testing::AssertionFailure() << "threw something that is not a std::exception";
  }
  return ::testing::AssertionFailure() << "did not throw";
}

// ---- A1: API objects that outlive their Runtime object ----

TEST(LifetimeTest, ApiObjectsOfADestroyedRuntimeThrowUnavailable) {
  auto rt = std::make_unique<prism::Runtime>(prism::InitOptions{.num_cpus = 2});
  auto caller = rt->task(lifetime_add);
  auto handle = rt->actor<LifetimeCounter>(0).remote();
  auto creator = rt->actor<LifetimeCounter>(5);
  // They work while the runtime lives.
  ASSERT_EQ(prism::get(caller.remote(1, 2), kTimeout), 3);
  ASSERT_EQ(prism::get(handle.task(&LifetimeCounter::ping).remote(), kTimeout), 1);

  rt.reset();

  EXPECT_TRUE(ThrowsCode([&] { caller.remote(1, 2); }, prism::ErrorCode::kUnavailable));
  EXPECT_TRUE(ThrowsCode([&] { handle.task(&LifetimeCounter::ping).remote(); },
                         prism::ErrorCode::kUnavailable));
  EXPECT_TRUE(ThrowsCode([&] { handle.task(&LifetimeCounter::echo).remote(7); },
                         prism::ErrorCode::kUnavailable));
  EXPECT_NO_THROW(prism::kill(handle));
  EXPECT_NO_THROW(prism::kill(handle));  // twice: still nothing
  EXPECT_TRUE(ThrowsCode([&] { creator.remote(); }, prism::ErrorCode::kUnavailable));
  // Copies of the handle and its destruction after the runtime is gone are fine.
  {
    auto copy = handle;
    EXPECT_TRUE(copy == handle);
  }
  handle = prism::ActorHandle<LifetimeCounter>();
  EXPECT_FALSE(handle.valid());
}

TEST(LifetimeTest, HandleDestroyedAfterItsRuntimeWithoutAnyCall) {
  // An actor handle (and a creator) dropped only after the runtime, never used afterwards.
  prism::ActorHandle<LifetimeCounter> handle;
  {
    prism::Runtime rt({.num_cpus = 1});
    handle = rt.actor<LifetimeCounter>(0).name("lifetime_dropped_late").remote();
    ASSERT_EQ(prism::get(handle.task(&LifetimeCounter::ping).remote(), kTimeout), 1);
  }
  EXPECT_TRUE(handle.valid());
  handle = prism::ActorHandle<LifetimeCounter>();
  EXPECT_FALSE(handle.valid());
}

// ---- A2: the same after shutdown(), with the Runtime object still alive ----

TEST(LifetimeTest, ApiObjectsOfAShutDownRuntimeThrowUnavailable) {
  prism::Runtime rt({.num_cpus = 2});
  auto caller = rt.task(lifetime_add);
  auto handle = rt.actor<LifetimeCounter>(0).remote();
  auto creator = rt.actor<LifetimeCounter>(5);
  ASSERT_EQ(prism::get(caller.remote(2, 3), kTimeout), 5);
  ASSERT_EQ(prism::get(handle.task(&LifetimeCounter::ping).remote(), kTimeout), 1);

  rt.shutdown();

  EXPECT_TRUE(ThrowsCode([&] { caller.remote(1, 2); }, prism::ErrorCode::kUnavailable));
  EXPECT_TRUE(ThrowsCode([&] { rt.task(lifetime_add).remote(1, 2); },
                         prism::ErrorCode::kUnavailable));
  EXPECT_TRUE(ThrowsCode([&] { handle.task(&LifetimeCounter::ping).remote(); },
                         prism::ErrorCode::kUnavailable));
  EXPECT_NO_THROW(prism::kill(handle));
  EXPECT_TRUE(ThrowsCode([&] { creator.remote(); }, prism::ErrorCode::kUnavailable));
  EXPECT_TRUE(ThrowsCode([&] { rt.actor<LifetimeCounter>(1).remote(); },
                         prism::ErrorCode::kUnavailable));
  EXPECT_THROW(rt.put(1), prism::Error);
  EXPECT_TRUE(ThrowsCode([&] { rt.put(1); }, prism::ErrorCode::kUnavailable));
  EXPECT_NO_THROW(rt.shutdown());
  handle = prism::ActorHandle<LifetimeCounter>();
}

// ---- A3: tasks that never started, and the global runtime after prism::shutdown() ----

TEST(LifetimeTest, TaskThatNeverStartedFailsWithObjectLostUnavailable) {
  std::vector<prism::ObjectRef<int>> queued;
  prism::ObjectRef<int> dependent;
  auto runs = std::make_shared<std::atomic<int>>(0);
  {
    prism::Runtime rt({.num_cpus = 1});
    // The actor holds the only CPU for its lifetime: the tasks below can never start.
    auto holder = rt.actor<LifetimeCounter>(0).num_cpus(1).remote();
    ASSERT_EQ(prism::get(holder.task(&LifetimeCounter::ping).remote(), kTimeout), 1);
    ASSERT_DOUBLE_EQ(rt.available_resources().at("CPU"), 0);
    for (int i = 0; i < 5; ++i) {
      queued.push_back(rt.task([runs, i] {
                           runs->fetch_add(1);
                           return i;
                         }).remote());
    }
    dependent = rt.task(lifetime_add).remote(queued[0], 1);
    for (const auto& r : queued) EXPECT_FALSE(r.is_ready());
    rt.shutdown();
    // shutdown() has failed them by the time it returns.
    for (const auto& r : queued) EXPECT_TRUE(r.is_ready());
    EXPECT_TRUE(dependent.is_ready());
  }
  for (const auto& r : queued) {
    try {
      prism::get(r, kTimeout);
      ADD_FAILURE() << "a task queued at shutdown returned a value";
    } catch (const prism::ObjectLostError& e) {
      EXPECT_EQ(e.code(), prism::ErrorCode::kUnavailable) << e.what();
    } catch (const std::exception& e) {
      ADD_FAILURE() << "expected ObjectLostError, got: " << e.what();
    }
  }
  try {
    prism::get(dependent, kTimeout);
    ADD_FAILURE() << "a task depending on a lost object returned a value";
  } catch (const prism::ObjectLostError& e) {
    EXPECT_EQ(e.code(), prism::ErrorCode::kUnavailable) << e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected ObjectLostError, got: " << e.what();
  }
  EXPECT_EQ(runs->load(), 0);
}

TEST(LifetimeTest, GlobalApiAfterShutdownThrowsUnavailable) {
  {
    GlobalShutdownGuard guard;
    prism::init({.num_cpus = 1});
    ASSERT_EQ(prism::get(prism::task(lifetime_add).remote(1, 1), kTimeout), 2);
  }
  ASSERT_FALSE(prism::is_initialized());
  try {
    prism::task(lifetime_add).remote(1, 2);
    ADD_FAILURE() << "a task was accepted after prism::shutdown()";
  } catch (const prism::Error& e) {
    EXPECT_EQ(e.code(), prism::ErrorCode::kUnavailable) << e.what();
    EXPECT_NE(std::string(e.what()).find("prism::shutdown"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(ThrowsCode([] { prism::task([] { return 1; }).remote(); },
                         prism::ErrorCode::kUnavailable));
  EXPECT_TRUE(ThrowsCode([] { prism::actor<LifetimeCounter>(0).remote(); },
                         prism::ErrorCode::kUnavailable));
  EXPECT_TRUE(ThrowsCode([] { prism::put(1); }, prism::ErrorCode::kUnavailable));
}

// ---- A4: ready values outlive their runtime ----

TEST(LifetimeTest, ReadyValuesStayReadableAfterTheRuntimeIsDestroyed) {
  prism::ObjectRef<int> computed;
  prism::ObjectRef<std::string> stored;
  prism::ObjectRef<std::vector<double>> large;  // above the inline threshold: store-accounted
  prism::ObjectRef<int> failed;
  {
    auto rt = std::make_unique<prism::Runtime>(prism::InitOptions{.num_cpus = 2});
    computed = rt->task(lifetime_add).remote(40, 2);
    stored = rt->put(std::string("still here"));
    large = rt->task([] { return std::vector<double>(200000, 1.5); }).remote();
    failed = rt->task([]() -> int { throw std::runtime_error("kept error"); }).remote();
    ASSERT_EQ(prism::get(computed, kTimeout), 42);
    ASSERT_EQ(prism::get_shared(large, kTimeout)->size(), size_t{200000});
    ASSERT_THROW(prism::get(failed, kTimeout), prism::TaskError);
    rt.reset();
  }
  EXPECT_TRUE(computed.is_ready());
  EXPECT_TRUE(stored.is_ready());
  EXPECT_TRUE(large.is_ready());
  EXPECT_TRUE(failed.is_ready());
  EXPECT_EQ(prism::get(computed, kTimeout), 42);
  EXPECT_EQ(*prism::get_shared(computed, kTimeout), 42);
  EXPECT_EQ(prism::get(stored, kTimeout), "still here");
  EXPECT_EQ(*prism::get_shared(stored), "still here");
  auto big = prism::get_shared(large, kTimeout);
  ASSERT_EQ(big->size(), size_t{200000});
  EXPECT_DOUBLE_EQ((*big)[199999], 1.5);
  try {
    prism::get(failed, kTimeout);
    ADD_FAILURE() << "a failed object returned a value after its runtime was destroyed";
  } catch (const prism::TaskError& e) {
    EXPECT_EQ(e.message(), "kept error");
  }
  // Dropping the last refs after the runtime is gone frees them (ASan checks the accounting).
  big.reset();
  large = {};
  computed = {};
  stored = {};
  failed = {};
}

// ---- A5: refs of an earlier runtime, even at the same address ----

TEST(LifetimeTest, RefOfAnEarlierRuntimeIsRefusedEvenAtTheSameAddress) {
  constexpr int kIterations = 50;
  int same_address = 0;
  for (int i = 0; i < kIterations; ++i) {
    auto a = std::make_unique<prism::Runtime>(prism::InitOptions{.num_cpus = 1});
    const prism::internal::RuntimeCore* old_core = a->core();
    prism::ObjectRef<int> ref = a->put(41);
    a.reset();
    auto b = std::make_unique<prism::Runtime>(prism::InitOptions{.num_cpus = 1});
    if (b->core() == old_core) ++same_address;
    try {
      b->task([](int x) { return x; }).remote(ref);
      ADD_FAILURE() << "iteration " << i << ": runtime b accepted a ref of the destroyed runtime a"
                    << (b->core() == old_core ? " (b's core is at a's old address)" : "");
    } catch (const prism::Error& e) {
      EXPECT_EQ(e.code(), prism::ErrorCode::kInvalidArgument) << "iteration " << i << ": "
                                                              << e.what();
    }
    // The ref itself stays readable, and b works.
    EXPECT_EQ(prism::get(ref, kTimeout), 41);
    EXPECT_EQ(prism::get(b->task([](int x) { return x + 1; }).remote(b->put(1)), kTimeout), 2);
  }
  RecordProperty("same_address_iterations", same_address);
  std::printf("[ LifetimeTest ] a new runtime's core reused the old address in %d of %d iterations\n",
              same_address, kIterations);
}

// ---- A6: remote() racing with shutdown ----

// What one client thread saw.
struct ClientResult {
  int64_t submitted = 0;
  int64_t refused = 0;    // remote() threw kUnavailable
  int64_t values = 0;     // get returned the right value
  int64_t lost = 0;       // get threw ObjectLostError / ActorDiedError (kUnavailable)
  std::string failure;    // anything else
};

// Checks the outcome of one ref: the right value, or lost/died with kUnavailable.
void check_outcome(const prism::ObjectRef<int>& ref, int expected, ClientResult* out) {
  try {
    const int v = prism::get(ref, kTimeout);
    if (v != expected) {
      out->failure = "got " + std::to_string(v) + " instead of " + std::to_string(expected);
    } else {
      ++out->values;
    }
  } catch (const prism::TimeoutError& e) {
    out->failure = std::string("TimeoutError: ") + e.what();
  } catch (const prism::ObjectLostError& e) {
    if (e.code() != prism::ErrorCode::kUnavailable) {
      out->failure = std::string("ObjectLostError with code ") +
                     prism::error_code_name(e.code()) + ": " + e.what();
    } else {
      ++out->lost;
    }
  } catch (const prism::ActorDiedError&) {
    ++out->lost;
  } catch (const std::exception& e) {
    out->failure = std::string("unexpected error from get: ") + e.what();
  }
}

// One client: submits batches (tasks through `submit_task`, actor calls through `submit_call`)
// until remote() is refused, then checks that later submissions are refused too.
template <typename SubmitTask, typename SubmitCall>
void run_client(int t, const prism_test::Rendezvous& start, const std::atomic<bool>& stop,
                std::atomic<int64_t>& total_submitted, SubmitTask submit_task,
                SubmitCall submit_call, ClientResult* out) {
  constexpr int kBatch = 8;
  constexpr int64_t kMaxSubmissions = 100000;
  if (!start.arrive_and_wait()) {
    out->failure = "the clients never started together";
    return;
  }
  bool refused = false;
  std::vector<std::pair<prism::ObjectRef<int>, int>> batch;
  while (!refused && out->submitted < kMaxSubmissions && !stop.load()) {
    batch.clear();
    for (int k = 0; k < kBatch && !refused; ++k) {
      const int value = t * 1000000 + static_cast<int>(out->submitted % 1000000);
      try {
        auto ref = (k % 4 == 3) ? submit_call(value) : submit_task(value);
        batch.emplace_back(std::move(ref), value);
        ++out->submitted;
        total_submitted.fetch_add(1);
      } catch (const prism::Error& e) {
        if (e.code() != prism::ErrorCode::kUnavailable) {
          out->failure = std::string("remote() threw code ") + prism::error_code_name(e.code()) +
                         ": " + e.what();
          return;
        }
        refused = true;
        ++out->refused;
      } catch (const std::exception& e) {
        out->failure = std::string("remote() threw a non-Prism exception: ") + e.what();
        return;
      }
    }
    for (const auto& [ref, value] : batch) {
      check_outcome(ref, value, out);
      if (!out->failure.empty()) return;
    }
  }
  if (!refused) return;  // stopped by the bound (or the test ending early)
  // Once refused, the runtime stays refused.
  for (int k = 0; k < 4; ++k) {
    try {
      (k % 2 == 0 ? submit_task(k) : submit_call(k));
      out->failure = "remote() was accepted after an earlier one was refused";
      return;
    } catch (const prism::Error& e) {
      if (e.code() != prism::ErrorCode::kUnavailable) {
        out->failure = std::string("a later remote() threw code ") +
                       prism::error_code_name(e.code()) + ": " + e.what();
        return;
      }
      ++out->refused;
    }
  }
}

constexpr int kClients = 4;
constexpr int kRaceRounds = 20;
// The main thread shuts down once this many calls were submitted (or at the deadline).
constexpr int64_t kSubmittedBeforeShutdown = 200;

void report_round(int round, const std::vector<ClientResult>& results, int64_t* refused_total,
                  int64_t* lost_total, int64_t* values_total) {
  for (int t = 0; t < kClients; ++t) {
    EXPECT_EQ(results[t].failure, "") << "round " << round << ", client " << t;
    *refused_total += results[t].refused;
    *lost_total += results[t].lost;
    *values_total += results[t].values;
  }
}

TEST(LifetimeRaceTest, RemoteRacingWithShutdownOfALocalRuntime) {
  int64_t refused_total = 0, lost_total = 0, values_total = 0;
  for (int round = 0; round < kRaceRounds; ++round) {
    prism::Runtime rt({.num_cpus = 2});
    auto handle = rt.actor<LifetimeCounter>(0).remote();
    auto caller = rt.task(lifetime_echo);
    prism_test::Rendezvous start(kClients + 1);
    std::atomic<int64_t> submitted{0};
    std::vector<ClientResult> results(kClients);
    {
      ThreadJoiner joiner;
      for (int t = 0; t < kClients; ++t) {
        joiner.threads.emplace_back([&, t] {
          run_client(
              t, start, joiner.stop, submitted, [&](int v) { return caller.remote(v); },
              [&](int v) { return handle.task(&LifetimeCounter::echo).remote(v); }, &results[t]);
        });
      }
      ASSERT_TRUE(start.arrive_and_wait()) << "round " << round;
      EXPECT_TRUE(prism_test::eventually(
          [&] { return submitted.load() >= kSubmittedBeforeShutdown; }))
          << "round " << round << ": the clients submitted only " << submitted.load();
      rt.shutdown();
      // Joined here, not stopped: every client must see the refusal by itself.
      for (auto& th : joiner.threads) th.join();
    }
    report_round(round, results, &refused_total, &lost_total, &values_total);
    for (int t = 0; t < kClients; ++t) {
      EXPECT_GT(results[t].refused, 0) << "round " << round << ", client " << t
                                       << " never saw the shutdown";
    }
  }
  std::printf("[ LifetimeRaceTest ] local: %lld values, %lld lost, %lld refused\n",
              static_cast<long long>(values_total), static_cast<long long>(lost_total),
              static_cast<long long>(refused_total));
}

TEST(LifetimeRaceTest, RemoteRacingWithGlobalShutdown) {
  constexpr int kRounds = 10;
  int64_t refused_total = 0, lost_total = 0, values_total = 0;
  for (int round = 0; round < kRounds; ++round) {
    GlobalShutdownGuard guard;
    ASSERT_FALSE(prism::is_initialized());
    prism::init({.num_cpus = 2});
    auto handle = prism::actor<LifetimeCounter>(0).remote();
    prism_test::Rendezvous start(kClients + 1);
    std::atomic<int64_t> submitted{0};
    std::vector<ClientResult> results(kClients);
    {
      ThreadJoiner joiner;
      for (int t = 0; t < kClients; ++t) {
        joiner.threads.emplace_back([&, t] {
          run_client(
              t, start, joiner.stop, submitted,
              [](int v) { return prism::task(lifetime_echo).remote(v); },
              [&](int v) { return handle.task(&LifetimeCounter::echo).remote(v); }, &results[t]);
        });
      }
      ASSERT_TRUE(start.arrive_and_wait()) << "round " << round;
      EXPECT_TRUE(prism_test::eventually(
          [&] { return submitted.load() >= kSubmittedBeforeShutdown; }))
          << "round " << round << ": the clients submitted only " << submitted.load();
      prism::shutdown();
      for (auto& th : joiner.threads) th.join();
    }
    report_round(round, results, &refused_total, &lost_total, &values_total);
    for (int t = 0; t < kClients; ++t) {
      EXPECT_GT(results[t].refused, 0) << "round " << round << ", client " << t
                                       << " never saw the shutdown";
    }
  }
  std::printf("[ LifetimeRaceTest ] global: %lld values, %lld lost, %lld refused\n",
              static_cast<long long>(values_total), static_cast<long long>(lost_total),
              static_cast<long long>(refused_total));
}

// ---- A7, A8: actor names ----

class LifetimeNamesTest : public prism_test::GlobalRuntimeTest {};

TEST_F(LifetimeNamesTest, KillReleasesTheNameBeforeItReturns) {
  prism_test::Gate started;
  prism_test::Gate release;
  auto old = prism::actor<LifetimeBlocker>().name("lifetime_x").remote();
  auto running = old.task(&LifetimeBlocker::block).remote(started, release);
  ASSERT_TRUE(started.wait());
  auto queued = old.task(&LifetimeBlocker::ping).remote();
  // While it lives the name is taken.
  EXPECT_TRUE(ThrowsCode([] { prism::actor<LifetimeBlocker>().name("lifetime_x").remote(); },
                         prism::ErrorCode::kInvalidArgument));

  prism::kill(old);

  // Right after kill() returns (the old call is still running): the name is free.
  prism::ActorHandle<LifetimeBlocker> fresh;
  ASSERT_NO_THROW(fresh = prism::actor<LifetimeBlocker>().name("lifetime_x").remote());
  EXPECT_FALSE(release.is_open());
  prism::ActorHandle<LifetimeBlocker> found;
  ASSERT_NO_THROW(found = prism::get_actor<LifetimeBlocker>("lifetime_x"));
  EXPECT_TRUE(found == fresh);
  EXPECT_FALSE(found == old);
  EXPECT_EQ(prism::get(found.task(&LifetimeBlocker::ping).remote(), kTimeout), 1);
  EXPECT_EQ(prism::get(fresh.task(&LifetimeBlocker::ping).remote(), kTimeout), 2);

  release.open();
  // Killing lets the running call finish and fails the queued one.
  EXPECT_EQ(prism::get(running, kTimeout), 101);
  EXPECT_THROW(prism::get(queued, kTimeout), prism::ActorDiedError);
  EXPECT_THROW(prism::get(old.task(&LifetimeBlocker::ping).remote(), kTimeout),
               prism::ActorDiedError);
  // The new actor is unaffected.
  EXPECT_EQ(prism::get(found.task(&LifetimeBlocker::ping).remote(), kTimeout), 3);
  prism::kill(fresh);
}

TEST_F(LifetimeNamesTest, FailedConstructorArgumentFreesTheName) {
  constexpr int kIterations = 50;
  for (int i = 0; i < kIterations; ++i) {
    auto bad = prism::task(lifetime_fail).remote();
    auto h = prism::actor<LifetimeCounter>(bad).name("lifetime_y").remote();
    try {
      prism::get(h.task(&LifetimeCounter::ping).remote(), kTimeout);
      ADD_FAILURE() << "iteration " << i << ": a call on an actor whose constructor argument "
                                            "failed returned a value";
    } catch (const prism::ActorDiedError&) {
    } catch (const std::exception& e) {
      ADD_FAILURE() << "iteration " << i << ": expected ActorDiedError, got: " << e.what();
    }
    // Right after the failure is seen, the name is free.
    prism::ActorHandle<LifetimeCounter> again;
    ASSERT_NO_THROW(again = prism::actor<LifetimeCounter>(10).name("lifetime_y").remote())
        << "iteration " << i;
    prism::ActorHandle<LifetimeCounter> found;
    ASSERT_NO_THROW(found = prism::get_actor<LifetimeCounter>("lifetime_y")) << "iteration " << i;
    EXPECT_TRUE(found == again);
    EXPECT_EQ(prism::get(found.task(&LifetimeCounter::ping).remote(), kTimeout), 11);
    prism::kill(again);
  }
}

}  // namespace
