// RuntimeCore — one embedded runtime: wires the scheduler, the object store account, the actor
// directory and the task life cycle together.
//
// It dispatches tasks whose arguments are ready (to the scheduler, to an actor, or straight to
// failure), runs what the scheduler hands out (JobRunner), and shuts everything down. It does not
// schedule, store or queue by itself.
//
// Thread-safe: every public method may be called from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "actor/actor_directory.h"
#include "api/cluster_link.h"
#include "api/dashboard_hook.h"
#include "prism/internal/runtime_hooks.h"
#include "prism/internal/thread_annotations.h"
#include "object_store/store_account.h"
#include "observability/error_log.h"
#include "observability/task_counters.h"
#include "observability/timeline.h"
#include "prism/internal/task_record.h"
#include "prism/internal/variant_run.h"
#include "prism/options.h"
#include "scheduler/perf_model.h"
#include "scheduler/scheduler.h"
#include "scheduler/variant_planner.h"

namespace prism::internal {

// PRISM_PERF_MODEL_DIR's performance model file, the folder made if missing ("" if unset or it
// cannot be made).
std::string perf_model_file_from_env();

class RuntimeCore final : public JobRunner {
 public:
  // `global`: started by prism::init() (API calls without a runtime use it).
  explicit RuntimeCore(const InitOptions& options, bool global = false);
  ~RuntimeCore();
  RuntimeCore(const RuntimeCore&) = delete;
  RuntimeCore& operator=(const RuntimeCore&) = delete;

  // Idempotent. Throws prism::Error if called from one of this runtime's own threads.
  void shutdown();
  // seq_cst: pairs with shutdown's wait for pins (see runtime_registry.h).
  bool accepting() const noexcept { return !stopping_.load(std::memory_order_seq_cst); }

  // The runtime's owner id: the owner of every id it makes, and its generation (unique in the
  // process: a ref of an earlier runtime is told apart even at the same address).
  uint64_t owner() const noexcept { return owner_; }
  RuntimeRef ref() const noexcept { return ref_; }
  bool is_global() const noexcept { return global_; }
  const std::string& node_id() const noexcept { return node_id_; }
  uint64_t reserve_ids(uint64_t n) noexcept {
    return next_sequence_.fetch_add(n, std::memory_order_relaxed);
  }

  Scheduler& scheduler() noexcept { return *scheduler_; }
  const NodeResources& totals() const noexcept { return totals_; }
  // Cluster mode: the link to the other nodes (null in embedded mode), this process's role.
  ClusterLink* link() const noexcept { return link_ptr_.load(std::memory_order_acquire); }
  ClusterRole role() const noexcept { return role_; }
  // The cluster names nodes "node0" (the driver), "node1", ...: set by the link when it joins,
  // before any task runs.
  void set_node_id(std::string id) { node_id_ = std::move(id); }
  StoreAccount& store() noexcept { return *store_; }
  const std::shared_ptr<StoreAccount>& store_ptr() const noexcept { return store_; }
  ActorDirectory& actors() noexcept { return actors_; }

  ExtrasPtr make_extras(const TaskOptions& options, const LazyName& function_name);
  // A task whose arguments are all ready (or one of which failed).
  void dispatch(TaskRecord* task) noexcept;
  // Runs a task on the calling thread with its context, retries, error capture; then releases it
  // (TaskRecord::release_run).
  void execute(TaskRecord* task, const Allocation* alloc) noexcept;
  // Fails and releases a task. Iterative: a failure that fails dependents which fail theirs
  // does not recurse. `ran`: it started running here (for the stats). A failure that is not
  // the cascade of a failed argument is kept in errors().
  void fail_task(TaskRecord* task, std::exception_ptr error, bool ran = false) noexcept;
  // A run of `task` failed for a reason that is not the task's own (a system failure: its node
  // died, it ran out of device memory): true if it may run again, counting the retry against
  // its max_retries (kDefaultMaxRetries without extras of its own); false if it is out of
  // retries or cancelled. Called by the task's owner.
  bool take_retry(TaskRecord* task) noexcept;
  // How many more runs take_retry() would allow `task` (INT32_MAX-ish for no limit).
  int retries_left(const TaskRecord* task) const noexcept;
  // `task` was lost where it ran (its node died) and take_retry() allowed another run: undoes
  // its variant choice, if any, and dispatches it again (another node, here, or a wait).
  void run_again(TaskRecord* task) noexcept;

