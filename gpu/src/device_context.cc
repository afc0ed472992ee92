#include "device_context.h"

#include <array>
#include <atomic>
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "backend.h"
#include "prism/gpu/device.h"
#include "prism/gpu/stream.h"
#include "prism/internal/thread_annotations.h"

namespace prism::gpu {
namespace internal {
namespace {

// Streams by device, created on demand and never destroyed: threads and actors hand theirs back
// here and the next taker reuses them.
class StreamPool {
 public:
  void* take(int device) {
    {
      prism::internal::MutexLock lock(mu_);
      if (device < static_cast<int>(free_.size()) && !free_[device].empty()) {
        void* s = free_[device].back();
        free_[device].pop_back();
        return s;
      }
    }
    void* s = backend_instance().stream_create(device);
    prism::internal::MutexLock lock(mu_);
    all_.insert(s);
    return s;
  }
  void give_back(int device, void* stream) noexcept {
    prism::internal::MutexLock lock(mu_);
    try {
      if (device >= static_cast<int>(free_.size())) free_.resize(device + 1);
      free_[device].push_back(stream);
    } catch (...) {
      // Out of memory: the stream is leaked (it stays valid, in all_).
    }
  }
  bool owns(void* stream) {
    prism::internal::MutexLock lock(mu_);
    return all_.count(stream) > 0;
  }

 private:
  prism::internal::Mutex mu_;
  std::vector<std::vector<void*>> free_ PRISM_GUARDED_BY(mu_);
  std::unordered_set<void*> all_ PRISM_GUARDED_BY(mu_);
};

StreamPool& pool() {
  static StreamPool* const p = new StreamPool;  // outlives every thread
  return *p;
}

}  // namespace

// One stream per device, taken from the pool on first use.
// Thread contract: a thread's set is used by that thread only; an actor's set by its calls,
// which may run on several threads at once (max_concurrency > 1): `mu` guards it. A stream, once
// taken, stays the set's until give_back(): `fast` mirrors the first devices' entries (written
// under `mu`, once each), so that a task asking for its stream again (each tensor it reads and
// returns) does not take the lock.
struct StreamSet {
  static constexpr size_t kFast = 16;
  std::array<std::atomic<void*>, kFast> fast{};  // by_device[d] for d < kFast once taken
  prism::internal::Mutex mu;
  std::vector<void*> by_device PRISM_GUARDED_BY(mu);  // null: none yet

  Stream get(Device device) {
    const size_t d = static_cast<size_t>(device.index);
    if (d < kFast) {
      if (void* s = fast[d].load(std::memory_order_acquire)) return Stream(device, s);
    }
    prism::internal::MutexLock lock(mu);
    if (d >= by_device.size()) by_device.resize(d + 1, nullptr);
    if (by_device[d] == nullptr) by_device[d] = pool().take(device.index);
    if (d < kFast) fast[d].store(by_device[d], std::memory_order_release);
    return Stream(device, by_device[d]);
  }
  void give_back() noexcept PRISM_NO_THREAD_SAFETY_ANALYSIS {  // no user is left
    for (auto& f : fast) f.store(nullptr, std::memory_order_relaxed);
    for (size_t d = 0; d < by_device.size(); ++d) {
      if (by_device[d] != nullptr) pool().give_back(static_cast<int>(d), by_device[d]);
    }
    by_device.clear();
  }
};

namespace {


// Actors' stream sets by owner number.
class Owners {
 public:
  StreamSet* get(uint64_t owner) {
    prism::internal::MutexLock lock(mu_);
    std::unique_ptr<StreamSet>& s = sets_[owner];
    if (!s) s = std::make_unique<StreamSet>();
    return s.get();
  }
  void release(uint64_t owner) noexcept {
    std::unique_ptr<StreamSet> gone;
    {
      prism::internal::MutexLock lock(mu_);
      auto it = sets_.find(owner);
      if (it == sets_.end()) return;
      gone = std::move(it->second);
      sets_.erase(it);
    }
    gone->give_back();
  }

 private:
  prism::internal::Mutex mu_;
  std::unordered_map<uint64_t, std::unique_ptr<StreamSet>> sets_ PRISM_GUARDED_BY(mu_);
};

Owners& owners() {
  static Owners* const o = new Owners;  // outlives every thread
  return *o;
}

// The thread's own streams, handed back when the thread exits.
struct ThreadState {
  StreamSet own;

  ~ThreadState();
};

ThreadState& state() {
  thread_local ThreadState s;
  return s;
}

}  // namespace

// Plain data (constant-initialized, no destructor): reading it per task is a thread-local load,
// with no initialization check.
constinit thread_local TaskView tls_task_view;

ThreadState::~ThreadState() {
  tls_task_view.own_device = Device::host();  // (its stream is the pool's again)
  tls_task_view.own_stream = nullptr;
  own.give_back();
}

Stream task_stream_lookup(Device device) {
  if (device.is_host()) return Stream();
  TaskView& v = tls_task_view;
  if (v.owner_set != nullptr) return v.owner_set->get(device);
  const Stream s = state().own.get(device);
  v.own_device = device;
  v.own_stream = s.handle();
  return s;
}

bool is_pool_stream(void* stream) noexcept {
  if (stream == nullptr) return false;
  try {
    return pool().owns(stream);
  } catch (...) {
    return false;
  }
}

TaskDevices set_task_devices(TaskDevices now) noexcept {
  TaskView& v = tls_task_view;
  const TaskDevices before = v.task;
  v.task = now;
  v.owner_set = nullptr;
  if (now.owner != 0) {
    try {
      v.owner_set = owners().get(now.owner);
    } catch (...) {
      v.owner_set = nullptr;  // out of memory: the thread's streams serve (less ordering)
    }
  }
  return before;
}

TaskDevices task_devices() noexcept { return tls_task_view.task; }

void release_owner_streams(uint64_t owner) noexcept { owners().release(owner); }

DeviceGuard::DeviceGuard(Device device) {
  if (device.is_host()) return;
  DeviceBackend& b = backend_instance();
  if (b.kind() != Backend::kCuda) return;
  previous_ = b.get_device();
  if (previous_ != device.index) {
    b.set_device(device.index);
    changed_ = true;
  }
}

DeviceGuard::~DeviceGuard() {
  if (!changed_) return;
  try {
    backend_instance().set_device(previous_);
  } catch (...) {
    // The device that was current is gone (sticky error); nothing to restore to.
  }
}

}  // namespace internal

std::string Device::to_string() const {
  return is_host() ? std::string("host") : "gpu:" + std::to_string(index);
}

Backend backend() { return internal::backend_instance().kind(); }

const char* backend_name(Backend b) noexcept { return b == Backend::kCuda ? "cuda" : "host"; }

std::string backend_description() { return internal::backend_instance().describe(); }

bool built_with_cuda() noexcept {
#ifdef PRISM_GPU_CUDA
  return true;
#else
  return false;
#endif
}

int cuda_device_count() {
  internal::DeviceBackend& b = internal::backend_instance();
  return b.kind() == Backend::kCuda ? b.device_count() : 0;
}

int cuda_ordinal(Device device) {
  if (device.is_host()) return -1;
  return internal::backend_instance().ordinal(device.index);
}

Device current_device() noexcept { return internal::tls_task_view.task.device; }

Stream current_stream() { return internal::task_stream(current_device()); }

Stream stream_for(Device device) { return internal::task_stream(device); }

void Stream::synchronize() const {
  if (device_.is_host()) return;
  internal::DeviceGuard on(device_);
  internal::backend_instance().stream_synchronize(handle_);
}

}  // namespace prism::gpu
