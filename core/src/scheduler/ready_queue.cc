#include "scheduler/ready_queue.h"

namespace prism::internal {

ReadyQueue::ReadyQueue(size_t capacity_pow2)
    : cells_(new Cell[capacity_pow2]), mask_(capacity_pow2 - 1) {
  for (size_t i = 0; i < capacity_pow2; ++i) {
    cells_[i].seq.store(i, std::memory_order_relaxed);
    cells_[i].task = nullptr;
  }
}

bool ReadyQueue::ring_push(TaskRecord* task) noexcept {
  size_t pos = tail_.load(std::memory_order_relaxed);
  for (;;) {
    Cell& c = cells_[pos & mask_];
    const size_t seq = c.seq.load(std::memory_order_acquire);
    const auto diff = static_cast<intptr_t>(seq) - static_cast<intptr_t>(pos);
    if (diff == 0) {
      if (tail_.compare_exchange_weak(pos, pos + 1, std::memory_order_relaxed)) {
        c.task = task;
        c.seq.store(pos + 1, std::memory_order_release);
        // A cell a few pushes ahead was last written when it was popped, a ring's length ago,
        // and has most likely left this core's caches: fetch it for writing now (a hint).
        __builtin_prefetch(&cells_[(pos + kPrefetchAhead) & mask_], 1, 3);
        return true;
      }
    } else if (diff < 0) {
      return false;  // full
    } else {
      pos = tail_.load(std::memory_order_relaxed);
    }
  }
}

TaskRecord* ReadyQueue::ring_pop() noexcept {
  size_t pos = head_.load(std::memory_order_relaxed);
  for (;;) {
    Cell& c = cells_[pos & mask_];
    const size_t seq = c.seq.load(std::memory_order_acquire);
    const auto diff = static_cast<intptr_t>(seq) - static_cast<intptr_t>(pos + 1);
    if (diff == 0) {
      if (head_.compare_exchange_weak(pos, pos + 1, std::memory_order_relaxed)) {
        // Counted at once, while this core still holds the line of head_ and popped_ (reading
        // the cell next may take long enough for another consumer to take that line away).
        popped_.fetch_add(1, std::memory_order_seq_cst);
        TaskRecord* t = c.task;
        c.seq.store(pos + mask_ + 1, std::memory_order_release);
        return t;
      }
    } else if (diff < 0) {
      return nullptr;  // empty
    } else {
      pos = head_.load(std::memory_order_relaxed);
    }
  }
}

TaskRecord* ReadyQueue::overflow_pop() noexcept {
  if (overflow_size_.load(std::memory_order_acquire) == 0) return nullptr;
  MutexLock lock(overflow_mu_);
  TaskRecord* t = overflow_head_;
  if (t == nullptr) return nullptr;
  overflow_head_ = t->next_in_queue;
  if (overflow_head_ == nullptr) overflow_tail_ = nullptr;
  t->next_in_queue = nullptr;
  overflow_size_.fetch_sub(1, std::memory_order_relaxed);
  popped_.fetch_add(1, std::memory_order_seq_cst);
  return t;
}

void ReadyQueue::push(TaskRecord* task) noexcept {
  // Count first so that a consumer that sees size == 0 knows nothing is in flight.
  pushed_.fetch_add(1, std::memory_order_seq_cst);
  if (overflow_size_.load(std::memory_order_relaxed) == 0 && ring_push(task)) return;
  MutexLock lock(overflow_mu_);
  task->next_in_queue = nullptr;
  if (overflow_tail_ != nullptr) {
    overflow_tail_->next_in_queue = task;
  } else {
    overflow_head_ = task;
  }
  overflow_tail_ = task;
  overflow_size_.fetch_add(1, std::memory_order_release);
}

TaskRecord* ReadyQueue::pop() noexcept {
  TaskRecord* t = nullptr;
  thread_local uint32_t pops = 0;
  if ((++pops & 31) == 0) t = overflow_pop();
  if (t == nullptr) t = ring_pop();
  if (t == nullptr) t = overflow_pop();
  return t;
}

}  // namespace prism::internal
