// prism/internal/variant_run.h — what a heterogeneous task (prism/variants.h) carries from its
// submission to the end of its run: its variants, the runtime's choice, and the measurements.
//
// The template code (VariantCaller, VariantTarget) fills `function`, `forced`, `result` and
// `describe` at submission; the runtime chooses at dispatch (RuntimeCore::choose_variant), when
// every argument is ready, and sets `chosen` and the task's request to that variant's; the
// target runs variant `chosen` and measures it (`body_seconds`); the runtime reports the run to
// its VariantPlanner when the task ends. One owner at a time, as for the task record itself:
// nothing here is shared between threads concurrently.
//
// Not for users.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "prism/internal/ids.h"
#include "prism/internal/placement.h"
#include "prism/internal/task_record.h"
#include "prism/options.h"

namespace prism::internal {

struct ResourceShape;

// The arguments of one call, as the planner sees them.
struct ArgFootprint {
  int64_t bytes = 0;          // every argument's bytes
  int64_t not_on_host = 0;    // bytes a CPU variant would first copy to the host
  int64_t not_on_device = 0;  // bytes a GPU variant would first copy to its device
  int64_t size = -1;          // the user's size function's answer (-1: none; bytes decide)
  // The ref arguments' entries (cluster mode: which nodes hold their values already). Valid
  // while the task's arguments are.
  std::vector<ObjectEntry*> refs;
};

struct VariantSpec {
  std::string name;
  bool gpu = false;
  TaskOptions options;  // its request (num_cpus, num_gpus, memory, gpu_memory, resources)
};

// One set of variants, as given to prism::task (shared by every call made through it).
struct VariantFunction {
  std::string name;  // the model's key and the tasks' name
  std::vector<VariantSpec> variants;
  // Registered with PRISM_VARIANTS in this binary: each variant can run on another node of a
  // cluster, as the registered function "<name>/<variant>" (remote_variant_name).
  bool registered = false;
};

inline std::string remote_variant_name(const std::string& function, const std::string& variant) {
  return function + "/" + variant;
}

struct VariantRun {
  std::shared_ptr<const VariantFunction> function;
  int forced = -1;   // index of a variant the call forced, else -1
  ObjectId result;   // the call's result, for prism::variant_of
  // Fills the footprint from the task's (ready) arguments; set by the submitter.
  void (*describe)(const TaskRecord* task, ArgFootprint* out) = nullptr;

  // Set at submission: the set is registered (PRISM_VARIANTS) and this call's arguments and
  // result cross nodes, so a driver may place it on another node of its cluster.
  bool remote = false;

  // Filled at submission by the runtime: each variant's request, interned shape (null: none)
  // and whether this node can run it.
  std::vector<ResourceRequest> requests;
  std::vector<ResourceShape*> shapes;
  std::vector<bool> runnable;

  // The runtime's choice (at dispatch) and what it expected. `place`: "" this node, else the
  // cluster node (`peer`, the cluster module's number for it) that runs variant `chosen`.
  int chosen = -1;
  std::string place;
  uint64_t peer = 0;
  int bucket = 0;
  double predicted_seconds = 0;
  double transfer_predicted = 0;
  int64_t bytes_to_move = 0;  // argument bytes the chosen variant's processor lacks
  bool calibrating = false;
  bool finished = false;      // reported to the planner (exactly once)
  // The GPU variant that ran out of device memory before `chosen` (a CPU variant) ran; -1: none.
  int fallback_from = -1;
  std::string fallback_reason;

  // Set by the runtime as the run begins (before the arguments are resolved), and by the target
  // around the variant's body (device work included for a GPU variant).
  std::chrono::steady_clock::time_point run_started{};
  double resolve_seconds = 0;  // from run_started to the body's start: moving the arguments
  double body_seconds = -1;
};

// The extras of a variant call: validates every variant's request on runtime `rt` and fails with
// InfeasibleError if none (or a forced one) can ever run here.
ExtrasPtr make_variant_extras(RuntimeCore* rt, std::shared_ptr<VariantRun> run);
// The body of the running variant call returned (before its result is published): the runtime
// running it reports the run to its planner, so that variant_of(), stats() and the planner's
// queues are up to date for whoever sees the result.
void variant_body_returned(VariantRun* run) noexcept;
// Waits until the GPU work the running task queued on its device is done (no-op without a GPU
// module or outside a GPU task), so that a GPU variant's measured time includes its kernels.
void finish_device_work() noexcept;
// The call `task` (a variant call placed on another node) ran there in `seconds`; called by the
// cluster module before it completes the call's result.
void remote_variant_ran(TaskRecord* task, double seconds) noexcept;
// ... or it ran there and threw (counted as a failed run), before the cluster module fails it.
void remote_variant_failed(TaskRecord* task) noexcept;
// Which variant computed object `id` ("" if unknown, not done yet, or its runtime is gone).
std::string variant_of(const ObjectId& id);

}  // namespace prism::internal
