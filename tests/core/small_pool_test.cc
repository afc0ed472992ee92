// The small-block pool (prism/internal/small_pool.h), driven directly: blocks freed on one
// thread reach another in batches, the lists stay bounded, a thread's blocks outlive it, and
// every block handed out is distinct and writable. Then records and entries through the runtime.
#include "prism/internal/small_pool.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <random>
#include <set>
#include <thread>
#include <utility>
#include <vector>

#include "common/child.h"
#include "core/test_util.h"
#include "prism/prism.h"

namespace sp = prism::internal::small_pool;

namespace {

// A size class no other code in this process uses (the runtime's records and entries are of
// other sizes), so counts are exact: 496 bytes.
constexpr size_t kSize = sp::kMaxPooledBytes - sp::kGranule;

void drain_central(size_t bytes) {
  // Takes everything the central list holds for `bytes` (on a fresh thread, whose list starts
  // empty) and frees it past the pool.
  std::thread([bytes] {
    std::vector<void*> taken;
    while (sp::central_blocks(bytes) > 0) {
      for (size_t i = 0; i < sp::kBatch; ++i) taken.push_back(sp::allocate(bytes));
    }
    for (void* p : taken) ::operator delete(p);
  }).join();
}

}  // namespace

TEST(SmallPool, AThreadReusesWhatItFreed) {
  if (!sp::enabled()) GTEST_SKIP() << "the pool is off under AddressSanitizer";
  std::thread([] {
    void* a = sp::allocate(kSize);
    std::memset(a, 0xab, kSize);
    sp::deallocate(a, kSize);
    EXPECT_EQ(sp::thread_blocks(kSize), 1u);
    void* b = sp::allocate(kSize - 3);  // same class
    EXPECT_EQ(a, b);
    EXPECT_EQ(sp::thread_blocks(kSize), 0u);
    sp::deallocate(b, kSize - 3);
  }).join();
}

TEST(SmallPool, BlocksFreedOnOneThreadReachAnotherInBatches) {
  if (!sp::enabled()) GTEST_SKIP() << "the pool is off under AddressSanitizer";
  drain_central(kSize);
  const size_t n = 10 * sp::kBatch;
  std::vector<void*> blocks;
  std::thread([&] {
    for (size_t i = 0; i < n; ++i) blocks.push_back(sp::allocate(kSize));
  }).join();
  std::set<void*> made(blocks.begin(), blocks.end());
  ASSERT_EQ(made.size(), n);  // all distinct
  // A consumer frees them all: its list never holds more than 2 * kBatch, the rest goes to the
  // central list in whole batches, and whatever is left when it exits goes there too.
  std::thread([&] {
    for (size_t i = 0; i < n; ++i) {
      sp::deallocate(blocks[i], kSize);
      ASSERT_LT(sp::thread_blocks(kSize), 2 * sp::kBatch);
    }
    EXPECT_EQ(sp::thread_blocks(kSize) + sp::central_blocks(kSize), n);
  }).join();
  EXPECT_EQ(sp::central_blocks(kSize), n);
  // A producer takes them back: the same blocks, no new ones, until the central list is empty.
  std::thread([&] {
    std::set<void*> again;
    for (size_t i = 0; i < n; ++i) again.insert(sp::allocate(kSize));
    EXPECT_EQ(again, made);
    EXPECT_EQ(sp::central_blocks(kSize), 0u);
    for (void* p : again) ::operator delete(p);  // (a pooled block may always go to the system)
  }).join();
}

TEST(SmallPool, TheCentralListIsBounded) {
  if (!sp::enabled()) GTEST_SKIP() << "the pool is off under AddressSanitizer";
  drain_central(kSize);
  const size_t n = (sp::max_central_batches(kSize) + 5) * sp::kBatch;
  std::vector<void*> blocks;
  for (size_t i = 0; i < n; ++i) blocks.push_back(::operator new(sp::block_bytes(kSize)));
  std::thread([&] {
    for (void* p : blocks) sp::deallocate(p, kSize);
  }).join();
  EXPECT_EQ(sp::central_blocks(kSize), sp::max_central_batches(kSize) * sp::kBatch);
  // About a megabyte per class, within bounds.
  static_assert(sp::max_central_batches(16) == sp::kMaxCentralBatches);
  static_assert(sp::max_central_batches(120) == 136);  // (blocks of 120 bytes)
  static_assert(sp::max_central_batches(sp::kMaxPooledBytes) == 31);  // (of 520)
  drain_central(kSize);
}

// Blocks fill glibc's chunks: 16k + 8 bytes, the smallest such size that holds the request (an
// 88-byte entry gets 88, a 128-byte record 136).
TEST(SmallPool, ClassesAreEightBytesShortOfMultiplesOfSixteen) {
  static_assert(sp::block_bytes(0) == 8 && sp::block_bytes(1) == 8 && sp::block_bytes(8) == 8);
  static_assert(sp::block_bytes(9) == 24 && sp::block_bytes(24) == 24);
  static_assert(sp::block_bytes(88) == 88 && sp::block_bytes(89) == 104);
  static_assert(sp::block_bytes(120) == 120 && sp::block_bytes(128) == 136);
  static_assert(sp::block_bytes(sp::kMaxPooledBytes) == sp::kMaxPooledBytes + 8);
  for (size_t n = 0; n <= sp::kMaxPooledBytes; ++n) {
    ASSERT_GE(sp::block_bytes(n), n);
    ASSERT_LT(sp::block_bytes(n), n + sp::kGranule + 8);
    ASSERT_EQ(sp::block_bytes(n) % sp::kGranule, 8u);
  }
  // The pool relies on the allocator aligning every block to 16 bytes (the standard promises 8
  // for these sizes): objects of 16-byte alignment live in them.
  std::vector<std::pair<void*, size_t>> held;
  for (size_t n = 1; n <= sp::kMaxPooledBytes; n += 7) {
    void* p = sp::allocate(n);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % __STDCPP_DEFAULT_NEW_ALIGNMENT__, 0u) << n;
    held.emplace_back(p, n);
  }
  for (auto [p, n] : held) sp::deallocate(p, n);
}

