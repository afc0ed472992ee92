// TaskCounters — how many tasks reached each point of their life, counted on the hot paths.
//
// Each thread writes its own shard (a cache line of counters it alone writes: a relaxed load and
// store, no locked instruction); readers sum the shards with relaxed loads. A thread takes a shard
// index on its first count and gives it back when it exits. Threads beyond kShards share an
// overflow shard with atomic increments. Sums taken while tasks move are per-counter exact at some
// moment, not a consistent cut across counters: derived counts must be clamped. A sum reads only
// the shards whose index was ever handed out (the process's high-water mark of threads that
// counted), not all kShards: a node checks it per call it serves.
//
// Thread-safe: add() from any thread, sum() from any thread.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>

namespace prism::internal {

class TaskCounters {
 public:
  enum Kind : size_t {
    kSubmitted,
    kReady,          // its arguments are ready (dispatched)
    kStarted,        // began running here (first attempt)
    kDone,           // finished here with a result
    kFailedRunning,  // started here, then failed
    kFailedOther,    // failed without running here (a failed argument, cancelled, shut down...)
    kRemote,         // sent to another node
    kRemoteDone,     // a task sent to another node came back with a result (or, an actor's
                     // creation, was placed there)
    kRequeued,       // given back to dispatch() a second time (a task that waited for a node):
                     // its second kReady and kRemote are not new
    kRestarted,      // a run given back and dispatched again (a variant call moved to its CPU
                     // variant after the GPU's ran out of memory): its second kReady and kStarted
                     // are not new
    kRetried,        // a run that failed for a system reason (a lost node, out of memory) or threw
                     // (retry_exceptions) given another one under max_retries
    kKinds
  };
  static constexpr size_t kShards = 64;

  void add(Kind k) noexcept {
    const size_t i = thread_shard();
    if (i < kShards) {
      std::atomic<uint64_t>& c = shards_[i].v[k];
      c.store(c.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);  // sole writer
    } else {
      overflow_.v[k].fetch_add(1, std::memory_order_relaxed);
    }
  }
  std::array<uint64_t, kKinds> sum() const noexcept;

 private:
  struct alignas(64) Shard {
    std::atomic<uint64_t> v[kKinds] = {};
  };
  // The calling thread's shard index (kShards: none free, use the overflow shard).
  static size_t thread_shard() noexcept;

  Shard shards_[kShards];
  Shard overflow_;
};

}  // namespace prism::internal
