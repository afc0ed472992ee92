#include "device_health.h"

#include <map>
#include <string>

#include "common/log.h"
#include "prism/internal/device_support.h"
#include "prism/internal/thread_annotations.h"

namespace prism::gpu::internal {
namespace {

prism::internal::Mutex g_mu;
// Never destroyed: tasks may fail on a device during static destruction.
std::map<int, std::string>* const g_failed PRISM_PT_GUARDED_BY(g_mu) = new std::map<int, std::string>;

}  // namespace

void mark_device_failed(int device, const std::string& why) noexcept {
  try {
    {
      prism::internal::MutexLock lock(g_mu);
      if (!g_failed->emplace(device, why).second) return;
    }
    PRISM_LOG(kError) << "gpu:" << device << " failed for good (" << why
                      << "): its tasks fail, no more work is placed there";
  } catch (...) {
    // Out of memory for the message: the device is still reported below.
  }
  prism::internal::report_device_failure(device);
}

bool device_failed(int device, std::string* why) {
  if (device < 0) return false;
  // The schedulers' mask is read without a lock: a healthy process never takes g_mu here.
  if (device < 64 && ((prism::internal::failed_devices() >> device) & 1) == 0) return false;
  prism::internal::MutexLock lock(g_mu);
  auto it = g_failed->find(device);
  if (it == g_failed->end()) return false;
  if (why != nullptr) {
    *why = "gpu:" + std::to_string(device) + " failed earlier in this process (" + it->second +
           "); Prism places no more work there";
  }
  return true;
}

void clear_device_failures_for_testing() noexcept {
  {
    prism::internal::MutexLock lock(g_mu);
    g_failed->clear();
  }
  prism::internal::reset_device_failures_for_testing();
}

}  // namespace prism::gpu::internal
