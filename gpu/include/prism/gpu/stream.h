// prism/gpu/stream.h — the streams a GPU task queues its work on.
//
//   #include <cuda_runtime.h>
//   void step(const prism::gpu::Tensor& x) {            // runs with .num_gpus(1)
//     cudaStream_t s = prism::gpu::current_stream().as<cudaStream_t>();   // CUDA backend only
//     my_kernel<<<grid, block, 0, s>>>(x.data<float>());
//   }
//
// A task granted GPUs has one stream per granted device, ordered by Prism: the tensors it reads
// are ready on it, and the tensors it returns are complete when the work it queued there is. A
// plain task uses its thread's streams (concurrent tasks on one device, e.g. fractional GPUs,
// never share a stream); an actor's calls all use the actor's own streams, whichever thread runs
// them, so a kernel of one call is ordered before the next call's. current_stream() is the stream
// for current_device() (the first granted GPU); stream_for(Device::gpu(k)) the one for any other
// granted GPU k. On the host backend a stream is synchronous: work "queued" on it has finished
// when the call returns.
//
// Streams of your own (a library's, e.g. NCCL's, or cudaStreamCreate's), and the legacy default
// stream (a null handle, e.g. a kernel launched without a stream or cudaMemcpy), are not ordered
// with Prism's streams (which are cudaStreamNonBlocking): order them yourself with
// Tensor::wait_on(stream) before reading a tensor there, and call Tensor::record_use(stream)
// after queuing the last work that uses the tensor there, so that its memory is not freed and
// reused before that work has run. A tensor you write on such a stream is recorded there with
// Tensor::record(stream) before the task returns it.
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
  // The backend's handle: a cudaStream_t on the CUDA backend (cast it); on the host backend an
  // opaque token (null for the host stream).
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

// The running task's stream for current_device() (the host stream outside GPU tasks).
Stream current_stream();
// The running task's stream for `device` (any GPU of this node; the host stream for the host).
Stream stream_for(Device device);

}  // namespace prism::gpu
