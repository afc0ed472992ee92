// ObjectTable (transport/src/object_table.h) driven directly: copies and their counts, one pull
// per object however many wait, answers only from the peer asked, failures reaching every
// waiter exactly once, and the driver's directory (holders, entries, forgetting, lost peers).
#include "object_table.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "prism/internal/buffer_pool.h"

namespace prism::cluster {
namespace {

Blob blob(size_t n, char c = 'x') { return make_blob(std::string(n, c)); }

TEST(ObjectTableTest, HoldsCopiesAndCountsThem) {
  ObjectTable t;
  t.hold(1, blob(100), /*primary=*/true);
  t.hold(2, blob(50), /*primary=*/false);
  t.hold(2, blob(999), /*primary=*/false);  // a second copy of a held id is ignored
  t.hold(3, nullptr, true);                 // nothing to hold
  auto s = t.stats();
  EXPECT_EQ(s.primary_objects, 1u);
  EXPECT_EQ(s.primary_bytes, 100u);
  EXPECT_EQ(s.secondary_objects, 1u);
  EXPECT_EQ(s.secondary_bytes, 50u);
  ASSERT_NE(t.find(2), nullptr);
  EXPECT_EQ(t.find(2)->size(), 50u);
  EXPECT_EQ(t.find(3), nullptr);
  t.drop(1);
  t.drop(1);  // twice: nothing
  t.drop(2);
  s = t.stats();
  EXPECT_EQ(s.primary_objects + s.secondary_objects, 0u);
  EXPECT_EQ(s.primary_bytes + s.secondary_bytes, 0u);
}

// A pattern that differs per object and per byte.
std::string pattern(size_t n, int seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 131 + static_cast<size_t>(seed) * 7) >> 3);
  return s;
}

std::string spill_root() {
  const char* tmp = std::getenv("TMPDIR");
  const std::string root = std::string(tmp != nullptr && *tmp ? tmp : "/tmp") +
                           "/prism-object-table-test-" + std::to_string(getpid());
  std::filesystem::create_directories(root);
  return root;
}

size_t files_in(const std::string& dir) {
  std::error_code ec;
  size_t n = 0;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir, ec)) {
    n += e.is_regular_file() ? 1 : 0;
  }
  return n;
}

// A large copy's buffer goes back to the buffer pool when its last reader lets go, and the next
// large value is serialized into it; a table that spills (memory is short) empties the pool.
TEST(ObjectTableSpillTest, ALargeCopysBufferIsPooledAndSpillingEmptiesThePool) {
  constexpr size_t kMiB = 1 << 20;
  internal::BufferPool::add_capacity(64 * kMiB);
  std::string bytes(4 * kMiB, 'a');
  const char* buffer = bytes.data();
  {
    Blob b = make_blob(std::move(bytes));
    EXPECT_EQ(b->view.data(), buffer);  // (no copy)
    Blob reader = b;
    b.reset();
    EXPECT_EQ(internal::BufferPool::stats().buffers, 0) << "pooled while a reader holds it";
  }
  EXPECT_EQ(internal::BufferPool::stats().buffers, 1);
  std::string next;
  ASSERT_TRUE(internal::BufferPool::reserve_large(&next, 4 * kMiB - 100));
  EXPECT_EQ(next.data(), buffer);
  // A small copy is not pooled.
  blob(1000).reset();
  EXPECT_EQ(internal::BufferPool::stats().buffers, 0);

  const std::string root = spill_root();
  {
    ObjectTable t;
    t.set_spill(2 * kMiB, root);
    internal::BufferPool::offer_string(next);
    EXPECT_EQ(internal::BufferPool::stats().buffers, 1);
    t.hold(1, make_blob(pattern(kMiB, 1)), /*primary=*/true);
    EXPECT_EQ(internal::BufferPool::stats().buffers, 1) << "emptied with nothing spilled";
    t.hold(2, make_blob(pattern(3 * kMiB, 2)), /*primary=*/true);  // over the capacity
    EXPECT_GE(t.stats().spilled_objects, 1u);
    EXPECT_EQ(internal::BufferPool::stats().buffers, 0)
        << "the pool kept memory as the table spilled";
  }
  std::filesystem::remove_all(root);
  internal::BufferPool::add_capacity(-64 * static_cast<int64_t>(kMiB));
}

