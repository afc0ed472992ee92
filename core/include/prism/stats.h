// prism/stats.h — what a running job is doing, for programs and tools (Ray's
// ray.util.state summaries and ray.error_info()).
//
//   prism::Stats s = prism::stats();
//   std::printf("%llu running, %llu waiting for resources, %llu failed\n", s.tasks.running,
//               s.tasks.waiting_for_resources, s.tasks.failed);
//   for (const prism::TaskFailure& f : prism::errors()) std::printf("%s\n", f.message.c_str());
//
// The numbers are counters kept on the runtime's hot paths without locks (one shard per thread,
// summed when asked), so they cost little per task; a snapshot taken while tasks move is
// consistent per counter, and each derived count (running = started - finished, ...) is clamped
// at zero. Embedded mode counts this process's tasks; in cluster mode the driver's counts cover
// the tasks it submitted (those sent to other nodes are `on_other_nodes` until their results
// come back), and its object and transfer figures are the cluster link's; each other node's
// entry in `nodes` adds what that node's own runtime counts (tasks, object store, threads).
//
// Thread-safe: every function may be called from any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "prism/internal/ids.h"

namespace prism {

// Tasks (and actor calls) by state, since the runtime started.
struct TaskCounts {
  uint64_t submitted = 0;
  uint64_t waiting_for_arguments = 0;  // submitted, some argument not ready yet
  uint64_t waiting_for_resources = 0;  // ready, queued for CPUs/GPUs/memory or a thread
  uint64_t running = 0;                // running now (a retry counts once)
  uint64_t on_other_nodes = 0;         // cluster driver: sent to another node, result not back
  uint64_t done = 0;                   // finished with a result
  uint64_t failed = 0;                 // failed: threw, or could not run (see errors())
  // Runs given again under max_retries: after a system failure (the task's node died, it ran
  // out of device memory) or, with retry_exceptions, after it threw. A retried task counts
  // once in the other fields.
  uint64_t retried = 0;
  // Tasks run next by the thread whose task's result made them ready, without a queue (a
  // chain's next link runs where its input was just made). Also counted in the other fields.
  uint64_t handed_off = 0;
};

// One node: its resources, totals and what is free now (as cluster_resources() names them;
// for another node, the driver's view: its totals less what the driver placed there), and
// what that node's own runtime counts, as it last reported them.
struct NodeStats {
  std::string node;
  std::map<std::string, double> total;
  std::map<std::string, double> available;
  // False until the node's first report (this process's own entry is always reported). A
  // node reports to the driver once it joined and then each second while its counts change:
  // another node's figures are up to about a second old.
  bool reported = false;
  std::chrono::steady_clock::time_point reported_at{};  // when that report arrived
  uint64_t tasks_waiting_for_arguments = 0;  // there now, some argument not ready yet
  uint64_t tasks_queued = 0;    // there now, ready, waiting for its CPUs/GPUs/memory or a thread
  uint64_t tasks_running = 0;   // running on that node now (its own count)
  uint64_t tasks_done = 0;      // done there, since it started
  uint64_t tasks_failed = 0;    // failed there, since it started
  uint64_t objects = 0;         // values in its object store (another node's: and those it
                                // keeps for other nodes, e.g. results that stayed there)
  uint64_t primary_bytes = 0;   // their bytes
  uint64_t capacity_bytes = 0;  // its object_store_bytes
  uint64_t secondary_bytes = 0; // copies it pulled from other nodes
  uint64_t spilled_bytes = 0;   // of the values it keeps for other nodes, in files now
  int threads = 0;              // its scheduler threads
  // Cluster: what it moved since it started. Objects it pulled from other processes (the driver,
  // or another node directly) and their bytes; pulls it answered with bytes, and those bytes.
  uint64_t pulls = 0;
  uint64_t pulled_bytes = 0;
  uint64_t served = 0;
  uint64_t served_bytes = 0;
};

struct ObjectStats {
  uint64_t objects = 0;           // values held in this process's object store
  uint64_t primary_bytes = 0;     // their bytes (against object_store_bytes)
  uint64_t capacity_bytes = 0;    // object_store_bytes
  uint64_t secondary_bytes = 0;   // cluster: copies pulled from other nodes, held here
  // Values beyond object_store_bytes written to files under PRISM_SPILL_DIR and read back on
  // demand (puts and task results that did not fit; in a cluster, also values kept for other
  // nodes): the bytes in files now, and those read back so far.
  uint64_t spilled_bytes = 0;
  uint64_t restored_bytes = 0;
};

// Data moved: copies between the host and GPUs (the GPU module's copy_stats()), and objects
// pulled across nodes.
struct TransferStats {
  uint64_t device_copies = 0;
  uint64_t device_copy_bytes = 0;
  uint64_t node_pulls = 0;        // cluster: objects this process pulled from others
  uint64_t node_pulled_bytes = 0;
  uint64_t node_served = 0;       // cluster: objects this process sent to others
  uint64_t node_served_bytes = 0;
};

// Heterogeneous tasks (prism/variants.h): the runs of one variant of one function that this
// node's calls chose, on this node or (a driver's calls) on another node of its cluster.
struct VariantStats {
  std::string function;
  std::string variant;
  std::string node;        // where it ran ("driver", "node1", ...)
  std::string processor;   // "cpu" or "gpu"
  uint64_t runs = 0;       // runs that returned
  double seconds = 0;      // their measured time, in total
  uint64_t fallbacks = 0;  // GPU runs out of device memory, run again as a CPU variant
};

struct Stats {
  TaskCounts tasks;
  std::vector<NodeStats> nodes;   // this node first
  ObjectStats objects;
  TransferStats transfers;
  int threads = 0;                // scheduler threads started (they live until shutdown)
  std::vector<VariantStats> variants;  // this node's variant calls, per function and variant
};

// A task that failed: what TaskError and friends say, with when and where.
struct TaskFailure {
  TaskId task;
  std::string function;  // the task's name (its .name(), registered name, or callable type)
  std::string node;
  std::string type;      // the exception's type, e.g. "std::runtime_error", "prism::TaskCancelledError"
  std::string message;
  std::chrono::system_clock::time_point time;
};

// The most recent failures are kept, oldest first.
inline constexpr size_t kMaxErrorsKept = 1000;

}  // namespace prism
