#include "prism/runtime.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <memory>

#include "api/cluster_link.h"
#include "api/registry_internal.h"
#include "api/runtime_core.h"
#include "api/runtime_registry.h"
#include "prism/errors.h"
#include "prism/internal/thread_annotations.h"

namespace prism {

namespace {
internal::Mutex g_mu;  // serializes init/shutdown
std::unique_ptr<Runtime> g_runtime PRISM_GUARDED_BY(g_mu);
std::atomic<Runtime*> g_runtime_ptr{nullptr};  // lock-free access for tasks during shutdown
}  // namespace

Runtime::Runtime(const InitOptions& options) : Runtime(options, /*global=*/false) {}

Runtime::Runtime(const InitOptions& options, bool global) {
  internal::check_registry_conflicts();
  // The environment (PRISM_NUM_CPUS, ...) shapes the global runtime, so that one binary started
  // on several nodes gets per-node shapes.
  core_ = std::make_unique<internal::RuntimeCore>(
      global ? internal::with_environment(options) : options, global);
}

Runtime::~Runtime() = default;  // RuntimeCore's destructor shuts down

void Runtime::shutdown() { core_->shutdown(); }

std::map<std::string, double> Runtime::cluster_resources() const {
  return core_->cluster_resources();
}
std::map<std::string, double> Runtime::available_resources() const {
  return core_->available_resources();
}
const std::string& Runtime::node_id() const { return core_->node_id(); }
void Runtime::timeline(const std::string& path) const { core_->write_timeline(path); }
Stats Runtime::stats() const { return core_->stats(); }
std::vector<TaskFailure> Runtime::errors() const { return core_->errors(); }
std::string Runtime::dashboard_url() const { return core_->dashboard_url(); }

void init(const InitOptions& options) {
  internal::ClusterLink* node_link = nullptr;
  {
    internal::MutexLock lock(g_mu);
    if (g_runtime) {
      throw Error(ErrorCode::kInvalidArgument,
                  "prism::init() called twice: call prism::shutdown() first");
    }
    g_runtime.reset(new Runtime(options, /*global=*/true));
    g_runtime_ptr.store(g_runtime.get(), std::memory_order_release);
    internal::set_global_runtime(g_runtime->core()->ref());
    if (g_runtime->core()->role() == internal::ClusterRole::kNode) {
      node_link = g_runtime->core()->link();
    }
  }
  if (node_link == nullptr) return;
  // Worker mode: serve the driver's job, then leave (code after init is the driver's only).
  const bool job_ended = node_link->serve();
  shutdown();
  std::fflush(nullptr);
  std::exit(job_ended ? 0 : 1);
}

void serve(const InitOptions& options) {
  if (internal::cluster_config(options).role != internal::ClusterRole::kNode) return;
  init(options);  // never returns on a node
}

void wait_for_nodes(int n, std::chrono::milliseconds timeout) {
  internal::RuntimeCore* rt = internal::pin_current_runtime().get();
  if (rt->link() == nullptr || rt->role() != internal::ClusterRole::kDriver) {
    throw Error(ErrorCode::kInvalidArgument,
                "prism::wait_for_nodes: the runtime is not a cluster's driver (set PRISM_LISTEN "
                "or InitOptions.listen)");
  }
  rt->link()->wait_for_nodes(n, internal::deadline_after(timeout));
}

int node_count() {
  internal::RuntimeCore* rt = internal::pin_current_runtime().get();
  return rt->link() != nullptr ? rt->link()->node_count() : 1;
}

void shutdown() {
  std::unique_ptr<Runtime> rt;
  {
    internal::MutexLock lock(g_mu);
    if (!g_runtime) return;
    g_runtime->shutdown();  // throws if called from one of its tasks; the runtime stays
    internal::set_global_runtime(internal::RuntimeRef{});
    g_runtime_ptr.store(nullptr, std::memory_order_release);
    rt = std::move(g_runtime);
  }
  // Destroyed outside g_mu: it waits for API calls still pinning it (runtime_registry.h).
}

bool is_initialized() {
  return g_runtime_ptr.load(std::memory_order_acquire) != nullptr;
}

Runtime& global_runtime() {
  Runtime* rt = g_runtime_ptr.load(std::memory_order_acquire);
  if (rt == nullptr) throw Error(ErrorCode::kInvalidArgument, "Prism is not initialized");
  return *rt;
}

std::map<std::string, double> cluster_resources() {
  return internal::pin_current_runtime().get()->cluster_resources();
}
std::map<std::string, double> available_resources() {
  return internal::pin_current_runtime().get()->available_resources();
}
void timeline(const std::string& path) {
  internal::pin_current_runtime().get()->write_timeline(path);
}
Stats stats() { return internal::pin_current_runtime().get()->stats(); }
std::vector<TaskFailure> errors() { return internal::pin_current_runtime().get()->errors(); }
std::string dashboard_url() { return internal::pin_current_runtime().get()->dashboard_url(); }

}  // namespace prism
