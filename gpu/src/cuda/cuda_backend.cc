// The CUDA backend: real devices through the CUDA runtime API (compiled by the host compiler;
// only the kernels need nvcc).
//
// Devices: every CUDA device is probed at start; one that cannot be used is left out with the
// reason in describe() (and a warning in the log) instead of sending the whole process to the
// host backend: prohibited compute mode, a context that cannot be created (exclusive-process
// mode with another process on it: cudaErrorDevicesUnavailable), no stream-ordered memory pools
// (cudaDevAttrMemoryPoolsSupported), or no code in this build for its architecture
// (cudaFuncGetAttributes on one of our kernels fails with cudaErrorNoKernelImageForDevice). The
// usable ones are Prism's gpu:0..n-1, mapped to their CUDA ordinals.
//
// Peer access: for every ordered pair of usable devices that supports it (and only those),
// cudaDeviceEnablePeerAccess, and cudaMemPoolSetAccess on the peer's default pool: the first
// does not cover memory from cudaMallocAsync pools ("CUDA Runtime API, Stream Ordered Memory
// Allocator": pool allocations are accessible only from the devices the pool grants), so without
// the second a kernel reading a peer tensor through its pointer faults.
//
// Memory: cudaMallocFromPoolAsync from each device's default pool (whatever pool another library
// made current), which keeps freed blocks cached up to the memory tasks may use (the release
// threshold), so the reserve for the libraries stays free. Frees are stream-ordered on the block's home stream after
// events recorded on every stream that used it (Storage), which is what the stream-ordered
// allocator requires: "cudaFreeAsync ... the memory may be reused by any stream once the free
// is complete in `hStream`": every use must be ordered before that point. Streams are created
// with cudaStreamNonBlocking, so nothing implicitly synchronizes with the legacy stream and a
// free is not a barrier across the device. Out of memory: the pool is trimmed (cudaMemPoolTrimTo)
// and the allocation tried again; if that is not enough, the device is synchronized (pending
// frees complete), trimmed, and tried once more; then OutOfMemoryError (kResourceExhausted).
//
// Host memory: pinned (cudaMallocHost) for blocks up to kMaxPinnedBlock while the pinned total
// stays within kPinnedBudget, pageable otherwise. Pinned blocks are cached and never given back
// to the driver while the process runs (cudaFreeHost synchronizes the device).
//
// Failures: a sticky error (the context is unusable: illegal address, launch failure, ECC, ...)
// marks the device failed (device_health.h). At exit (atexit, registered after the CUDA runtime
// initialised, so it runs before the runtime's own teardown) the backend stops calling CUDA for
// frees and destroys: objects that outlive main (static tensors, threads' cuBLAS handles) are
// left to the driver instead of being destroyed after the runtime unloaded.
#include <cuda_runtime_api.h>
#include <nvtx3/nvToolsExt.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "backend.h"
#include "caching_pool.h"
#include "copy_cache.h"
#include "common/log.h"
#include "device_health.h"
#include "kernels/kernels.h"
#include "prism/errors.h"
#include "prism/internal/thread_annotations.h"

