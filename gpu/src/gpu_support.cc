// The GPU module's side of core's DeviceSupport: device discovery for the runtime, and the
// devices (plus streams) a GPU task runs with.
#include <string>
#include <vector>

#include "backend.h"
#include "device_channels.h"
#include "device_context.h"
#include "device_health.h"
#include "device_timing.h"
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

  bool enter(const int* devices, size_t count, uint64_t owner, Saved* saved,
             std::string* why) noexcept override {
    const int first = count > 0 ? devices[0] : -1;
    const TaskDevices want{Device::gpu(first), count > 0 ? owner : 0};
    const TaskDevices& now = tls_task_view.task;
    saved->kept = saved->may_keep && now.device == want.device && now.owner == want.owner;
    saved->cuda_device = -1;
    if (!saved->kept) {
      const TaskDevices before = set_task_devices(want);
      saved->device = before.device.index;
      saved->owner = before.owner;
    }
    bool ok = true;
    // (The failure mask read once: a healthy process asks device_failed nothing.)
    const uint64_t failed = prism::internal::failed_devices();
    try {
      for (size_t i = 0; i < count && ok; ++i) {
        const int d = devices[i];
        if (d >= 0 && d < 64 && ((failed >> d) & 1) == 0) continue;
        ok = !device_failed(d, why);
      }
    } catch (...) {
      ok = false;  // out of memory for the message
    }
    if (ok && first >= 0 && on_cuda_backend()) {
      DeviceBackend& b = backend_instance();
      try {
        // (Kept: the lease's entry restores what it replaced; a task before this one in the
        // lease may have left another device current.)
        const int current = b.get_device();
        if (!saved->kept) saved->cuda_device = current;
        if (current != first) b.set_device(first);
      } catch (...) {
        // A device that cannot be made current: the task's own CUDA calls will report it.
      }
    }
    return ok;
  }
  void task_begin(const char* name, uint64_t owner, bool time_device) noexcept override {
    backend_instance().range_push(name);
    int device = -1;
    void* stream = nullptr;
    const Device d = task_devices().device;  // (set by enter())
    if (time_device && !d.is_host()) {
      try {
        stream = task_stream(d).handle();
        device = d.index;
      } catch (...) {
        // (no stream: not timed)
      }
    }
    device_timing_begin(owner, name, device, stream);
  }
  bool names_runs() const noexcept override {
    return on_cuda_backend();  // (NVTX ranges; the host has none)
  }
  void task_end() noexcept override {
    device_timing_end();
    backend_instance().range_pop();
  }
  void collect_device_spans(uint64_t owner,
                            std::vector<DeviceSpan>* out) noexcept override {
    for (prism::gpu::internal::DeviceSpan& s : device_timing_collect(owner)) {
      try {
        out->push_back(DeviceSpan{std::move(s.name), s.device, s.start, s.end});
      } catch (...) {
        return;
      }
    }
  }
  void drop_device_spans(uint64_t owner) noexcept override { device_timing_drop(owner); }
  void leave(const Saved& saved) noexcept override {
    if (saved.kept) return;
    set_task_devices(TaskDevices{Device::gpu(saved.device), saved.owner});
    if (saved.cuda_device >= 0) {
      try {
        backend_instance().set_device(saved.cuda_device);
      } catch (...) {
      }
    }
  }
  void synchronize_task() noexcept override {
    const Device d = task_devices().device;
    if (d.is_host()) return;
    try {
      task_stream(d).synchronize();
    } catch (...) {
      // A failed device: the task's own calls report it; the measurement is only late.
    }
  }
  void release_owner(uint64_t owner) noexcept override { release_owner_streams(owner); }
  void copy_counts(uint64_t* copies, uint64_t* bytes) noexcept override {
    const CopyStats c = copy_stats();
    *copies = c.total();
    *bytes = c.bytes;
  }
};

}  // namespace

bool link_gpu_module() noexcept {
  // Never destroyed: a runtime shut down during static destruction may still run GPU tasks.
  static GpuSupport* const support = new GpuSupport;
  prism::internal::install_device_support(support);
  register_device_channels();
  return true;
}

}  // namespace prism::gpu::internal
