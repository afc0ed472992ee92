// ObjectRefs that cross nodes inside values (cluster mode, DESIGN §3 "borrowers"): refs passed
// in a task's arguments, held by an actor, returned by a node, passed on from one node to
// another and passed back; their objects live while a ref lives on any node, are read where
// they live, and every copy is freed on every node once the last ref drops. Same driver/node
// set-up as cluster_test.cc (this file is part of the same test binary). The owner's death:
// faults_test.cc.
#include <chrono>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <prism/prism.h>

#include "cluster_fixture.h"
#include "cluster_link.h"

namespace {

using namespace std::chrono_literals;
using prism_test::ClusterTest;

using Bytes = std::vector<uint8_t>;
using BytesRef = prism::ObjectRef<Bytes>;

constexpr uint64_t kKiB = 1024;
constexpr uint64_t kMiB = 1024 * kKiB;

// n bytes of a pattern that differs with `seed` and the position.
Bytes pattern(uint64_t n, uint32_t seed) {
  Bytes v(n);
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 7;
  for (uint64_t i = 0; i < n; i += 8) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    const uint64_t word = x ^ (x >> 31);
    std::memcpy(v.data() + i, &word, std::min<uint64_t>(8, n - i));
  }
  return v;
}
uint64_t digest(const Bytes& v) {
  uint64_t h = 1469598103934665603ull;
  for (uint8_t b : v) h = (h ^ b) * 1099511628211ull;
  return h ^ v.size();
}
// Works `ms` first (a ref that is still pending when it is lent).
Bytes pattern_later(uint64_t n, uint32_t seed, int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return pattern(n, seed);
}
// Reads every ref's value where this task runs: the digests, in order.
std::vector<uint64_t> digests_of(const std::vector<BytesRef>& refs) {
  std::vector<uint64_t> out;
  for (const BytesRef& r : refs) out.push_back(r.valid() ? digest(prism::get(r, 60s)) : 0);
  return out;
}
// Reads every ref's value here, then keeps the borrows `ms` longer.
std::vector<uint64_t> digests_then_hold(const std::vector<BytesRef>& refs, int ms) {
  std::vector<uint64_t> out = digests_of(refs);
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return out;
}
// A value put on the node that runs this: the node owns it, the caller borrows it.
BytesRef put_here(uint64_t n, uint32_t seed) { return prism::put(pattern(n, seed)); }
// A value a task launched here makes (pending when returned).
BytesRef made_here(uint64_t n, uint32_t seed, int ms) {
  return prism::task(pattern_later).remote(n, seed, ms);
}
// The refs it was given, returned (passed back to their lenders).
std::vector<BytesRef> same_refs(const std::vector<BytesRef>& refs) { return refs; }
int breaks() { throw std::runtime_error("broken on purpose on " + prism::node_id()); }
// On the node that runs it: puts a value, and has a task that only a node with `other` can run
// read it (the driver relays that call, and the ref it carries, to that node).
std::vector<uint64_t> lend_to_other(uint64_t n, uint32_t seed, const std::string& other) {
  const std::vector<BytesRef> refs = {prism::put(pattern(n, seed))};
  return prism::get(prism::task(digests_of).resource(other, 1).remote(refs), 60s);
}
// What reading `r` here gives: its value, or its error's type and message.
std::string read_outcome(const prism::ObjectRef<int>& r) {
  try {
    return "value " + std::to_string(prism::get(r, 60s));
  } catch (const prism::TaskError& e) {
    return std::string("TaskError: ") + e.what();
  } catch (const std::exception& e) {
    return std::string("error: ") + e.what();
  }
}
// This process's counts: refs lent, refs borrowed, primary objects, secondary objects.
std::vector<uint64_t> ref_counts() {
  const auto s = prism::cluster::object_stats();
  return {s.lent_refs, s.borrowed_refs, s.primary_objects, s.secondary_objects};
}
PRISM_REMOTE(pattern, digest, pattern_later, digests_of, digests_then_hold, put_here, made_here, same_refs, breaks,
             read_outcome, ref_counts, lend_to_other);

// An actor that keeps the refs it is given.
class Keeper {
 public:
  int keep(const std::vector<BytesRef>& refs) {
    held_.insert(held_.end(), refs.begin(), refs.end());
    return static_cast<int>(held_.size());
  }
  std::vector<uint64_t> digests() const { return digests_of(held_); }
  int clear() {
    held_.clear();
    return 0;
  }

 private:
  std::vector<BytesRef> held_;
};
PRISM_ACTOR(Keeper, &Keeper::keep, &Keeper::digests, &Keeper::clear);

std::vector<uint64_t> counts_on(const std::string& resource) {
  return prism::get(prism::task(ref_counts).resource(resource, 1).remote(), 60s);
}