namespace prism::gpu::internal {
namespace {

constexpr size_t kMaxPinnedBlock = size_t{16} << 20;
constexpr size_t kPinnedBudget = size_t{2} << 30;

std::atomic<bool> g_exiting{false};

std::string cuda_message(cudaError_t e) {
  return std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e);
}

// Errors after which the device's context is unusable for the rest of the process (CUDA Runtime
// API, cudaError: "the process is left in an inconsistent state and any further CUDA work will
// return the same error").
bool is_sticky(cudaError_t e) {
  switch (e) {
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchTimeout:
    case cudaErrorHardwareStackError:
    case cudaErrorIllegalInstruction:
    case cudaErrorMisalignedAddress:
    case cudaErrorInvalidAddressSpace:
    case cudaErrorInvalidPc:
    case cudaErrorLaunchFailure:
    case cudaErrorECCUncorrectable:
    case cudaErrorAssert:
    case cudaErrorContextIsDestroyed:
    case cudaErrorNvlinkUncorrectable:
#if CUDART_VERSION >= 12000
    case cudaErrorExternalDevice:
#endif
#if CUDART_VERSION >= 12080
    case cudaErrorContained:         // Hopper error containment (e.g. a bad peer access over NVLink)
    case cudaErrorTensorMemoryLeak:
#endif
      return true;
    default:
      return false;
  }
}

// The exception for a failed call: OutOfMemoryError, kUnavailable for a sticky error, else
// kInternal.
[[noreturn]] void throw_cuda(cudaError_t e, const std::string& what) {
  const std::string message = "CUDA: " + what + " failed: " + cuda_message(e);
  if (e == cudaErrorMemoryAllocation) throw OutOfMemoryError(message);
  throw Error(is_sticky(e) ? ErrorCode::kUnavailable : ErrorCode::kInternal, message);
}

// Throws for a failed call (for setup paths that mark nothing failed).
void throw_if_failed(cudaError_t e, const char* call) {
  if (e == cudaSuccess) return;
  cudaGetLastError();
  throw_cuda(e, call);
}

void on_exit() { g_exiting.store(true); }

class CudaBackend;
CudaBackend* g_backend = nullptr;  // set once in make_cuda_backend

// Pinned host memory within the budget, for the CachingPool.
std::atomic<size_t> g_pinned_bytes{0};

void* pinned_block(size_t bytes) {
  if (g_pinned_bytes.fetch_add(bytes) + bytes > kPinnedBudget) {
    g_pinned_bytes.fetch_sub(bytes);
    return nullptr;
  }
  void* p = nullptr;
  if (cudaMallocHost(&p, bytes) == cudaSuccess) return p;
  cudaGetLastError();
  g_pinned_bytes.fetch_sub(bytes);
  return nullptr;
}

void free_pinned_block(void* p) {
  if (g_exiting.load()) return;
  if (cudaFreeHost(p) != cudaSuccess) cudaGetLastError();
}

void* pageable_block(size_t bytes) { return std::aligned_alloc(kAlignment, bytes); }
void free_pageable_block(void* p) { std::free(p); }

class CudaBackend final : public DeviceBackend {
 public:
  // Probes every device (see the file comment); *left_out gets one line per device left out.
  CudaBackend(int first, int count, std::string share, std::string* left_out)
      : share_(std::move(share)) {
    for (int ordinal = first; ordinal < first + count; ++ordinal) {
      std::string why;
      Info info;
      if (probe(ordinal, &info, &why)) {
        devices_.push_back(std::move(info));
      } else {
        *left_out += (left_out->empty() ? "" : "; ") + std::string("CUDA device ") +
                     std::to_string(ordinal) + " left out: " + why;
      }
    }
    left_out_ = *left_out;
    enable_peer_access();
    if (!devices_.empty() && cudaSetDevice(devices_[0].ordinal) != cudaSuccess) cudaGetLastError();
  }

  Backend kind() const noexcept override { return Backend::kCuda; }
  int device_count() const noexcept override { return static_cast<int>(devices_.size()); }
  std::string describe() const override {
    std::string s = "CUDA: " + std::to_string(devices_.size()) + " device(s)";
    for (size_t d = 0; d < devices_.size(); ++d) {
      const Info& i = devices_[d];
      s += (d == 0 ? " (" : ", ") + std::string("gpu:") + std::to_string(d) + " = CUDA " +
           std::to_string(i.ordinal) + ": " + i.name + ", sm_" + std::to_string(i.cc) + ", " +
           std::to_string(i.total >> 20) + " MiB, " + std::to_string(i.usable >> 20) +
           " MiB for tasks";
    }
    s += devices_.empty() ? "" : ")";
    if (!share_.empty()) s += "; " + share_;
    if (!left_out_.empty()) s += "; " + left_out_;
    if (!peers_.empty()) s += "; peer access: " + peers_;
    return s;
  }
  size_t device_memory(int device) const noexcept override {
    return valid(device) ? devices_[device].usable : 0;
  }
  int ordinal(int device) const noexcept override {
    return valid(device) ? devices_[device].ordinal : -1;
  }