TEST(ObjectTableSpillTest, CopiesBeyondTheCapacityGoToFilesAndComeBackIntact) {
  constexpr size_t kMiB = 1 << 20;
  const std::string root = spill_root();
  {
    ObjectTable t;
    t.set_spill(2 * kMiB, root);
    for (int i = 1; i <= 5; ++i) {
      t.hold(static_cast<uint64_t>(i), make_blob(pattern(kMiB, i)), /*primary=*/true);
    }
    auto s = t.stats();
    // At most the capacity stays in memory: the three oldest went to files.
    EXPECT_EQ(s.spilled_objects, 3u);
    EXPECT_EQ(s.spilled_bytes, 3 * kMiB);
    EXPECT_EQ(s.spill_writes, 3u);
    EXPECT_EQ(s.primary_bytes + s.secondary_bytes, 5 * kMiB) << "spilled copies are still held";
    EXPECT_EQ(files_in(root), 3u);
    for (int i = 1; i <= 5; ++i) {
      Blob b = t.find(static_cast<uint64_t>(i));
      ASSERT_NE(b, nullptr) << i;
      EXPECT_TRUE(b->view == pattern(kMiB, i)) << "object " << i << " changed";
    }
    EXPECT_EQ(t.stats().restored_bytes, 3 * kMiB);
    // Dropping a spilled copy removes its file.
    t.drop(1);
    s = t.stats();
    EXPECT_EQ(s.spilled_objects, 2u);
    EXPECT_EQ(files_in(root), 2u);
  }
  // The table's directory goes with it.
  EXPECT_EQ(files_in(root), 0u);
  std::filesystem::remove_all(root);
}

TEST(ObjectTableSpillTest, SecondaryCopiesAreLetGoBeforePrimariesSpill) {
  constexpr size_t kMiB = 1 << 20;
  const std::string root = spill_root();
  {
    ObjectTable t;
    t.set_spill(3 * kMiB, root);
    t.hold(1, make_blob(pattern(kMiB, 1)), /*primary=*/true);
    t.hold(2, make_blob(pattern(kMiB, 2)), /*primary=*/false);
    t.hold(3, make_blob(pattern(kMiB, 3)), /*primary=*/false);
    Blob reader = t.find(2);  // 2 is the most recently used, and a reader holds it
    t.hold(4, make_blob(pattern(kMiB, 4)), /*primary=*/true);  // over: 3 is let go
    auto s = t.stats();
    EXPECT_EQ(s.evicted_objects, 1u);
    EXPECT_EQ(s.evicted_bytes, kMiB);
    EXPECT_EQ(s.secondary_objects, 1u);
    EXPECT_EQ(s.spilled_objects, 0u);
    EXPECT_FALSE(t.holds(3));
    EXPECT_EQ(t.find(3), nullptr);
    t.hold(5, make_blob(pattern(kMiB, 5)), /*primary=*/true);  // over: 2 goes, though read
    s = t.stats();
    EXPECT_EQ(s.evicted_objects, 2u);
    EXPECT_EQ(s.secondary_objects, 0u);
    EXPECT_EQ(s.spilled_objects, 0u);
    EXPECT_TRUE(reader->view == pattern(kMiB, 2)) << "a reader's bytes changed";
    t.hold(6, make_blob(pattern(kMiB, 6)), /*primary=*/true);  // no secondary left: 1 spills
    s = t.stats();
    EXPECT_EQ(s.evicted_objects, 2u);
    EXPECT_EQ(s.spilled_objects, 1u);
    EXPECT_EQ(files_in(root), 1u);
    for (uint64_t id : {1, 4, 5, 6}) {
      Blob b = t.find(id);
      ASSERT_NE(b, nullptr) << id;
      EXPECT_TRUE(b->view == pattern(kMiB, static_cast<int>(id))) << "object " << id;
    }
  }
  std::filesystem::remove_all(root);
}

// A result kept live (remote_call.h: LiveResult, a GPU tensor on its GPU): its stub is never
// written to a file (the value is not in the bytes), and its wire form is made when asked for.
TEST(ObjectTableSpillTest, ALiveResultStaysAndItsWireFormIsMadeOnDemand) {
  const std::string root = spill_root();
  {
    internal::LiveResult live;
    live.value = std::make_shared<std::string>(pattern(1000, 7));
    live.wire_bytes = 1000;
    live.write = [](const void* value, std::string* out) {
      *out = *static_cast<const std::string*>(value);
    };
    live.tag = &live;  // (any tag: only its reader looks)
    const void* const tag = live.tag;
    ObjectTable t;
    t.set_spill(1, root);  // every copy in memory is over the capacity
    t.hold(1, make_live_blob("stub", live), /*primary=*/true);
    t.hold(2, make_blob(pattern(100, 2)), /*primary=*/true);
    EXPECT_EQ(files_in(root), 1u) << "the plain copy spilled, the live one stayed";
    auto s = t.stats();
    EXPECT_EQ(s.spilled_objects, 1u);
    EXPECT_EQ(s.primary_objects, 2u);
    Blob b = t.find(1);
    ASSERT_NE(b, nullptr);
    EXPECT_EQ(b->view, "stub");
    {
      internal::MutexLock lock(b->decoded.mu);
      EXPECT_EQ(b->decoded.type, tag) << "the value beside its stub, for the node's readers";
      EXPECT_EQ(b->decoded.value, live.value);
    }
    std::string error;
    Blob wire = wire_form(b, &error);
    ASSERT_NE(wire, nullptr) << error;
    EXPECT_EQ(wire->view, pattern(1000, 7));
    EXPECT_EQ(wire->live, nullptr);
    const Blob plain = t.find(2);  // (mapped back from its file)
    ASSERT_NE(plain, nullptr);
    EXPECT_EQ(plain->view, pattern(100, 2));
    EXPECT_EQ(wire_form(plain, &error), plain) << "a plain copy is its own wire form";
    // A form of another size than the one announced is refused (a reader expects that many).
    live.wire_bytes = 999;
    EXPECT_EQ(wire_form(make_live_blob("stub", live), &error), nullptr);
    EXPECT_NE(error.find("1000 bytes, not 999"), std::string::npos) << error;
  }
  std::filesystem::remove_all(root);
}

