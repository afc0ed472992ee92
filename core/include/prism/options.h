// prism/options.h — options for starting a runtime and for each task and actor.
//
//   prism::init({.num_cpus = 4, .num_gpus = 1, .resources = {{"camera", 2}}});
//
// InitOptions is an aggregate meant for designated initializers; fields left out take the
// defaults documented on each. Task and actor options are set through the builder methods of
// prism::task(f) and prism::actor<T>(...), which fill in the structs below.
//
// Thread-safe: plain value types.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace prism {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3, kOff = 4 };

struct InitOptions {
  // CPU slots of this node. Negative: the number of hardware threads. 0 is allowed (only
  // tasks that ask for no CPU can then run). Fractions are allowed (e.g. 1.5).
  double num_cpus = -1;
  // GPUs of this node. Negative: the CUDA devices found (0 without any). With CUDA devices it
  // cannot exceed their number; without, N declares N logical GPUs served by the host backend
  // (device memory is host memory), as Ray lets a user declare GPUs.
  double num_gpus = -1;
  // Bytes of each GPU's memory that tasks may reserve with .gpu_memory(bytes). Negative: the
  // device's memory (CUDA), or 16 GiB per logical GPU.
  int64_t gpu_memory = -1;
  // Memory that tasks may reserve with .memory(bytes). Negative: the machine's physical memory.
  int64_t memory = -1;
  // Custom resources: name -> amount (fractions allowed), as with Ray's `resources=`.
  std::map<std::string, double> resources = {};
  // Object store capacity in bytes for large objects (see object_ref.h). Negative: 30% of
  // physical memory. Objects smaller than kInlineObjectBytes are kept with their owner and
  // are not counted.
  int64_t object_store_bytes = -1;
  // Cluster mode (needs the cluster component, Prism::cluster; see README "Cluster").
  // "host:port" of a driver: this process joins its job as a node (worker mode: init never
  // returns; the process exits when the driver's job ends). PRISM_ADDRESS overrides it.
  std::string address = {};
  // "host:port" to listen on (port 0: one from the OS): this process is a cluster's driver and
  // nodes join it. PRISM_LISTEN overrides it. Both empty: embedded mode.
  std::string listen = {};
  // How much Prism logs to stderr. Quiet by default.
  LogLevel log_level = LogLevel::kWarning;
  // Record every task's span (name, thread, start, end, GPUs) for prism::timeline(path). Costs a
  // few hundred nanoseconds per task, so it is off by default.
  bool timeline = false;
  // "host:port" (port 0: one from the OS) where a web dashboard of this runtime is served
  // (README "Dashboard"); empty: none. Needs the dashboard component (Prism::dashboard). The
  // login URL, with its token, is printed to stderr once and returned by dashboard_url().
  // PRISM_DASHBOARD overrides it for prism::init() ("off": none). Cluster nodes serve none:
  // the driver's dashboard shows the whole job.
  std::string dashboard = {};
  // Upper bound on worker threads (threads grow on demand: blocked tasks lend their CPU slot,
  // actors run concurrently). 0: 4096.
  int max_threads = 0;
};

// How many times a task runs again after a system failure (its node died, it ran out of device
// memory) unless it says otherwise with max_retries(n): 3, as in Ray.
inline constexpr int kDefaultMaxRetries = 3;

namespace internal {

// Per-call options of a task, as filled by TaskCaller's builder methods.
struct TaskOptions {
  double num_cpus = 1;
  double num_gpus = 0;
  int64_t memory = 0;
  int64_t gpu_memory = 0;
  std::vector<std::pair<std::string, double>> resources;
  int max_retries = kDefaultMaxRetries;
  bool retry_exceptions = false;
  std::string name;

  bool is_default_request() const {
    return num_cpus == 1 && num_gpus == 0 && memory == 0 && gpu_memory == 0 && resources.empty();
  }
};

// Per-actor options, as filled by ActorCreator's builder methods. Like Ray, an actor holds
// no CPU for its lifetime unless asked to.
struct ActorOptions {
  double num_cpus = 0;
  double num_gpus = 0;
  int64_t memory = 0;
  int64_t gpu_memory = 0;
  std::vector<std::pair<std::string, double>> resources;
  std::string name;      // non-empty: a named actor, found with prism::get_actor<T>(name)
  int max_concurrency = 1;
  // Cluster mode: how many times the actor is built again (its constructor run again with its
  // original arguments, on a node that can hold it) after its node died; -1: no limit.
  int max_restarts = 0;
  // How many times a call in flight when its actor's node died is sent again to the restarted
  // actor; -1: no limit. (A call is retried only if its actor restarts.)
  int max_task_retries = 0;
};

}  // namespace internal
}  // namespace prism
