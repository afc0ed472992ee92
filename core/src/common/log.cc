#include "common/log.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace prism::internal {
namespace {
std::atomic<int> g_level{static_cast<int>(LogLevel::kWarning)};
const char* level_name(LogLevel l) {
  switch (l) {
    case LogLevel::kDebug: return "D";
    case LogLevel::kInfo: return "I";
    case LogLevel::kWarning: return "W";
    case LogLevel::kError: return "E";
    default: return "?";
  }
}
}  // namespace

void set_log_level(LogLevel level) noexcept { g_level.store(static_cast<int>(level)); }
bool log_enabled(LogLevel level) noexcept {
  return static_cast<int>(level) >= g_level.load(std::memory_order_relaxed);
}

LogMessage::LogMessage(LogLevel level, const char* file, int line) {
  const char* base = std::strrchr(file, '/');
  out_ << "[prism " << level_name(level) << " " << (base ? base + 1 : file) << ":" << line << "] ";
}

LogMessage::~LogMessage() {
  out_ << '\n';
  const std::string s = out_.str();
  std::fwrite(s.data(), 1, s.size(), stderr);
}

void check_failed(const char* cond, const char* file, int line) noexcept {
  std::fprintf(stderr, "[prism] CHECK failed: %s at %s:%d\n", cond, file, line);
  std::abort();
}

}  // namespace prism::internal
