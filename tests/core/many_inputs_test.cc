// Tasks with many inputs: a vector of refs reaching a task as pointers to the stored values
// (std::vector<const T*> or std::span<const T* const>, no copies), as the refs themselves (not
// waited for), and untyped refs (prism::AnyRef) for wait, get and dependencies.

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "prism/prism.h"
#include "test_util.h"

namespace {

using prism_test::kTimeout;

// Counts copies (never moves) of itself.
std::atomic<int> g_many_copies{0};

struct ManyCounted {
  explicit ManyCounted(int v) : value(v) {}
  ManyCounted(const ManyCounted& o) : value(o.value) { g_many_copies.fetch_add(1); }
  ManyCounted(ManyCounted&& o) noexcept : value(o.value) {}
  ManyCounted& operator=(const ManyCounted& o) {
    value = o.value;
    g_many_copies.fetch_add(1);
    return *this;
  }
  ManyCounted& operator=(ManyCounted&& o) noexcept {
    value = o.value;
    return *this;
  }
  int value;
};

constexpr int kInputs = 6;

// What a consumer saw of one input: where it is and what it holds.
struct Seen {
  std::uintptr_t address;
  int value;
};

std::uintptr_t address_of(const void* p) { return reinterpret_cast<std::uintptr_t>(p); }

// Producers of ManyCounted(i) that wait on `gate` first (each holds a CPU while it waits).
std::vector<prism::ObjectRef<ManyCounted>> blocked_producers(prism::Runtime& rt,
                                                             const prism_test::Gate& gate) {
  std::vector<prism::ObjectRef<ManyCounted>> refs;
  for (int i = 0; i < kInputs; ++i) {
    refs.push_back(rt.task([gate, i] {
                       if (!gate.wait()) throw std::runtime_error("the gate never opened");
                       return ManyCounted(i * 10);
                     }).remote());
  }
  return refs;
}

// Checks that `seen` names the stored values of `refs`, in order.
void expect_stored_values(const std::vector<Seen>& seen,
                          const std::vector<prism::ObjectRef<ManyCounted>>& refs) {
  ASSERT_EQ(seen.size(), refs.size());
  for (size_t i = 0; i < refs.size(); ++i) {
    auto stored = prism::get_shared(refs[i], kTimeout);
    EXPECT_EQ(seen[i].address, address_of(stored.get())) << "input " << i;
    EXPECT_EQ(seen[i].value, static_cast<int>(i) * 10) << "input " << i;
  }
}

// ---- C1: std::vector<const T*> ----

TEST(ManyInputsTest, VectorOfPointersReachesTheStoredValuesWithoutCopies) {
  prism::Runtime rt({.num_cpus = kInputs + 2});
  const int copies_before = g_many_copies.load();
  prism_test::Gate gate;
  auto refs = blocked_producers(rt, gate);
  auto consumer = rt.task([](std::vector<const ManyCounted*> inputs) {
                      std::vector<Seen> seen;
                      for (const ManyCounted* p : inputs) seen.push_back({address_of(p), p->value});
                      return seen;
                    }).remote(refs);
  // It waits for every input.
  for (const auto& r : refs) EXPECT_FALSE(r.is_ready());
  EXPECT_FALSE(consumer.is_ready());
  gate.open();
  const std::vector<Seen> seen = prism::get(consumer, kTimeout);
  expect_stored_values(seen, refs);
  EXPECT_EQ(g_many_copies.load(), copies_before) << "an input was copied";
}

TEST(ManyInputsTest, VectorOfPointersToLargeValuesSharesTheirStorage) {
  constexpr size_t kElements = 100000;  // 800 KB each: above the inline threshold
  prism::Runtime rt({.num_cpus = kInputs + 2});
  prism_test::Gate gate;
  std::vector<prism::ObjectRef<std::vector<double>>> refs;
  for (int i = 0; i < kInputs; ++i) {
    refs.push_back(rt.task([gate, i] {
                       if (!gate.wait()) throw std::runtime_error("the gate never opened");
                       return std::vector<double>(kElements, static_cast<double>(i));
                     }).remote());
  }
  // Object addresses and their payloads' addresses.
  auto consumer =
      rt.task([](std::vector<const std::vector<double>*> inputs) {
          std::vector<std::pair<std::uintptr_t, std::uintptr_t>> seen;
          for (const auto* v : inputs) seen.emplace_back(address_of(v), address_of(v->data()));
          return seen;
        }).remote(refs);
  EXPECT_FALSE(consumer.is_ready());
  gate.open();
  const auto seen = prism::get(consumer, kTimeout);
  ASSERT_EQ(seen.size(), refs.size());
  for (size_t i = 0; i < refs.size(); ++i) {
    auto stored = prism::get_shared(refs[i], kTimeout);
    EXPECT_EQ(seen[i].first, address_of(stored.get())) << "input " << i;
    EXPECT_EQ(seen[i].second, address_of(stored->data())) << "input " << i;
    EXPECT_DOUBLE_EQ(stored->back(), static_cast<double>(i));
  }
}

// ---- C2: std::span<const T* const> ----

TEST(ManyInputsTest, SpanOfPointersReachesTheStoredValuesWithoutCopies) {
  prism::Runtime rt({.num_cpus = kInputs + 2});
  const int copies_before = g_many_copies.load();
  prism_test::Gate gate;
  auto refs = blocked_producers(rt, gate);
  auto consumer = rt.task([](std::span<const ManyCounted* const> inputs) {
                      std::vector<Seen> seen;
                      for (const ManyCounted* p : inputs) seen.push_back({address_of(p), p->value});
                      return seen;
                    }).remote(refs);
  EXPECT_FALSE(consumer.is_ready());
  gate.open();
  const std::vector<Seen> seen = prism::get(consumer, kTimeout);
  expect_stored_values(seen, refs);
  EXPECT_EQ(g_many_copies.load(), copies_before) << "an input was copied";
}

TEST(ManyInputsTest, PointersToAFailedInputFailTheTaskWithoutRunningIt) {
  prism::Runtime rt({.num_cpus = 2});
  auto ran = std::make_shared<std::atomic<bool>>(false);
  std::vector<prism::ObjectRef<ManyCounted>> refs{
      rt.put(ManyCounted(1)),
      rt.task([]() -> ManyCounted { throw std::runtime_error("many inputs: producer failed"); })
          .remote()};
  auto consumer = rt.task([ran](std::vector<const ManyCounted*> inputs) {
                      ran->store(true);
                      return inputs.size();
                    }).remote(refs);
  try {
    prism::get(consumer, kTimeout);
    ADD_FAILURE() << "a task with a failed input returned a value";
  } catch (const prism::TaskError& e) {
    EXPECT_EQ(e.message(), "many inputs: producer failed");
  }
  EXPECT_FALSE(ran->load());
}

// ---- C2b: refs as separate arguments ----
// A call with a bounded number of ref arguments keeps the nodes it waits with in its own record
// (up to 8 refs), one with more or with a vector of refs allocates them: each waits for every
// pending argument, skips the done ones and fails with the first that failed, whichever it is.

int sum3(int a, int b, int c) { return a + b + c; }
int sum8(int a, int b, int c, int d, int e, int f, int g, int h) {
  return a + b + c + d + e + f + g + h;
}
int sum9(int a, int b, int c, int d, int e, int f, int g, int h, int i) {
  return a + b + c + d + e + f + g + h + i;
}
int sum_vector_and_two(const std::vector<int>& v, int a, int b) {
  int s = a + b;
  for (int x : v) s += x;
  return s;
}

TEST(ManyInputsTest, SeparateRefArgumentsWaitForEveryPendingOneWhateverTheirNumber) {
  prism::Runtime rt({.num_cpus = 2});
  prism_test::Gate gate;
  std::vector<prism::ObjectRef<int>> p;  // pending until the gate opens: 1, 2, ..., 10
  for (int i = 1; i <= 10; ++i) {
    p.push_back(rt.task([gate, i] {
                    if (!gate.wait()) throw std::runtime_error("the gate never opened");
                    return i;
                  }).remote());
  }
  auto done = rt.put(100);
  auto failed = rt.task([gate]() -> int {
                      if (!gate.wait()) throw std::runtime_error("the gate never opened");
                      throw std::runtime_error("separate refs: producer failed");
                    }).remote();
  auto three = rt.task(sum3).remote(p[0], done, p[1]);                       // 1 + 100 + 2
  auto eight = rt.task(sum8).remote(p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]);  // 36
  auto nine = rt.task(sum9).remote(p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8]);
  auto same = rt.task(sum3).remote(p[9], p[9], p[9]);                         // one ref, 3 times
  auto mixed = rt.task(sum_vector_and_two).remote(std::vector{p[2], p[3], done}, p[4], p[5]);
  auto ran = std::make_shared<std::atomic<int>>(0);
  auto fails = rt.task([ran](int a, int b, int c) {
                   ran->fetch_add(1);
                   return a + b + c;
                 }).remote(p[0], failed, done);
  const std::vector<prism::ObjectRef<int>> all{three, eight, nine, same, mixed};
  EXPECT_TRUE(prism::wait(all, 1, std::chrono::milliseconds(0)).first.empty())
      << "a call ran before its arguments were ready";
  gate.open();
  EXPECT_EQ(prism::get(three, kTimeout), 103);
  EXPECT_EQ(prism::get(eight, kTimeout), 36);
  EXPECT_EQ(prism::get(nine, kTimeout), 45);
  EXPECT_EQ(prism::get(same, kTimeout), 30);
  EXPECT_EQ(prism::get(mixed, kTimeout), 3 + 4 + 100 + 5 + 6);
  try {
    prism::get(fails, kTimeout);
    ADD_FAILURE() << "a call with a failed argument returned a value";
  } catch (const prism::TaskError& e) {
    EXPECT_EQ(e.message(), "separate refs: producer failed");
  }
  EXPECT_EQ(ran->load(), 0);
  // Every argument done at submission: no wait at all.
  EXPECT_EQ(prism::get(rt.task(sum8).remote(done, done, done, done, done, done, done, done),
                       kTimeout),
            800);
}

