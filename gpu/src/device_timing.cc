#include "device_timing.h"

#include <deque>
#include <map>
#include <memory>
#include <utility>

#include "backend.h"
#include "prism/internal/thread_annotations.h"

namespace prism::gpu::internal {

namespace {

using Clock = std::chrono::steady_clock;
using prism::internal::Mutex;
using prism::internal::MutexLock;

constexpr auto kReferenceLife = std::chrono::seconds(10);

// An event of `device` whose host time is known.
struct Reference {
  int device = 0;
  void* event = nullptr;
  Clock::time_point host;
  ~Reference() { backend_instance().timing_event_destroy(device, event); }
};

struct Pending {
  uint64_t owner = 0;
  std::string name;
  int device = 0;
  void* begin = nullptr;
  void* end = nullptr;
  std::shared_ptr<Reference> reference;
};

void destroy_events(const Pending& p) noexcept {
  DeviceBackend& b = backend_instance();
  b.timing_event_destroy(p.device, p.begin);
  b.timing_event_destroy(p.device, p.end);
}

struct State {
  Mutex mu;
  std::deque<Pending> pending PRISM_GUARDED_BY(mu);
  std::map<int, std::shared_ptr<Reference>> references PRISM_GUARDED_BY(mu);
  std::map<int, void*> idle_streams PRISM_GUARDED_BY(mu);  // one per device, for references
};

State& state() {
  static State* s = new State;  // never destroyed: runs may end during static destruction
  return *s;
}

// `device`'s current reference, renewed when older than kReferenceLife. Throws on failure.
std::shared_ptr<Reference> reference(int device) {
  State& s = state();
  MutexLock lock(s.mu);
  auto& ref = s.references[device];
  const Clock::time_point now = Clock::now();
  if (ref && now - ref->host < kReferenceLife) return ref;
  DeviceBackend& b = backend_instance();
  void*& stream = s.idle_streams[device];
  if (stream == nullptr) stream = b.stream_create(device);  // (never destroyed, like the pool's)
  auto fresh = std::make_shared<Reference>();
  fresh->device = device;
  fresh->event = b.timing_event_create(device);
  b.timing_event_record(fresh->event, stream);
  b.event_synchronize(fresh->event);  // an idle stream: at once
  fresh->host = Clock::now();
  ref = fresh;
  return ref;
}

// A run being timed on this thread (valid: its begin event was recorded).
struct Open {
  bool valid = false;
  uint32_t untimed_below = 0;  // the untimed runs open under it (restored when it ends)
  uint64_t owner = 0;
  std::string name;
  int device = 0;
  void* stream = nullptr;
  void* begin = nullptr;
  std::shared_ptr<Reference> reference;
};

// This thread's open runs, innermost last: `timed` holds a frame for each run begun with a
// device (valid or not), `untimed` counts the runs begun without one since the innermost of
// those (most runs: a frame each would cost every GPU task a push and a pop of an Open).
struct OpenRuns {
  std::vector<Open> timed;
  uint32_t untimed = 0;
};

OpenRuns& open_runs() {
  thread_local OpenRuns runs;
  return runs;
}

}  // namespace

void device_timing_begin(uint64_t owner, const char* name, int device, void* stream) noexcept {
  OpenRuns& runs = open_runs();
  if (device < 0) {
    ++runs.untimed;
    return;
  }
  try {
    runs.timed.emplace_back();
  } catch (...) {
    ++runs.untimed;  // (not timed)
    return;
  }
  Open& o = runs.timed.back();
  o.untimed_below = std::exchange(runs.untimed, 0);
  DeviceBackend& b = backend_instance();
  try {
    o.reference = reference(device);
    o.begin = b.timing_event_create(device);
    b.timing_event_record(o.begin, stream);
    o.owner = owner;
    o.name = name;
    o.device = device;
    o.stream = stream;
    o.valid = true;
  } catch (...) {
    if (o.begin != nullptr) b.timing_event_destroy(device, o.begin);
    const uint32_t below = o.untimed_below;
    o = Open{};  // not timed
    o.untimed_below = below;
  }
}

void device_timing_end() noexcept {
  OpenRuns& runs = open_runs();
  if (runs.untimed > 0) {
    --runs.untimed;
    return;
  }
  if (runs.timed.empty()) return;
  Open o = std::move(runs.timed.back());
  runs.timed.pop_back();
  runs.untimed = o.untimed_below;
  if (!o.valid) return;
  DeviceBackend& b = backend_instance();
  Pending p;
  p.owner = o.owner;
  p.device = o.device;
  p.begin = o.begin;
  p.reference = std::move(o.reference);
  try {
    p.name = std::move(o.name);
    p.end = b.timing_event_create(o.device);
    b.timing_event_record(p.end, o.stream);
  } catch (...) {
    destroy_events(p);
    return;
  }
  std::vector<Pending> dropped;
  {
    State& s = state();
    MutexLock lock(s.mu);
    try {
      s.pending.push_back(std::move(p));
    } catch (...) {
      dropped.push_back(std::move(p));
    }
    while (s.pending.size() > kMaxPendingSpans) {
      dropped.push_back(std::move(s.pending.front()));
      s.pending.pop_front();
    }
  }
  for (const Pending& d : dropped) destroy_events(d);
}

std::vector<DeviceSpan> device_timing_collect(uint64_t owner) noexcept {
  std::vector<DeviceSpan> out;
  std::vector<Pending> done;
  DeviceBackend& b = backend_instance();
  {
    State& s = state();
    MutexLock lock(s.mu);
    for (auto it = s.pending.begin(); it != s.pending.end();) {
      if (it->owner != owner || !b.event_done(it->end) || !b.event_done(it->begin)) {
        ++it;
        continue;
      }
      done.push_back(std::move(*it));
      it = s.pending.erase(it);
    }
  }
  for (const Pending& p : done) {
    try {
      const double from = b.event_elapsed_ms(p.reference->event, p.begin);
      const double to = b.event_elapsed_ms(p.reference->event, p.end);
      auto at = [&](double ms) {
        return p.reference->host + std::chrono::duration_cast<Clock::duration>(
                                       std::chrono::duration<double, std::milli>(ms));
      };
      out.push_back(DeviceSpan{p.name, p.device, at(from), at(to)});
    } catch (...) {
      // An event that failed (its device did): no span.
    }
    destroy_events(p);
  }
  return out;
}

void device_timing_drop(uint64_t owner) noexcept {
  std::vector<Pending> dropped;
  {
    State& s = state();
    MutexLock lock(s.mu);
    for (auto it = s.pending.begin(); it != s.pending.end();) {
      if (it->owner == owner) {
        dropped.push_back(std::move(*it));
        it = s.pending.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (const Pending& d : dropped) destroy_events(d);
}

size_t device_timing_pending() noexcept {
  State& s = state();
  MutexLock lock(s.mu);
  return s.pending.size();
}

}  // namespace prism::gpu::internal
