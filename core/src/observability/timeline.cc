#include "observability/timeline.h"

#include <atomic>
#include <fstream>
#include <thread>

#include "common/json.h"
#include "prism/errors.h"

namespace prism::internal {

int Timeline::thread_number() noexcept {
  static std::atomic<int> next{1};
  thread_local int number = next.fetch_add(1, std::memory_order_relaxed);
  return number;
}

void Timeline::record(Span span) {
  MutexLock lock(mu_);
  if (capacity_ == 0 || spans_.size() < capacity_) {
    spans_.push_back(std::move(span));
    return;
  }
  spans_[next_] = std::move(span);
  next_ = next_ + 1 == capacity_ ? 0 : next_ + 1;
}

std::vector<Timeline::Span> Timeline::recent(Clock::time_point since, size_t max) const {
  MutexLock lock(mu_);
  // Newest first from the end of recording order. Spans end in about recording order (a span
  // is recorded as its run ends, racing only with other threads doing the same), so the scan
  // stops at a span that ended well (a second) before `since`.
  const size_t n = spans_.size();
  std::vector<Span> out;
  for (size_t k = 0; k < n && out.size() < max; ++k) {
    const size_t newest = next_ == 0 ? n - 1 : next_ - 1;  // next_ is 0 unless bounded and full
    const size_t i = (newest + n - k) % n;
    if (spans_[i].end < since) {
      if (spans_[i].end + std::chrono::seconds(1) < since) break;
      continue;
    }
    out.push_back(spans_[i]);
  }
  return {out.rbegin(), out.rend()};
}

size_t Timeline::size() const {
  MutexLock lock(mu_);
  return spans_.size();
}

void Timeline::write(const std::string& path, const std::string& node,
                     const std::vector<Lane>& others) const {
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
  auto write_span = [&](const Span& s, int pid) {
    out << ",\n{\"name\":" << json_string(s.name) << ",\"cat\":\"task\",\"ph\":\"X\",\"pid\":"
        << pid << ",\"tid\":" << s.thread << ",\"ts\":" << us(s.start)
        << ",\"dur\":" << us(s.end) - us(s.start) << ",\"args\":{\"task\":" << s.task_sequence
        << ",\"device\":\"" << (s.gpus.empty() ? "cpu" : "gpu") << "\",\"gpus\":[";
    for (size_t i = 0; i < s.gpus.size(); ++i) out << (i ? "," : "") << s.gpus[i];
    out << "]}}";
  };
  auto process_name = [&](int pid, const std::string& name) {
    out << "{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":" << pid
        << ",\"args\":{\"name\":" << json_string("prism node " + name) << "}}";
  };
  out << "{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n";
  process_name(1, node);
  for (size_t i = 0; i < others.size(); ++i) {
    out << ",\n";
    process_name(static_cast<int>(i) + 2, others[i].node);
  }
  {
    MutexLock lock(mu_);
    const size_t n = spans_.size();
    for (size_t k = 0; k < n; ++k) {
      write_span(spans_[(next_ + k) % n], 1);  // recording order (next_: 0 unless a full ring)
    }
  }
  for (size_t i = 0; i < others.size(); ++i) {
    for (const Span& s : others[i].spans) write_span(s, static_cast<int>(i) + 2);
  }
  out << "\n]}\n";
  if (!out) throw Error(ErrorCode::kInvalidArgument, "prism::timeline: error writing " + path);
}

}  // namespace prism::internal
