// The CUDA backend: real devices through the CUDA runtime API (compiled by the host compiler;
// only the kernels need nvcc).
//
// Memory: cudaMallocAsync from each device's default pool (release threshold raised so freed
// blocks stay in the pool), freed with cudaFreeAsync on the legacy default stream: Prism's
// streams are blocking streams, so that free is ordered after all work queued on any of them
// before it. Host staging memory is pinned (cudaMallocHost), with a malloc fallback.
#include <cuda_runtime_api.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <unordered_set>
#include <vector>

#include "prism/internal/thread_annotations.h"
#include "backend.h"
#include "caching_pool.h"
#include "prism/errors.h"

namespace prism::gpu::internal {
namespace {

std::string cuda_message(cudaError_t e) {
  return std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e);
}

// Throws prism::Error for a failed call, after clearing the (non-sticky) error state.
void check(cudaError_t e, const char* call) {
  if (e == cudaSuccess) return;
  cudaGetLastError();
  const ErrorCode code =
      e == cudaErrorMemoryAllocation ? ErrorCode::kResourceExhausted : ErrorCode::kInternal;
  throw Error(code, std::string("CUDA: ") + call + " failed: " + cuda_message(e));
}

// Makes `device` current for the scope, without throwing (for free/destroy paths).
class CurrentNoThrow {
 public:
  explicit CurrentNoThrow(int device) {
    if (cudaGetDevice(&previous_) != cudaSuccess) previous_ = -1;
    ok_ = previous_ == device || cudaSetDevice(device) == cudaSuccess;
    if (!ok_) cudaGetLastError();
  }
  ~CurrentNoThrow() {
    if (previous_ >= 0 && cudaSetDevice(previous_) != cudaSuccess) cudaGetLastError();
  }
  bool ok() const noexcept { return ok_; }
  CurrentNoThrow(const CurrentNoThrow&) = delete;
  CurrentNoThrow& operator=(const CurrentNoThrow&) = delete;

 private:
  int previous_ = -1;
  bool ok_ = false;
};

// Makes `device` current for the scope.
class Current {
 public:
  explicit Current(int device) {
    if (cudaGetDevice(&previous_) != cudaSuccess) previous_ = -1;
    if (previous_ != device) check(cudaSetDevice(device), "cudaSetDevice");
    changed_ = previous_ != device && previous_ >= 0;
  }
  ~Current() {
    if (changed_) cudaSetDevice(previous_);
  }
  Current(const Current&) = delete;
  Current& operator=(const Current&) = delete;

 private:
  int previous_ = -1;
  bool changed_ = false;
};

// Pinned host memory for the CachingPool, or plain malloc when pinning fails (remembered, so
// that the block is given back the same way).
prism::internal::Mutex g_unpinned_mu;
// Never destroyed.
std::unordered_set<void*>* const g_unpinned PRISM_PT_GUARDED_BY(g_unpinned_mu) =
    new std::unordered_set<void*>;

void* pinned_block(size_t bytes) {
  void* p = nullptr;
  if (cudaMallocHost(&p, bytes) == cudaSuccess) return p;
  cudaGetLastError();
  p = std::aligned_alloc(kAlignment, bytes);
  if (p != nullptr) {
    prism::internal::MutexLock lock(g_unpinned_mu);
    g_unpinned->insert(p);
  }
  return p;
}

void free_pinned_block(void* p) {
  {
    prism::internal::MutexLock lock(g_unpinned_mu);
    if (g_unpinned->erase(p) > 0) {
      std::free(p);
      return;
    }
  }
  if (cudaFreeHost(p) != cudaSuccess) cudaGetLastError();
}

class CudaBackend final : public DeviceBackend {
 public:
  explicit CudaBackend(int count) : count_(count) {
    for (int d = 0; d < count_; ++d) {
      cudaDeviceProp prop{};
      check(cudaGetDeviceProperties(&prop, d), "cudaGetDeviceProperties");
      names_.push_back(prop.name);
      memory_.push_back(prop.totalGlobalMem);
      Current on(d);
      cudaMemPool_t pool = nullptr;
      if (cudaDeviceGetDefaultMemPool(&pool, d) == cudaSuccess) {
        uint64_t keep = UINT64_MAX;
        cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep);
      }
      for (int peer = 0; peer < count_; ++peer) {
        int can = 0;
        if (peer != d && cudaDeviceCanAccessPeer(&can, d, peer) == cudaSuccess && can) {
          cudaDeviceEnablePeerAccess(peer, 0);  // already enabled is fine
        }
      }
      cudaGetLastError();
    }
  }

  Backend kind() const noexcept override { return Backend::kCuda; }
  int device_count() const noexcept override { return count_; }
  std::string describe() const override {
    std::string s = "CUDA: " + std::to_string(count_) + " device(s)";
    for (int d = 0; d < count_; ++d) {
      s += (d == 0 ? " (" : ", ") + std::to_string(d) + ": " + names_[d] + ", " +
           std::to_string(memory_[d] >> 20) + " MiB";
    }
    return s + (count_ > 0 ? ")" : "");
  }
  size_t device_memory(int device) const noexcept override {
    return device >= 0 && device < count_ ? memory_[device] : 0;
  }

