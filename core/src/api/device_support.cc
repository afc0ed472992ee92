#include "prism/internal/device_support.h"

#include <atomic>

namespace prism::internal {

namespace {
std::atomic<DeviceSupport*> g_support{nullptr};
std::atomic<uint64_t> g_next_owner{1};
std::atomic<uint64_t> g_failed{0};
}  // namespace

void install_device_support(DeviceSupport* support) noexcept {
  g_support.store(support, std::memory_order_release);
}

DeviceSupport* device_support() noexcept { return g_support.load(std::memory_order_acquire); }

uint64_t new_device_owner() noexcept { return g_next_owner.fetch_add(1, std::memory_order_relaxed); }

void report_device_failure(int device) noexcept {
  if (device < 0 || device >= 64) return;
  g_failed.fetch_or(uint64_t{1} << device, std::memory_order_release);
}

uint64_t failed_devices() noexcept { return g_failed.load(std::memory_order_acquire); }

void reset_device_failures_for_testing() noexcept { g_failed.store(0, std::memory_order_release); }

}  // namespace prism::internal
