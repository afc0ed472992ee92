// Logging with levels, quiet by default: PRISM_LOG(kInfo) << "started " << n << " threads";
//
// Thread-safe: each message is written with one call.
#pragma once

#include <sstream>

#include "prism/options.h"

namespace prism::internal {

void set_log_level(LogLevel level) noexcept;
bool log_enabled(LogLevel level) noexcept;

class LogMessage {
 public:
  LogMessage(LogLevel level, const char* file, int line);
  ~LogMessage();
  std::ostream& stream() { return out_; }

 private:
  std::ostringstream out_;
};

// Turns the streamed expression into void so that PRISM_LOG is one expression: `&` binds looser
// than `<<`, and an `if (x) PRISM_LOG(...) << ...; else ...` pairs its else with the caller's if.
struct LogVoidify {
  void operator&(std::ostream&) {}
};

}  // namespace prism::internal

#define PRISM_LOG(level)                                                  \
  !::prism::internal::log_enabled(::prism::LogLevel::level)               \
      ? (void)0                                                           \
      : ::prism::internal::LogVoidify() &                                 \
            ::prism::internal::LogMessage(::prism::LogLevel::level, __FILE__, __LINE__).stream()

// A broken invariant is a bug: abort with file:line.
#define PRISM_CHECK(cond)                                                                 \
  do {                                                                                    \
    if (!(cond)) ::prism::internal::check_failed(#cond, __FILE__, __LINE__);              \
  } while (0)

namespace prism::internal {
[[noreturn]] void check_failed(const char* cond, const char* file, int line) noexcept;
}
