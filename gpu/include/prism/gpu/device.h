// prism/gpu/device.h — where memory lives and which backend runs GPU work in this process.
//
//   prism::init({.num_gpus = 2});          // no CUDA device here: 2 logical GPUs, host backend
//   if (prism::gpu::backend() == prism::gpu::Backend::kHost) { ... }
//   prism::gpu::Device d = prism::gpu::current_device();   // in a GPU task: the granted GPU
//
// A process uses one backend for all its GPUs: CUDA when Prism was built with CUDA and the
// driver reports at least one device, the host backend otherwise (device memory is then host
// memory and kernels run on the calling CPU thread through Thrust's CPP system). The choice is
// made once, at the first question, and logged once.
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
// tasks.
Device current_device() noexcept;

}  // namespace prism::gpu