  int get_device() override {
    int ord = 0;
    check(cudaGetDevice(&ord), "cudaGetDevice");
    for (size_t d = 0; d < devices_.size(); ++d) {
      if (devices_[d].ordinal == ord) return static_cast<int>(d);
    }
    return -1;  // a device Prism does not use is current (the user's code set it)
  }
  void set_device(int device) override {
    if (device < 0) return;  // nothing of Prism's was current: leave it
    check(cudaSetDevice(ordinal_of(device)), "cudaSetDevice");
  }

  void* allocate(int device, size_t bytes, void* stream) override {
    Current on(ordinal_of(device));
    const auto s = static_cast<cudaStream_t>(stream);
    cudaMemPool_t pool = devices_[device].pool;  // Prism's pool, whatever the device's current one
    const size_t n = bytes == 0 ? 1 : bytes;
    void* p = nullptr;
    cudaError_t e = cudaMallocFromPoolAsync(&p, n, pool, s);
    if (e == cudaErrorMemoryAllocation) {
      // Out of memory: first give back what the pool caches without stalling the device, then,
      // if that was not enough, wait for the device (pending frees complete) and trim again.
      cudaGetLastError();
      if (cudaMemPoolTrimTo(pool, 0) != cudaSuccess) cudaGetLastError();
      e = cudaMallocFromPoolAsync(&p, n, pool, s);
      if (e == cudaErrorMemoryAllocation) {
        cudaGetLastError();
        release_cached(device);
        e = cudaMallocFromPoolAsync(&p, n, pool, s);
      }
    }
    if (e != cudaSuccess) {
      cudaGetLastError();
      note(e, device);
      throw_cuda(e, "cudaMallocFromPoolAsync of " + std::to_string(bytes) + " bytes on gpu:" +
                        std::to_string(device) +
                        (e == cudaErrorMemoryAllocation
                             ? " (after giving the pool's cached memory back and trying again)"
                             : ""));
    }
    return p;
  }

  void free(int device, void* ptr, void* stream, const std::vector<Stream>& users,
            const std::vector<void*>& events) noexcept override {
    if (ptr == nullptr || g_exiting.load()) return;
    const auto home = static_cast<cudaStream_t>(stream);
    // Each other stream that used the block: an event at its current end, waited for by home
    // (cudaStreamWaitEvent takes an event of another device). Where that cannot be done, the
    // host waits for the user stream itself. Streams of a failed device are skipped: their
    // context is dead, and so is its work.
    for (const Stream& u : users) {
      if (u.handle() == nullptr || u.device().is_host() ||
          device_failed_noexcept(u.device().index)) {
        continue;
      }
      CurrentNoThrow on(ordinal_of_noexcept(u.device().index));
      const auto us = static_cast<cudaStream_t>(u.handle());
      cudaEvent_t e = nullptr;
      if (!on.ok() || cudaEventCreateWithFlags(&e, cudaEventDisableTiming) != cudaSuccess ||
          cudaEventRecord(e, us) != cudaSuccess || cudaStreamWaitEvent(home, e, 0) != cudaSuccess) {
        cudaGetLastError();
        if (on.ok() && cudaStreamSynchronize(us) != cudaSuccess) cudaGetLastError();
      }
      if (e != nullptr) cudaEventDestroy(e);  // released once complete (cudaEventDestroy)
    }
    CurrentNoThrow on(ordinal_of_noexcept(device));
    if (!on.ok()) return;  // the device is gone: so is the block
    for (void* ev : events) {
      if (ev == nullptr) continue;
      if (cudaStreamWaitEvent(home, static_cast<cudaEvent_t>(ev), 0) != cudaSuccess) {
        cudaGetLastError();
        if (cudaEventSynchronize(static_cast<cudaEvent_t>(ev)) != cudaSuccess) cudaGetLastError();
      }
    }
    const cudaError_t e = cudaFreeAsync(ptr, home);
    if (e != cudaSuccess) {
      cudaGetLastError();
      note(e, device);
    }
  }

