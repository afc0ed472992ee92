// The host backend: GPUs are logical, their memory is host memory, streams are synchronous.
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

#include "backend.h"
#include "prism/errors.h"

namespace prism::gpu::internal {
namespace {

constexpr size_t kAlignment = 256;  // what cudaMalloc guarantees; kernels may rely on it

void* aligned(size_t bytes) {
  const size_t rounded = (bytes + kAlignment - 1) / kAlignment * kAlignment;
  void* p = std::aligned_alloc(kAlignment, rounded == 0 ? kAlignment : rounded);
  if (p == nullptr) {
    throw Error(ErrorCode::kResourceExhausted,
                "host backend: out of memory allocating " + std::to_string(bytes) + " bytes");
  }
  return p;
}

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

  void* allocate(int, size_t bytes, void*) override { return aligned(bytes); }
  void free(int, void* ptr) noexcept override { std::free(ptr); }
  void* host_allocate(size_t bytes) override { return aligned(bytes); }
  void host_free(void* ptr) noexcept override { std::free(ptr); }

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
};

}  // namespace

DeviceBackend* make_host_backend(std::string why_not_cuda) {
  return new HostBackend(std::move(why_not_cuda));
}

}  // namespace prism::gpu::internal
