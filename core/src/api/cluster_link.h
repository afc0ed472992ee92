// ClusterLink — where the cluster module (transport/, Prism::cluster) plugs into core.
//
// Core knows nothing of UCX or of other nodes. A global runtime started in cluster mode (by the
// environment or InitOptions, see cluster_config()) asks the factory the cluster module
// registered for a link, and then:
//   - offers it every ready task that is not an actor call (dispatch): the link either takes it
//     (runs it on another node, then completes or fails it and releases it) or leaves it to the
//     local scheduler;
//   - asks it whether a request that this node can never meet fits some other node;
//   - on a node (worker mode), lets it serve calls until the driver's job ends;
//   - shuts it down before the scheduler stops.
// The link runs calls for other nodes through run_served_call(), which queues them on the local
// scheduler like any task.
//
// Without the cluster module no factory is registered, and a process started as part of a
// cluster fails in init with a message saying so (instead of running a job of its own).
//
// Thread-safe: a link's methods may be called from any thread.
#pragma once

#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "observability/timeline.h"
#include "prism/internal/runtime_hooks.h"
#include "prism/internal/task_record.h"
#include "prism/options.h"
#include "prism/stats.h"

namespace prism::internal {

class RuntimeCore;
class ActorCore;

// The default heartbeat deadline, seconds: 5 (Ray's health check declares a node dead after
// about 15 s). Builds with a sanitizer run everything 5-15 times slower, a network thread
// included, so there it is 30.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
inline constexpr double kDefaultHeartbeatTimeoutS = 30;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
inline constexpr double kDefaultHeartbeatTimeoutS = 30;
#else
inline constexpr double kDefaultHeartbeatTimeoutS = 5;
#endif
#else
inline constexpr double kDefaultHeartbeatTimeoutS = 5;
#endif

// kLauncher: started by a PMIx launcher (mpirun, srun) without an explicit role; the cluster
// module's prepare() turns it into kDriver (rank 0) or kNode.
enum class ClusterRole { kEmbedded, kDriver, kNode, kLauncher };

// Where this process stands in a cluster, from the environment (PRISM_* wins) and InitOptions.
struct ClusterConfig {
  ClusterRole role = ClusterRole::kEmbedded;
  std::string listen;      // driver: "host:port" to listen on
  std::string address;     // node: the driver's "host:port"
  std::string token_file;  // node: the job's token (default: the latest job's)
  std::string job_dir;     // driver: where the job's files go (default: under the temp dir)
  int min_nodes = 0;       // driver: init waits until this many nodes joined (besides itself)
  double join_timeout_s = 60;  // how long init waits for min_nodes / a node for the driver
  // Driver by address: how long a task that no node fits waits for one to join
  // (PRISM_INFEASIBLE_TIMEOUT, seconds).
  double infeasible_timeout_s = 60;
  // How long a peer may stay silent before it is declared dead (PRISM_HEARTBEAT_TIMEOUT,
  // seconds): heartbeats go out each fifth of it (failure_detector.h: a peer whose long message
  // is still arriving gets the time it may take besides).
  double heartbeat_timeout_s = kDefaultHeartbeatTimeoutS;
  // Node: how long a direct connection to another node (made to pull from it) may stay unused
  // before it is closed (PRISM_PEER_IDLE_CLOSE_S, seconds; 0: kept for the job's life). The
  // next pull from that node connects again.
  double peer_idle_close_s = 60;
  std::shared_ptr<void> launcher;  // the module's launcher session (PMIx), if any
};

// `options` with PRISM_NUM_CPUS, PRISM_NUM_GPUS, PRISM_OBJECT_STORE_BYTES and PRISM_RESOURCES
// ("name:amount,...") applied
// over it: one binary gets per-node shapes (the global runtime only). Throws
// prism::Error(kInvalidArgument) for a malformed value.
InitOptions with_environment(const InitOptions& options);

// PRISM_LISTEN / InitOptions::listen make a driver; PRISM_ADDRESS / InitOptions::address a node.
// Throws prism::Error(kInvalidArgument) for a malformed setting.
ClusterConfig cluster_config(const InitOptions& options);

class ClusterLink {
 public:
  virtual ~ClusterLink() = default;