// Device memory pressure (release_live_results): the live copies on that GPU become their wire
// form, least recently used first, until enough was let go; others stay live.
TEST(ObjectTableTest, DevicePressureTurnsTheOldestLiveCopiesOnThatGpuIntoBytes) {
  auto live_on = [](int device, int seed) {
    internal::LiveResult live;
    live.value = std::make_shared<std::string>(pattern(1000, seed));
    live.wire_bytes = 1000;
    live.device = device;
    live.write = [](const void* value, std::string* out) {
      *out = *static_cast<const std::string*>(value);
    };
    return make_live_blob("stub", live);
  };
  ObjectTable t;
  t.hold(1, live_on(0, 1), /*primary=*/true);
  t.hold(2, live_on(1, 2), /*primary=*/true);
  t.hold(3, live_on(0, 3), /*primary=*/true);
  t.hold(4, live_on(0, 4), /*primary=*/true);
  (void)t.find(3);  // used last: on GPU 0, 4 is the oldest, then 1, then 3
  Blob reader = t.find(1);  // read now (the most recent), and held: its memory would not go
  // Through the process's releaser (what the GPU module calls): 1500 bytes on GPU 0.
  EXPECT_EQ(internal::release_live_results(0, 1500), 2000u);
  auto s = t.stats();
  EXPECT_EQ(s.released_live, 2u);
  EXPECT_EQ(s.primary_objects, 4u);
  EXPECT_EQ(s.primary_bytes, 2 * 1000u + 2 * 4u) << "two now whole, two stubs";
  for (uint64_t id : {4, 3}) {
    const Blob b = t.find(id);
    ASSERT_NE(b, nullptr);
    EXPECT_EQ(b->live, nullptr) << id;
    EXPECT_EQ(b->view, pattern(1000, static_cast<int>(id))) << id;
  }
  EXPECT_NE(t.find(2)->live, nullptr) << "on another GPU";
  EXPECT_EQ(t.release_live(0, 1), 0u) << "the one left is held by its reader";
  EXPECT_EQ(reader->view, "stub");
  EXPECT_NE(reader->live, nullptr);
  reader.reset();
  EXPECT_EQ(t.release_live(0, 1), 1000u) << "let go by its reader";
  EXPECT_EQ(t.find(1)->view, pattern(1000, 1));
  EXPECT_EQ(t.release_live(1, 1), 1000u);
  EXPECT_EQ(t.release_live(1, 1), 0u) << "nothing live left on GPU 1";
  EXPECT_EQ(t.stats().released_live, 4u);
}

TEST(ObjectTableTest, ARemovedHolderIsNoLongerNamed) {
  ObjectTable t;
  t.locate(7, 100, 3);
  ASSERT_TRUE(t.add_holder(7, 4));
  t.remove_holder(7, 3);
  std::vector<PeerId> holders;
  ASSERT_TRUE(t.where(7, &holders, nullptr));
  EXPECT_EQ(holders, std::vector<PeerId>{4});
  t.remove_holder(8, 4);  // (an unknown number: nothing)
}

// The driver's borrows of a value a node lent, begun and ended in the order the link's threads
// carry them out: the end of one borrow after the beginning of the next keeps the location (the
// new borrow reads from it); the last end forgets it with the driver's copy, naming the other
// holders to tell.
TEST(ObjectTableTest, ABorrowsEndAfterTheNextBeganKeepsTheLocation) {
  constexpr uint64_t kPull = (uint64_t{2} << 48) | 5;  // (node1's number)
  ObjectTable t;
  std::vector<PeerId> others;
  EXPECT_FALSE(t.begin_borrow(kPull, 100, 3, &others));
  t.hold(kPull, blob(100), /*primary=*/false);  // the driver read it
  ASSERT_TRUE(t.add_pending_holder(kPull, 4));  // and passed it on to node 4
  EXPECT_FALSE(t.begin_borrow(kPull, 100, 3, &others));  // the next borrow began first
  EXPECT_FALSE(t.end_borrow(kPull, &others));            // then the first one's end
  EXPECT_TRUE(others.empty());
  std::vector<PeerId> holders;
  ASSERT_TRUE(t.where(kPull, &holders, nullptr));
  EXPECT_EQ(holders, std::vector<PeerId>{3});
  EXPECT_NE(t.find(kPull), nullptr);
  EXPECT_TRUE(t.end_borrow(kPull, &others));  // the last borrow ended
  std::sort(others.begin(), others.end());
  EXPECT_EQ(others, (std::vector<PeerId>{3, 4}));
  EXPECT_FALSE(t.where(kPull, nullptr, nullptr));
  EXPECT_EQ(t.find(kPull), nullptr);
  EXPECT_EQ(t.stats().secondary_objects, 0u);
}