  void release_cached(int device) noexcept override {
    if (!valid(device)) return;
    CurrentNoThrow on(devices_[device].ordinal);
    if (!on.ok()) return;
    // Pending frees complete only when their streams reach them: wait for the device first.
    const cudaError_t e = cudaDeviceSynchronize();
    if (e != cudaSuccess) {
      cudaGetLastError();
      note(e, device);
    }
    if (cudaMemPoolTrimTo(devices_[device].pool, 0) != cudaSuccess) cudaGetLastError();
  }

  void* host_allocate(size_t bytes) override {
    if (bytes <= kMaxPinnedBlock) {
      if (void* p = pinned_.try_allocate(bytes)) return p;
    }
    return pageable_.allocate(bytes);
  }
  void host_free(void* ptr) noexcept override {
    if (ptr == nullptr) return;
    if (!pinned_.free_if_owned(ptr)) pageable_.free(ptr);
  }

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
      check(cudaMemcpyPeerAsync(dst, ordinal_of(dst_dev.index), src, ordinal_of(src_dev.index),
                                bytes, s),
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
    Current on(ordinal_of(device));
    cudaStream_t s = nullptr;
    // Not synchronized with the legacy default stream (see the file comment).
    check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
    return s;
  }
  void stream_synchronize(void* stream) override {
    check(cudaStreamSynchronize(static_cast<cudaStream_t>(stream)), "cudaStreamSynchronize");
  }

  void* event_create(int device) override {
    Current on(ordinal_of(device));
    cudaEvent_t e = nullptr;
    check(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "cudaEventCreate");
    return e;
  }
  void event_destroy(int, void* event) noexcept override {
    if (event == nullptr || g_exiting.load()) return;
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

  // Timing events: made with timing on (the others disable it, for speed). NEVER EXECUTED here.
  void* timing_event_create(int device) override {
    Current on(ordinal_of(device));
    cudaEvent_t e = nullptr;
    check(cudaEventCreate(&e), "cudaEventCreate");
    return e;
  }
  void timing_event_destroy(int device, void* event) noexcept override {
    event_destroy(device, event);
  }
  void timing_event_record(void* event, void* stream) override { event_record(event, stream); }
  bool event_done(void* event) noexcept override {
    const cudaError_t e = cudaEventQuery(static_cast<cudaEvent_t>(event));
    if (e == cudaErrorNotReady) return false;
    if (e != cudaSuccess) cudaGetLastError();  // done, badly: event_elapsed_ms will say so
    return true;
  }
  double event_elapsed_ms(void* from, void* to) override {
    float ms = 0;
    check(cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(from), static_cast<cudaEvent_t>(to)),
          "cudaEventElapsedTime");
    return ms;
  }

  // NVTX v3 (header-only, from the toolkit): without a profiler attached each call is a check of
  // a null function pointer. NEVER EXECUTED here (no GPU, no Nsight on the build machine).
  void range_push(const char* name) noexcept override { nvtxRangePushA(name); }
  void range_pop() noexcept override { nvtxRangePop(); }

  void check_health(int device, void* stream) noexcept override {
    const cudaError_t e = cudaStreamQuery(static_cast<cudaStream_t>(stream));
    if (e != cudaSuccess && e != cudaErrorNotReady) {
      cudaGetLastError();
      note(e, device);
    }
  }

