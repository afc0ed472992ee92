// A one-shot event on a futex: set() once, wait() with or without a deadline.
//
// set() touches the event's memory only in its atomic store, so a waiter may destroy the event
// as soon as wait() returns (the wake-up syscall after it only names the address).
//
// Thread-safe: one or more waiters, one setter.
#pragma once

#include <atomic>
#include <cstdint>

#include "prism/internal/runtime_hooks.h"

namespace prism::internal {

void futex_wait(std::atomic<uint32_t>* word, uint32_t expected, Deadline deadline) noexcept;
void futex_wake_all(std::atomic<uint32_t>* word) noexcept;

class Event {
 public:
  void set() noexcept {
    word_.store(1, std::memory_order_release);
    futex_wake_all(&word_);
  }
  bool is_set() const noexcept { return word_.load(std::memory_order_acquire) != 0; }
  void wait() noexcept {
    while (!is_set()) futex_wait(&word_, 0, kNoDeadline);
  }
  // False if the deadline passed first.
  bool wait_until(Deadline deadline) noexcept {
    while (!is_set()) {
      if (deadline != kNoDeadline && Clock::now() >= deadline) return false;
      futex_wait(&word_, 0, deadline);
    }
    return true;
  }

 private:
  std::atomic<uint32_t> word_{0};
};

}  // namespace prism::internal