  // Joins the cluster: a driver listens (and waits for min_nodes), a node connects and
  // authenticates. Called once the runtime has published the link, so that calls arriving the
  // moment the join completes find it. Throws if the join fails.
  virtual void start() = 0;

  // A ready task of this runtime, not an actor call. True if the link took it (it will complete
  // or fail it and release it, TaskRecord::release_run); false: the caller runs it here.
  virtual bool offer(TaskRecord* task) noexcept = 0;
  // Empty if some other node could run `request` (a task's, or with `actor` an actor's); else
  // why not.
  virtual std::string infeasible_elsewhere(const ResourceRequest& request, bool actor) const = 0;
  // True where nodes may still join (a driver started by address): a task that no node fits
  // is accepted and waits for one (offer() keeps it) instead of failing at submission.
  virtual bool waits_for_nodes() const = 0;
  // Node (worker mode): serves until the driver's job ends (returns true) or the driver is lost
  // (returns false).
  virtual bool serve() = 0;
  // Driver: the other nodes a variant call (prism/variants.h) may run on now, with how many calls
  // of each of `requests` each runs at once (0: it can never run that one), and how many bytes
  // of the values of `args` (the call's ref arguments) each holds already. *elsewhere: the bytes
  // of those values that are only on other nodes (not here). Empty elsewhere than on a driver.
  struct VariantNode {
    uint64_t peer = 0;   // what offer() sends a call chosen for it to (VariantRun::peer)
    std::string name;    // "node1"
    std::vector<double> lanes;
    int64_t bytes_held = 0;
  };
  virtual std::vector<VariantNode> variant_nodes(const std::vector<ResourceRequest>& requests,
                                                 const std::vector<ObjectEntry*>& args = {},
                                                 int64_t* elsewhere = nullptr) const = 0;
  // Driver: waits until `n` nodes besides this one have joined; throws TimeoutError.
  virtual void wait_for_nodes(int n, Deadline deadline) = 0;
  // Nodes that have joined and are alive, this one included.
  virtual int node_count() const = 0;
  // Totals of every live node, summed (what prism::cluster_resources() reports).
  virtual std::map<std::string, double> cluster_totals() const = 0;
  // Before the scheduler stops: a driver tells every node the job ended; calls in flight on
  // other nodes fail. Idempotent.
  virtual void shutdown() noexcept = 0;

  // --- actors on other nodes ---
  // An actor whose constructor task is ready (its arguments too). True if the link placed it on
  // another node: it called actor->become_remote(key) and released `create`; false: it is built
  // here.
  virtual bool offer_actor(ActorCore* actor, TaskRecord* create) noexcept = 0;
  // A call of a remote actor, in submission order: sent to the actor's node; the link completes
  // or fails it and releases it.
  virtual void forward_actor_call(ActorCore* actor, uint64_t key, TaskRecord* call) noexcept = 0;
  // The remote actor `key`, whose proxy here is `actor`, is killed (kill) or has no handle left
  // here (it finishes the calls sent to it, then stops). (A proxy made since for the same key,
  // as a handle arrived again, keeps its record.)
  virtual void drop_remote_actor(const ActorCore* actor, uint64_t key, bool kill) noexcept = 0;
  // An actor handle leaves this node inside a task's arguments (export_actor, runtime_hooks.h):
  // the number other nodes call it by. Throws prism::Error(kInvalidArgument) if it cannot.
  virtual uint64_t export_actor(ActorCore* actor, void* typed_handle, void (*kill)(void*),
                                void (*drop)(void*)) = 0;
  // ... and arrives here: a proxy actor whose calls go through the driver, with one handle
  // counted for the caller (AdoptHandle, runtime_hooks.h).
  virtual std::shared_ptr<ActorCore> import_actor(uint64_t key, const std::type_info& type,
                                                  const char* type_name) = 0;
  // Node: the driver's actor named `name` (a proxy, its handle counted as import_actor's), or
  // throws prism::Error(kInvalidArgument) if there is none (of that type).
  virtual std::shared_ptr<ActorCore> find_named_actor(const std::string& name,
                                                      const std::type_info& type) = 0;

