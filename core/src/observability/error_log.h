// ErrorLog — the most recent task failures of a runtime (prism::errors()), at most
// kMaxErrorsKept, oldest dropped first.
//
// Failures are the cold path: one mutex around a ring. Thread-safe.
#pragma once

#include <deque>
#include <vector>

#include "prism/internal/thread_annotations.h"
#include "prism/stats.h"

namespace prism::internal {

class ErrorLog {
 public:
  void add(TaskFailure failure) noexcept {
    MutexLock lock(mu_);
    try {
      if (kept_.size() == kMaxErrorsKept) kept_.pop_front();
      kept_.push_back(std::move(failure));
    } catch (...) {
      // Out of memory: this failure is not kept (the task's own error still reaches its caller).
    }
  }
  std::vector<TaskFailure> snapshot() const {
    MutexLock lock(mu_);
    return std::vector<TaskFailure>(kept_.begin(), kept_.end());
  }

 private:
  mutable Mutex mu_;
  std::deque<TaskFailure> kept_ PRISM_GUARDED_BY(mu_);
};

}  // namespace prism::internal