// Asks until every count is 0 (the releases and frees are on their way when the refs drop),
// for at most 20 s; returns the last counts.
std::vector<uint64_t> counts_on_until_zero(const std::string& resource) {
  const auto zero = [](const std::vector<uint64_t>& c) {
    for (uint64_t x : c) {
      if (x != 0) return false;
    }
    return true;
  };
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  std::vector<uint64_t> c = resource.empty() ? ref_counts() : counts_on(resource);
  while (!zero(c) && std::chrono::steady_clock::now() < deadline) {
    if (resource.empty()) std::this_thread::sleep_for(10ms);  // (messages from other processes)
    c = resource.empty() ? ref_counts() : counts_on(resource);
  }
  return c;
}

void expect_all_freed(const std::vector<std::string>& resources) {
  for (const std::string& r : resources) {
    const std::vector<uint64_t> c = counts_on_until_zero(r);
    EXPECT_EQ(c, (std::vector<uint64_t>{0, 0, 0, 0}))
        << "node with " << r << ": lent, borrowed, primary, secondary";
  }
  const std::vector<uint64_t> d = counts_on_until_zero("");
  EXPECT_EQ(d, (std::vector<uint64_t>{0, 0, 0, 0})) << "driver: lent, borrowed, primary, secondary";
}

// Refs inside a task's arguments: puts of every size class, a large result that lives on
// another node, a pending result, an empty ref; read by the task on its node, byte for byte.
TEST_F(ClusterTest, RefsInsideArgumentsAreReadWhereTheTaskRuns) {
  start(1, {{{"PRISM_RESOURCES", "a:100"}}, {{"PRISM_RESOURCES", "b:100"}}});
  {
    std::vector<BytesRef> refs;
    std::vector<uint64_t> expected;
    uint32_t seed = 1;
    for (uint64_t n : {uint64_t{0}, uint64_t{1}, 100 * kKiB - 1, 100 * kKiB, 100 * kKiB + 1,
                       3 * kMiB}) {
      refs.push_back(prism::put(pattern(n, seed)));
      expected.push_back(digest(pattern(n, seed++)));
    }
    refs.push_back(prism::task(pattern).resource("a", 1).remote(2 * kMiB, 50u));
    expected.push_back(digest(pattern(2 * kMiB, 50)));
    refs.push_back(prism::task(pattern_later).resource("a", 1).remote(kMiB, 51u, 300));
    expected.push_back(digest(pattern(kMiB, 51)));
    refs.emplace_back();
    expected.push_back(0);
    refs.push_back(refs[2]);  // the same object twice
    expected.push_back(expected[2]);

    auto seen = prism::task(digests_of).resource("b", 1).remote(refs);
    EXPECT_EQ(prism::get(seen, 60s), expected);
    // And again, in a second message while the first borrow may still live.
    EXPECT_EQ(prism::get(prism::task(digests_of).resource("b", 1).remote(refs), 60s), expected);
  }
  expect_all_freed({"a", "b"});
}

// Refs lent again under their keys after the last borrow of them ended: the copies held for the
// new borrow are not the ones the old borrow's end frees. The driver pauses 1.5 s between
// encoding a call (its refs' keys chosen) and recording what it lends
// (PRISM_TESTING_LEND_PAUSE_MS), and 1.5 s between ending a borrow and freeing what it held
// (PRISM_TESTING_RELEASE_PAUSE_MS, on its network thread: each ref's release pauses it, so the
// heartbeat deadline is raised to 30 s). So the second call is encoded under the first call's
// keys while the first one runs, recorded after the first one's borrow of a key ended, and the
// copy it lends is held before the first one's is freed. With each copy held under its key (as
// before this test), the old borrow's end freed the new copy and the second call failed ("lost
// with its node"), as CI's ASan run once saw with RefsInsideArgumentsAreReadWhereTheTaskRuns.
// (The node inherits the knobs; it lends nothing and receives no release here.)
TEST_F(ClusterTest, RefsLentAgainAfterTheirBorrowEndedKeepTheirNewCopies) {
  setenv("PRISM_TESTING_LEND_PAUSE_MS", "1500", 1);
  setenv("PRISM_TESTING_RELEASE_PAUSE_MS", "1500", 1);
  setenv("PRISM_HEARTBEAT_TIMEOUT", "30", 1);
  struct Unset {
    ~Unset() {
      unsetenv("PRISM_TESTING_LEND_PAUSE_MS");
      unsetenv("PRISM_TESTING_RELEASE_PAUSE_MS");
      unsetenv("PRISM_HEARTBEAT_TIMEOUT");
    }
  } unset_at_the_end;
  start(1, {{{"PRISM_RESOURCES", "b:100"}}});
  {
    const std::vector<BytesRef> refs = {prism::put(pattern(200 * kKiB, 1)),
                                        prism::put(pattern(10, 2))};
    const std::vector<uint64_t> expected = {digest(pattern(200 * kKiB, 1)),
                                            digest(pattern(10, 2))};
    auto first = prism::task(digests_then_hold).resource("b", 1).remote(refs, 300);
    auto second = prism::task(digests_of).resource("b", 1).remote(refs);
    EXPECT_EQ(prism::get(first, 60s), expected);
    EXPECT_EQ(prism::get(second, 60s), expected);
  }
  expect_all_freed({"b"});
}

