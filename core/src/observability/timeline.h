// Timeline — the spans of the tasks a runtime ran: for prism::timeline(path) and for the
// dashboard's live view.
//
// Recording is opt-in: InitOptions::timeline keeps every span (unbounded); a dashboard alone
// keeps only the newest `capacity` spans (a ring). When neither is on the runtime does not call
// it. Each task run adds one span (name, thread, start, end, task id, GPUs) under a mutex.
// write() emits Chrome trace JSON ("X" events), which Perfetto and chrome://tracing open;
// recent() returns the spans that ended after a given time, newest last.
//
// Invariants (under mu_): unbounded: spans_ holds every span in recording order. Bounded:
// spans_.size() <= capacity_; once full, next_ is the index of the oldest span, which the next
// record() overwrites, so spans_[next_..] then spans_[..next_) is recording order.
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
    int thread = 0;  // a small per-process thread number, or device_lane(d) for device work
    Clock::time_point start;
    Clock::time_point end;
    std::vector<int> gpus;
    // A variant call (prism/variants.h): the variant that ran, its predicted and measured run
    // time (seconds; negative: none).
    std::string variant;
    double predicted_seconds = -1;
    double actual_seconds = -1;
  };

  // capacity 0: keep every span; else keep the newest `capacity`.
  explicit Timeline(size_t capacity = 0) : origin_(Clock::now()), capacity_(capacity) {}

  bool keeps_everything() const noexcept { return capacity_ == 0; }
  Clock::time_point origin() const noexcept { return origin_; }

  void record(Span span);
  // A task run's results become visible before its span is recorded: the runtime counts runs in
  // flight so that write() can first let the ones that just finished record their spans.
  // (A bounded timeline is never written: it skips this shared counter.)
  void run_started() noexcept {
    if (capacity_ == 0) in_flight_.fetch_add(1, std::memory_order_relaxed);
  }
  void run_recorded() noexcept {
    if (capacity_ == 0) in_flight_.fetch_sub(1, std::memory_order_release);
  }
  // Another process's spans, already on this timeline's clock (cluster: a node's, gathered by
  // the driver): a process row of their own.
  struct Lane {
    std::string node;
    std::vector<Span> spans;
  };
  // An object moved from one node to another (cluster), on this timeline's clock.
  struct Transfer {
    std::string from;  // node names, as in Lane::node ("node0" is the driver)
    std::string to;
    uint64_t object = 0;
    uint64_t bytes = 0;
    Clock::time_point start;  // asked for
    Clock::time_point end;    // sent on (or arrived)
  };
  // Waits (at most `max_wait`) until the runs that have finished have recorded their spans (a
  // run's result is visible a moment before its span; only a timeline that keeps everything
  // counts them). `own_runs`: runs in flight that are the caller's own (a task asking waits
  // not for itself).
  void settle(Clock::duration max_wait, int64_t own_runs = 0) const;
  // Writes every span kept as Chrome trace JSON; `node` names this process's row, `others` get
  // one row each (pid 2, 3, ...). Each transfer is a slice on a "transfers" thread row of the
  // sender and of the receiver, joined by a flow arrow. Times are microseconds since this
  // timeline began. Throws prism::Error if the file cannot be written.
  void write(const std::string& path, const std::string& node,
             const std::vector<Lane>& others = {},
             const std::vector<Transfer>& transfers = {}) const;
  // The spans kept that ended at or after `since`, in recording order; at most `max` of them
  // (the newest).
  std::vector<Span> recent(Clock::time_point since, size_t max) const;
  size_t size() const;

  // The calling thread's small number (assigned on first use).
  static int thread_number() noexcept;
  // The lane of GPU `device`'s own work (spans timed on the device): negative, apart from the
  // threads' numbers; its row is named "GPU <device>".
  static constexpr int device_lane(int device) noexcept { return -1 - device; }

 private:
  const Clock::time_point origin_;
  const size_t capacity_;
  std::atomic<int64_t> in_flight_{0};
  mutable Mutex mu_;
  std::vector<Span> spans_ PRISM_GUARDED_BY(mu_);
  size_t next_ PRISM_GUARDED_BY(mu_) = 0;  // bounded and full: the oldest span
};

}  // namespace prism::internal