  // Marks `device` (Prism's number; -1: the current one) failed if `e` is sticky.
  void note(cudaError_t e, int device) noexcept {
    if (!is_sticky(e)) return;
    if (device < 0) {
      int ord = -1;
      if (cudaGetDevice(&ord) != cudaSuccess) {  // not through check(): no recursion
        cudaGetLastError();
        return;
      }
      for (size_t d = 0; d < devices_.size(); ++d) {
        if (devices_[d].ordinal == ord) device = static_cast<int>(d);
      }
    }
    if (valid(device)) mark_device_failed(device, cuda_message(e));
  }

  // Throws prism::Error for a failed call, after clearing the (non-sticky) error state; a sticky
  // error marks the current device failed and is reported as kUnavailable.
  void check(cudaError_t e, const char* call) {
    if (e == cudaSuccess) return;
    cudaGetLastError();
    note(e, -1);
    throw_cuda(e, call);
  }

 private:
  struct Info {
    int ordinal = -1;
    std::string name;
    int cc = 0;          // compute capability, e.g. 90
    size_t total = 0;    // bytes
    size_t usable = 0;   // bytes tasks may reserve
    cudaMemPool_t pool = nullptr;
  };

  // Makes CUDA device `ordinal` current for the scope.
  class Current {
   public:
    explicit Current(int ordinal) {
      if (cudaGetDevice(&previous_) != cudaSuccess) previous_ = -1;
      if (previous_ != ordinal) throw_if_failed(cudaSetDevice(ordinal), "cudaSetDevice");
      changed_ = previous_ != ordinal && previous_ >= 0;
    }
    ~Current() {
      if (changed_ && cudaSetDevice(previous_) != cudaSuccess) cudaGetLastError();
    }
    Current(const Current&) = delete;
    Current& operator=(const Current&) = delete;

   private:
    int previous_ = -1;
    bool changed_ = false;
  };

  // The same without throwing (free/destroy paths).
  class CurrentNoThrow {
   public:
    explicit CurrentNoThrow(int ordinal) {
      if (cudaGetDevice(&previous_) != cudaSuccess) previous_ = -1;
      ok_ = ordinal >= 0 && (previous_ == ordinal || cudaSetDevice(ordinal) == cudaSuccess);
      if (!ok_) cudaGetLastError();
      changed_ = ok_ && previous_ != ordinal && previous_ >= 0;
    }
    ~CurrentNoThrow() {
      if (changed_ && cudaSetDevice(previous_) != cudaSuccess) cudaGetLastError();
    }
    bool ok() const noexcept { return ok_; }
    CurrentNoThrow(const CurrentNoThrow&) = delete;
    CurrentNoThrow& operator=(const CurrentNoThrow&) = delete;

   private:
    int previous_ = -1;
    bool ok_ = false;
    bool changed_ = false;
  };

  bool valid(int device) const noexcept {
    return device >= 0 && device < static_cast<int>(devices_.size());
  }
  int ordinal_of(int device) const {
    if (!valid(device)) {
      throw Error(ErrorCode::kInvalidArgument,
                  "gpu:" + std::to_string(device) + " does not exist (this process uses " +
                      std::to_string(devices_.size()) + " CUDA device(s))");
    }
    return devices_[device].ordinal;
  }

  static bool device_failed_noexcept(int device) noexcept {
    try {
      return device_failed(device, nullptr);
    } catch (...) {
      return false;
    }
  }
  int ordinal_of_noexcept(int device) const noexcept {
    return valid(device) ? devices_[device].ordinal : -1;
  }