// ---- C3: const std::vector<ObjectRef<T>>& is passed as it is ----

TEST(ManyInputsTest, VectorOfRefsTakenAsRefsIsNotWaitedFor) {
  prism::Runtime rt({.num_cpus = kInputs + 2});
  prism_test::Gate gate;
  std::vector<prism::ObjectRef<int>> refs;
  for (int i = 0; i < kInputs; ++i) {
    // Longer than the consumer's deadline: a consumer that waited for them would time out.
    refs.push_back(rt.task([gate, i] { return gate.wait(2 * kTimeout) ? i : -1; }).remote());
  }
  auto consumer = rt.task([](const std::vector<prism::ObjectRef<int>>& inputs) {
                      int pending = 0;
                      for (const auto& r : inputs) pending += r.is_ready() ? 0 : 1;
                      return std::make_pair(pending, inputs);
                    }).remote(refs);
  // The consumer finishes while the inputs are still blocked.
  const auto [pending, received] = prism::get(consumer, kTimeout);
  EXPECT_FALSE(gate.is_open());
  EXPECT_EQ(pending, kInputs);
  ASSERT_EQ(received.size(), refs.size());
  for (size_t i = 0; i < refs.size(); ++i) {
    EXPECT_TRUE(received[i] == refs[i]) << "input " << i;
    EXPECT_EQ(received[i].id(), refs[i].id()) << "input " << i;
  }
  gate.open();
  const std::vector<int> values = prism::get(received, kTimeout);
  for (int i = 0; i < kInputs; ++i) EXPECT_EQ(values[i], i);
}

