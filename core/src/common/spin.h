// cpu_relax(): the processor's spin-wait hint, for short bounded spins before blocking.
#pragma once

namespace prism::internal {

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

}  // namespace prism::internal
