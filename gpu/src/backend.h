// DeviceBackend — the small interface both backends implement: memory from a per-device pool,
// host staging memory, streams, events and asynchronous copies.
//
// Device numbers are Prism's: gpu:k is the k-th usable device. The CUDA backend leaves out
// devices it cannot use (see cuda_backend.cc) and maps the rest to CUDA ordinals (ordinal()).
//
// CUDA (cuda/cuda_backend.cc): cudaMallocAsync from each device's default memory pool, freed
// stream-ordered after every recorded use (free()), pinned host memory within a budget, streams
// that do not synchronize with the legacy default stream, events without timing.
// Host (host/host_backend.cc): device memory is host memory, streams are synchronous (distinct
// tokens, so that who uses which stream is the same as on CUDA) and events are always complete;
// copies are plain memcpy, so the copy logic above it (what is copied, when, how often) is the
// same as on CUDA.
//
// Errors: a failing call throws prism::Error (kResourceExhausted for out-of-memory, kUnavailable
// for a device that failed for good, kInternal for the rest) whose message names the CUDA call
// and error; free/destroy never throw. A sticky CUDA error (illegal address, launch failure, ECC
// and the like) marks the device failed (device_health.h).
//
// Thread-safe: every method may be called from any thread.
#pragma once

#include <atomic>
#include <cstddef>
#include <string>
#include <vector>

#include "prism/gpu/device.h"
#include "prism/gpu/stream.h"
#include "prism/internal/device_support.h"

namespace prism::gpu::internal {

class DeviceBackend {
 public:
  virtual ~DeviceBackend() = default;

  virtual Backend kind() const noexcept = 0;
  // Devices this backend serves (logical GPUs for the host backend: any index >= 0 works).
  virtual int device_count() const noexcept = 0;
  virtual std::string describe() const = 0;
  // Memory of `device` a task may reserve, in bytes: what was free at start less a reserve for
  // the CUDA context and libraries (cuBLAS, NCCL); 0 if unknown.
  virtual size_t device_memory(int device) const noexcept = 0;
  // The CUDA ordinal of `device` (the same number on the host backend).
  virtual int ordinal(int device) const noexcept = 0;

  // The calling thread's current device (Prism's number; 0 on the host backend) and setting it.
  virtual int get_device() = 0;
  virtual void set_device(int device) = 0;

  // Device memory, stream-ordered on `stream` (of that device). Out of memory: waits for the
  // device, gives the pool's cached memory back and tries once more before throwing
  // kResourceExhausted.
  virtual void* allocate(int device, size_t bytes, void* stream) = 0;
  // Frees `ptr` stream-ordered on `stream` (a stream of `device` that outlives the call), after
  // the work queued there so far, after the work queued so far on each of `users` (streams of
  // any device that read or wrote the block) and after each of `events` (uses recorded earlier).
  virtual void free(int device, void* ptr, void* stream, const std::vector<Stream>& users,
                    const std::vector<void*>& events) noexcept = 0;
  // Waits for `device` and returns its pool's cached (freed) memory to the system, so that other
  // allocators (cuBLAS, NCCL) can have it. For out-of-memory recovery.
  virtual void release_cached(int device) noexcept = 0;
  // Host memory for staging and host tensors (pinned while the pinned budget lasts).
  virtual void* host_allocate(size_t bytes) = 0;
  virtual void host_free(void* ptr) noexcept = 0;

  // Copies `bytes` from `src` (on `src_dev`) to `dst` (on `dst_dev`), queued on `stream`.
  // A copy to the host is complete when the stream is synchronized.
  virtual void copy(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes,
                    void* stream) = 0;
  virtual void memset_zero(void* dst, Device dst_dev, size_t bytes, void* stream) = 0;

  virtual void* stream_create(int device) = 0;
  virtual void stream_synchronize(void* stream) = 0;

  virtual void* event_create(int device) = 0;
  virtual void event_destroy(int device, void* event) noexcept = 0;
  virtual void event_record(void* event, void* stream) = 0;
  virtual void stream_wait_event(void* stream, void* event) = 0;
  virtual void event_synchronize(void* event) = 0;

  // After a kernel on `stream` of `device` failed: marks the device failed if the error is a
  // sticky one (the device's context is unusable for the rest of the process).
  virtual void check_health(int device, void* stream) noexcept = 0;

  // Timing events, for the device time of GPU tasks in the timeline (device_timing.h): each
  // records when the work queued before it on a stream finished. event_done never blocks;
  // event_elapsed_ms needs both events done and on one device (throws prism::Error otherwise).
  // Host backend: the time of the record call (its streams are synchronous).
  virtual void* timing_event_create(int device) = 0;
  virtual void timing_event_destroy(int device, void* event) noexcept = 0;
  virtual void timing_event_record(void* event, void* stream) = 0;
  virtual bool event_done(void* event) noexcept = 0;
  virtual double event_elapsed_ms(void* from, void* to) = 0;

  // A named range on the calling thread for profilers (CUDA: NVTX push/pop; host: nothing).
  virtual void range_push(const char* name) noexcept = 0;
  virtual void range_pop() noexcept = 0;
};

// Host backend: each logical GPU has `bytes` of memory (0: as much as the host has, the
// default; PRISM_LOGICAL_GPU_MEMORY sets it at start). Past it, allocate() throws
// kResourceExhausted as a full device does, so device memory pressure can be tested here. Blocks
// allocated while the limit was 0 are not counted.
void set_logical_gpu_memory(size_t bytes) noexcept;

// The process's backend: CUDA when built with it and a device is usable, else host. Never null;
// lives until the process exits.
DeviceBackend& backend_instance();
// backend_instance().kind() == Backend::kCuda, read once (the backend is chosen once): for paths
// run per task, a load of the answer kept after the first call.
bool on_cuda_backend() noexcept;
bool find_cuda_backend() noexcept;  // (the first call's part)
inline constinit std::atomic<int> g_backend_kind{0};  // 0: not asked yet; 1: host; 2: CUDA
inline bool on_cuda_backend() noexcept {
  // (Relaxed: the answer never changes once set, and says nothing about other memory.)
  const int kind = g_backend_kind.load(std::memory_order_relaxed);
  return kind != 0 ? kind == 2 : find_cuda_backend();
}

// Backend factories (cuda_backend.cc is built only with CUDA). make_cuda_backend uses the
// process's share of the visible devices (ranks sharing a machine: prism::internal::DeviceShare)
// and returns null, setting *why, when none of them is usable.
DeviceBackend* make_host_backend(std::string why_not_cuda);
DeviceBackend* make_cuda_backend(prism::internal::DeviceShare share, std::string* why);

}  // namespace prism::gpu::internal
