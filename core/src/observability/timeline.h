// Timeline — the spans of every task a runtime ran, for prism::timeline(path).
//
// Recording is opt-in (InitOptions::timeline): when on, each task run adds one span (name,
// thread, start, end, task id, GPUs) under a mutex; when off, the runtime does not call it.
// write() emits Chrome trace JSON ("X" events), which Perfetto and chrome://tracing open.
//
// Thread-safe.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "prism/internal/thread_annotations.h"

namespace prism::internal {

class Timeline {
 public:
  using Clock = std::chrono::steady_clock;

  struct Span {
    std::string name;
    uint64_t task_sequence = 0;
    int thread = 0;  // a small per-process thread number
    Clock::time_point start;
    Clock::time_point end;
    std::vector<int> gpus;
  };

  Timeline() : origin_(Clock::now()) {}

  void record(Span span);
  // A task run's results become visible before its span is recorded: the runtime counts runs in
  // flight so that write() can first let the ones that just finished record their spans.
  void run_started() noexcept { in_flight_.fetch_add(1, std::memory_order_relaxed); }
  void run_recorded() noexcept { in_flight_.fetch_sub(1, std::memory_order_release); }
  // Writes every span so far as Chrome trace JSON; `node` names the process row. Throws
  // prism::Error if the file cannot be written.
  void write(const std::string& path, const std::string& node) const;
  size_t size() const;

  // The calling thread's small number (assigned on first use).
  static int thread_number() noexcept;

 private:
  const Clock::time_point origin_;
  std::atomic<int64_t> in_flight_{0};
  mutable Mutex mu_;
  std::vector<Span> spans_ PRISM_GUARDED_BY(mu_);
};

}  // namespace prism::internal