// A borrow's end carried out before its own beginning (its RefReady's thread was preempted
// between the table and the link): the beginning, when it comes, leaves nothing recorded.
TEST(ObjectTableTest, ABorrowsEndBeforeItsBeginningLeavesNothing) {
  constexpr uint64_t kPull = (uint64_t{3} << 48) | 9;
  ObjectTable t;
  std::vector<PeerId> others;
  EXPECT_FALSE(t.end_borrow(kPull, &others));
  EXPECT_TRUE(t.begin_borrow(kPull, 100, 3, &others));
  EXPECT_TRUE(others.empty()) << "no other holder was told";
  EXPECT_FALSE(t.where(kPull, nullptr, nullptr));
  // A borrow after that one starts afresh.
  EXPECT_FALSE(t.begin_borrow(kPull, 100, 3, &others));
  EXPECT_TRUE(t.where(kPull, nullptr, nullptr));
  EXPECT_TRUE(t.end_borrow(kPull, &others));
  EXPECT_EQ(others, std::vector<PeerId>{3});
}

// Many borrows of one number begun by one thread (the network thread, in order) while another
// ends them (each end after its own beginning, in any order with later beginnings): the location
// lives while one does, and goes with the last.
TEST(ObjectTableTest, BorrowsBegunAndEndedOnTwoThreadsLeaveNothingWhenAllEnded) {
  constexpr uint64_t kPull = (uint64_t{2} << 48) | 77;
  constexpr int kBorrows = 20000;
  ObjectTable t;
  std::atomic<int> begun{0};
  std::atomic<int> forgotten{0};
  std::atomic<bool> lost{false};
  std::thread ender([&] {
    for (int i = 0; i < kBorrows; ++i) {
      while (begun.load(std::memory_order_acquire) <= i) std::this_thread::yield();
      std::vector<PeerId> others;
      if (t.end_borrow(kPull, &others)) forgotten.fetch_add(1);
    }
  });
  for (int i = 0; i < kBorrows; ++i) {
    std::vector<PeerId> others;
    if (t.begin_borrow(kPull, 8, 3, &others)) lost.store(true);
    // (While this borrow lives, its location must: its end has not been carried out.)
    if (begun.load() == i && !t.where(kPull, nullptr, nullptr)) lost.store(true);
    begun.store(i + 1, std::memory_order_release);
  }
  ender.join();
  EXPECT_FALSE(lost.load()) << "a live borrow's location was forgotten";
  EXPECT_GE(forgotten.load(), 1);
  EXPECT_FALSE(t.where(kPull, nullptr, nullptr));
}

TEST(ObjectTableSpillTest, TheLeastRecentlyUsedGoFirstAndReadersKeepTheirBytes) {
  constexpr size_t kKiB = 1 << 10;
  const std::string root = spill_root();
  ObjectTable t;
  t.set_spill(300 * kKiB, root);
  t.hold(1, make_blob(pattern(100 * kKiB, 1)), true);
  t.hold(2, make_blob(pattern(100 * kKiB, 2)), true);
  t.hold(3, make_blob(pattern(100 * kKiB, 3)), true);
  Blob held = t.find(1);  // 1 is now the most recently used; a reader holds it
  t.hold(4, make_blob(pattern(100 * kKiB, 4)), true);  // over: the oldest use (2) goes
  EXPECT_EQ(t.stats().spilled_objects, 1u);
  EXPECT_EQ(t.stats().restored_bytes, 0u);
  t.hold(5, make_blob(pattern(100 * kKiB, 5)), true);  // then 3
  t.hold(6, make_blob(pattern(100 * kKiB, 6)), true);  // then 1, which a reader still holds
  EXPECT_EQ(t.stats().spilled_objects, 3u);
  EXPECT_EQ(t.stats().restored_bytes, 0u) << "nothing was read back yet";
  EXPECT_TRUE(held->view == pattern(100 * kKiB, 1)) << "a reader's bytes changed";
  // 4, 5 and 6 are in memory: finding them reads nothing back.
  for (uint64_t id : {4, 5, 6}) ASSERT_NE(t.find(id), nullptr);
  EXPECT_EQ(t.stats().restored_bytes, 0u);
  for (uint64_t id : {1, 2, 3}) {
    EXPECT_TRUE(t.find(id)->view == pattern(100 * kKiB, static_cast<int>(id)));
  }
  EXPECT_EQ(t.stats().restored_bytes, 300 * kKiB);
  // An empty copy never spills; without a capacity nothing does.
  ObjectTable unlimited;
  for (uint64_t id = 1; id <= 4; ++id) unlimited.hold(id, make_blob(pattern(kKiB, 0)), false);
  EXPECT_EQ(unlimited.stats().spilled_objects, 0u);
  std::filesystem::remove_all(root);
}