  // The user-facing error for an exception a task threw (TaskError naming this node).
  std::exception_ptr task_error(const std::exception_ptr& thrown, const std::string& function);
  std::exception_ptr lost_error(const char* why) const;

  // Chrome trace JSON of every task run so far (InitOptions::timeline must be on); a cluster's
  // driver adds every node's spans (one process row per node, on its clock).
  void write_timeline(const std::string& path) const;
  // The spans of task runs that ended at or after `since` (at most `max`, the newest), kept by
  // the timeline or, with only a dashboard, the newest kDashboardSpans runs; empty if neither.
  std::vector<Timeline::Span> recent_spans(Timeline::Clock::time_point since, size_t max) const;
  // Lets runs that just finished record their spans (bounded; see Timeline::settle). Called
  // from a task (the caller's own run is not waited for).
  void settle_timeline_from_task() const {
    if (timeline_) timeline_->settle(std::chrono::milliseconds(200), /*own_runs=*/1);
  }
  static constexpr size_t kDashboardSpans = 20000;
  // InitOptions::timeline (or PRISM_TIMELINE=1) is on: every run's span is kept.
  bool records_timeline() const noexcept { return timeline_ && timeline_->keeps_everything(); }
  // Only the newest kDashboardSpans runs are kept (for a dashboard: here, or the driver's).
  bool keeps_recent_spans() const noexcept { return timeline_ && !timeline_->keeps_everything(); }
  Timeline::Clock::time_point started_at() const noexcept { return started_at_; }
  // The dashboard's login URL; empty without one.
  std::string dashboard_url() const { return dashboard_ ? dashboard_->url() : std::string(); }

  std::map<std::string, double> cluster_resources() const;
  std::map<std::string, double> available_resources() const;
  // This node's totals only (cluster_resources() adds the other nodes').
  std::map<std::string, double> cluster_resources_here() const;

  // Observability (prism/stats.h): counted where tasks move (submission in hooks.cc, remote
  // tasks by the cluster link), read by stats().
  TaskCounters& counters() noexcept { return counters_; }
  Stats stats() const;
  std::vector<TaskFailure> errors() const { return errors_.snapshot(); }
  // The cluster link: a task sent to another node came back with a result (failures go
  // through fail_task).
  void remote_task_done() noexcept { counters_.add(TaskCounters::kRemoteDone); }
  // Tasks and actor calls running here now (sums the counters' shards: not for hot paths).
  uint64_t tasks_running() const noexcept {
    const auto c = counters_.sum();
    const uint64_t ended = c[TaskCounters::kDone] + c[TaskCounters::kFailedRunning];
    return c[TaskCounters::kStarted] > ended ? c[TaskCounters::kStarted] - ended : 0;
  }

  // JobRunner
  void run_task(TaskRecord* task) noexcept override;
  void run_job(Job& job) noexcept override;
  void run_inline(TaskRecord* task, int64_t held_cpu) noexcept override;
  void reject(TaskRecord* task, const std::string& why) noexcept override;
  void lease_begin(const Allocation& alloc, LeaseFrame* frame) noexcept override;
  void lease_end(LeaseFrame* frame) noexcept override;

  // ---- heterogeneous tasks (prism/variants.h; runtime_variants.cc) ----
  ExtrasPtr make_variant_extras(std::shared_ptr<VariantRun> run);
  PerfModel& perf_model() noexcept { return perf_model_; }
  VariantPlanner& planner() noexcept { return planner_; }
  const VariantPlanner& planner() const noexcept { return planner_; }

  // False if the node can never run `task`'s request (cluster mode: it was accepted for others).
  // From the request's shape when it has one (no lock).
  bool runs_here(TaskRecord* task) const;

