// prism/gpu/device.h — where memory lives and which backend runs GPU work in this process.
//
//   prism::init({.num_gpus = 2});          // no CUDA device here: 2 logical GPUs, host backend
//   if (prism::gpu::backend() == prism::gpu::Backend::kHost) { ... }
//   prism::gpu::Device d = prism::gpu::current_device();   // in a GPU task: the granted GPU
//
// A process uses one backend for all its GPUs: CUDA when Prism was built with CUDA and the
// driver reports at least one usable device, the host backend otherwise (device memory is then host
// memory and kernels run on the calling CPU thread through Thrust's CPP system). The choice is
// made once, at the first question, and logged once. PRISM_REQUIRE_CUDA=1 makes a missing or
// unusable CUDA backend fatal (the process aborts with the reason) instead of falling back to the
// host backend: for runs that must test real GPUs. PRISM_GPU_BACKEND=host forces the host backend.
//
// A device is left out at start, with the reason in backend_description(), when it is in
// prohibited compute mode, cannot be opened (exclusive-process mode, held by another process),
// has no stream-ordered memory pools, or has an architecture this build has no code for. A device
// that fails during the run (a sticky CUDA error such as an illegal address) is marked failed:
// tasks granted it fail with prism::Error(kUnavailable) naming it, and the scheduler stops
// placing work there wherever another device could run it.
//
// Thread-safe: every function may be called from any thread.
#pragma once

#include <cstdint>
#include <string>

namespace prism::gpu {

// A memory space: the host, or GPU `index` of this node (a CUDA device, or a logical GPU of the
// host backend).
struct Device {
  int index = -1;  // -1: host

  static constexpr Device host() noexcept { return Device{-1}; }
  static constexpr Device gpu(int i) noexcept { return Device{i}; }
  constexpr bool is_host() const noexcept { return index < 0; }
  friend constexpr bool operator==(Device a, Device b) noexcept { return a.index == b.index; }
  std::string to_string() const;  // "host", "gpu:0"
};

enum class Backend { kHost, kCuda };

// The backend of this process (decided at the first call).
Backend backend();
// "cuda" or "host".
const char* backend_name(Backend b) noexcept;
// Why this backend: e.g. "CUDA: 2 devices (NVIDIA H100 ...)" or "no CUDA device
// (cudaGetDeviceCount: cudaErrorInsufficientDriver): GPUs are logical, on the host backend".
std::string backend_description();
// True if this build of Prism contains the CUDA backend.
bool built_with_cuda() noexcept;
// Real CUDA devices usable by this process (0 on the host backend).
int cuda_device_count();

// The GPU granted to the running task (its first, for multi-GPU tasks), or the host outside GPU
// tasks. prism::gpu_ids() lists every granted GPU.
Device current_device() noexcept;

// The CUDA device ordinal of a Prism GPU (what cudaSetDevice takes); -1 for the host. Prism
// numbers the usable devices only: a device left out at start (see backend_description()) has an
// ordinal but no Prism number, so gpu:k is not always CUDA device k. On the host backend the
// numbers are equal.
int cuda_ordinal(Device device);

}  // namespace prism::gpu