  // --- observability (prism/stats.h) ---
  // Tasks and actor calls this process sent to other nodes whose results are not back yet
  // (tasks waiting for a node that fits them included).
  virtual uint64_t tasks_in_flight() const = 0;
  // Adds what the link knows: the other nodes (their resources as this process sees them),
  // object copies pulled here, transfers.
  virtual void add_stats(Stats* stats) const = 0;

  // Driver: every other node's spans that ended at or after `since` (this process's clock; min:
  // all), at most `max` per node (the newest): the runs it recorded (its InitOptions::timeline
  // or PRISM_TIMELINE=1; the newest only when PRISM_DASHBOARD is set there), on this process's
  // clock (each node's offset measured again by pings first). A node that does not answer by
  // the deadline, or goes away, is left out (named in `missing`).
  struct NodeSpans {
    std::string node;             // "node1"
    bool recording = false;       // false: that node keeps no timeline
    bool truncated = false;       // some spans were left out (max, or one message's size)
    bool clock_known = false;     // false: no ping came back; its times are its own clock's
    int64_t clock_offset_ns = 0;  // that node's steady clock minus this one's
    std::vector<Timeline::Span> spans;
  };
  virtual std::vector<NodeSpans> gather_spans(Deadline deadline, Timeline::Clock::time_point since,
                                              size_t max, std::vector<std::string>* missing) = 0;
  // Driver: the newest objects moved between nodes (each pull, and each value it passed from a
  // holder to a reader), oldest first, for the timeline's flows.
  virtual std::vector<Timeline::Transfer> recent_transfers() const = 0;
};

// Calls fn(entry) once `entry` is done (at once, on this thread, if it is already), keeping the
// entry alive until then. fn runs on the completing thread with no lock held: it must not block.
void when_done(EntryPtr entry, std::function<void(ObjectEntry*)> fn);

// What the cluster module registers (once, from a static initializer).
struct ClusterModule {
  // Before the runtime's resources are computed: settles the role (kLauncher -> driver or node),
  // may adjust `options` (ranks sharing a machine split its CPUs). May throw.
  void (*prepare)(ClusterConfig* config, InitOptions* options);
  // Once the scheduler exists: the link, not yet started (ClusterLink::start). May throw.
  std::unique_ptr<ClusterLink> (*create)(RuntimeCore* rt, const ClusterConfig& config);
};
void set_cluster_module(const ClusterModule* module) noexcept;
const ClusterModule* cluster_module() noexcept;

// Runs `body` on this node's scheduler as a task asking for `request`, named `name` in errors
// and the timeline. If body throws, or the task cannot run (infeasible here, runtime shutting
// down), `on_fail` gets the error as the user would see it (a TaskError naming this node for an
// exception of the body). Exactly one of body's normal return or on_fail happens. Then, once the
// call's record is gone (its resources are given back right after), `on_released` runs, exactly
// once, on whichever thread let the record go: the place to answer the caller, so that a caller
// who places more work by what it knows is running never hears of the end before it happened.
// `preferred_gpu` (>= 0): a GPU of this node holding most of the call's argument bytes (results
// kept live there), where a GPU call runs when it has room (TaskRecord::preferred_gpu).
void run_served_call(RuntimeCore* rt, const ResourceRequest& request, std::string name,
                     std::function<void()> body,
                     std::function<void(const std::exception_ptr&)> on_fail,
                     std::function<void()> on_released = nullptr, int preferred_gpu = -1);

// The node's resources as core counts them (for a node's join message).
ResourceRequest node_totals(RuntimeCore* rt);

}  // namespace prism::internal
