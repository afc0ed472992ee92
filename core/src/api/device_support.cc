#include "prism/internal/device_support.h"

#include <atomic>

namespace prism::internal {

namespace {
std::atomic<DeviceSupport*> g_support{nullptr};
}  // namespace

void install_device_support(DeviceSupport* support) noexcept {
  g_support.store(support, std::memory_order_release);
}

DeviceSupport* device_support() noexcept { return g_support.load(std::memory_order_acquire); }

}  // namespace prism::internal
