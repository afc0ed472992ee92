// ReadyQueue — the node's queue of ready tasks that need exactly one CPU (the common case).
//
// A bounded lock-free multi-producer multi-consumer ring (Vyukov's sequence-number design) for
// the hot path, with a mutex-guarded overflow list when the ring is full, so push never fails
// and never blocks on a full ring. Roughly FIFO; consumers take from the overflow now and then so
// it cannot starve.
//
// Thread-safe: any number of producers and consumers.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "prism/internal/thread_annotations.h"
#include "prism/internal/task_record.h"

namespace prism::internal {

class ReadyQueue {
 public:
  explicit ReadyQueue(size_t capacity_pow2 = size_t{1} << 16);
  ReadyQueue(const ReadyQueue&) = delete;
  ReadyQueue& operator=(const ReadyQueue&) = delete;

  void push(TaskRecord* task) noexcept;
  // Null if empty (as far as this thread can see).
  TaskRecord* pop() noexcept;
  // A hint: false means every push that happened-before this call has been popped. (Popped
  // first: pops never outnumber pushes, so a later count of pushes can only overstate the
  // size, never hide a push.)
  bool maybe_nonempty() const noexcept {
    const uint64_t popped = popped_.load(std::memory_order_seq_cst);
    return pushed_.load(std::memory_order_seq_cst) != popped;
  }
  // A hint for a consumer that polls: whether the next cell to pop is filled, or the overflow
  // holds tasks. It reads the consumers' index and one cell, which the producer writes once per
  // lap of the ring, instead of the count of pushes, which the producer writes on every push: a
  // consumer polling that count takes its line from the producer each time. Not for the no-lost-
  // wake-up checks (use maybe_nonempty): a false here may miss a push in flight.
  bool next_is_filled() const noexcept {
    const size_t pos = head_.load(std::memory_order_relaxed);
    if (cells_[pos & mask_].seq.load(std::memory_order_acquire) == pos + 1) return true;
    return overflow_size_.load(std::memory_order_relaxed) > 0;
  }
  // About how many tasks are queued (a hint, never negative).
  int64_t size() const noexcept {
    const uint64_t popped = popped_.load(std::memory_order_relaxed);
    const auto size = static_cast<int64_t>(pushed_.load(std::memory_order_relaxed) - popped);
    return size > 0 ? size : 0;
  }

 private:
  struct alignas(64) Cell {
    std::atomic<size_t> seq;
    TaskRecord* task;
  };
  static constexpr size_t kPrefetchAhead = 4;
  bool ring_push(TaskRecord* task) noexcept;
  TaskRecord* ring_pop() noexcept;
  TaskRecord* overflow_pop() noexcept;

  std::unique_ptr<Cell[]> cells_;
  const size_t mask_;
  // The size is pushes minus pops, counted apart: a producer's count stays in its core's cache
  // while consumers count theirs, instead of one line moving between them on every task. Each
  // count shares a line with its side's index: a pop's compare-and-swap of head_ brings the line
  // that its count of pops then finds in this core's cache (one line moving between consumers per
  // pop, not two).
  alignas(64) std::atomic<size_t> head_{0};  // next to pop
  std::atomic<uint64_t> popped_{0};
  alignas(64) std::atomic<size_t> tail_{0};  // next to push
  std::atomic<uint64_t> pushed_{0};
  alignas(64) std::atomic<int64_t> overflow_size_{0};
  Mutex overflow_mu_;
  TaskRecord* overflow_head_ PRISM_GUARDED_BY(overflow_mu_) = nullptr;
  TaskRecord* overflow_tail_ PRISM_GUARDED_BY(overflow_mu_) = nullptr;
};

}  // namespace prism::internal
