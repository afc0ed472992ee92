// The GPU module's side of core's DeviceSupport: device discovery for the runtime, and the device
// (plus that thread's stream) a GPU task runs with.
#include <vector>

#include "backend.h"
#include "device_context.h"
#include "prism/gpu/tensor.h"
#include "prism/internal/device_support.h"

namespace prism::gpu::internal {
namespace {

class GpuSupport final : public prism::internal::DeviceSupport {
 public:
  int device_count() override {
    DeviceBackend& b = backend_instance();
    return b.kind() == Backend::kCuda ? b.device_count() : 0;
  }
  int64_t device_memory(int device) override {
    return static_cast<int64_t>(backend_instance().device_memory(device));
  }
  std::string describe() override { return "prism: " + backend_instance().describe(); }

  void enter(int device) noexcept override {
    Frame f;
    f.task_device = current_device();
    DeviceBackend& b = backend_instance();
    if (device >= 0 && b.kind() == Backend::kCuda) {
      try {
        f.cuda_device = b.get_device();
        b.set_device(device);
      } catch (...) {
        // A device that cannot be made current: the task's own CUDA calls will report it.
      }
    }
    frames().push_back(f);
    set_task_device(Device::gpu(device));
  }
  void leave() noexcept override {
    auto& fs = frames();
    if (fs.empty()) return;
    const Frame f = fs.back();
    fs.pop_back();
    set_task_device(f.task_device);
    if (f.cuda_device >= 0) {
      try {
        backend_instance().set_device(f.cuda_device);
      } catch (...) {
      }
    }
  }

 private:
  struct Frame {
    Device task_device;
    int cuda_device = -1;
  };
  static std::vector<Frame>& frames() {
    thread_local std::vector<Frame> f;
    return f;
  }
};

}  // namespace

bool link_gpu_module() noexcept {
  // Never destroyed: a runtime shut down during static destruction may still run GPU tasks.
  static GpuSupport* const support = new GpuSupport;
  prism::internal::install_device_support(support);
  return true;
}

}  // namespace prism::gpu::internal
