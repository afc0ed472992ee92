// DashboardModule — where the dashboard module (dashboard/, Prism::dashboard) plugs into core.
//
// Core serves no HTTP. A runtime asked for a dashboard (InitOptions::dashboard, or
// PRISM_DASHBOARD for the global runtime) on a driver or in embedded mode asks the module the
// program linked for a server once the runtime is running, and stops it first in shutdown().
// The server reads the runtime only through RuntimeCore's observability calls (stats(),
// errors(), recent_spans()). Without the module, asking for a dashboard fails init with a
// message saying which component to link.
//
// Thread-safe: a server's methods may be called from any thread.
#pragma once

#include <memory>
#include <string>

namespace prism::internal {

class RuntimeCore;

class DashboardServer {
 public:
  virtual ~DashboardServer() = default;
  // The login URL (http://host:port/?token=...), printed once at start.
  virtual std::string url() const = 0;
  // Stops serving; waits for the requests being answered. Idempotent.
  virtual void stop() noexcept = 0;
};

struct DashboardModule {
  // Listens on `address` ("host:port", port 0: one from the OS) and serves `rt`. Throws
  // prism::Error(kInvalidArgument) for a malformed address, kUnavailable if it cannot listen.
  std::unique_ptr<DashboardServer> (*start)(RuntimeCore* rt, const std::string& address);
};

// What the dashboard module registers (once, from a static initializer).
void set_dashboard_module(const DashboardModule* module) noexcept;
const DashboardModule* dashboard_module() noexcept;

}  // namespace prism::internal
