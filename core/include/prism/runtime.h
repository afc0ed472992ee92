// prism/runtime.h — starting and stopping Prism.
//
//   prism::init({.num_cpus = 4});        // embedded: this process is the whole cluster
//   ... prism::task(f).remote(...) ...
//   prism::shutdown();                   // joins every thread, frees every resource
//
// A global prism::init() is a convenience over a Runtime object that owns everything. Several
// Runtimes can live in one process (tests do this); each ObjectRef and ActorHandle knows its
// runtime, and calls without an explicit runtime use the one running the current task, else
// the global one.
//
// Shutdown: tasks that have not started never run (their refs fail with ObjectLostError, code
// kUnavailable), running tasks finish, actors are destroyed, threads are joined. Refs outlive the
// runtime: a ready value stays readable. Whatever needs the runtime afterwards (remote() on a
// TaskCaller or ActorHandle, put) throws prism::Error(kUnavailable), also once the Runtime object
// is destroyed: handles hold a weak reference, never a dangling pointer.
//
// Thread-safe: init/shutdown may be called from any thread but not concurrently with each
// other; Runtime's methods may be called from any thread.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "prism/actor.h"
#include "prism/object_ref.h"
#include "prism/options.h"
#include "prism/stats.h"
#include "prism/task.h"
#include "prism/variants.h"

namespace prism {

class Runtime {
 public:
  // Starts the runtime. Throws prism::Error for invalid options (negative resources, duplicate
  // registered names, an address when Prism was built without cluster support).
  explicit Runtime(const InitOptions& options = {});
  // Shuts down.
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  // Idempotent. Throws prism::Error(kInvalidArgument) if called from one of its own tasks.
  void shutdown();

  template <typename F>
    requires(!internal::IsVariantSet<std::decay_t<F>>::value)
  TaskCaller<std::decay_t<F>> task(F&& f) {
    return TaskCaller<std::decay_t<F>>(internal::runtime_ref(core_.get()), std::forward<F>(f));
  }
  // A heterogeneous function (prism/variants.h).
  template <typename S, typename... Fs>
  VariantCaller<S, Fs...> task(VariantSet<S, Fs...> set) {
    return VariantCaller<S, Fs...>(std::move(set), internal::runtime_ref(core_.get()));
  }
  template <typename T, typename... A>
  ActorCreator<T, std::decay_t<A>...> actor(A&&... args) {
    return ActorCreator<T, std::decay_t<A>...>(internal::runtime_ref(core_.get()),
                                               std::forward<A>(args)...);
  }
  template <typename T>
  ObjectRef<std::decay_t<T>> put(T&& value) {
    return internal::put_into(core_.get(), std::forward<T>(value));
  }
  template <typename T>
  ActorHandle<T> get_actor(const std::string& name) {
    return ActorHandle<T>(internal::find_named_actor(core_.get(), name, typeid(T)),
                          internal::AdoptHandle{});
  }

  // Totals and what is free now: "CPU", "GPU", "memory", "object_store_memory" and the custom
  // resources, as with Ray's cluster_resources() / available_resources().
  std::map<std::string, double> cluster_resources() const;
  std::map<std::string, double> available_resources() const;
  const std::string& node_id() const;
  // Writes every task run so far as Chrome trace JSON (open it in Perfetto). Needs
  // InitOptions::timeline; throws prism::Error otherwise or if the file cannot be written.
  void timeline(const std::string& path) const;
  // What the job is doing now (prism/stats.h) and its most recent task failures, oldest first.
  Stats stats() const;
  std::vector<TaskFailure> errors() const;
  // The dashboard's login URL (InitOptions::dashboard), empty if there is none.
  std::string dashboard_url() const;

  internal::RuntimeCore* core() const noexcept { return core_.get(); }

 private:
  friend void init(const InitOptions& options);
  Runtime(const InitOptions& options, bool global);

  std::unique_ptr<internal::RuntimeCore> core_;
};

// Starts the global runtime. Throws prism::Error(kInvalidArgument) if it is already running.
// Cluster mode (README "Cluster"): on a driver it returns once the runtime listens (and, with
// PRISM_MIN_NODES, once that many nodes joined); on a node (PRISM_ADDRESS) it never returns: the
// node serves the driver's tasks and the process exits with status 0 when the driver's job ends
// (status 1 if the driver is lost).
void init(const InitOptions& options = {});
// If this process was started as a cluster node (PRISM_ADDRESS), joins and serves as init()
// does, never returning; otherwise returns at once. For programs that must not run their own
// main on nodes (test binaries): call it first thing in main.
void serve(const InitOptions& options = {});
// Driver: waits until `n` nodes besides this one have joined; throws TimeoutError when
// `timeout` passes first, prism::Error(kInvalidArgument) in embedded mode.
void wait_for_nodes(int n, std::chrono::milliseconds timeout);
// Nodes of the global runtime's cluster that are alive, this one included (1 when embedded).
int node_count();
// Stops the global runtime; does nothing if it is not running.
void shutdown();
bool is_initialized();
// The global runtime; throws prism::Error(kInvalidArgument) if it is not running.
Runtime& global_runtime();

std::map<std::string, double> cluster_resources();
std::map<std::string, double> available_resources();
// The current runtime's timeline (see Runtime::timeline).
void timeline(const std::string& path);
// The current runtime's stats and recent failures (see Runtime::stats / Runtime::errors).
Stats stats();
std::vector<TaskFailure> errors();
// The current runtime's dashboard login URL (see Runtime::dashboard_url).
std::string dashboard_url();

}  // namespace prism