// A node returns refs of objects it owns (a put, a pending nested result): the driver reads
// them, and lends them on to another node (through the driver: node-to-node lending is
// forwarded).
TEST_F(ClusterTest, RefsReturnedByANodeAreReadByTheDriverAndByOtherNodes) {
  start(1, {{{"PRISM_RESOURCES", "a:100"}}, {{"PRISM_RESOURCES", "b:100"}}});
  {
    BytesRef large = prism::get(prism::task(put_here).resource("a", 1).remote(4 * kMiB, 7u), 60s);
    BytesRef small = prism::get(prism::task(put_here).resource("a", 1).remote(100u, 8u), 60s);
    BytesRef later =
        prism::get(prism::task(made_here).resource("a", 1).remote(2 * kMiB, 9u, 300), 60s);
    const std::vector<uint64_t> expected = {digest(pattern(4 * kMiB, 7)),
                                            digest(pattern(100, 8)),
                                            digest(pattern(2 * kMiB, 9))};
    const std::vector<BytesRef> refs = {large, small, later};
    EXPECT_EQ(prism::get(prism::task(digests_of).resource("b", 1).remote(refs), 60s), expected);
    EXPECT_EQ(digest(prism::get(large, 60s)), expected[0]);
    EXPECT_EQ(digest(prism::get(small, 60s)), expected[1]);
    EXPECT_EQ(digest(prism::get(later, 60s)), expected[2]);
    const std::vector<uint64_t> a = counts_on("a");
    EXPECT_GE(a[0], 3u) << "node1 lends its three objects";
  }
  expect_all_freed({"a", "b"});
}

// A ref sent to a node and back names the same object (not a copy, not a new borrow), and one
// a node lent, returned to it through another node, is that node's own again.
TEST_F(ClusterTest, RefsPassedBackAreTheSameObjects) {
  start(1, {{{"PRISM_RESOURCES", "a:100"}}, {{"PRISM_RESOURCES", "b:100"}}});
  {
    const BytesRef mine = prism::put(pattern(kMiB, 3));
    const std::vector<BytesRef> back =
        prism::get(prism::task(same_refs).resource("a", 1).remote(std::vector{mine, mine}), 60s);
    ASSERT_EQ(back.size(), 2u);
    EXPECT_TRUE(back[0] == mine);
    EXPECT_TRUE(back[1] == mine);

    const BytesRef theirs =
        prism::get(prism::task(put_here).resource("a", 1).remote(kMiB, 4u), 60s);
    const std::vector<BytesRef> via_b =
        prism::get(prism::task(same_refs).resource("b", 1).remote(std::vector{theirs}), 60s);
    ASSERT_EQ(via_b.size(), 1u);
    EXPECT_TRUE(via_b[0] == theirs) << "the driver's borrow of node1's object";
    EXPECT_EQ(prism::get(prism::task(digests_of).resource("a", 1).remote(via_b), 60s),
              std::vector<uint64_t>{digest(pattern(kMiB, 4))});
  }
  expect_all_freed({"a", "b"});
}

// An actor on a node keeps refs after the driver dropped its own: their objects (one the
// driver owns, one another node made) live until the actor drops them, then go everywhere.
TEST_F(ClusterTest, AnActorKeepsBorrowedObjectsAliveUntilItDropsThem) {
  start(1, {{{"PRISM_RESOURCES", "a:100"}}, {{"PRISM_RESOURCES", "b:100"}}});
  auto keeper = prism::actor<Keeper>().resource("a", 1).remote();
  const std::vector<uint64_t> expected = {digest(pattern(2 * kMiB, 11)),
                                          digest(pattern(3 * kMiB, 12))};
  {
    std::vector<BytesRef> refs = {prism::put(pattern(2 * kMiB, 11)),
                                  prism::task(pattern).resource("b", 1).remote(3 * kMiB, 12u)};
    EXPECT_EQ(prism::get(keeper.task(&Keeper::keep).remote(refs), 60s), 2);
  }
  // The driver's refs are gone; the actor's borrow keeps both objects.
  EXPECT_EQ(prism::get(keeper.task(&Keeper::digests).remote(), 60s), expected);
  EXPECT_GE(prism::cluster::object_stats().lent_refs, 2u);
  EXPECT_EQ(prism::get(keeper.task(&Keeper::clear).remote(), 60s), 0);
  expect_all_freed({"a", "b"});
}