 private:
  // `task` (ready, with shape `shape`; null: the default request) made ready by the results of
  // the task this thread has just run: handed to this thread's loop to run next (true), if the
  // scheduler takes it (Scheduler::hand_off).
  bool hand_off_here(TaskRecord* task, ResourceShape* shape) noexcept;
  void record_span(TaskRecord* task, const Allocation* alloc,
                   Timeline::Clock::time_point start) noexcept;
  friend void run_returned() noexcept;
  // Moves the device spans of this runtime's GPU runs whose work completed into the timeline.
  void collect_device_spans() const;
  void keep_failure(TaskRecord* task, const std::exception_ptr& error) noexcept;
  // A variant call became ready: picks its variant and place (once; `here_only`: this node's
  // variants only) and makes its request that variant's. False: no variant can run here or on
  // a connected node (the call fails, variant_infeasible() says why).
  bool choose_variant(TaskRecord* task, bool here_only = false) noexcept;
  // A call placed on another node that the link could not send there (the node left, or its
  // arguments could not be encoded): the choice is undone and made again among this node's
  // variants. False: none can run here.
  bool choose_variant_here(TaskRecord* task) noexcept;
  std::string variant_infeasible(const TaskRecord* task) const;
  // The planner's options for a call whose arguments are `fp`: each variant here, then (a
  // driver's call of a registered set) each variant on each other node that can run it.
  // `cpu_only`: GPU variants are left out (the out-of-memory fallback).
  struct VariantOptions {
    std::vector<VariantPlanner::Option> options;
    std::vector<int> variant;     // per option: the variant's index
    std::vector<uint64_t> peer;   // per option: 0 here, else the node (ClusterLink::VariantNode)
  };
  VariantOptions variant_options(const VariantRun& run, const ArgFootprint& fp,
                                 bool cpu_only) const;
  // Makes option `i` of `o` the call's choice (its variant, place and request).
  void apply_choice(TaskRecord* task, const VariantOptions& o, size_t i,
                    const VariantPlanner::Choice& c) noexcept;
  // The chosen variant's run ended (`ran`: its body returned; `failed`: it threw) or it never
  // ran: tells the planner, once.
  void end_variant_run(VariantRun& run, bool ran, bool failed = false) noexcept;
  // The chosen variant's run begins (before its arguments are resolved).
  void variant_run_starts(TaskRecord* task, VariantRun& run) noexcept;
  friend void variant_body_returned(VariantRun* run) noexcept;
  friend void remote_variant_ran(TaskRecord* task, double seconds) noexcept;
  friend void remote_variant_failed(TaskRecord* task) noexcept;
  // A GPU variant ran out of device memory: picks the CPU variant to run instead and makes the
  // task's request that variant's (true), or false if there is none, it already fell back once,
  // or the GPU variant was forced.
  bool fall_back_to_cpu(TaskRecord* task, const std::exception_ptr& thrown) noexcept;

  const uint64_t owner_;
  std::string node_id_;
  const bool global_;
  RuntimeRef ref_;
  std::atomic<uint64_t> next_sequence_{1};
  std::atomic<bool> stopping_{false};
  Mutex shutdown_mu_;  // one shutdown at a time; a second caller waits for the first
  bool stopped_ PRISM_GUARDED_BY(shutdown_mu_) = false;
  std::shared_ptr<StoreAccount> store_;
  int64_t pool_share_ = 0;  // what this runtime added to BufferPool's capacity
  const Timeline::Clock::time_point started_at_ = Timeline::Clock::now();
  // Null unless InitOptions::timeline (keeps every span) or a dashboard (keeps the newest).
  std::unique_ptr<Timeline> timeline_;
  std::unique_ptr<DashboardServer> dashboard_;  // set at the end of the constructor; stopped first
  TaskCounters counters_;
  ErrorLog errors_;
  ActorDirectory actors_;
  NodeResources totals_;
  std::unique_ptr<Scheduler> scheduler_;
  PerfModel perf_model_;
  VariantPlanner planner_{&perf_model_};
  std::string perf_model_path_;  // PRISM_PERF_MODEL_DIR's file; empty: not kept
  ClusterRole role_ = ClusterRole::kEmbedded;
  std::unique_ptr<ClusterLink> link_;  // set after the scheduler; reset in shutdown()
  // link_ for readers on other threads: a node's link serves calls (through dispatch) while its
  // constructor is still finishing the join, before link_ is assigned. Published once it is.
  std::atomic<ClusterLink*> link_ptr_{nullptr};
};

}  // namespace prism::internal
