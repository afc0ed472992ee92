// The host backend: GPUs are logical, their memory is host memory, streams are synchronous.
//
// Memory comes from a CachingPool (as cudaMallocAsync's pools do on CUDA), so a workload that
// makes and drops tensors of the same sizes does not pay the kernel's page faults every time.
#include <cstdlib>
#include <cstring>
#include <string>

#include "backend.h"
#include "caching_pool.h"
#include "prism/errors.h"

namespace prism::gpu::internal {
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
  size_t device_memory(int) const noexcept override { return 0; }

  int get_device() override { return 0; }
  void set_device(int) override {}

  // One pool for all logical devices and the host: it is all the same memory.
  void* allocate(int, size_t bytes, void*) override { return pool_.allocate(bytes); }
  void free(int, void* ptr) noexcept override { pool_.free(ptr); }
  void* host_allocate(size_t bytes) override { return pool_.allocate(bytes); }
  void host_free(void* ptr) noexcept override { pool_.free(ptr); }

  void copy(void* dst, Device, const void* src, Device, size_t bytes, void*) override {
    if (bytes > 0) std::memcpy(dst, src, bytes);
  }
  void memset_zero(void* dst, Device, size_t bytes, void*) override {
    if (bytes > 0) std::memset(dst, 0, bytes);
  }

  // Work "queued" on a host stream has run when the call returns: null handles everywhere.
  void* stream_create(int) override { return nullptr; }
  void stream_destroy(int, void*) noexcept override {}
  void stream_synchronize(void*) override {}
  void* event_create(int) override { return nullptr; }
  void event_destroy(int, void*) noexcept override {}
  void event_record(void*, void*) override {}
  void stream_wait_event(void*, void*) override {}
  void event_synchronize(void*) override {}

 private:
  const std::string why_;
  CachingPool pool_{&aligned_block, &free_block};
};

}  // namespace

DeviceBackend* make_host_backend(std::string why_not_cuda) {
  return new HostBackend(std::move(why_not_cuda));
}

}  // namespace prism::gpu::internal
