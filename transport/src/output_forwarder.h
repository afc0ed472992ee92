// OutputForwarder — a node's stdout and stderr, sent to the driver's terminal (as Ray's
// workers' output reaches the driver, each line prefixed with where it came from).
//
// start() points file descriptors 1 and 2 at pipes (so whatever writes there — printf,
// std::cout, Prism's log, a library — is caught) and starts a reader thread that hands whole
// lines to `send` (partial lines wait for their end, or go out once 4 KiB long). stop() flushes
// C stdio, puts the original descriptors back, wakes the reader (an eventfd: a pipe whose write
// end another process inherited never reaches end of file), which drains what the pipes hold
// without blocking and exits; stop() joins it. What cannot be sent goes to the original
// descriptors. A process that aborts (SIGABRT: assert, std::terminate) first drains the pipes
// into the original descriptors, so its last words are not lost with it.
//
// Thread-safe: start() and stop() from one thread (the link's); `send` runs on the reader.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <thread>
#include <utility>

#include "prism/internal/thread_annotations.h"

namespace prism::cluster {

class OutputForwarder {
 public:
  // stream: 1 (stdout) or 2 (stderr); text: one or more whole lines, each ending in '\n'.
  // False: it could not be sent (no driver): the forwarder writes it where it would have gone.
  using Send = std::function<bool(int stream, const std::string& text)>;

  OutputForwarder() = default;
  ~OutputForwarder() { stop(); }
  OutputForwarder(const OutputForwarder&) = delete;
  OutputForwarder& operator=(const OutputForwarder&) = delete;

  // False (and nothing changed) if fd 1 or 2 is not open, or the pipes or the thread cannot be
  // made. One forwarder per process at a time.
  bool start(Send send);
  // Idempotent.
  void stop() noexcept;

  // The lines of `buffer` up to its last '\n' (or all of it once it reaches `flush_at` bytes),
  // removed from it. Exposed for tests.
  static std::string take_lines(std::string* buffer, size_t flush_at);

 private:
  void read_loop();
  void deliver(int stream, const std::string& text) noexcept;

  Send send_;
  int saved_[2] = {-1, -1};      // the original fd 1 and 2 (closed after the reader is joined)
  int read_end_[2] = {-1, -1};   // the pipes' read ends (the reader owns them)
  int wake_ = -1;                // eventfd: stop() tells the reader to drain and exit
  std::thread reader_;
};

// OutputPrinter — the driver's side: writes what nodes printed to its own stdout or stderr on a
// thread of its own, so that a slow or paused terminal never stalls the thread that received it
// (UCX's progress thread, which must not block). At most `max_bytes` wait; beyond that, text is
// dropped and counted (the job goes on).
//
// Invariants (under mu_): bytes_ is the sum of the queued texts' sizes, <= max_bytes_.
//
// Thread-safe: print() from any thread; stop() once, from the owner.
class OutputPrinter {
 public:
  explicit OutputPrinter(size_t max_bytes = size_t{8} << 20) : max_bytes_(max_bytes) {}
  ~OutputPrinter() { stop(); }
  OutputPrinter(const OutputPrinter&) = delete;
  OutputPrinter& operator=(const OutputPrinter&) = delete;

  // Queues `text` for fd 1 or 2; false if it was dropped (too much queued, or stopped).
  bool print(int stream, std::string text);
  // Writes what is queued, then joins the thread. Idempotent.
  void stop() noexcept;
  uint64_t dropped() const noexcept { return dropped_.load(std::memory_order_relaxed); }

 private:
  void loop();

  const size_t max_bytes_;
  internal::Mutex mu_;
  std::deque<std::pair<int, std::string>> queue_ PRISM_GUARDED_BY(mu_);
  size_t bytes_ PRISM_GUARDED_BY(mu_) = 0;
  bool stopping_ PRISM_GUARDED_BY(mu_) = false;
  bool started_ PRISM_GUARDED_BY(mu_) = false;
  std::atomic<uint32_t> changes_{0};  // futex word: bumped by print() and stop()
  std::atomic<uint64_t> dropped_{0};
  std::thread thread_;  // started by the first print()
};

}  // namespace prism::cluster
