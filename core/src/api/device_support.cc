#include "prism/internal/device_support.h"

#include <algorithm>
#include <atomic>

namespace prism::internal {

namespace {
std::atomic<DeviceSupport*> g_support{nullptr};
std::atomic<uint64_t> g_next_owner{1};
std::atomic<uint64_t> g_failed{0};
// The share (part, parts) packed in one word, and whether the GPU module took it.
std::atomic<uint64_t> g_share{1};
std::atomic<bool> g_share_taken{false};
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

bool set_device_share(DeviceShare share) noexcept {
  if (share.parts < 1 || share.part < 0 || share.part >= share.parts) return false;
  g_share.store((uint64_t{static_cast<uint32_t>(share.part)} << 32) |
                    static_cast<uint32_t>(share.parts),
                std::memory_order_release);
  // Taken before or meanwhile: the devices were enumerated without it.
  return !g_share_taken.load(std::memory_order_acquire);
}

DeviceShare take_device_share() noexcept {
  g_share_taken.store(true, std::memory_order_release);
  const uint64_t v = g_share.load(std::memory_order_acquire);
  return DeviceShare{static_cast<int>(v >> 32), static_cast<int>(v & 0xffffffffu)};
}

DeviceRange shared_devices(int visible, DeviceShare share) noexcept {
  if (visible <= 0) return {};
  if (share.parts <= 1 || share.part < 0 || share.part >= share.parts) return {0, visible};
  if (visible < share.parts) return {share.part % visible, 1};
  const int base = visible / share.parts;
  const int extra = visible % share.parts;
  const int first = share.part * base + std::min(share.part, extra);
  return {first, base + (share.part < extra ? 1 : 0)};
}

}  // namespace prism::internal