// ---- C4: untyped refs ----

TEST(ManyInputsTest, AnyRefsOfSeveralTypesAreWaitedOnTogether) {
  prism::Runtime rt({.num_cpus = 4});
  prism_test::Gate gate;
  prism::ObjectRef<int> int_ref = rt.put(7);
  prism::ObjectRef<std::string> string_ref =
      rt.task([gate] { return gate.wait() ? std::string("text") : std::string(); }).remote();
  prism::ObjectRef<std::vector<int>> vector_ref =
      rt.task([gate] { return gate.wait() ? std::vector<int>{1, 2, 3} : std::vector<int>{}; })
          .remote();
  std::vector<prism::AnyRef> refs{int_ref, string_ref, vector_ref};
  static_assert(std::is_same_v<prism::AnyRef, prism::ObjectRef<void>>);
  EXPECT_EQ(refs[0].id(), int_ref.id());
  EXPECT_EQ(refs[1].id(), string_ref.id());
  EXPECT_EQ(refs[2].id(), vector_ref.id());

  {
    // Only the put is ready while the gate is closed.
    auto [ready, pending] = prism::wait(refs, 3, std::chrono::milliseconds(0));
    ASSERT_EQ(ready.size(), 1u);
    EXPECT_TRUE(ready[0] == refs[0]);
    ASSERT_EQ(pending.size(), 2u);
    EXPECT_TRUE(pending[0] == refs[1]);
    EXPECT_TRUE(pending[1] == refs[2]);
  }
  gate.open();
  auto [ready, pending] = prism::wait(refs, 3, kTimeout);
  ASSERT_EQ(ready.size(), 3u);
  EXPECT_TRUE(pending.empty());
  for (size_t i = 0; i < refs.size(); ++i) {
    EXPECT_TRUE(ready[i] == refs[i]) << "ref " << i;
    EXPECT_TRUE(ready[i].is_ready()) << "ref " << i;
  }
  // The typed refs still read their values.
  EXPECT_EQ(prism::get(string_ref, kTimeout), "text");
  EXPECT_EQ(prism::get(vector_ref, kTimeout), (std::vector<int>{1, 2, 3}));
}

