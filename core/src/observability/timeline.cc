#include "observability/timeline.h"

#include <algorithm>
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

void Timeline::settle(Clock::duration max_wait, int64_t own_runs) const {
  const auto until = Clock::now() + max_wait;
  while (in_flight_.load(std::memory_order_acquire) > own_runs && Clock::now() < until) {
    std::this_thread::yield();
  }
}

size_t Timeline::size() const {
  MutexLock lock(mu_);
  return spans_.size();
}

void Timeline::write(const std::string& path, const std::string& node,
                     const std::vector<Lane>& others,
                     const std::vector<Transfer>& transfers) const {
  // Runs that finished just before this call record their spans within microseconds; give them
  // a bounded moment (a task still running after it is simply not in the file yet).
  settle(std::chrono::milliseconds(200));
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
    out << "]";
    if (!s.variant.empty()) {
      out << ",\"variant\":" << json_string(s.variant)
          << ",\"predicted_us\":" << std::max(0.0, s.predicted_seconds * 1e6)
          << ",\"actual_us\":" << std::max(0.0, s.actual_seconds * 1e6);
    }
    out << "}}";
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
  // Device lanes get a row name ("GPU 0"), once per process row.
  std::vector<std::pair<int, int>> named;  // (pid, lane)
  auto name_device_lane = [&](int pid, int lane) {
    if (lane >= 0) return;
    for (const auto& n : named) {
      if (n.first == pid && n.second == lane) return;
    }
    named.emplace_back(pid, lane);
    out << ",\n{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":" << pid << ",\"tid\":" << lane
        << ",\"args\":{\"name\":\"GPU " << -1 - lane << " (device work)\"}}";
  };
  {
    MutexLock lock(mu_);
    const size_t n = spans_.size();
    for (size_t k = 0; k < n; ++k) {
      const Span& s = spans_[(next_ + k) % n];  // recording order (next_: 0 unless a full ring)
      name_device_lane(1, s.thread);
      write_span(s, 1);
    }
  }
  for (size_t i = 0; i < others.size(); ++i) {
    for (const Span& s : others[i].spans) {
      name_device_lane(static_cast<int>(i) + 2, s.thread);
      write_span(s, static_cast<int>(i) + 2);
    }
  }
  // Transfers: thread row 0 of each process is "transfers"; a slice at each end, and a flow
  // from the sender's slice to the receiver's (Perfetto draws an arrow).
  auto pid_of = [&](const std::string& name) {
    if (name == node) return 1;
    for (size_t i = 0; i < others.size(); ++i) {
      if (others[i].node == name) return static_cast<int>(i) + 2;
    }
    return 0;  // a node that is gone: not drawn
  };
  for (size_t i = 0; i < others.size() + 1; ++i) {
    out << ",\n{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":" << i + 1
        << ",\"tid\":0,\"args\":{\"name\":\"transfers\"}}";
  }
  uint64_t flow = 0;
  for (const Transfer& t : transfers) {
    const int from = pid_of(t.from), to = pid_of(t.to);
    if (from == 0 || to == 0) continue;
    const std::string what = "object " + std::to_string(t.object) + " (" +
                             std::to_string(t.bytes) + " bytes) " + t.from + " -> " + t.to;
    const double ts = us(t.start), dur = std::max(0.0, us(t.end) - us(t.start));
    for (int pid : {from, to}) {
      out << ",\n{\"name\":" << json_string(what) << ",\"cat\":\"transfer\",\"ph\":\"X\",\"pid\":"
          << pid << ",\"tid\":0,\"ts\":" << ts << ",\"dur\":" << dur
          << ",\"args\":{\"object\":" << t.object << ",\"bytes\":" << t.bytes << "}}";
    }
    ++flow;
    out << ",\n{\"name\":\"transfer\",\"cat\":\"transfer\",\"ph\":\"s\",\"id\":" << flow
        << ",\"pid\":" << from << ",\"tid\":0,\"ts\":" << ts << "}";
    out << ",\n{\"name\":\"transfer\",\"cat\":\"transfer\",\"ph\":\"f\",\"bp\":\"e\",\"id\":"
        << flow << ",\"pid\":" << to << ",\"tid\":0,\"ts\":" << ts + dur << "}";
  }
  out << "\n]}\n";
  if (!out) throw Error(ErrorCode::kInvalidArgument, "prism::timeline: error writing " + path);
}

}  // namespace prism::internal
