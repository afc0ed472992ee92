#include "observability/timeline.h"

#include <atomic>
#include <cstdio>
#include <fstream>
#include <thread>

#include "prism/errors.h"

namespace prism::internal {

namespace {

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

}  // namespace

int Timeline::thread_number() noexcept {
  static std::atomic<int> next{1};
  thread_local int number = next.fetch_add(1, std::memory_order_relaxed);
  return number;
}

void Timeline::record(Span span) {
  MutexLock lock(mu_);
  spans_.push_back(std::move(span));
}

size_t Timeline::size() const {
  MutexLock lock(mu_);
  return spans_.size();
}

void Timeline::write(const std::string& path, const std::string& node) const {
  // Runs that finished just before this call record their spans within microseconds; give them
  // a bounded moment (a task still running after it is simply not in the file yet).
  const auto until = Clock::now() + std::chrono::milliseconds(200);
  while (in_flight_.load(std::memory_order_acquire) > 0 && Clock::now() < until) {
    std::this_thread::yield();
  }
  std::ofstream out(path, std::ios::trunc);
  if (!out) throw Error(ErrorCode::kInvalidArgument, "prism::timeline: cannot write " + path);
  auto us = [this](Clock::time_point t) {
    return std::chrono::duration<double, std::micro>(t - origin_).count();
  };
  MutexLock lock(mu_);
  out << "{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n";
  out << "{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":1,\"args\":{\"name\":"
      << json_string("prism node " + node) << "}}";
  for (const Span& s : spans_) {
    out << ",\n{\"name\":" << json_string(s.name) << ",\"cat\":\"task\",\"ph\":\"X\",\"pid\":1"
        << ",\"tid\":" << s.thread << ",\"ts\":" << us(s.start)
        << ",\"dur\":" << us(s.end) - us(s.start) << ",\"args\":{\"task\":" << s.task_sequence
        << ",\"device\":\"" << (s.gpus.empty() ? "cpu" : "gpu") << "\",\"gpus\":[";
    for (size_t i = 0; i < s.gpus.size(); ++i) out << (i ? "," : "") << s.gpus[i];
    out << "]}}";
  }
  out << "\n]}\n";
  if (!out) throw Error(ErrorCode::kInvalidArgument, "prism::timeline: error writing " + path);
}

}  // namespace prism::internal