  int get_device() override {
    int d = 0;
    check(cudaGetDevice(&d), "cudaGetDevice");
    return d;
  }
  void set_device(int device) override { check(cudaSetDevice(device), "cudaSetDevice"); }

  void* allocate(int device, size_t bytes, void* stream) override {
    Current on(device);
    void* p = nullptr;
    const cudaError_t e =
        cudaMallocAsync(&p, bytes == 0 ? 1 : bytes, static_cast<cudaStream_t>(stream));
    if (e != cudaSuccess) {
      cudaGetLastError();
      throw Error(e == cudaErrorMemoryAllocation ? ErrorCode::kResourceExhausted
                                                 : ErrorCode::kInternal,
                  "CUDA: cudaMallocAsync of " + std::to_string(bytes) + " bytes on device " +
                      std::to_string(device) + " failed: " + cuda_message(e));
    }
    return p;
  }
  void free(int device, void* ptr) noexcept override {
    if (ptr == nullptr) return;
    CurrentNoThrow on(device);
    // Ordered after everything queued on the device's blocking streams so far.
    if (on.ok() && cudaFreeAsync(ptr, cudaStreamLegacy) != cudaSuccess) cudaGetLastError();
  }

  // Pinned host buffers are expensive to make (they are mapped for the device): cached.
  void* host_allocate(size_t bytes) override { return host_pool_.allocate(bytes); }
  void host_free(void* ptr) noexcept override { host_pool_.free(ptr); }

  void copy(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes,
            void* stream) override {
    if (bytes == 0) return;
    auto s = static_cast<cudaStream_t>(stream);
    if (dst_dev.is_host() && src_dev.is_host()) {
      std::memcpy(dst, src, bytes);
    } else if (dst_dev.is_host()) {
      check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, s), "cudaMemcpyAsync(D2H)");
    } else if (src_dev.is_host()) {
      check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, s), "cudaMemcpyAsync(H2D)");
    } else if (dst_dev == src_dev) {
      check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, s),
            "cudaMemcpyAsync(D2D)");
    } else {
      check(cudaMemcpyPeerAsync(dst, dst_dev.index, src, src_dev.index, bytes, s),
            "cudaMemcpyPeerAsync");
    }
  }
  void memset_zero(void* dst, Device dst_dev, size_t bytes, void* stream) override {
    if (bytes == 0) return;
    if (dst_dev.is_host()) {
      std::memset(dst, 0, bytes);
      return;
    }
    check(cudaMemsetAsync(dst, 0, bytes, static_cast<cudaStream_t>(stream)), "cudaMemsetAsync");
  }

  void* stream_create(int device) override {
    Current on(device);
    cudaStream_t s = nullptr;
    // A blocking stream (see the file comment: frees on the legacy stream order after it).
    check(cudaStreamCreate(&s), "cudaStreamCreate");
    return s;
  }
  void stream_destroy(int device, void* stream) noexcept override {
    if (stream == nullptr) return;
    CurrentNoThrow on(device);
    if (on.ok() && cudaStreamDestroy(static_cast<cudaStream_t>(stream)) != cudaSuccess) cudaGetLastError();
  }
  void stream_synchronize(void* stream) override {
    check(cudaStreamSynchronize(static_cast<cudaStream_t>(stream)), "cudaStreamSynchronize");
  }

  void* event_create(int device) override {
    Current on(device);
    cudaEvent_t e = nullptr;
    check(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "cudaEventCreate");
    return e;
  }
  void event_destroy(int, void* event) noexcept override {
    if (event == nullptr) return;
    if (cudaEventDestroy(static_cast<cudaEvent_t>(event)) != cudaSuccess) cudaGetLastError();
  }
  void event_record(void* event, void* stream) override {
    check(cudaEventRecord(static_cast<cudaEvent_t>(event), static_cast<cudaStream_t>(stream)),
          "cudaEventRecord");
  }
  void stream_wait_event(void* stream, void* event) override {
    check(cudaStreamWaitEvent(static_cast<cudaStream_t>(stream), static_cast<cudaEvent_t>(event),
                              0),
          "cudaStreamWaitEvent");
  }
  void event_synchronize(void* event) override {
    check(cudaEventSynchronize(static_cast<cudaEvent_t>(event)), "cudaEventSynchronize");
  }

 private:
  const int count_;
  std::vector<std::string> names_;
  std::vector<size_t> memory_;
  CachingPool host_pool_{&pinned_block, &free_pinned_block};
};

}  // namespace

DeviceBackend* make_cuda_backend(std::string* why) {
  int count = 0;
  // Without a driver this fails (cudaErrorInsufficientDriver, or cudaErrorStubLibrary with the
  // toolkit's stub libcuda) and leaves `count` untouched: check the code, never assume 0.
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    cudaGetLastError();
    *why = "no CUDA device (cudaGetDeviceCount: " + cuda_message(e) + ")";
    return nullptr;
  }
  if (count <= 0) {
    *why = "no CUDA device (cudaGetDeviceCount found none)";
    return nullptr;
  }
  try {
    return new CudaBackend(count);
  } catch (const std::exception& ex) {
    *why = std::string("CUDA devices found but unusable: ") + ex.what();
    return nullptr;
  }
}

}  // namespace prism::gpu::internal
