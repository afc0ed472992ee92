// examples/common/timer.h — wall-clock timing for the examples.
//
//   examples::Timer t;
//   work();
//   double s = t.seconds();                        // since construction (or the last reset)
//   double s2 = examples::time_seconds([] { more_work(); });   // with a progress line on a tty
//
// Thread-compatible: one Timer per thread.
#pragma once

#include <chrono>
#include <thread>
#include <utility>

#include "progress.h"

namespace examples {

class Timer {
 public:
  Timer() : start_(std::chrono::steady_clock::now()) {}
  void reset() { start_ = std::chrono::steady_clock::now(); }
  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

 private:
  std::chrono::steady_clock::time_point start_;
};

// Runs f() and returns how long it took, in seconds. On a terminal a progress line shows the
// time so far and the job's task counts meanwhile (progress.h; quiet otherwise).
template <typename F>
double time_seconds(F&& f, const char* what = "working") {
  Progress shown(what);
  Timer t;
  std::forward<F>(f)();
  return t.seconds();
}

// Sleeps for `seconds` (the simulated work of the sleep-based examples).
inline void sleep_seconds(double seconds) {
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
}

}  // namespace examples
