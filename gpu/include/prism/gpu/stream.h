// prism/gpu/stream.h — the stream a GPU task queues its work on.
//
//   void step(const prism::gpu::Tensor& x) {            // runs with .num_gpus(1)
//     cudaStream_t s = prism::gpu::current_stream().cuda();   // CUDA backend only
//     my_kernel<<<grid, block, 0, s>>>(x.data<float>());
//   }
//
// Each scheduler thread that runs GPU tasks owns one stream per device it has served; while it
// runs a task granted GPU k, device k is current and current_stream() is that thread's stream
// for k, so concurrent tasks on one device (fractional GPUs) never share a stream. On the host
// backend a stream is synchronous: work "queued" on it has finished when the call returns.
//
// Thread-safe: a Stream is a handle; the work queued on it is ordered as the CUDA stream is.
#pragma once

#include "prism/gpu/device.h"

namespace prism::gpu {

class Stream {
 public:
  Stream() = default;  // the host's (synchronous) stream
  Stream(Device device, void* handle) noexcept : device_(device), handle_(handle) {}

  Device device() const noexcept { return device_; }
  // The backend's handle: a cudaStream_t on the CUDA backend (cast it), null on the host one.
  void* handle() const noexcept { return handle_; }
  template <typename CudaStream>
  CudaStream as() const noexcept {
    return static_cast<CudaStream>(handle_);
  }
  // Blocks until the work queued so far has finished.
  void synchronize() const;

 private:
  Device device_ = Device::host();
  void* handle_ = nullptr;
};

// The calling thread's stream for current_device() (the host stream outside GPU tasks).
Stream current_stream();

}  // namespace prism::gpu