TEST(ManyInputsTest, GetOfAnAnyRefWaitsAndRethrows) {
  prism::Runtime rt({.num_cpus = 2});
  prism_test::Gate gate;
  prism::AnyRef ok = rt.put(std::string("fine"));
  static_assert(std::is_void_v<decltype(prism::get(ok, kTimeout))>);
  EXPECT_NO_THROW(prism::get(ok, kTimeout));

  prism::AnyRef pending = rt.task([gate] { return gate.wait() ? 1 : 0; }).remote();
  EXPECT_FALSE(pending.is_ready());
  EXPECT_THROW(prism::get(pending, std::chrono::milliseconds(1)), prism::TimeoutError);
  gate.open();
  EXPECT_NO_THROW(prism::get(pending, kTimeout));
  EXPECT_TRUE(pending.is_ready());

  prism::AnyRef failed =
      rt.task([]() -> int { throw std::runtime_error("any ref: task failed"); }).remote();
  try {
    prism::get(failed, kTimeout);
    ADD_FAILURE() << "get of a failed AnyRef did not throw";
  } catch (const prism::TaskError& e) {
    EXPECT_EQ(e.message(), "any ref: task failed");
  }
}

TEST(ManyInputsTest, AnyRefArgumentIsADependency) {
  prism::Runtime rt({.num_cpus = 2});
  prism_test::Gate gate;
  auto produced = std::make_shared<std::atomic<bool>>(false);
  prism::ObjectRef<int> producer = rt.task([gate, produced] {
                                       const bool opened = gate.wait();
                                       produced->store(true);
                                       return opened ? 5 : -1;
                                     }).remote();
  prism::AnyRef dep = producer;
  auto consumer = rt.task([produced](const prism::AnyRef& d) {
                      // Runs after the object is ready, and receives the ref itself.
                      return std::make_pair(produced->load(), d.is_ready());
                    }).remote(dep);
  EXPECT_FALSE(consumer.is_ready());
  gate.open();
  const auto [saw_produced, saw_ready] = prism::get(consumer, kTimeout);
  EXPECT_TRUE(saw_produced);
  EXPECT_TRUE(saw_ready);
  EXPECT_EQ(prism::get(producer, kTimeout), 5);
}

TEST(ManyInputsTest, FailedAnyRefArgumentFailsTheTaskWithoutRunningIt) {
  prism::Runtime rt({.num_cpus = 2});
  auto ran = std::make_shared<std::atomic<bool>>(false);
  prism::AnyRef failed =
      rt.task([]() -> int { throw std::runtime_error("any ref dependency failed"); }).remote();
  auto consumer = rt.task([ran](const prism::AnyRef&) {
                      ran->store(true);
                      return 1;
                    }).remote(failed);
  try {
    prism::get(consumer, kTimeout);
    ADD_FAILURE() << "a task with a failed AnyRef argument returned a value";
  } catch (const prism::TaskError& e) {
    EXPECT_EQ(e.message(), "any ref dependency failed");
  }
  EXPECT_FALSE(ran->load());
}

TEST(ManyInputsTest, AnyRefOfAnotherRuntimeIsRefusedAsAnArgument) {
  prism::Runtime a({.num_cpus = 1});
  prism::Runtime b({.num_cpus = 1});
  prism::AnyRef r = a.put(1);
  try {
    b.task([](const prism::AnyRef&) { return 1; }).remote(r);
    ADD_FAILURE() << "runtime b accepted an AnyRef of runtime a";
  } catch (const prism::Error& e) {
    EXPECT_EQ(e.code(), prism::ErrorCode::kInvalidArgument) << e.what();
  }
}

}  // namespace
