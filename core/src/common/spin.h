// Short bounded spins before blocking: cpu_relax() and spin_for().
//
// A result or a task that arrives within a few microseconds is cheaper to spin for than to
// sleep for (a futex wake-up costs several microseconds on each side). The spin is bounded in
// time, never unbounded.
#pragma once

#include <chrono>

namespace prism::internal {

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Spins until `done()` is true or `budget` has passed; returns done().
template <typename Pred>
bool spin_for(std::chrono::nanoseconds budget, Pred done) noexcept {
  if (done()) return true;
  const auto end = std::chrono::steady_clock::now() + budget;
  for (;;) {
    for (int i = 0; i < 32; ++i) {
      cpu_relax();
      if (done()) return true;
    }
    if (std::chrono::steady_clock::now() >= end) return done();
  }
}

}  // namespace prism::internal