TEST(ObjectTableTest, ADroppedCopyStaysReadableByWhoeverHasIt) {
  ObjectTable t;
  t.hold(1, blob(10, 'a'), true);
  Blob mine = t.find(1);
  t.drop(1);
  EXPECT_EQ(t.find(1), nullptr);
  EXPECT_EQ(mine->view, std::string(10, 'a'));
}

TEST(ObjectTableTest, OnePullPerObjectAndEveryWaiterAnsweredOnce) {
  ObjectTable t;
  std::vector<int> calls(3, 0);
  std::vector<size_t> sizes(3, 0);
  for (int i = 0; i < 3; ++i) {
    const bool first = t.await(7, /*from=*/5, [&, i](const Blob& b, const std::string& why) {
      ++calls[i];
      EXPECT_TRUE(why.empty());
      sizes[i] = b ? b->size() : 0;
    });
    EXPECT_EQ(first, i == 0) << "waiter " << i;
  }
  EXPECT_EQ(t.stats().pulls, 1u);
  // An answer from a peer that was not asked is not trusted.
  EXPECT_TRUE(t.finish(7, /*from=*/6, blob(64), true).empty());
  auto waiters = t.finish(7, 5, blob(64), /*keep=*/true);
  ASSERT_EQ(waiters.size(), 3u);
  for (auto& w : waiters) w(blob(64), {});
  EXPECT_EQ(calls, (std::vector<int>{1, 1, 1}));
  EXPECT_EQ(sizes, (std::vector<size_t>{64, 64, 64}));
  EXPECT_EQ(t.stats().secondary_objects, 1u);  // kept
  EXPECT_EQ(t.stats().pulled_bytes, 64u);
  EXPECT_TRUE(t.finish(7, 5, blob(64), true).empty());  // a late duplicate: nobody waits
  // The next pull of it is a new one.
  EXPECT_TRUE(t.await(7, 5, [](const Blob&, const std::string&) {}));
}

// A value larger than one message arrives in parts, in order, gathered in one buffer; parts
// that do not fit together, or that nobody asked for, fail the pull instead.
TEST(ObjectTableTest, PartsAreGatheredInOrderIntoTheWholeValue) {
  ObjectTable t;
  const std::string value = "0123456789abcdef";
  std::string error;
  EXPECT_EQ(t.add_part(3, 5, 0, 16, value.substr(0, 4), &error), nullptr);
  EXPECT_NE(error.find("nobody asked"), std::string::npos) << error;
  ASSERT_TRUE(t.await(3, 5, [](const Blob&, const std::string&) {}));
  error.clear();
  EXPECT_EQ(t.add_part(3, 6, 0, 16, value.substr(0, 4), &error), nullptr) << "another peer";
  EXPECT_FALSE(error.empty());
  error.clear();
  EXPECT_EQ(t.add_part(3, 5, 0, 16, value.substr(0, 4), &error), nullptr);
  EXPECT_TRUE(error.empty()) << error;
  EXPECT_EQ(t.add_part(3, 5, 4, 16, value.substr(4, 6), &error), nullptr);
  EXPECT_TRUE(error.empty()) << error;
  const Blob whole = t.add_part(3, 5, 10, 16, value.substr(10), &error);
  ASSERT_NE(whole, nullptr) << error;
  EXPECT_EQ(whole->view, value);
  const auto waiters = t.finish(3, 5, whole, /*keep=*/true);
  EXPECT_EQ(waiters.size(), 1u);
  EXPECT_EQ(t.find(3)->view, value);
  EXPECT_EQ(t.stats().pulled_bytes, 16u);

  // A size other than the one the asker knows is refused before anything is allocated.
  ASSERT_TRUE(t.await(8, 5, [](const Blob&, const std::string&) {}, /*expected_bytes=*/16));
  error.clear();
  EXPECT_EQ(t.add_part(8, 5, 0, 1u << 30, "abcd", &error), nullptr);
  EXPECT_NE(error.find("not the 16"), std::string::npos) << error;

  // Out of order, a different size, a part past the end: refused.
  for (int bad = 0; bad < 4; ++bad) {
    SCOPED_TRACE(bad);
    ObjectTable u;
    ASSERT_TRUE(u.await(4, 1, [](const Blob&, const std::string&) {}));
    error.clear();
    if (bad == 0) {
      EXPECT_EQ(u.add_part(4, 1, 4, 16, "abcd", &error), nullptr);  // not the start
    } else {
      ASSERT_EQ(u.add_part(4, 1, 0, 16, "abcd", &error), nullptr);
      ASSERT_TRUE(error.empty());
      Blob b;
      switch (bad) {
        case 1: b = u.add_part(4, 1, 8, 16, "abcd", &error); break;                 // a gap
        case 2: b = u.add_part(4, 1, 4, 17, "abcd", &error); break;                 // resized
        default: b = u.add_part(4, 1, 4, 16, std::string(13, 'x'), &error); break;  // past the end
      }
      EXPECT_EQ(b, nullptr);
    }
    EXPECT_FALSE(error.empty());
  }
}