  // Opens device `ordinal` and says whether Prism can use it.
  static bool probe(int ordinal, Info* info, std::string* why) {
    cudaDeviceProp prop{};
    cudaError_t e = cudaGetDeviceProperties(&prop, ordinal);
    if (e != cudaSuccess) {
      cudaGetLastError();
      *why = "cudaGetDeviceProperties: " + cuda_message(e);
      return false;
    }
    info->ordinal = ordinal;
    info->name = prop.name;
    info->cc = prop.major * 10 + prop.minor;
    info->total = prop.totalGlobalMem;
    // cudaDeviceProp lost computeMode in CUDA 13: ask for the attribute.
    int mode = cudaComputeModeDefault;
    if (cudaDeviceGetAttribute(&mode, cudaDevAttrComputeMode, ordinal) != cudaSuccess) {
      cudaGetLastError();
      mode = cudaComputeModeDefault;
    }
    if (mode == cudaComputeModeProhibited) {
      *why = "compute mode is prohibited (nvidia-smi -c)";
      return false;
    }
    int pools = 0;
    e = cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, ordinal);
    if (e != cudaSuccess || pools == 0) {
      cudaGetLastError();
      *why = "no stream-ordered memory pools (cudaDevAttrMemoryPoolsSupported)";
      return false;
    }
    // Creating the context fails for a device in exclusive-process mode that another process
    // holds (cudaErrorDevicesUnavailable). The device is left current: the constructor makes the
    // first usable device current at the end (restoring an earlier "current" device would create
    // a context there too).
    e = cudaSetDevice(ordinal);
    if (e == cudaSuccess) e = cudaFree(nullptr);
    if (e != cudaSuccess) {
      cudaGetLastError();
      *why = "cannot open it (" + cuda_message(e) +
             (mode == cudaComputeModeExclusiveProcess
                  ? "; exclusive-process mode: another process holds it)"
                  : ")");
      return false;
    }
    // From here on a context exists: a device left out gives it back (cudaDeviceReset), so that
    // an exclusive-process device stays free for other processes.
    const auto leave_out = [ordinal] {
      if (cudaSetDevice(ordinal) == cudaSuccess) cudaDeviceReset();
      cudaGetLastError();
    };
    const int code = kernels::cuda::probe_device_code();
    if (code != 0) {
      leave_out();
      const auto err = static_cast<cudaError_t>(code);
      *why = err == cudaErrorUnsupportedPtxVersion
                 ? "the driver is older than this build's PTX (" + cuda_message(err) +
                       "; update the driver or build SASS for sm_" + std::to_string(info->cc) + ")"
                 : "this build has no code for its architecture sm_" + std::to_string(info->cc) +
                       " (" + cuda_message(err) + "; add it to CMAKE_CUDA_ARCHITECTURES)";
      return false;
    }
    // What tasks may reserve: free now, less a reserve for the libraries' own memory (cuBLAS
    // workspaces, NCCL buffers, Thrust temporaries, lazily loaded kernels) that does not go
    // through gpu_memory.
    size_t free_now = 0, total = 0;
    if (cudaMemGetInfo(&free_now, &total) != cudaSuccess) {
      cudaGetLastError();
      free_now = info->total;
    }
    const size_t reserve = std::max<size_t>(size_t{512} << 20, info->total / 32);
    info->usable = free_now > reserve ? free_now - reserve : 0;
    e = cudaDeviceGetDefaultMemPool(&info->pool, ordinal);
    if (e == cudaSuccess) {
      // Freed blocks stay cached up to what tasks may use, so the reserve stays free for the
      // libraries (a pool that kept everything would starve a lazily loaded kernel's launch).
      uint64_t keep = info->usable;
      e = cudaMemPoolSetAttribute(info->pool, cudaMemPoolAttrReleaseThreshold, &keep);
    }
    if (e != cudaSuccess) {
      cudaGetLastError();
      leave_out();
      *why = "its default memory pool cannot be set up (" + cuda_message(e) + ")";
      return false;
    }
    return true;
  }