TEST(SmallPool, LargeAndEmptyRequests) {
  void* big = sp::allocate(sp::kMaxPooledBytes + 1);
  std::memset(big, 1, sp::kMaxPooledBytes + 1);
  sp::deallocate(big, sp::kMaxPooledBytes + 1);
  EXPECT_EQ(sp::thread_blocks(sp::kMaxPooledBytes + 1), 0u);
  void* zero = sp::allocate(0);
  EXPECT_NE(zero, nullptr);
  sp::deallocate(zero, 0);
  sp::deallocate(nullptr, 16);
}

// Producers and consumers of every size class at once, each block filled with a pattern that
// names its owner and checked before it is freed: a block handed out twice is caught.
TEST(SmallPool, ManyThreadsNeverShareABlock) {
  constexpr int kThreads = 6;
  constexpr int kRounds = 20000;
  std::vector<std::thread> threads;
  std::atomic<int> bad{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([t, &bad] {
      std::mt19937 rng(static_cast<uint32_t>(t) * 7919u + 1);
      std::vector<std::pair<uint64_t*, size_t>> held;
      for (int i = 0; i < kRounds; ++i) {
        if (held.size() < 300 && (held.empty() || rng() % 3 != 0)) {
          const size_t bytes = 8 + rng() % (sp::kMaxPooledBytes - 8);
          auto* p = static_cast<uint64_t*>(sp::allocate(bytes));
          const uint64_t tag = (static_cast<uint64_t>(t) << 32) | static_cast<uint32_t>(i);
          std::fill(p, p + bytes / 8, tag);
          held.emplace_back(p, bytes);
        } else {
          const size_t k = rng() % held.size();
          auto [p, bytes] = held[k];
          for (size_t w = 1; w < bytes / 8; ++w) {
            if (p[w] != p[0]) bad.fetch_add(1);
          }
          if ((p[0] >> 32) != static_cast<uint64_t>(t)) bad.fetch_add(1);
          sp::deallocate(p, bytes);
          held[k] = held.back();
          held.pop_back();
        }
      }
      for (auto [p, bytes] : held) sp::deallocate(p, bytes);
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad.load(), 0);
}

// fork() while other threads move batches through the central lists: the child (one thread)
// can still take and give batches, so no lock was left held by a thread it does not have.
TEST(SmallPool, AForkedChildCanUseThePool) {
  if (!sp::enabled()) {
    GTEST_SKIP() << "the pool is off under AddressSanitizer, whose own allocator may deadlock "
                    "in the child of a multi-threaded fork";
  }
  // This thread uses the pool first, as a program would before it forks: what a child may do is
  // what async-signal-safe code, malloc and the pool allow, and a first use's one-time set-up
  // (C++ static initialization) is not among them.
  sp::deallocate(sp::allocate(kSize), kSize);
  struct Churn {  // stopped and joined however the test ends
    std::atomic<bool> stop{false};
    std::vector<std::thread> threads;
    ~Churn() {
      stop = true;
      for (auto& th : threads) th.join();
    }
  } churn;
  for (int t = 0; t < 2; ++t) {
    churn.threads.emplace_back([&stop = churn.stop] {
      std::vector<void*> held;
      while (!stop.load(std::memory_order_relaxed)) {
        for (size_t i = 0; i < 3 * sp::kBatch; ++i) held.push_back(sp::allocate(kSize));
        for (void* p : held) sp::deallocate(p, kSize);
        held.clear();
      }
    });
  }
  for (int round = 0; round < 200; ++round) {
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      std::vector<void*> held;
      for (size_t i = 0; i < 5 * sp::kBatch; ++i) held.push_back(sp::allocate(kSize));
      for (void* p : held) sp::deallocate(p, kSize);
      _exit(0);
    }
    // Reaped with a deadline: a child stuck on a lock is killed and fails the test.
    prism_test::Child child = prism_test::Child::adopt(pid);
    ASSERT_TRUE(child.wait_exit(prism_test::kTimeout)) << "the child hung in round " << round;
    EXPECT_EQ(child.exit_status(), 0) << "round " << round;
  }
}

// Through the runtime: tasks submitted here and run on workers (records and entries cross
// threads in both directions), nested, many times over; every result is right.
TEST(SmallPool, TasksAndResultsCrossThreadsThroughThePool) {
  prism::Runtime rt({.num_cpus = 2});
  for (int round = 0; round < 20; ++round) {
    std::vector<prism::ObjectRef<int64_t>> refs;
    for (int64_t i = 0; i < 5000; ++i) {
      refs.push_back(rt.task([](int64_t x) { return x * 3; }).remote(i));
    }
    auto sum = rt.task([](std::vector<prism::ObjectRef<int64_t>> parts) {
                   int64_t s = 0;
                   for (auto& r : parts) s += prism::get(r);
                   return s;
                 }).remote(refs);
    EXPECT_EQ(prism::get(sum, prism_test::kTimeout), int64_t{3} * 4999 * 5000 / 2);
  }
}
