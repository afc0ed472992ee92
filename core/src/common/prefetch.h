// common/prefetch.h — asking for cache lines ahead of their use.
//
// Hints only: a prefetch never faults (a freed or unmapped address is fine) and never changes
// memory. Sanitizers do not see them (inline assembly), which is what a prefetch of memory that
// may have been freed meanwhile needs.
#pragma once

#include <cstddef>
#include <cstdint>

namespace prism::internal {

// Asks for the lines of [p, p + bytes) in a writable state (PREFETCHW, a no-op on x86 CPUs
// older than it; a plain prefetch elsewhere).
inline void prefetch_for_write(const void* p, size_t bytes = 1) noexcept {
  constexpr uintptr_t kLine = 64;
  const uintptr_t first = reinterpret_cast<uintptr_t>(p) & ~(kLine - 1);
  const uintptr_t end = reinterpret_cast<uintptr_t>(p) + bytes;
  for (uintptr_t line = first; line < end; line += kLine) {
    const auto* at = reinterpret_cast<const char*>(line);
#if defined(__x86_64__)
    asm volatile("prefetchw %0" : : "m"(*at));
#else
    __builtin_prefetch(at, 1, 3);
#endif
  }
}

}  // namespace prism::internal