  // Peer access for every ordered pair that supports it, for plain and pool memory.
  void enable_peer_access() {
    for (size_t d = 0; d < devices_.size(); ++d) {
      for (size_t p = 0; p < devices_.size(); ++p) {
        if (p == d) continue;
        const int from = devices_[d].ordinal, to = devices_[p].ordinal;
        int can = 0;
        cudaError_t e = cudaDeviceCanAccessPeer(&can, from, to);
        if (e != cudaSuccess || can == 0) {
          cudaGetLastError();
          continue;
        }
        Current on(from);
        e = cudaDeviceEnablePeerAccess(to, 0);
        if (e == cudaErrorPeerAccessAlreadyEnabled) {
          cudaGetLastError();
          e = cudaSuccess;
        }
        if (e == cudaSuccess) {
          cudaMemAccessDesc access{};
          access.location.type = cudaMemLocationTypeDevice;
          access.location.id = from;  // the device that reads `to`'s pool memory
          access.flags = cudaMemAccessFlagsProtReadWrite;
          e = cudaMemPoolSetAccess(devices_[p].pool, &access, 1);
        }
        if (e != cudaSuccess) {
          cudaGetLastError();
          PRISM_LOG(kWarning) << "gpu: peer access gpu:" << d << " -> gpu:" << p
                              << " failed: " << cuda_message(e)
                              << " (copies between them still work, through the host if need be)";
          continue;
        }
        peers_ += (peers_.empty() ? "" : ", ") + std::string("gpu:") + std::to_string(d) +
                  "->gpu:" + std::to_string(p);
      }
    }
  }

  std::vector<Info> devices_;
  std::string share_;  // which visible devices this rank took, when ranks share the machine
  std::string left_out_;
  std::string peers_;
  CachingPool pinned_{&pinned_block, &free_pinned_block, /*max_cached=*/kPinnedBudget};
  CachingPool pageable_{&pageable_block, &free_pageable_block};
};

}  // namespace

DeviceBackend* make_cuda_backend(prism::internal::DeviceShare share, std::string* why) {
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
  // Ranks sharing the machine split the visible devices (ordinals stay the CUDA runtime's).
  const prism::internal::DeviceRange range = prism::internal::shared_devices(count, share);
  std::string taken;
  if (share.parts > 1) {
    taken = "local rank " + std::to_string(share.part) + " of " + std::to_string(share.parts) +
            " takes CUDA device" + (range.count > 1 ? "s " : " ") + std::to_string(range.first) +
            (range.count > 1 ? "-" + std::to_string(range.first + range.count - 1) : "") +
            " of " + std::to_string(count) + (count < share.parts ? " (shared with other ranks)" : "");
  }
  std::string left_out;
  CudaBackend* b = nullptr;
  try {
    b = new CudaBackend(range.first, range.count, taken, &left_out);
  } catch (const std::exception& ex) {
    *why = std::string("CUDA devices found but unusable: ") + ex.what();
    return nullptr;
  }
  if (b->device_count() == 0) {
    *why = "no usable CUDA device (" + left_out + ")";
    delete b;
    return nullptr;
  }
  if (!left_out.empty()) {
    PRISM_LOG(kWarning) << "gpu: " << left_out;
  }
  g_backend = b;
  // The CUDA runtime registered its own teardown when it initialised (above): this handler,
  // registered later, runs before it.
  std::atexit(&on_exit);
  return b;
}

}  // namespace prism::gpu::internal

namespace prism::gpu::kernels::cuda {

void release_cached_memory() noexcept {
  if (internal::g_backend == nullptr) return;
  try {
    const int device = internal::g_backend->get_device();
    // An out-of-memory inside a library (cuBLAS's workspace, Thrust's temporaries): first the
    // cached copies on this device that no handle holds (made again by their next reader), freed
    // stream-ordered; then the device waits for those frees and the pool is trimmed.
    internal::CopyCache::instance().evict(device, std::numeric_limits<size_t>::max());
    internal::g_backend->release_cached(device);
  } catch (...) {
  }
}

bool process_exiting() noexcept { return internal::g_exiting.load(); }

}  // namespace prism::gpu::kernels::cuda
