// What the calling thread does on the GPUs: the device it has current and its streams.
//
// Each thread owns one stream per device it has used (created on first use, destroyed when the
// thread exits). A GPU task runs with its first granted device current (DeviceScope, entered by
// the runtime through GpuSupport) and current_stream() is the thread's stream for it.
//
// Thread-safe: thread-local state only.
#pragma once

#include "prism/gpu/device.h"
#include "prism/gpu/stream.h"

namespace prism::gpu::internal {

// The calling thread's stream for `device` (the host stream for the host).
Stream thread_stream(Device device);

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

// The device the running GPU task was granted (host outside GPU tasks); set by GpuSupport.
void set_task_device(Device device) noexcept;

}  // namespace prism::gpu::internal
