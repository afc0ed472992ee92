// What the calling thread does on the GPUs: the device it has current and the streams its work
// goes to.
//
// Streams come from a process-wide pool and are never destroyed (tensors keep the handles of the
// streams that used them). Whose streams a task uses:
//  * a task: its thread's own, one per device (taken on first use, handed back when the thread
//    exits), so concurrent tasks on one device (fractional GPUs) never share a stream;
//  * an actor's call (and its constructor): the actor's own, one per device, shared by all its
//    calls whichever thread runs them, so that a raw kernel of one call is ordered before the
//    next call's work. Handed back when the actor is gone (release_owner).
// GpuSupport::enter/leave (gpu_support.cc) set the running task's device, owner and grant.
//
// Thread-safe: thread-local state, plus the pool and the owners' table under their own locks.
#pragma once

#include <cstdint>

#include "prism/gpu/device.h"
#include "prism/gpu/stream.h"

namespace prism::gpu::internal {

// The stream the calling thread's running task (or actor) uses for `device` (the host stream for
// the host). Inline below: the thread's own stream for the device it asked for last.
Stream task_stream(Device device);
Stream task_stream_lookup(Device device);  // (the rest)

// True if `stream` is one of Prism's pooled streams (which live as long as the process).
bool is_pool_stream(void* stream) noexcept;

// Makes `device` current for the calling thread (cudaSetDevice on CUDA) for the guard's life and
// restores the previous device after. A host device changes nothing.
class DeviceGuard {
 public:
  explicit DeviceGuard(Device device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;
  bool changed_ = false;
};

// The running task's first granted device (host outside GPU tasks) and whose streams it uses
// (0: the thread's); set by GpuSupport. Returns what was set before.
struct TaskDevices {
  Device device = Device::host();
  uint64_t owner = 0;
};
TaskDevices set_task_devices(TaskDevices now) noexcept;
TaskDevices task_devices() noexcept;

// The calling thread's running task as this module sees it (set_task_devices), and the thread's
// own stream for the device it last asked for: a thread's streams stay its own until it exits,
// so that stream is kept here and a task asking for it again (each tensor it reads and returns)
// does a thread-local load. An actor's streams are not kept (the set goes when the actor does).
// Plain data, constant-initialized: no initialization check on access.
struct StreamSet;
struct TaskView {
  TaskDevices task;
  StreamSet* owner_set = nullptr;     // the actor's streams while task.owner != 0
  Device own_device = Device::host(); // own_stream's device
  void* own_stream = nullptr;         // the thread's stream for own_device
};
extern constinit thread_local TaskView tls_task_view;

inline Stream task_stream(Device device) {
  const TaskView& v = tls_task_view;
  // (own_device is the host until a stream is kept: then the answer is the host stream too.)
  if (v.owner_set == nullptr && device == v.own_device) return Stream(device, v.own_stream);
  return task_stream_lookup(device);
}

// The actor numbered `owner` is gone: its streams go back to the pool.
void release_owner_streams(uint64_t owner) noexcept;

}  // namespace prism::gpu::internal
