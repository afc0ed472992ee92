// DeviceBackend — the small interface both backends implement: memory from a per-device pool,
// host staging memory, streams, events and asynchronous copies.
//
// CUDA (cuda/cuda_backend.cc): cudaMallocAsync from each device's default memory pool, pinned
// host memory (cudaMallocHost, plain malloc if that fails), blocking streams (so that a free
// queued on the legacy stream is ordered after every use), events without timing.
// Host (host/host_backend.cc): device memory is host memory, streams are synchronous (null
// handles) and events are always complete; copies are plain memcpy, so the copy logic above it
// (what is copied, when, how often) is the same as on CUDA.
//
// Errors: a failing call throws prism::Error (kResourceExhausted for out-of-memory, kInternal
// for the rest) whose message names the CUDA call and error; free/destroy never throw.
//
// Thread-safe: every method may be called from any thread.
#pragma once

#include <cstddef>
#include <string>

#include "prism/gpu/device.h"

namespace prism::gpu::internal {

class DeviceBackend {
 public:
  virtual ~DeviceBackend() = default;

  virtual Backend kind() const noexcept = 0;
  // Devices this backend serves (logical GPUs for the host backend: any index >= 0 works).
  virtual int device_count() const noexcept = 0;
  virtual std::string describe() const = 0;
  // Total memory of `device` in bytes (0 if unknown).
  virtual size_t device_memory(int device) const noexcept = 0;

  // The calling thread's current device (cudaGetDevice; 0 on the host backend) and setting it.
  virtual int get_device() = 0;
  virtual void set_device(int device) = 0;

  // Device memory, stream-ordered on `stream` (of that device); freed after all work queued on
  // the device's streams before the free call.
  virtual void* allocate(int device, size_t bytes, void* stream) = 0;
  virtual void free(int device, void* ptr) noexcept = 0;
  // Host memory for staging and host tensors (pinned where possible).
  virtual void* host_allocate(size_t bytes) = 0;
  virtual void host_free(void* ptr) noexcept = 0;

  // Copies `bytes` from `src` (on `src_dev`) to `dst` (on `dst_dev`), queued on `stream`.
  // A copy to the host is complete when the stream is synchronized.
  virtual void copy(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes,
                    void* stream) = 0;
  virtual void memset_zero(void* dst, Device dst_dev, size_t bytes, void* stream) = 0;

  virtual void* stream_create(int device) = 0;
  virtual void stream_destroy(int device, void* stream) noexcept = 0;
  virtual void stream_synchronize(void* stream) = 0;

  virtual void* event_create(int device) = 0;
  virtual void event_destroy(int device, void* event) noexcept = 0;
  virtual void event_record(void* event, void* stream) = 0;
  virtual void stream_wait_event(void* stream, void* event) = 0;
  virtual void event_synchronize(void* event) = 0;
};

// The process's backend: CUDA when built with it and a device is usable, else host. Never null;
// lives until the process exits.
DeviceBackend& backend_instance();

// Backend factories (cuda_backend.cc is built only with CUDA). make_cuda_backend returns null
// and sets *why when no device is usable.
DeviceBackend* make_host_backend(std::string why_not_cuda);
DeviceBackend* make_cuda_backend(std::string* why);

}  // namespace prism::gpu::internal