// A ref to a failed task's result carries its error to the borrower; a pending one waits there.
TEST_F(ClusterTest, ABorrowedRefCarriesItsTasksError) {
  start(1, {{{"PRISM_RESOURCES", "a:100"}}, {{"PRISM_RESOURCES", "b:100"}}});
  {
    auto broken = prism::task(breaks).resource("a", 1).max_retries(0).remote();
    const std::string outcome =
        prism::get(prism::task(read_outcome).resource("b", 1).remote(broken), 60s);
    EXPECT_EQ(outcome.rfind("TaskError: ", 0), 0u) << outcome;
    EXPECT_NE(outcome.find("broken on purpose on node"), std::string::npos) << outcome;
    EXPECT_NE(outcome.find("breaks"), std::string::npos) << outcome;

    auto fine = prism::put(42);
    EXPECT_EQ(prism::get(prism::task(read_outcome).resource("b", 1).remote(fine), 60s),
              "value 42");
  }
  expect_all_freed({"a", "b"});
}

// Many refs, many messages, several threads: every object is read right and every count goes
// back to 0.
TEST_F(ClusterTest, ManyRefsFromManyThreadsAreAllReleased) {
  start(1, {{{"PRISM_RESOURCES", "a:100"}}, {{"PRISM_RESOURCES", "b:100"}}});
  {
    constexpr int kThreads = 4;
    constexpr int kRounds = 8;
    std::vector<std::thread> threads;
    std::vector<int> wrong(kThreads, 0);
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([t, &wrong] {
        for (int i = 0; i < kRounds; ++i) {
          const uint32_t seed = static_cast<uint32_t>(t * 100 + i);
          std::vector<BytesRef> refs = {prism::put(pattern(200 * kKiB, seed)),
                                        prism::put(pattern(10, seed + 1))};
          const char* where = i % 2 == 0 ? "a" : "b";
          const std::vector<uint64_t> got =
              prism::get(prism::task(digests_of).resource(where, 1).remote(refs), 60s);
          if (got != std::vector<uint64_t>{digest(pattern(200 * kKiB, seed)),
                                           digest(pattern(10, seed + 1))}) {
            ++wrong[t];
          }
        }
      });
    }
    for (std::thread& th : threads) th.join();
    EXPECT_EQ(wrong, std::vector<int>(kThreads, 0));
  }
  expect_all_freed({"a", "b"});
}

// A node lends its own object to another node through the driver, which relays the call
// without reading the ref itself.
TEST_F(ClusterTest, ANodeLendsItsObjectToAnotherNodeThroughTheDriver) {
  start(1, {{{"PRISM_RESOURCES", "a:100"}}, {{"PRISM_RESOURCES", "b:100"}}});
  EXPECT_EQ(prism::get(prism::task(lend_to_other).resource("a", 1).remote(2 * kMiB, 21u, "b"), 60s),
            std::vector<uint64_t>{digest(pattern(2 * kMiB, 21))});
  EXPECT_EQ(prism::get(prism::task(lend_to_other).resource("a", 1).remote(10u, 22u, "b"), 60s),
            std::vector<uint64_t>{digest(pattern(10, 22))});
  expect_all_freed({"a", "b"});
}

// A borrowed object passed by value to a task on another node: it goes by reference (pulled
// through the driver from its lender), also when the task is sent as the value becomes ready
// (on the driver's network thread, which must not wait for it); one the driver read already is
// lent on without taking its lender's copy away.
TEST_F(ClusterTest, BorrowedObjectsPassedByValueReachOtherNodes) {
  start(1, {{{"PRISM_RESOURCES", "a:100"}}, {{"PRISM_RESOURCES", "b:100"}}});
  {
    const BytesRef pending =
        prism::get(prism::task(made_here).resource("a", 1).remote(2 * kMiB, 31u, 300), 60s);
    auto d1 = prism::task(digest).resource("b", 1).remote(pending);
    EXPECT_EQ(prism::get(d1, 60s), digest(pattern(2 * kMiB, 31)));

    const BytesRef read = prism::get(prism::task(put_here).resource("a", 1).remote(kMiB, 32u), 60s);
    const uint64_t expected = digest(pattern(kMiB, 32));
    EXPECT_EQ(digest(prism::get(read, 60s)), expected);  // read here first
    for (int i = 0; i < 3; ++i) {
      EXPECT_EQ(prism::get(prism::task(digests_of).resource("b", 1).remote(std::vector{read}), 60s),
                std::vector<uint64_t>{expected})
          << "round " << i;
      EXPECT_EQ(prism::get(prism::task(digest).resource("b", 1).remote(read), 60s), expected);
    }
  }
  expect_all_freed({"a", "b"});
}

}  // namespace
