#include "api/dashboard_hook.h"

#include <atomic>

namespace prism::internal {

namespace {
std::atomic<const DashboardModule*> g_dashboard{nullptr};
}  // namespace

void set_dashboard_module(const DashboardModule* module) noexcept {
  g_dashboard.store(module, std::memory_order_release);
}
const DashboardModule* dashboard_module() noexcept {
  return g_dashboard.load(std::memory_order_acquire);
}

}  // namespace prism::internal