TEST(ObjectTableTest, PullsFailWithTheirPeerOrAllAtOnce) {
  ObjectTable t;
  int failed = 0;
  auto count_failure = [&](const Blob& b, const std::string&) { failed += b ? 0 : 1; };
  EXPECT_TRUE(t.await(1, 10, count_failure));
  EXPECT_TRUE(t.await(2, 11, count_failure));
  EXPECT_FALSE(t.await(2, 11, count_failure));
  auto lost = t.fail_from(11);
  ASSERT_EQ(lost.size(), 1u);
  EXPECT_EQ(lost[0].first, 2u);
  for (auto& w : lost[0].second) w(nullptr, "node gone");
  EXPECT_EQ(failed, 2);
  auto rest = t.fail_from(kHere);  // every pull
  ASSERT_EQ(rest.size(), 1u);
  EXPECT_EQ(rest[0].first, 1u);
  EXPECT_TRUE(t.fail_from(kHere).empty());
}

// A pull redirected to another holder (the driver names a node to pull from directly, or a
// direct pull falls back to the driver): only the new holder's answer counts, parts the old one
// sent are discarded, the waiters stay and are answered once.
TEST(ObjectTableTest, ARedirectedPullHearsOnlyItsNewHolder) {
  ObjectTable t;
  const std::string value = "0123456789abcdef";
  int answered = 0;
  std::string got;
  ASSERT_TRUE(t.await(4, 10, [&](const Blob& b, const std::string&) {
    ++answered;
    if (b) got = std::string(b->view);
  }));
  EXPECT_FALSE(t.redirect(4, 11, 12)) << "not sent to 11";
  EXPECT_FALSE(t.redirect(5, 10, 12)) << "no pull of 5";
  std::string error;
  EXPECT_EQ(t.add_part(4, 10, 0, 16, value.substr(0, 6), &error), nullptr);  // from the first
  ASSERT_TRUE(error.empty()) << error;
  ASSERT_TRUE(t.redirect(4, 10, 12, /*expected_bytes=*/16));
  EXPECT_FALSE(t.await(4, 12, [&](const Blob&, const std::string&) { ++answered; }))
      << "still one pull in flight";
  // The old holder's answers no longer count.
  EXPECT_EQ(t.add_part(4, 10, 6, 16, value.substr(6), &error), nullptr);
  EXPECT_FALSE(error.empty());
  EXPECT_TRUE(t.finish(4, 10, make_blob(value), /*keep=*/true).empty());
  // The new holder sends the value from its start, at the size the redirect named.
  error.clear();
  EXPECT_EQ(t.add_part(4, 12, 0, 1u << 20, "abcd", &error), nullptr);
  EXPECT_NE(error.find("not the 16"), std::string::npos) << error;
  error.clear();
  EXPECT_EQ(t.add_part(4, 12, 0, 16, value.substr(0, 8), &error), nullptr);
  ASSERT_TRUE(error.empty()) << error;
  const Blob whole = t.add_part(4, 12, 8, 16, value.substr(8), &error);
  ASSERT_NE(whole, nullptr) << error;
  for (auto& w : t.finish(4, 12, whole, /*keep=*/true)) w(whole, {});
  EXPECT_EQ(answered, 2);
  EXPECT_EQ(got, value);
  EXPECT_EQ(t.find(4)->view, value);
  EXPECT_EQ(t.stats().pulls, 1u) << "one pull, whoever answered it";

  // Every pull sent to one peer moves at once (its connection failed).
  ASSERT_TRUE(t.await(6, 20, [](const Blob&, const std::string&) {}));
  ASSERT_TRUE(t.await(7, 20, [](const Blob&, const std::string&) {}));
  ASSERT_TRUE(t.await(8, 21, [](const Blob&, const std::string&) {}));
  EXPECT_EQ(t.pulls_from(20), 2u);
  EXPECT_EQ(t.pulls_from(21), 1u);
  EXPECT_EQ(t.pulls_from(10), 0u) << "pull 4 ended";
  std::vector<uint64_t> moved = t.redirect_all(20, 10);
  std::sort(moved.begin(), moved.end());
  EXPECT_EQ(moved, (std::vector<uint64_t>{6, 7}));
  EXPECT_EQ(t.pulls_from(20), 0u);
  EXPECT_EQ(t.pulls_from(10), 2u);
  EXPECT_TRUE(t.fail_from(20).empty());
  EXPECT_EQ(t.fail_from(10).size(), 2u);
  EXPECT_EQ(t.fail_from(21).size(), 1u);
}

