#include "device_context.h"

#include <string>
#include <vector>

#include "backend.h"
#include "prism/gpu/device.h"
#include "prism/gpu/stream.h"
#include "prism/internal/thread_annotations.h"

namespace prism::gpu {
namespace internal {
namespace {

// Streams are created per device on demand and never destroyed: a thread hands its streams back
// here when it exits, and the next thread takes them. Tensors may keep a stream's handle (the
// stream they were written on) after the thread is gone, so handles must stay valid.
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
    return backend_instance().stream_create(device);
  }
  void give_back(int device, void* stream) {
    prism::internal::MutexLock lock(mu_);
    if (device >= static_cast<int>(free_.size())) free_.resize(device + 1);
    free_[device].push_back(stream);
  }

 private:
  prism::internal::Mutex mu_;
  std::vector<std::vector<void*>> free_ PRISM_GUARDED_BY(mu_);
};

StreamPool& pool() {
  static StreamPool* const p = new StreamPool;  // outlives every thread
  return *p;
}

struct ThreadState {
  Device task_device = Device::host();
  std::vector<void*> streams;  // by device; null: none yet (or the host backend's)
  std::vector<bool> have;

  ~ThreadState() {
    for (size_t d = 0; d < have.size(); ++d) {
      if (have[d]) pool().give_back(static_cast<int>(d), streams[d]);
    }
  }
};

ThreadState& state() {
  thread_local ThreadState s;
  return s;
}

}  // namespace

Stream thread_stream(Device device) {
  if (device.is_host()) return Stream();
  ThreadState& s = state();
  const size_t d = static_cast<size_t>(device.index);
  if (d >= s.have.size()) {
    s.have.resize(d + 1, false);
    s.streams.resize(d + 1, nullptr);
  }
  if (!s.have[d]) {
    s.streams[d] = pool().take(device.index);
    s.have[d] = true;
  }
  return Stream(device, s.streams[d]);
}

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

void set_task_device(Device device) noexcept { state().task_device = device; }

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

Device current_device() noexcept { return internal::state().task_device; }

Stream current_stream() { return internal::thread_stream(current_device()); }

void Stream::synchronize() const {
  if (device_.is_host()) return;
  internal::DeviceGuard on(device_);
  internal::backend_instance().stream_synchronize(handle_);
}

}  // namespace prism::gpu
