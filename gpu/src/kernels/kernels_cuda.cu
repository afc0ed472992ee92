// The CUDA backend's kernels: kernels_impl.inl compiled by nvcc with Thrust's CUDA system. Work
// is queued on the caller's stream without waiting (par_nosync); reductions that return a value
// wait for their stream (par), with temporary storage from the stream-ordered pool. Built only
// with CUDA; every entry is reached through ops.cc once the CUDA backend was chosen (a device is
// present).
//
// Keep device code in this one translation unit: it costs ~25 s of nvcc per architecture here.

#include <cuda_runtime.h>
#include <thrust/system/cuda/execution_policy.h>

#include "kernels/kernels.h"

#include <cstddef>
#include <new>
#include <stdexcept>
#include <string>

namespace prism::gpu::kernels::cuda::detail {

// Out of device memory for a kernel's temporary storage (ops.cc reports kResourceExhausted).
class DeviceOutOfMemory : public std::bad_alloc {
 public:
  const char* what() const noexcept override {
    return "cudaMallocFromPoolAsync: out of device memory for temporary storage";
  }
};

// Thrust's temporary storage (reductions), stream-ordered from the device's default memory pool
// (the pool tensors use) instead of cudaMalloc/cudaFree: cudaFree would synchronize the whole
// device, stalling the other tasks that share it. Thread contract: a value held by one policy.
struct StreamAllocator {
  using value_type = char;
  cudaStream_t stream;

  char* allocate(std::ptrdiff_t bytes) {
    // The device's default pool (Prism's tensors' pool), whatever pool is current.
    int device = 0;
    cudaMemPool_t pool = nullptr;
    cudaError_t err = cudaGetDevice(&device);
    if (err == cudaSuccess) err = cudaDeviceGetDefaultMemPool(&pool, device);
    void* p = nullptr;
    if (err == cudaSuccess) err = cudaMallocFromPoolAsync(&p, static_cast<size_t>(bytes), pool, stream);
    if (err == cudaErrorMemoryAllocation) {
      // The pool may hold freed memory the allocation could use once trimmed: once more.
      cudaGetLastError();
      release_cached_memory();
      err = cudaMallocFromPoolAsync(&p, static_cast<size_t>(bytes), pool, stream);
    }
    if (err == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      throw DeviceOutOfMemory();
    }
    if (err != cudaSuccess) {
      cudaGetLastError();
      throw std::runtime_error(std::string("cudaMallocFromPoolAsync: ") + cudaGetErrorName(err) + " (" +
                               cudaGetErrorString(err) + ")");
    }
    return static_cast<char*>(p);
  }
  void deallocate(char* p, size_t /*bytes*/) noexcept {
    if (cudaFreeAsync(p, stream) != cudaSuccess) cudaGetLastError();  // nothing to do about it
  }
};

// Thread-safe: stateless.
struct Policies {
  static auto launch(void* stream) {
    return thrust::cuda::par_nosync.on(static_cast<cudaStream_t>(stream));
  }
  // Reductions copy their result to the host, so they wait for the stream.
  static auto value(void* stream) {
    const auto s = static_cast<cudaStream_t>(stream);
    return thrust::cuda::par(StreamAllocator{s}).on(s);
  }
  // Reads (and clears) the launch error that Thrust may not have reported.
  static void after_launch(const char* kernel) {
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) {
      throw std::runtime_error(std::string("launching ") + kernel + ": " + cudaGetErrorName(err) +
                               " (" + cudaGetErrorString(err) + ")");
    }
  }
};

// The kernel whose attributes tell whether this build has code for a device.
__global__ void probe_kernel() {}

}  // namespace prism::gpu::kernels::cuda::detail

namespace prism::gpu::kernels::cuda {

int probe_device_code() noexcept {
  cudaFuncAttributes attributes{};
  const cudaError_t err = cudaFuncGetAttributes(&attributes, detail::probe_kernel);
  if (err != cudaSuccess) cudaGetLastError();
  return static_cast<int>(err);
}

}  // namespace prism::gpu::kernels::cuda

#define PRISM_GPU_KERNELS_NS cuda
#include "kernels/kernels_impl.inl"
#undef PRISM_GPU_KERNELS_NS