// A pull whose every byte has come (a GPU value landing on its GPU) stays with its sender when
// that sender goes away: only its finish() answers it, or a redirect that asks anew.
TEST(ObjectTableTest, APullWhoseBytesHaveAllComeStaysWhenItsSenderGoes) {
  ObjectTable t;
  int answered = 0;
  ASSERT_TRUE(t.await(3, 30, [&](const Blob& b, const std::string&) { answered += b ? 1 : 0; }));
  ASSERT_TRUE(t.await(4, 30, [](const Blob&, const std::string&) {}));
  EXPECT_FALSE(t.arrived(3, 31)) << "not sent to 31";
  EXPECT_FALSE(t.arrived(9, 30)) << "no pull of 9";
  ASSERT_TRUE(t.arrived(3, 30));
  EXPECT_TRUE(t.awaits(3, 30));
  EXPECT_EQ(t.redirect_all(30, 1), (std::vector<uint64_t>{4}));  // (4 had not arrived)
  EXPECT_TRUE(t.fail_from(30).empty());
  EXPECT_TRUE(t.awaits(3, 30));
  for (auto& w : t.finish(3, 30, make_blob(std::string("value")), /*keep=*/true)) {
    w(make_blob(std::string("value")), {});
  }
  EXPECT_EQ(answered, 1);
  // A redirect asks anew: the pull can move and fail again.
  ASSERT_TRUE(t.await(5, 30, [](const Blob&, const std::string&) {}));
  ASSERT_TRUE(t.arrived(5, 30));
  ASSERT_TRUE(t.redirect(5, 30, 30));
  EXPECT_EQ(t.fail_from(30).size(), 1u);
  EXPECT_EQ(t.fail_from(kHere).size(), 1u) << "(4, at 1)";
}

// A copy freed while its pull was on its way (the owner's free came by another connection
// than the bytes) is not kept when the bytes arrive; its readers still get them.
TEST(ObjectTableTest, AValueFreedWhileOnItsWayIsNotKept) {
  ObjectTable t;
  Blob got;
  ASSERT_TRUE(t.await(9, 10, [&](const Blob& b, const std::string&) { got = b; }));
  t.drop(9);
  EXPECT_EQ(t.pulls_from(10), 1u) << "its answer is still to come";
  for (auto& w : t.finish(9, 10, make_blob(std::string("bytes")), /*keep=*/true)) {
    w(make_blob(std::string("bytes")), {});
  }
  ASSERT_NE(got, nullptr);
  EXPECT_EQ(got->view, "bytes");
  EXPECT_EQ(t.pulls_from(10), 0u);
  EXPECT_FALSE(t.holds(9));
  EXPECT_EQ(t.stats().secondary_objects, 0u);
  // A later pull of the same number is kept as usual.
  ASSERT_TRUE(t.await(9, 10, [](const Blob&, const std::string&) {}));
  t.finish(9, 10, make_blob(std::string("bytes")), /*keep=*/true);
  EXPECT_TRUE(t.holds(9));
}

// A peer sent to pull an object from another node directly is a pending holder: frees reach
// it (forget names it), but nobody is sent to read from it (where() does not list it) until it
// is known to hold the copy.
TEST(ObjectTableTest, APendingHolderIsFreedButNotReadFrom) {
  ObjectTable t;
  const uint64_t a = t.new_id();
  t.locate(a, 100, 3);
  EXPECT_FALSE(t.add_pending_holder(999, 4)) << "an object that is gone";
  t.locate(a, 100, 7);
  ASSERT_TRUE(t.add_pending_holder(a, 4));
  // A holder that asks has let its copy go: pending again, not read from.
  ASSERT_TRUE(t.add_pending_holder(a, 7));
  std::vector<PeerId> holders;
  ASSERT_TRUE(t.where(a, &holders, nullptr));
  EXPECT_EQ(holders, (std::vector<PeerId>{3}));
  // One that said it has no copy is not read from either, but a copy landing there later is
  // freed with the others.
  t.locate(a, 100, 8);
  t.remove_holder(a, 8);
  ASSERT_TRUE(t.where(a, &holders, nullptr));
  EXPECT_EQ(holders, (std::vector<PeerId>{3}));
  // Losing the pending one orphans nothing; losing the holder does.
  EXPECT_TRUE(t.lose_peer(4).empty());
  ASSERT_TRUE(t.add_pending_holder(a, 5));
  std::vector<PeerId> freed = t.forget(a);
  std::sort(freed.begin(), freed.end());
  EXPECT_EQ(freed, (std::vector<PeerId>{3, 5, 7, 8}));
  // Confirmed (it said it has the copy): a holder like any other, named once. Only a pending
  // holder can be confirmed.
  const uint64_t b = t.new_id();
  t.locate(b, 100, 3);
  EXPECT_FALSE(t.confirm_holder(b, 6)) << "never sent to pull it";
  ASSERT_TRUE(t.add_pending_holder(b, 6));
  ASSERT_TRUE(t.confirm_holder(b, 6));
  EXPECT_FALSE(t.confirm_holder(b, 6)) << "confirmed twice";
  ASSERT_TRUE(t.where(b, &holders, nullptr));
  EXPECT_EQ(holders, (std::vector<PeerId>{3, 6}));
  freed = t.forget(b);
  std::sort(freed.begin(), freed.end());
  EXPECT_EQ(freed, (std::vector<PeerId>{3, 6}));
}

