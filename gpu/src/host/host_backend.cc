// The host backend: GPUs are logical, their memory is host memory, streams are synchronous.
// Streams are distinct tokens (never dereferenced) so that which task uses which stream is the
// same as on CUDA and testable here; events are null (always complete).
//
// Memory comes from a CachingPool (as cudaMallocAsync's pools do on CUDA), so a workload that
// makes and drops tensors of the same sizes does not pay the kernel's page faults every time.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "backend.h"
#include "caching_pool.h"
#include "prism/errors.h"
#include "prism/internal/thread_annotations.h"

namespace prism::gpu::internal {

static std::atomic<size_t>& logical_limit() noexcept {
  static std::atomic<size_t> limit{[] {
    const char* v = std::getenv("PRISM_LOGICAL_GPU_MEMORY");
    return v == nullptr ? size_t{0} : static_cast<size_t>(std::strtoull(v, nullptr, 10));
  }()};
  return limit;
}

namespace {

void* aligned_block(size_t bytes) { return std::aligned_alloc(kAlignment, bytes); }
void free_block(void* p) { std::free(p); }

class HostBackend final : public DeviceBackend {
 public:
  explicit HostBackend(std::string why) : why_(std::move(why)) {}

  Backend kind() const noexcept override { return Backend::kHost; }
  int device_count() const noexcept override { return 0; }
  std::string describe() const override {
    return why_ + ": GPUs are logical, served by the host backend (host memory, kernels on the CPU)";
  }
  size_t device_memory(int) const noexcept override {
    return logical_limit().load(std::memory_order_relaxed);
  }
  int ordinal(int device) const noexcept override { return device; }

  int get_device() override { return 0; }
  void set_device(int) override {}

  // One pool for all logical devices and the host: it is all the same memory. With a limit per
  // logical GPU (set_logical_gpu_memory), its blocks are counted against their device's.
  void* allocate(int device, size_t bytes, void*) override {
    const size_t limit = logical_limit().load(std::memory_order_relaxed);
    if (limit == 0) return pool_.allocate(bytes);
    {
      prism::internal::MutexLock lock(mu_);
      size_t& used = used_[device];
      if (bytes > limit - std::min(limit, used)) {
        throw Error(ErrorCode::kResourceExhausted,
                    "out of memory on logical gpu:" + std::to_string(device) + ": " +
                        std::to_string(bytes) + " bytes asked, " + std::to_string(used) + " of " +
                        std::to_string(limit) + " in use");
      }
      used += bytes;
    }
    void* p = nullptr;
    try {
      p = pool_.allocate(bytes);
    } catch (...) {
      prism::internal::MutexLock lock(mu_);
      used_[device] -= bytes;
      throw;
    }
    prism::internal::MutexLock lock(mu_);
    counted_.emplace(p, std::make_pair(device, bytes));
    return p;
  }
  void free(int, void* ptr, void*, const std::vector<Stream>&,
            const std::vector<void*>&) noexcept override {
    {
      prism::internal::MutexLock lock(mu_);
      if (auto it = counted_.find(ptr); it != counted_.end()) {
        used_[it->second.first] -= it->second.second;
        counted_.erase(it);
      }
    }
    pool_.free(ptr);  // every use has run: host streams are synchronous
  }
  void release_cached(int) noexcept override {}
  void* host_allocate(size_t bytes) override { return pool_.allocate(bytes); }
  void host_free(void* ptr) noexcept override { pool_.free(ptr); }

  void copy(void* dst, Device, const void* src, Device, size_t bytes, void*) override {
    if (bytes > 0) std::memcpy(dst, src, bytes);
  }
  void memset_zero(void* dst, Device, size_t bytes, void*) override {
    if (bytes > 0) std::memset(dst, 0, bytes);
  }

  // Work "queued" on a host stream has run when the call returns.
  void* stream_create(int) override {
    // A token: an odd address no allocation has, unique per stream.
    return reinterpret_cast<void*>(next_stream_.fetch_add(2, std::memory_order_relaxed));
  }
  void stream_synchronize(void*) override {}
  void* event_create(int) override { return nullptr; }
  void event_destroy(int, void*) noexcept override {}
  void event_record(void*, void*) override {}
  void stream_wait_event(void*, void*) override {}
  void event_synchronize(void*) override {}
  void check_health(int, void*) noexcept override {}
  void* timing_event_create(int) override { return new HostEvent; }
  void timing_event_destroy(int, void* event) noexcept override {
    delete static_cast<HostEvent*>(event);
  }
  void timing_event_record(void* event, void*) override {
    static_cast<HostEvent*>(event)->at = std::chrono::steady_clock::now();
  }
  bool event_done(void*) noexcept override { return true; }
  double event_elapsed_ms(void* from, void* to) override {
    return std::chrono::duration<double, std::milli>(static_cast<HostEvent*>(to)->at -
                                                     static_cast<HostEvent*>(from)->at)
        .count();
  }
  void range_push(const char*) noexcept override {}
  void range_pop() noexcept override {}

 private:
  // A timing event: when it was recorded (work before it on a host stream has run by then).
  struct HostEvent {
    std::chrono::steady_clock::time_point at;
  };
  const std::string why_;
  CachingPool pool_{&aligned_block, &free_block};
  prism::internal::Mutex mu_;
  std::map<int, size_t> used_ PRISM_GUARDED_BY(mu_);  // bytes of counted blocks per device
  // Blocks allocated under a limit: (device, bytes).
  std::unordered_map<void*, std::pair<int, size_t>> counted_ PRISM_GUARDED_BY(mu_);
  std::atomic<uintptr_t> next_stream_{0x1001};  // odd: no object has this address
};

}  // namespace

void set_logical_gpu_memory(size_t bytes) noexcept {
  logical_limit().store(bytes, std::memory_order_relaxed);
}

DeviceBackend* make_host_backend(std::string why_not_cuda) {
  return new HostBackend(std::move(why_not_cuda));
}

}  // namespace prism::gpu::internal
