// ObjectRef, get, wait, put and cancel: values, timeouts, order, zero copies, reference counting.

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "prism/prism.h"
#include "test_util.h"

namespace {

using namespace std::chrono_literals;
using prism_test::kTimeout;

int objref_square(int x) { return x * x; }
int objref_identity(int x) { return x; }
PRISM_REMOTE(objref_square, objref_identity);

// Counts copies and moves of itself (per test: reset() first).
struct CopyCounter {
  static std::atomic<int> copies;
  static std::atomic<int> moves;
  static void reset() {
    copies = 0;
    moves = 0;
  }
  CopyCounter() = default;
  explicit CopyCounter(int v) : value(v) {}
  CopyCounter(const CopyCounter& o) : value(o.value) { copies.fetch_add(1); }
  CopyCounter(CopyCounter&& o) noexcept : value(o.value) { moves.fetch_add(1); }
  CopyCounter& operator=(const CopyCounter&) = delete;
  CopyCounter& operator=(CopyCounter&&) = delete;
  int value = 0;
};
std::atomic<int> CopyCounter::copies{0};
std::atomic<int> CopyCounter::moves{0};

// Counts live instances: the stored value's destructor shows when the object is freed.
struct Tracked {
  static std::atomic<int> live;
  Tracked() { live.fetch_add(1); }
  explicit Tracked(int v) : value(v) { live.fetch_add(1); }
  Tracked(const Tracked& o) : value(o.value) { live.fetch_add(1); }
  Tracked(Tracked&& o) noexcept : value(o.value) { live.fetch_add(1); }
  ~Tracked() { live.fetch_sub(1); }
  Tracked& operator=(const Tracked&) = delete;
  int value = 0;
};
std::atomic<int> Tracked::live{0};

int objref_read_counter(const CopyCounter& c) { return c.value; }
int objref_read_tracked(const Tracked& t) { return t.value; }
PRISM_REMOTE(objref_read_counter, objref_read_tracked);

class ObjectRefTest : public prism_test::CpuSweepTest {};

TEST_P(ObjectRefTest, GetOne) {
  auto r = prism::task(objref_square).remote(7);
  EXPECT_EQ(prism::get(r, kTimeout), 49);
  // get() again returns the same value.
  EXPECT_EQ(prism::get(r, kTimeout), 49);
  // Copies of a ref name the same object.
  prism::ObjectRef<int> copy = r;
  EXPECT_TRUE(copy == r);
  EXPECT_EQ(copy.id(), r.id());
  EXPECT_FALSE(r.id().is_nil());
}

TEST_P(ObjectRefTest, GetManyInTheOrderGiven) {
  std::vector<prism::ObjectRef<int>> refs;
  for (int i = 0; i < 50; ++i) refs.push_back(prism::task(objref_square).remote(i));
  const std::vector<int> values = prism::get(refs, kTimeout);
  ASSERT_EQ(values.size(), refs.size());
  for (int i = 0; i < 50; ++i) EXPECT_EQ(values[i], i * i);
}

TEST_P(ObjectRefTest, DistinctObjectsHaveDistinctIds) {
  auto a = prism::task(objref_square).remote(1);
  auto b = prism::task(objref_square).remote(1);
  auto c = prism::put(1);
  EXPECT_FALSE(a == b);
  EXPECT_FALSE(a.id() == b.id());
  EXPECT_FALSE(a.id() == c.id());
}

TEST_P(ObjectRefTest, GetWithTimeoutThrowsTimeoutErrorThenSucceeds) {
  prism_test::Gate gate;
  auto r = prism::task([gate] { return gate.wait() ? 1 : -1; }).remote();
  try {
    prism::get(r, 20ms);
    FAIL() << "get() of a blocked task returned before its timeout";
  } catch (const prism::TimeoutError& e) {
    EXPECT_EQ(e.code(), prism::ErrorCode::kDeadlineExceeded);
  }
  EXPECT_FALSE(r.is_ready());
  gate.open();
  EXPECT_EQ(prism::get(r, kTimeout), 1);
}

TEST_P(ObjectRefTest, GetSharedWithTimeoutThrowsTimeoutErrorThenSucceeds) {
  prism_test::Gate gate;
  auto r = prism::task([gate] { return gate.wait() ? 5 : -1; }).remote();
  EXPECT_THROW(prism::get_shared(r, 20ms), prism::TimeoutError);
  gate.open();
  auto p = prism::get_shared(r, kTimeout);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(*p, 5);
  EXPECT_EQ(prism::get_shared(r, kTimeout).get(), p.get());  // the same stored value
}

TEST_P(ObjectRefTest, GetManyWithTimeoutThrowsTimeoutError) {
  prism_test::Gate gate;
  std::vector<prism::ObjectRef<int>> refs{
      prism::put(1), prism::task([gate] { return gate.wait() ? 2 : -1; }).remote()};
  EXPECT_THROW(prism::get(refs, 20ms), prism::TimeoutError);
  gate.open();
  EXPECT_EQ(prism::get(refs, kTimeout), (std::vector<int>{1, 2}));
}

// get() of several waits for the last one not done first, then for the rest (await_all): each
// order of completion returns every value, in the order given, or throws for the first ref (in
// that order) that failed or was not done in time. (Openers are jthreads: joined even when an
// assertion throws.)
TEST_P(ObjectRefTest, GetManyWaitsForEveryOneWhateverOrderTheyFinishIn) {
  prism_test::Gate first, middle;
  auto gated = [](prism_test::Gate g, int v) {
    return prism::task([g, v] { return g.wait() ? v : -1; }).remote();
  };
  {
    // The last is done before the get, the others are not: it waits for them too.
    std::vector<prism::ObjectRef<int>> refs{gated(first, 1), gated(middle, 2), prism::put(3)};
    EXPECT_THROW(prism::get(refs, 20ms), prism::TimeoutError);
    std::jthread opener([&] {
      middle.open();
      first.open();
    });
    EXPECT_EQ(prism::get(refs, kTimeout), (std::vector<int>{1, 2, 3}));
  }
  {
    // Only the last is pending.
    prism_test::Gate last;
    std::vector<prism::ObjectRef<int>> refs{prism::put(1), prism::put(2), gated(last, 3)};
    EXPECT_THROW(prism::get(refs, 20ms), prism::TimeoutError);
    std::jthread opener([&] { last.open(); });
    EXPECT_EQ(prism::get(refs, kTimeout), (std::vector<int>{1, 2, 3}));
  }
}

TEST_P(ObjectRefTest, GetManyThrowsForTheFirstRefInOrderThatFailedOrIsLate) {
  auto fails = [](const char* what) {
    return prism::task([what]() -> int { throw std::runtime_error(what); }).remote();
  };
  auto expect_task_error = [](const std::vector<prism::ObjectRef<int>>& refs, const char* what) {
    try {
      (void)prism::get(refs, kTimeout);
      ADD_FAILURE() << "get() of a failed ref returned";
    } catch (const prism::TaskError& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  // A failure in the middle, the last done: the failure is what get() says.
  expect_task_error({prism::put(1), fails("boom"), prism::put(3)}, "boom");
  {
    // The first is late, a later one failed: the deadline is what get() says, until the first
    // is done; then the failure.
    prism_test::Gate gate;
    std::vector<prism::ObjectRef<int>> refs{
        prism::task([gate] { return gate.wait() ? 1 : -1; }).remote(), fails("boom"),
        prism::put(3)};
    EXPECT_THROW(prism::get(refs, 20ms), prism::TimeoutError);
    gate.open();
    expect_task_error(refs, "boom");
  }
  {
    // Two failures, the later one in the order given first: the earlier one is what get() says.
    // (The later one is submitted first, so that it runs first on one CPU too.)
    prism_test::Gate gate;
    auto second = fails("the second in order");
    auto first = prism::task([gate]() -> int {
                   (void)gate.wait();
                   throw std::runtime_error("the first in order");
                 }).remote();
    std::vector<prism::ObjectRef<int>> refs{first, second};
    std::jthread opener([&] {
      // (After the second failed: the first fails last.)
      (void)prism::wait(std::vector<prism::ObjectRef<int>>{refs[1]}, 1, kTimeout);
      gate.open();
    });
    expect_task_error(refs, "the first in order");
  }
}

// wait() for all of them returns only once every one is done, the first after the last.
TEST_P(ObjectRefTest, WaitForAllOfThemReportsEveryOneReadyInOrder) {
  prism_test::Gate a, b;
  // (The last is submitted first: on one CPU it runs first.) The first does 50 ms of work once
  // its gate opens, so it is still running when the waiter, woken by the last, turns to it.
  auto last = prism::task([b] { return b.wait() ? 2 : -1; }).remote();
  std::vector<prism::ObjectRef<int>> refs{prism::task([a] {
                                            if (!a.wait()) return -1;
                                            std::this_thread::sleep_for(50ms);  // (its work)
                                            return 0;
                                          }).remote(),
                                          prism::put(1), last};
  {
    auto [ready, not_ready] = prism::wait(refs, refs.size(), 20ms);
    // (The deadline passed with both gated: fewer than all are ready.)
    EXPECT_EQ(ready.size(), 1u);
    EXPECT_EQ(ready.size() + not_ready.size(), refs.size());
  }
  std::jthread opener([&] {
    b.open();
    a.open();
  });
  auto [ready, not_ready] = prism::wait(refs, refs.size(), kTimeout);
  ASSERT_EQ(ready.size(), refs.size());
  EXPECT_TRUE(not_ready.empty());
  for (size_t i = 0; i < refs.size(); ++i) EXPECT_TRUE(ready[i] == refs[i]) << i;
}

TEST_P(ObjectRefTest, ZeroTimeoutOnAReadyObjectReturnsTheValue) {
  auto r = prism::put(5);
  EXPECT_EQ(prism::get(r, 0ms), 5);
}

TEST_P(ObjectRefTest, WaitReturnsReadyAndNotReadyInTheOrderGiven) {
  prism_test::Gate gate;
  auto blocked = [gate] { return gate.wait() ? 0 : -1; };
  std::vector<prism::ObjectRef<int>> refs{
      prism::task(blocked).remote(),  // 0: pending
      prism::put(1),                  // 1: ready
      prism::task(blocked).remote(),  // 2: pending
      prism::put(3),                  // 3: ready
      prism::put(4),                  // 4: ready
  };
  {
    auto [ready, not_ready] = prism::wait(refs, 2, kTimeout);
    ASSERT_EQ(ready.size(), 2u);
    EXPECT_TRUE(ready[0] == refs[1]);
    EXPECT_TRUE(ready[1] == refs[3]);
    // At most num_returns are reported ready; the rest keep their order.
    ASSERT_EQ(not_ready.size(), 3u);
    EXPECT_TRUE(not_ready[0] == refs[0]);
    EXPECT_TRUE(not_ready[1] == refs[2]);
    EXPECT_TRUE(not_ready[2] == refs[4]);
  }
  {
    // Fewer than num_returns ready: wait returns at the timeout with what is ready.
    auto [ready, not_ready] = prism::wait(refs, 4, 20ms);
    ASSERT_EQ(ready.size(), 3u);
    EXPECT_TRUE(ready[0] == refs[1]);
    EXPECT_TRUE(ready[1] == refs[3]);
    EXPECT_TRUE(ready[2] == refs[4]);
    ASSERT_EQ(not_ready.size(), 2u);
    EXPECT_TRUE(not_ready[0] == refs[0]);
    EXPECT_TRUE(not_ready[1] == refs[2]);
  }
  gate.open();
  auto [ready, not_ready] = prism::wait(refs, refs.size(), kTimeout);
  EXPECT_EQ(ready.size(), refs.size());
  EXPECT_TRUE(not_ready.empty());
  for (size_t i = 0; i < refs.size(); ++i) EXPECT_TRUE(ready[i] == refs[i]);
}

TEST_P(ObjectRefTest, WaitCountsFailedObjectsAsReady) {
  auto failed = prism::task([]() -> int { throw std::runtime_error("failed"); }).remote();
  {
    auto [done, pending] = prism::wait(std::vector<prism::ObjectRef<int>>{failed}, 1, kTimeout);
    ASSERT_EQ(done.size(), 1u) << "a failed task never completed";
  }
  prism_test::Gate gate;
  std::vector<prism::ObjectRef<int>> refs{
      prism::task([gate] { return gate.wait() ? 0 : -1; }).remote(),
      failed,
  };
  auto [ready, not_ready] = prism::wait(refs, 1, kTimeout);
  ASSERT_EQ(ready.size(), 1u);
  EXPECT_TRUE(ready[0] == refs[1]);
  ASSERT_EQ(not_ready.size(), 1u);
  EXPECT_TRUE(not_ready[0] == refs[0]);
  EXPECT_THROW(prism::get(ready[0], kTimeout), prism::TaskError);
}

TEST_P(ObjectRefTest, WaitForMoreThanGivenIsInvalid) {
  std::vector<prism::ObjectRef<int>> refs{prism::put(1)};
  try {
    prism::wait(refs, 2, kTimeout);
    FAIL() << "wait() accepted num_returns > refs.size()";
  } catch (const prism::Error& e) {
    EXPECT_EQ(e.code(), prism::ErrorCode::kInvalidArgument);
  }
}

TEST_P(ObjectRefTest, PutOfAMovedValueMakesNoCopy) {
  CopyCounter::reset();
  auto r = prism::put(CopyCounter(7));
  EXPECT_EQ(CopyCounter::copies.load(), 0);
  // A task receives the stored value by reference.
  EXPECT_EQ(prism::get(prism::task(objref_read_counter).remote(r), kTimeout), 7);
  EXPECT_EQ(CopyCounter::copies.load(), 0);
  // get_shared gives access without a copy.
  EXPECT_EQ(prism::get_shared(r)->value, 7);
  EXPECT_EQ(CopyCounter::copies.load(), 0);
  // get() returns a copy, by contract.
  EXPECT_EQ(prism::get(r, kTimeout).value, 7);
  EXPECT_EQ(CopyCounter::copies.load(), 1);
}

TEST_P(ObjectRefTest, PutOfALargeBufferKeepsItsStorage) {
  std::vector<float> big(1 << 20, 1.5f);  // 4 MiB: counted by the object store
  const float* data = big.data();
  auto r = prism::put(std::move(big));
  EXPECT_EQ(prism::get_shared(r)->data(), data);
  auto sum = prism::task([](const std::vector<float>& v) {
               double s = 0;
               for (float x : v) s += x;
               return s;
             }).remote(r);
  EXPECT_DOUBLE_EQ(prism::get(sum, kTimeout), 1.5 * (1 << 20));
}

TEST_P(ObjectRefTest, GetSharedReturnsTheSameAddressEveryTime) {
  auto r = prism::task([] { return std::string(1000, 'x'); }).remote();
  auto p1 = prism::get_shared(r);
  auto p2 = prism::get_shared(r);
  prism::ObjectRef<std::string> copy = r;
  auto p3 = prism::get_shared(copy);
  EXPECT_EQ(p1.get(), p2.get());
  EXPECT_EQ(p1.get(), p3.get());
  EXPECT_EQ(*p1, std::string(1000, 'x'));
}

TEST_P(ObjectRefTest, PutValueIsFreedWhenTheLastRefGoes) {
  const int before = Tracked::live.load();
  auto r1 = prism::put(Tracked(3));
  EXPECT_EQ(Tracked::live.load(), before + 1);
  auto r2 = r1;
  r1 = {};
  EXPECT_FALSE(r1.valid());
  EXPECT_EQ(Tracked::live.load(), before + 1);
  EXPECT_EQ(prism::get(prism::task(objref_read_tracked).remote(r2), kTimeout), 3);
  r2 = {};
  // The task that read it may still be tearing down on its worker.
  EXPECT_TRUE(prism_test::eventually([&] { return Tracked::live.load() == before; }))
      << "live: " << Tracked::live.load() << ", before: " << before;
}

TEST_P(ObjectRefTest, GetSharedKeepsTheValueAlive) {
  const int before = Tracked::live.load();
  auto r = prism::put(Tracked(9));
  std::shared_ptr<const Tracked> p = prism::get_shared(r);
  r = {};
  EXPECT_EQ(Tracked::live.load(), before + 1);
  EXPECT_EQ(p->value, 9);
  p.reset();
  EXPECT_EQ(Tracked::live.load(), before);
}

TEST_P(ObjectRefTest, TaskResultIsFreedWhenTheLastRefGoes) {
  const int before = Tracked::live.load();
  {
    auto r = prism::task([] { return Tracked(5); }).remote();
    EXPECT_EQ(prism::get_shared(r)->value, 5);
    auto reader = prism::task(objref_read_tracked).remote(r);
    EXPECT_EQ(prism::get(reader, kTimeout), 5);
    EXPECT_GE(Tracked::live.load(), before + 1);
  }
  EXPECT_TRUE(prism_test::eventually([&] { return Tracked::live.load() == before; }))
      << "live: " << Tracked::live.load() << ", before: " << before;
}

TEST_P(ObjectRefTest, CancelOfATaskThatHasNotRunFailsItAndItsDependents) {
  prism_test::Gate gate;
  auto runs = std::make_shared<std::atomic<int>>(0);
  auto blocker = prism::task([gate] { return gate.wait() ? 1 : -1; }).remote();
  // `victim` waits for `blocker`, so it cannot have started.
  auto victim = prism::task([runs](int x) {
                  runs->fetch_add(1);
                  return x;
                }).remote(blocker);
  auto dependent = prism::task([runs](int x) {
                     runs->fetch_add(1);
                     return x;
                   }).remote(victim);
  EXPECT_TRUE(prism::cancel(victim));
  EXPECT_THROW(prism::get(victim, kTimeout), prism::TaskCancelledError);
  EXPECT_THROW(prism::get(dependent, kTimeout), prism::TaskCancelledError);
  gate.open();
  EXPECT_EQ(prism::get(blocker, kTimeout), 1);
  // Once the runtime has stopped (joining its workers), nothing more can run.
  prism::shutdown();
  EXPECT_EQ(runs->load(), 0);
  EXPECT_THROW(prism::get(victim, kTimeout), prism::TaskCancelledError);
}

TEST_P(ObjectRefTest, CancelOfAQueuedTaskThatHasNoDependencies) {
  // Fill every CPU slot with a blocked task, so that the next one stays queued.
  prism_test::Gate gate;
  prism_test::Rendezvous all_busy(cpus() + 1);
  std::vector<prism::ObjectRef<int>> blockers;
  for (int i = 0; i < cpus(); ++i) {
    blockers.push_back(prism::task([gate, all_busy] {
                         return all_busy.arrive_and_wait() && gate.wait() ? 1 : -1;
                       }).remote());
  }
  ASSERT_TRUE(all_busy.arrive_and_wait());
  auto runs = std::make_shared<std::atomic<int>>(0);
  auto victim = prism::task([runs] { return runs->fetch_add(1); }).remote();
  EXPECT_TRUE(prism::cancel(victim));
  EXPECT_THROW(prism::get(victim, kTimeout), prism::TaskCancelledError);
  gate.open();
  EXPECT_EQ(prism::get(blockers, kTimeout), std::vector<int>(cpus(), 1));
  prism::shutdown();
  EXPECT_EQ(runs->load(), 0);
}

TEST_P(ObjectRefTest, CancelOfAReadyObjectDoesNothing) {
  auto r = prism::task(objref_identity).remote(4);
  EXPECT_EQ(prism::get(r, kTimeout), 4);
  EXPECT_FALSE(prism::cancel(r));
  EXPECT_EQ(prism::get(r, kTimeout), 4);
  auto p = prism::put(8);
  EXPECT_FALSE(prism::cancel(p));
  EXPECT_EQ(prism::get(p, kTimeout), 8);
}

PRISM_TEST_SWEEP_CPUS(ObjectRefTest);

// Files of the store's spill directories under `root`.
size_t spill_files_under(const std::string& root) {
  std::error_code ec;
  size_t n = 0;
  for (const auto& e : std::filesystem::recursive_directory_iterator(root, ec)) {
    n += e.is_regular_file() ? 1 : 0;
  }
  return n;
}

// PRISM_SPILL_DIR for one test (a fresh directory, removed after).
class SpillDir {
 public:
  SpillDir() {
    const char* tmp = std::getenv("TMPDIR");
    path_ = std::string(tmp != nullptr && *tmp ? tmp : "/tmp") + "/prism-spill-test-" +
            std::to_string(getpid());
    std::filesystem::create_directories(path_);
    setenv("PRISM_SPILL_DIR", path_.c_str(), 1);
  }
  ~SpillDir() {
    unsetenv("PRISM_SPILL_DIR");
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

int64_t sum_of(const std::vector<char>& v) {
  int64_t s = 0;
  for (char c : v) s += c;
  return s;
}

TEST(ObjectStoreCapacityTest, APutThatDoesNotFitGoesToDiskAndReadsBackIntact) {
  SpillDir dir;
  {
    prism::Runtime rt({.num_cpus = 1, .object_store_bytes = 1 << 20});
    std::vector<char> big(2 << 20);
    for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 7);
    auto r = rt.put(big);  // 2 MiB into a 1 MiB store: spilled, not refused
    EXPECT_GE(rt.stats().objects.spilled_bytes, big.size());
    EXPECT_EQ(spill_files_under(dir.path()), 1u);
    EXPECT_EQ(rt.stats().objects.restored_bytes, 0u) << "read back before anyone read it";
    // A task reads it (restored once, then in memory for every reader).
    EXPECT_EQ(prism::get(rt.task(sum_of).remote(r), kTimeout), sum_of(big));
    EXPECT_EQ(prism::get(r, kTimeout), big);
    EXPECT_GE(rt.stats().objects.restored_bytes, big.size());
    // Several at once, all intact; freed, their files go.
    std::vector<prism::ObjectRef<std::vector<char>>> more;
    for (int i = 0; i < 4; ++i) more.push_back(rt.put(std::vector<char>(512 << 10, static_cast<char>(i))));
    for (int i = 0; i < 4; ++i) {
      EXPECT_EQ(prism::get(more[static_cast<size_t>(i)], kTimeout),
                std::vector<char>(512 << 10, static_cast<char>(i)));
    }
    r = {};
    more.clear();
    EXPECT_EQ(spill_files_under(dir.path()), 0u);
    EXPECT_EQ(rt.stats().objects.spilled_bytes, 0u);
  }
  EXPECT_EQ(spill_files_under(dir.path()), 0u);
}

TEST(ObjectStoreCapacityTest, APutThatCannotSpillThrowsAndKeepsTheValue) {
  SpillDir dir;
  prism::Runtime rt({.num_cpus = 1, .object_store_bytes = 1 << 20});
  // Not serializable (std::function): it cannot go to a file.
  std::vector<std::function<int()>> big(100'000, [] { return 1; });
  EXPECT_THROW(rt.put(std::move(big)), prism::ObjectStoreFullError);
  EXPECT_EQ(big.size(), 100'000u) << "a refused put must not take the value";
  // Holding ObjectRefs, which cannot be written to a file (they can travel only inside calls
  // to other nodes): refused too, the refs kept.
  {
    auto one = rt.put(1);
    std::vector<prism::ObjectRef<int>> refs(200'000, one);
    EXPECT_THROW(rt.put(std::move(refs)), prism::ObjectStoreFullError);
    ASSERT_EQ(refs.size(), 200'000u) << "a refused put must not take the value";
    EXPECT_EQ(prism::get(refs.back(), kTimeout), 1);
    EXPECT_THROW(prism::to_bytes(refs.front()), prism::Error);
  }
  // A spill directory that cannot be made: refused too, saying why.
  setenv("PRISM_SPILL_DIR", "/proc/prism-cannot-be-here", 1);
  prism::Runtime other({.num_cpus = 1, .object_store_bytes = 1 << 20});
  std::vector<char> v(2 << 20, 'a');
  try {
    other.put(std::move(v));
    FAIL() << "a put that fits neither the store nor the disk succeeded";
  } catch (const prism::ObjectStoreFullError& e) {
    EXPECT_EQ(e.code(), prism::ErrorCode::kResourceExhausted);
    EXPECT_NE(std::string(e.what()).find("spill"), std::string::npos) << e.what();
  }
  EXPECT_EQ(v.size(), size_t{2} << 20) << "a refused put must not take the value";
}

TEST(ObjectStoreCapacityTest, AResultThatDoesNotFitGoesToDiskInsteadOfOvercommitting) {
  SpillDir dir;
  prism::Runtime rt({.num_cpus = 1, .object_store_bytes = 1 << 20});
  auto made = rt.task([] {
                  std::vector<char> v(3 << 20);
                  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<char>(i % 251);
                  return v;
                }).remote();
  ASSERT_EQ(prism::wait(std::vector{made}, 1, kTimeout).first.size(), 1u);
  // Done, and on disk: the store is not overcommitted.
  EXPECT_GE(rt.stats().objects.spilled_bytes, size_t{3} << 20);
  EXPECT_LE(rt.stats().objects.primary_bytes, uint64_t{1} << 20);
  EXPECT_EQ(spill_files_under(dir.path()), 1u);
  // Read by a task and by get: intact.
  std::vector<char> expected(3 << 20);
  for (size_t i = 0; i < expected.size(); ++i) expected[i] = static_cast<char>(i % 251);
  EXPECT_EQ(prism::get(rt.task(sum_of).remote(made), kTimeout), sum_of(expected));
  EXPECT_EQ(prism::get(made, kTimeout), expected);
  made = {};
  EXPECT_EQ(spill_files_under(dir.path()), 0u);
  // A result that fits stays in memory.
  auto small = rt.task([] { return std::vector<char>(200 << 10, 'x'); }).remote();
  EXPECT_EQ(prism::get(small, kTimeout).size(), size_t{200} << 10);
  EXPECT_EQ(rt.stats().objects.spilled_bytes, 0u);
}

TEST(ObjectStoreCapacityTest, SpaceReturnsWhenTheObjectIsFreed) {
  SpillDir dir;
  prism::Runtime rt({.num_cpus = 1, .object_store_bytes = 1 << 20});
  auto first = rt.put(std::vector<char>(600 << 10, 'a'));
  {
    auto spilled = rt.put(std::vector<char>(600 << 10, 'b'));  // does not fit: spilled
    EXPECT_GE(rt.stats().objects.spilled_bytes, 600u << 10);
  }
  first = {};
  auto second = rt.put(std::vector<char>(600 << 10, 'b'));  // fits again: in memory
  EXPECT_EQ(rt.stats().objects.spilled_bytes, 0u);
  EXPECT_EQ(prism::get_shared(second)->at(0), 'b');
  // Small objects are not counted.
  std::vector<prism::ObjectRef<int>> small;
  for (int i = 0; i < 1000; ++i) small.push_back(rt.put(i));
  EXPECT_EQ(prism::get(small.back(), kTimeout), 999);
}

}  // namespace