TEST(ObjectTableTest, TheDirectoryTracksHoldersEntriesAndLostPeers) {
  ObjectTable t;
  const uint64_t a = t.new_id(), b = t.new_id();
  EXPECT_NE(a, b);
  EXPECT_NE(a, 0u);
  t.locate(a, 1000, 3);
  t.locate(a, 1000, 4);
  t.locate(b, 20, kHere);
  t.hold(b, blob(20), true);
  ObjectId entry;
  entry.owner = 9;
  entry.sequence = 42;
  t.bind(entry, b);
  EXPECT_EQ(t.id_of(entry), b);
  std::vector<PeerId> holders;
  uint64_t bytes = 0;
  ASSERT_TRUE(t.where(a, &holders, &bytes));
  EXPECT_EQ(holders, (std::vector<PeerId>{3, 4}));
  EXPECT_EQ(bytes, 1000u);
  auto by_peer = t.held_by_peer();
  EXPECT_EQ(by_peer[3], (std::pair<uint64_t, uint64_t>{1, 1000}));
  EXPECT_EQ(by_peer[kHere], (std::pair<uint64_t, uint64_t>{1, 20}));
  EXPECT_TRUE(t.add_holder(a, 6));
  EXPECT_FALSE(t.add_holder(12345, 6)) << "a holder of an object that is gone was recorded";
  EXPECT_TRUE(t.lose_peer(6).empty());
  // Peer 3 goes: a is still on 4; then 4 goes and a has no holder left.
  EXPECT_TRUE(t.lose_peer(3).empty());
  EXPECT_EQ(t.lose_peer(4), (std::vector<uint64_t>{a}));
  // Forgetting b frees the copy here and unbinds its entry; the other holders are returned.
  t.locate(b, 20, 5);
  EXPECT_EQ(t.forget(b), (std::vector<PeerId>{5}));
  EXPECT_EQ(t.find(b), nullptr);
  EXPECT_EQ(t.id_of(entry), 0u);
  EXPECT_FALSE(t.where(b, &holders, &bytes));
  EXPECT_EQ(t.stats().primary_objects, 0u);
}

TEST(ObjectTableTest, ConcurrentWaitersShareOnePullAndAllHearTheEnd) {
  // Threads await the same objects while another thread finishes or fails their pulls: each
  // object is asked once per round, and every waiter is answered exactly once.
  ObjectTable t;
  constexpr int kThreads = 4, kObjects = 50;
  std::atomic<int> sent{0}, answered{0};
  std::vector<std::thread> threads;
  for (int th = 0; th < kThreads; ++th) {
    threads.emplace_back([&] {
      for (int i = 1; i <= kObjects; ++i) {
        if (t.await(static_cast<uint64_t>(i), 1,
                    [&](const Blob&, const std::string&) { answered.fetch_add(1); })) {
          sent.fetch_add(1);
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(sent.load(), kObjects);
  std::thread finisher([&] {
    for (int i = 1; i <= kObjects; i += 2) {
      for (auto& w : t.finish(static_cast<uint64_t>(i), 1, blob(8), true)) w(blob(8), {});
    }
  });
  std::thread failer([&] {
    for (int i = 2; i <= kObjects; i += 2) {
      for (auto& w : t.finish(static_cast<uint64_t>(i), 1, nullptr, true)) w(nullptr, "no");
    }
  });
  finisher.join();
  failer.join();
  EXPECT_EQ(answered.load(), kThreads * kObjects);
  EXPECT_EQ(t.stats().secondary_objects, static_cast<uint64_t>(kObjects / 2));
  EXPECT_TRUE(t.fail_from(kHere).empty());
}

}  // namespace
}  // namespace prism::cluster
