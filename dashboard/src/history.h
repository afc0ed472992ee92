// History — tasks by state over time, for the dashboard's chart: one sample per interval, the
// newest `capacity` kept (a ring).
//
// Invariants (under mu_): samples_.size() <= capacity_; once full, next_ is the oldest sample,
// which the next add() overwrites; samples are added in time order, so samples_[next_..] then
// [..next_) is time order.
//
// Thread-safe: add() from the sampler thread, snapshot() from request threads.
#pragma once

#include <cstdint>
#include <vector>

#include "prism/internal/thread_annotations.h"
#include "prism/stats.h"

namespace prism::dashboard {

struct Sample {
  double t_ms = 0;  // since the runtime started
  TaskCounts tasks;
};

class History {
 public:
  explicit History(size_t capacity) : capacity_(capacity == 0 ? 1 : capacity) {}

  void add(const Sample& s);
  // Every sample kept, oldest first.
  std::vector<Sample> snapshot() const;

 private:
  const size_t capacity_;
  mutable internal::Mutex mu_;
  std::vector<Sample> samples_ PRISM_GUARDED_BY(mu_);
  size_t next_ PRISM_GUARDED_BY(mu_) = 0;
};

}  // namespace prism::dashboard
