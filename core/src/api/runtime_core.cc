#include "api/runtime_core.h"

#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <random>
#include <thread>
#include <utility>
#include <vector>

#include "actor/actor_core.h"
#include "api/runtime_registry.h"
#include "common/log.h"
#include "prism/errors.h"
#include "prism/internal/buffer_pool.h"
#include "prism/internal/device_support.h"
#include "prism/internal/runtime_hooks.h"
#include "prism/internal/variant_run.h"
#include "worker/exec_context.h"

namespace prism::internal {

namespace {

std::string hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

int64_t physical_memory() {
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page = sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? static_cast<int64_t>(pages) * page : int64_t{1} << 33;
}

int64_t units(const char* what, double amount) {
  if (std::isnan(amount) || std::isinf(amount) || amount < 0) {
    throw Error(ErrorCode::kInvalidArgument,
                std::string("InitOptions.") + what + " must be finite and >= 0");
  }
  return static_cast<int64_t>(std::llround(amount * kUnitsPerResource));
}

// GPUs: the real devices the GPU module found (num_gpus defaults to them and cannot exceed
// them), or logical GPUs (host backend) when there are none.
void gpu_resources(const InitOptions& o, NodeResources* r) {
  DeviceSupport* support = device_support();
  const int found = support != nullptr ? support->device_count() : 0;
  const double gpus = o.num_gpus < 0 ? static_cast<double>(found) : o.num_gpus;
  const int64_t gpu_units = units("num_gpus", gpus);
  if (gpu_units > kUnitsPerResource && gpu_units % kUnitsPerResource != 0) {
    throw Error(ErrorCode::kInvalidArgument,
                "InitOptions.num_gpus = " + std::to_string(gpus) +
                    ": above 1 it must be a whole number of GPUs (a fraction declares one "
                    "partial GPU, e.g. 0.5)");
  }
  if (found > 0 && gpu_units > int64_t{found} * kUnitsPerResource) {
    throw Error(ErrorCode::kInvalidArgument,
                "InitOptions.num_gpus = " + std::to_string(gpus) + " but this machine has " +
                    std::to_string(found) + " CUDA device(s)");
  }
  r->num_gpus = static_cast<int>(gpu_units / kUnitsPerResource);
  r->gpu_fraction = gpu_units % kUnitsPerResource;
  if (o.gpu_memory >= 0) {
    r->gpu_memory = o.gpu_memory;
  } else if (found > 0) {
    // Devices of one node may differ; account the smallest, so every device can honour it.
    int64_t smallest = INT64_MAX;
    for (int d = 0; d < found; ++d) smallest = std::min(smallest, support->device_memory(d));
    r->gpu_memory = smallest;
  } else {
    r->gpu_memory = int64_t{16} << 30;
  }
  if (gpu_units == 0) return;
  // Once per process: say which backend serves the GPUs (a warning when GPUs were asked for
  // and none is real, so nobody mistakes host-backend timings for GPU ones).
  static std::atomic<bool> told{false};
  if (!told.exchange(true)) {
    const std::string what = support != nullptr
                                 ? support->describe()
                                 : std::string("no GPU module linked: GPUs are logical resources");
    if (found == 0) {
      PRISM_LOG(kWarning) << what;
    } else {
      PRISM_LOG(kInfo) << what;
    }
  }
}

NodeResources node_resources(const InitOptions& o) {
  NodeResources r;
  const double cpus =
      o.num_cpus < 0 ? static_cast<double>(std::max(1u, std::thread::hardware_concurrency()))
                     : o.num_cpus;
  r.cpu = units("num_cpus", cpus);
  gpu_resources(o, &r);
  r.memory = o.memory < 0 ? physical_memory() : o.memory;
  for (const auto& [name, amount] : o.resources) {
    if (name.empty() || name == "CPU" || name == "GPU" || name == "memory" ||
        name == "gpu_memory") {
      throw Error(ErrorCode::kInvalidArgument,
                  "custom resource name '" + name + "' is empty or reserved");
    }
    r.custom.emplace_back(name, units(("resources[" + name + "]").c_str(), amount));
  }
  return r;
}

// Where the dashboard listens: InitOptions::dashboard, PRISM_DASHBOARD for the global runtime
// ("off" turns it off); none on a cluster node. Throws if one is asked for and the program
// lacks the dashboard component.
std::string dashboard_address(const InitOptions& options, bool global, ClusterRole role) {
  std::string address = options.dashboard;
  if (const char* env = global ? std::getenv("PRISM_DASHBOARD") : nullptr; env && *env) {
    address = std::string(env) == "off" ? "" : env;
  }
  if (address.empty()) return address;
  if (role == ClusterRole::kNode) {
    PRISM_LOG(kInfo) << "no dashboard on a node: the driver's shows the whole job";
    return {};
  }
  if (dashboard_module() == nullptr) {
    throw Error(ErrorCode::kUnavailable,
                "prism: a dashboard was asked for (" + address +
                    ") but the program was built without Prism's dashboard component: link "
                    "Prism::dashboard (find_package(Prism COMPONENTS dashboard)), or unset "
                    "PRISM_DASHBOARD / InitOptions::dashboard");
  }
  return address;
}

}  // namespace

RuntimeCore::RuntimeCore(const InitOptions& given_options, bool global)
    : owner_(new_generation()), node_id_(hex(owner_)), global_(global) {
  // Cluster mode is for the global runtime (prism::init); Runtime objects stay embedded.
  InitOptions options = given_options;
  ClusterConfig cluster = global ? cluster_config(options) : ClusterConfig{};
  if (!global && (!options.address.empty() || !options.listen.empty())) {
    throw Error(ErrorCode::kInvalidArgument,
                "a prism::Runtime object is always embedded: cluster mode (address / listen) is "
                "for prism::init()");
  }
  if (cluster.role != ClusterRole::kEmbedded && cluster_module() == nullptr) {
    std::string how;
    switch (cluster.role) {
      case ClusterRole::kNode: how = "node (driver address '" + cluster.address + "')"; break;
      case ClusterRole::kDriver: how = "driver (listen address '" + cluster.listen + "')"; break;
      default: how = "rank of a launcher's job (PMIX_RANK is set: mpirun or srun)"; break;
    }
    throw Error(ErrorCode::kUnavailable,
                "prism::init: this process was started as a cluster " + how +
                    " but the program was built without Prism's cluster component: link "
                    "Prism::cluster (find_package(Prism COMPONENTS cluster)), or unset "
                    "PRISM_ADDRESS/PRISM_LISTEN/PRISM_MIN_NODES (and start it without a "
                    "launcher) to run embedded");
  }
  if (cluster.role != ClusterRole::kEmbedded) cluster_module()->prepare(&cluster, &options);
  set_log_level(options.log_level);
  const std::string dashboard = dashboard_address(options, global, cluster.role);
  // PRISM_TIMELINE=1 records too (for nodes started apart from the driver's program options).
  if (const char* env = global ? std::getenv("PRISM_TIMELINE") : nullptr; env && *env) {
    options.timeline = std::string(env) != "0";
  }
  // A node where PRISM_DASHBOARD is set (a launcher passes it to every rank) keeps its newest
  // runs for the driver's dashboard.
  const char* dashboard_env = global ? std::getenv("PRISM_DASHBOARD") : nullptr;
  const bool node_for_dashboard = cluster.role == ClusterRole::kNode && dashboard_env != nullptr &&
                                  *dashboard_env && std::string(dashboard_env) != "off";
  if (options.timeline) {
    timeline_ = std::make_unique<Timeline>();
  } else if (!dashboard.empty() || node_for_dashboard) {
    timeline_ = std::make_unique<Timeline>(kDashboardSpans);  // the live view's newest spans
  }
  totals_ = node_resources(options);
  const NodeResources& totals = totals_;
  const int64_t store_bytes = options.object_store_bytes < 0
                                  ? static_cast<int64_t>(physical_memory() * 0.3)
                                  : options.object_store_bytes;
  store_ = std::make_shared<StoreAccount>(store_bytes);
  // Large vectors freed by this runtime's objects are kept for the next copying put, up to a
  // quarter of its store (BufferPool); given back in shutdown().
  pool_share_ = store_bytes / 4;
  BufferPool::add_capacity(pool_share_);
  const int max_threads = options.max_threads > 0 ? options.max_threads : 4096;
  scheduler_ = std::make_unique<Scheduler>(this, totals, max_threads);
  perf_model_path_ = perf_model_file_from_env();
  if (!perf_model_path_.empty()) {
    int skipped = 0;
    const int read = perf_model_.load(perf_model_path_, &skipped);
    if (skipped > 0) {
      PRISM_LOG(kWarning) << perf_model_path_ << ": " << skipped
                          << " malformed line(s) of the performance model skipped";
    }
    PRISM_LOG(kInfo) << "performance model " << perf_model_path_ << ": " << read << " entries";
  }
  ref_ = register_runtime(this, owner_);
  if (cluster.role != ClusterRole::kEmbedded) {
    try {
      link_ = cluster_module()->create(this, cluster);
      role_ = cluster.role;
      link_ptr_.store(link_.get(), std::memory_order_release);
      link_->start();
    } catch (...) {
      shutdown();
      retire_runtime(ref_);
      throw;
    }
  }
  if (!dashboard.empty()) {
    try {
      dashboard_ = dashboard_module()->start(this, dashboard);
    } catch (...) {
      shutdown();
      retire_runtime(ref_);
      throw;
    }
    // Asked for explicitly: printed whatever the log level (as Jupyter prints its URL).
    std::fprintf(stderr, "prism: dashboard of %s: %s\n", node_id_.c_str(),
                 dashboard_->url().c_str());
  }
  PRISM_LOG(kInfo) << "runtime " << node_id_ << " started: " << totals.cpu / kUnitsPerResource
                   << " CPUs";
}

RuntimeCore::~RuntimeCore() {
  try {
    shutdown();
  } catch (...) {
  }
  // From here on every RuntimeRef of this runtime fails; wait for the calls still using it.
  retire_runtime(ref_);
}

std::exception_ptr RuntimeCore::lost_error(const char* why) const {
  return std::make_exception_ptr(ObjectLostError(ErrorCode::kUnavailable, why));
}

void RuntimeCore::shutdown() {
  if (Scheduler::current() == scheduler_.get()) {
    throw Error(ErrorCode::kInvalidArgument, "shutdown() called from one of the runtime's tasks");
  }
  MutexLock once(shutdown_mu_);
  if (stopped_) return;  // idempotent
  // First: its requests read the scheduler and the link, which stop below.
  if (dashboard_) dashboard_->stop();
  stopping_.store(true, std::memory_order_seq_cst);
  // Nodes learn that the job ended; calls in flight elsewhere fail (their dependents too).
  if (ClusterLink* l = link()) l->shutdown();
  // API calls that started before stopping_ was set finish submitting (their tasks are failed
  // below); later ones see stopping_ and are refused.
  wait_unpinned(ref_);
  // Stop actors: queued calls fail, running ones finish.
  for (const auto& actor : actors_.all()) actor->kill("stopped: the runtime shut down");
  // Fail what never started; in-flight tasks finish (their dependents fail inline).
  std::vector<TaskRecord*> tasks;
  std::vector<Job> jobs;
  scheduler_->stop(&tasks, &jobs);
  auto fail_leftovers = [&] {
    for (TaskRecord* t : tasks) fail_task(t, lost_error("the runtime shut down before the task ran"));
    for (Job& j : jobs) {
      if (j.task != nullptr) {
        fail_task(j.task, lost_error("the runtime shut down before the task ran"));
      }
      if (j.kind == Job::Kind::kActorDrain && j.actor) j.actor->drain();
    }
    tasks.clear();
    jobs.clear();
  };
  fail_leftovers();
  scheduler_->join();
  // Anything dispatched while the threads were finishing.
  scheduler_->stop(&tasks, &jobs);
  fail_leftovers();
  for (const auto& actor : actors_.all()) actor->finalize_now();
  BufferPool::add_capacity(-pool_share_);
  link_ptr_.store(nullptr, std::memory_order_release);
  link_.reset();  // no task is left that could offer it anything
  if (DeviceSupport* d = device_support()) d->drop_device_spans(owner_);
  if (!perf_model_path_.empty() && perf_model_.changed()) {
    try {
      perf_model_.save(perf_model_path_);
    } catch (const std::exception& e) {
      PRISM_LOG(kWarning) << e.what();
    }
  }
  stopped_ = true;
  PRISM_LOG(kInfo) << "runtime " << node_id_ << " stopped";
}

ExtrasPtr RuntimeCore::make_extras(const TaskOptions& o, const LazyName& function_name) {
  if (o.max_retries < -1) {
    throw Error(ErrorCode::kInvalidArgument, "max_retries must be >= 0 (or -1 for no limit)");
  }
  const bool default_request = o.is_default_request();
  // The calling thread's last request that needs only its shape's shared record (no name, no
  // custom resource, default retries), and that shape: a submitter repeats one caller's options
  // many times, and converting and interning the request cost more than the rest of the
  // submission's bookkeeping. (Only a shape this node can run is kept; that never changes.)
  struct LastRequest {
    uint64_t owner = 0;  // the runtime's generation: never that of another runtime
    double num_cpus = 0, num_gpus = 0;
    int64_t memory = 0, gpu_memory = 0;
    ResourceShape* shape = nullptr;
  };
  thread_local LastRequest last;
  // Only a request: every task of the shape shares the shape's record (no allocation).
  const bool shares_record = !default_request && o.name.empty() &&
                             o.max_retries == kDefaultMaxRetries && !o.retry_exceptions;
  const bool plain = shares_record && o.resources.empty();
  if (plain && last.owner == owner_ && last.num_cpus == o.num_cpus &&
      last.num_gpus == o.num_gpus && last.memory == o.memory && last.gpu_memory == o.gpu_memory) {
    return ExtrasPtr::shared(&last.shape->extras);
  }
  ResourceRequest request;
  if (!default_request) {
    request = make_request(o.num_cpus, o.num_gpus, o.memory, o.gpu_memory, o.resources);
  }
  const ResourceRequest& req = default_request ? one_cpu_request() : request;
  // Interning the shape also tells whether the node can ever run it (cached per thread).
  ResourceShape* shape = scheduler_->shape_for(req);
  std::string reason = shape != nullptr ? shape->infeasible : scheduler_->infeasible_reason(req);
  // In a cluster, another node may run what this one cannot (only a task that can go there).
  if (ClusterLink* l = link(); !reason.empty() && l != nullptr) {
    const std::string elsewhere = l->infeasible_elsewhere(req, /*actor=*/false);
    if (elsewhere.empty() || l->waits_for_nodes()) {
      reason.clear();
    } else {
      reason = "on this node " + reason + "; " + elsewhere;
    }
  }
  if (!reason.empty()) {
    throw InfeasibleError("infeasible task '" + (o.name.empty() ? function_name() : o.name) +
                          "': " + reason + "; no node can ever run it");
  }
  if (shares_record && shape != nullptr) {
    if (plain && shape->infeasible.empty()) {
      last = LastRequest{owner_, o.num_cpus, o.num_gpus, o.memory, o.gpu_memory, shape};
    }
    return ExtrasPtr::shared(&shape->extras);
  }
  auto x = std::make_unique<TaskExtras>();
  x->name = o.name;
  x->retries_left = o.max_retries == -1 ? INT32_MAX : o.max_retries;
  x->retry_exceptions = o.retry_exceptions;
  x->default_request = default_request;
  if (!default_request) {
    x->request = std::move(request);
    x->shape = shape;
  }
  return ExtrasPtr(std::move(x));
}

bool RuntimeCore::hand_off_here(TaskRecord* task, ResourceShape* shape) noexcept {
  const ExecContext& c = exec_context();
  return c.returned && ObjectEntry::notifying_dependents() &&
         scheduler_->hand_off(task, c.task, shape);
}

void RuntimeCore::dispatch(TaskRecord* task) noexcept {
  counters_.add(TaskCounters::kReady);
  if (ActorCore* actor = task->actor()) {
    if (task->actor_creation) {
      actor->on_create_ready(task);
    } else {
      actor->on_call_ready(task);
    }
    return;
  }
  TaskExtras* const vx = task->extras() != nullptr && task->extras()->variant ? task->extras()
                                                                               : nullptr;
  if (vx != nullptr && task->failed_dep() == nullptr && !task->cancel_requested() &&
      !choose_variant(task)) {
    fail_task(task, std::make_exception_ptr(InfeasibleError(variant_infeasible(task))));
    return;
  }
  if (ObjectEntry* dep = task->failed_dep()) {
    fail_task(task, dep->error());
  } else if (task->cancel_requested()) {
    fail_task(task, std::make_exception_ptr(TaskCancelledError("the task was cancelled")));
  } else if (!accepting()) {
    fail_task(task, lost_error("the runtime shut down before the task ran"));
  } else if (ClusterLink* l = link(); l != nullptr && l->offer(task)) {
    // Runs on another node; the link completes or fails it.
    counters_.add(TaskCounters::kRemote);
  } else if (vx != nullptr && vx->variant->peer != 0 && !choose_variant_here(task)) {
    // (placed on a node the link could not send it to, and no variant runs here)
    fail_task(task, std::make_exception_ptr(InfeasibleError(variant_infeasible(task))));
  } else if (l != nullptr && !runs_here(task)) {
    const ResourceRequest& request = task->request();
    fail_task(task, std::make_exception_ptr(InfeasibleError(
                        "infeasible task '" + task->function_name() + "' on node " + node_id_ +
                        ": " + scheduler_->infeasible_reason(request) +
                        "; another node could run it, but only a function registered with "
                        "PRISM_REMOTE whose parameters and result are serializable "
                        "(prism/serialize.h) runs on other nodes")));
  } else if (task->has_default_request()) {
    if (!hand_off_here(task, nullptr)) scheduler_->enqueue_ready(task);
  } else if (ResourceShape* shape = task->extras()->shape) {
    if (!hand_off_here(task, shape)) scheduler_->enqueue_shaped(task, shape);
  } else {
    Job job;
    job.kind = Job::Kind::kTask;
    job.task = task;
    scheduler_->enqueue_with_resources(std::move(job), task->extras()->request);
  }
}

bool RuntimeCore::runs_here(TaskRecord* task) const {
  if (task->has_default_request()) return scheduler_->cpu_slots() > 0;
  const TaskExtras* x = task->extras();
  if (x->shape != nullptr) return x->shape->infeasible.empty();
  return scheduler_->infeasible_reason(x->request).empty();
}

void RuntimeCore::fail_task(TaskRecord* task, std::exception_ptr error, bool ran) noexcept {
  // Failing completes the task's results, which may fail dependents, which land here again:
  // queue those on this thread and process them in a loop instead of recursing.
  struct Item {
    TaskRecord* task;
    std::exception_ptr error;
    bool ran;
  };
  thread_local std::vector<Item>* pending = nullptr;
  if (pending != nullptr) {
    pending->push_back(Item{task, std::move(error), ran});
    return;
  }
  std::vector<Item> list;
  list.push_back(Item{task, std::move(error), ran});
  pending = &list;
  while (!list.empty()) {
    Item item = std::move(list.back());
    list.pop_back();
    counters_.add(item.ran ? TaskCounters::kFailedRunning : TaskCounters::kFailedOther);
    // A dependent failing with its argument's error is a cascade: only the root is kept.
    const ObjectEntry* dep = item.task->failed_dep();
    if (dep == nullptr || dep->error() != item.error) keep_failure(item.task, item.error);
    if (TaskExtras* x = item.task->extras(); x != nullptr && x->variant) {
      end_variant_run(*x->variant, /*ran=*/false, /*failed=*/item.ran);
    }
    item.task->fail(item.error);
    item.task->release_run();
  }
  pending = nullptr;
}

bool RuntimeCore::take_retry(TaskRecord* task) noexcept {
  if (task->cancel_requested()) return false;
  if (task->owns_extras()) {
    TaskExtras* x = task->extras();
    if (x->retries_left <= 0) return false;
    --x->retries_left;
  } else {
    if (task->default_retries_used >= kDefaultMaxRetries) return false;
    ++task->default_retries_used;
  }
  counters_.add(TaskCounters::kRetried);
  return true;
}

int RuntimeCore::retries_left(const TaskRecord* task) const noexcept {
  if (task->owns_extras()) return std::max(0, task->extras()->retries_left);
  return std::max(0, kDefaultMaxRetries - static_cast<int>(task->default_retries_used));
}

void RuntimeCore::run_again(TaskRecord* task) noexcept {
  if (TaskExtras* x = task->extras(); x != nullptr && x->variant) {
    // Chosen again among the places that are left (the planner's books for the lost one are
    // closed as "did not run": no failure is held against the variant).
    VariantRun& run = *x->variant;
    end_variant_run(run, /*ran=*/false);
    run.finished = false;
    run.chosen = -1;
    run.peer = 0;
    run.place.clear();
  }
  counters_.add(TaskCounters::kRequeued);
  dispatch(task);
}

void RuntimeCore::keep_failure(TaskRecord* task, const std::exception_ptr& error) noexcept {
  try {
    TaskFailure f;
    f.task = task->id();
    f.function = task->function_name();
    f.node = node_id_;
    f.time = std::chrono::system_clock::now();
    try {
      std::rethrow_exception(error);
    } catch (const TaskError& e) {
      f.function = e.function_name();
      f.node = e.node_id();
      f.type = e.type_name();
      f.message = e.message();
    } catch (const std::exception& e) {
      f.type = demangle(typeid(e).name());
      f.message = e.what();
    } catch (...) {
      f.type = "unknown";
    }
    errors_.add(std::move(f));
  } catch (...) {
    // Out of memory for the record: errors() misses it; the task's error is unaffected.
  }
}

std::exception_ptr RuntimeCore::task_error(const std::exception_ptr& thrown,
                                           const std::string& function) {
  try {
    std::rethrow_exception(thrown);
  } catch (...) {
    return capture_task_error(function);
  }
}

namespace {
bool is_out_of_memory(const std::exception_ptr& thrown) noexcept {
  try {
    std::rethrow_exception(thrown);
  } catch (const OutOfMemoryError&) {
    return true;
  } catch (...) {
    return false;
  }
}
}  // namespace

void RuntimeCore::execute(TaskRecord* task, const Allocation* alloc) noexcept {
  if (ObjectEntry* dep = task->failed_dep()) {
    fail_task(task, dep->error());
    return;
  }
  if (task->cancel_requested()) {
    fail_task(task, std::make_exception_ptr(TaskCancelledError("the task was cancelled")));
    return;
  }
  if (!accepting()) {
    fail_task(task, lost_error("the runtime shut down before the task ran"));
    return;
  }
  const Allocation* outer = exec_context().alloc;
  ExecScope scope(this, task, alloc);
  // A task granted GPUs runs with its first GPU current (and its streams for each).
  DeviceScope device(alloc, outer);
  if (!device.ok()) {
    fail_task(task, std::make_exception_ptr(Error(ErrorCode::kUnavailable, device.why())));
    return;
  }
  counters_.add(TaskCounters::kStarted);
  auto start = Timeline::Clock::time_point{};
  if (timeline_) {
    timeline_->run_started();
    start = Timeline::Clock::now();
  }
  // A GPU task's runs are named for profilers (NVTX ranges on CUDA) and, with a timeline, timed
  // on its device; otherwise (the host backend without a timeline) there is nothing to note.
  DeviceSupport* annotate = alloc != nullptr && !alloc->gpus.empty() ? device_support() : nullptr;
  if (annotate != nullptr && !timeline_ && !annotate->names_runs()) annotate = nullptr;
  std::string gpu_task_name;
  if (annotate != nullptr) {
    try {
      gpu_task_name = task->function_name();
    } catch (...) {
    }
  }
  // A variant call: its run is measured for the planner (the time outside the body moved its
  // arguments), and a GPU variant out of device memory runs again as a CPU variant, with the
  // host as its device (host_scope).
  VariantRun* const variant = task->extras() != nullptr ? task->extras()->variant.get() : nullptr;
  std::optional<DeviceScope> host_scope;
  for (;;) {
    if (annotate != nullptr) {
      annotate->task_begin(gpu_task_name.c_str(), owner_, /*time_device=*/timeline_ != nullptr);
      exec_context().device_annotate = annotate;
    }
    if (timeline_) exec_context().span_start = &start;
    if (variant != nullptr) variant_run_starts(task, *variant);
    exec_context().returned = false;  // (set again when this attempt's body returns)
    std::exception_ptr thrown = task->run();
    if (annotate != nullptr) {  // (run_returned() closed it when the run returned a value)
      ExecContext& c = exec_context();
      if (c.device_annotate != nullptr) annotate->task_end();
      c.device_annotate = nullptr;
    }
    if (timeline_) {
      // One span per attempt: recorded by run_returned() when it returned a value, else here.
      if (exec_context().span_start != nullptr) record_span(task, alloc, start);
      exec_context().span_start = nullptr;
      start = Timeline::Clock::now();
    }
    if (!thrown) break;
    if (variant != nullptr && fall_back_to_cpu(task, thrown)) {
      // The CPU variant waits for its own resources like any task: the run is given back and
      // the task dispatched again, this attempt uncounted. Only a task a blocked parent claimed
      // (still in a queue, so it cannot be queued again) runs it here, within the parent's
      // holdings, with the host as its device.
      if (task->try_requeue()) {
        if (timeline_) timeline_->run_recorded();
        counters_.add(TaskCounters::kRestarted);
        dispatch(task);
        return;
      }
      host_scope.emplace(nullptr, alloc);
      if (!host_scope->ok()) {
        if (timeline_) timeline_->run_recorded();
        fail_task(task, std::make_exception_ptr(Error(ErrorCode::kUnavailable, host_scope->why())),
                  /*ran=*/true);
        return;
      }
      continue;
    }
    TaskExtras* x = task->extras();
    // A user exception is retried only with retry_exceptions; running out of memory (device
    // memory: OutOfMemoryError) is a system failure, retried under max_retries alone, as Ray
    // retries a task its memory monitor killed.
    if (x != nullptr && x->retry_exceptions && !is_out_of_memory(thrown) &&
        task->owns_extras() && x->retries_left > 0 && !task->cancel_requested()) {
      --x->retries_left;
      counters_.add(TaskCounters::kRetried);
      PRISM_LOG(kInfo) << "retrying task " << task->function_name() << " after an exception";
      continue;
    }
    if (is_out_of_memory(thrown) && take_retry(task)) {
      PRISM_LOG(kInfo) << "retrying task " << task->function_name() << " after running out of "
                       << "memory";
      continue;
    }
    std::exception_ptr error;
    try {
      std::string name = task->function_name();
      if (variant != nullptr && variant->fallback_from >= 0) {
        const auto& vs = variant->function->variants;
        name += " (variant '" + vs[static_cast<size_t>(variant->chosen)].name +
                "', run after variant '" + vs[static_cast<size_t>(variant->fallback_from)].name +
                "' ran out of device memory: " + variant->fallback_reason + ")";
      }
      error = task_error(thrown, name);
    } catch (...) {
      error = std::current_exception();
    }
    if (timeline_) timeline_->run_recorded();
    fail_task(task, std::move(error), /*ran=*/true);
    return;
  }
  if (timeline_) timeline_->run_recorded();
  counters_.add(TaskCounters::kDone);
  task->release_run();
}

void RuntimeCore::record_span(TaskRecord* task, const Allocation* alloc,
                              Timeline::Clock::time_point start) noexcept {
  try {
    Timeline::Span span;
    span.name = task->function_name();
    span.task_sequence = task->id().sequence;
    span.thread = Timeline::thread_number();
    span.start = start;
    span.end = Timeline::Clock::now();
    if (alloc != nullptr) span.gpus = alloc->gpu_ids();
    if (const TaskExtras* x = task->extras(); x != nullptr && x->variant) {
      const VariantRun& v = *x->variant;
      if (v.chosen >= 0) span.variant = v.function->variants[static_cast<size_t>(v.chosen)].name;
      span.predicted_seconds = v.predicted_seconds;
      span.actual_seconds = v.body_seconds;
      if (v.fallback_from >= 0) span.gpus.clear();  // it ran on the host after all
    }
    timeline_->record(std::move(span));
  } catch (...) {
    // Out of memory for the span: the timeline misses it, the task is unaffected.
  }
}

void run_returned() noexcept {
  ExecContext& c = exec_context();
  c.returned = c.task != nullptr;
  if (c.device_annotate != nullptr) {  // the device work's end first: it is inside the run
    c.device_annotate->task_end();
    c.device_annotate = nullptr;
  }
  if (c.span_start == nullptr) return;
  c.runtime->record_span(c.task, c.alloc, *c.span_start);
  c.span_start = nullptr;
}

std::vector<Timeline::Span> RuntimeCore::recent_spans(Timeline::Clock::time_point since,
                                                      size_t max) const {
  if (!timeline_) return {};
  collect_device_spans();
  return timeline_->recent(since, max);
}

void RuntimeCore::collect_device_spans() const {
  DeviceSupport* d = device_support();
  if (!timeline_ || d == nullptr) return;
  std::vector<DeviceSupport::DeviceSpan> spans;
  d->collect_device_spans(owner_, &spans);
  for (DeviceSupport::DeviceSpan& s : spans) {
    try {
      Timeline::Span span;
      span.name = std::move(s.name);
      span.thread = Timeline::device_lane(s.device);
      span.start = s.start;
      span.end = s.end;
      span.gpus = {s.device};
      timeline_->record(std::move(span));
    } catch (...) {
      return;  // out of memory: the timeline misses them
    }
  }
}

void RuntimeCore::write_timeline(const std::string& path) const {
  if (!timeline_ || !timeline_->keeps_everything()) {
    throw Error(ErrorCode::kInvalidArgument,
                "prism::timeline: recording is off; start the runtime with "
                "InitOptions{.timeline = true}");
  }
  std::vector<Timeline::Lane> nodes;
  std::vector<Timeline::Transfer> transfers;
  if (ClusterLink* l = link(); l != nullptr && role_ == ClusterRole::kDriver) {
    transfers = l->recent_transfers();
    std::vector<std::string> missing;
    for (ClusterLink::NodeSpans& n :
         l->gather_spans(deadline_after(std::chrono::seconds(30)), Timeline::Clock::time_point::min(),
                         SIZE_MAX, &missing)) {
      if (!n.clock_known) {
        PRISM_LOG(kWarning) << "prism::timeline: " << n.node
                            << "'s clock offset is unknown (no ping answered): its runs are on "
                               "its own clock";
      }
      if (n.truncated) {
        PRISM_LOG(kWarning) << "prism::timeline: " << n.node
                            << " sent only its newest runs (one message holds 32 MiB of them)";
      }
      if (!n.recording) {
        PRISM_LOG(kWarning) << "prism::timeline: " << n.node
                            << " records no timeline (start it with InitOptions::timeline or "
                               "PRISM_TIMELINE=1): its runs are not in "
                            << path;
      }
      nodes.push_back({std::move(n.node), std::move(n.spans)});
    }
    for (const std::string& m : missing) {
      PRISM_LOG(kWarning) << "prism::timeline: " << m << " did not answer in time: its runs are "
                          << "not in " << path;
    }
  }
  collect_device_spans();
  timeline_->write(path, node_id_, nodes, transfers);
}

void RuntimeCore::run_task(TaskRecord* task) noexcept { execute(task, nullptr); }

void RuntimeCore::run_inline(TaskRecord* task, int64_t held_cpu) noexcept {
  const ResourceRequest& request = task->request();
  // The child uses its share of what the parent holds (it was claimed because it fits).
  Allocation child;
  if (!scheduler_->carve(request, held_cpu, exec_context().alloc, &child)) child.cpu = request.cpu;
  execute(task, &child);
}

void RuntimeCore::reject(TaskRecord* task, const std::string& why) noexcept {
  fail_task(task, std::make_exception_ptr(Error(ErrorCode::kResourceExhausted, why)));
}

void RuntimeCore::lease_begin(const Allocation& alloc, LeaseFrame* frame) noexcept {
  if (alloc.gpus.empty()) return;  // (a CPU lease: its tasks have no devices to enter)
  bool ok = true;
  std::string why;  // (a failed device: each task's own entry fails it)
  frame->support = enter_devices(&alloc, exec_context().alloc, &frame->saved, &ok, &why);
}

void RuntimeCore::lease_end(LeaseFrame* frame) noexcept {
  if (frame->support != nullptr) frame->support->leave(frame->saved);
  frame->support = nullptr;
}

void RuntimeCore::run_job(Job& job) noexcept {
  switch (job.kind) {
    case Job::Kind::kTask:
      execute(job.task, &job.alloc);
      break;
    case Job::Kind::kActorCreate:
      job.actor->run_creation(job);
      break;
    case Job::Kind::kActorDrain:
      job.actor->drain();
      break;
    case Job::Kind::kLease:  // the scheduler runs leases itself
      PRISM_LOG(kError) << "a lease job reached the runner";
      std::terminate();
  }
}

std::map<std::string, double> RuntimeCore::cluster_resources() const {
  auto m = scheduler_->totals();
  if (ClusterLink* l = link()) {
    for (const auto& [k, v] : l->cluster_totals()) m[k] += v;
  }
  m["object_store_memory"] = static_cast<double>(store_->capacity());
  return m;
}

Stats RuntimeCore::stats() const {
  Stats s;
  // Read the link's in-flight count first: a task finishing meanwhile then shows as finished
  // rather than waiting (every derived count is clamped at zero).
  ClusterLink* l = link();
  const uint64_t in_flight = l != nullptr ? l->tasks_in_flight() : 0;
  const auto c = counters_.sum();
  const auto at = [&c](TaskCounters::Kind k) { return c[k]; };
  const auto minus = [](uint64_t a, uint64_t b) { return a > b ? a - b : 0; };
  // A task dispatched twice (it waited for a node that fits) counts once.
  const uint64_t requeued = at(TaskCounters::kRequeued);
  // A run given back (a variant call moved to its CPU variant) is dispatched and started again.
  const uint64_t restarted = at(TaskCounters::kRestarted);
  const uint64_t ready = minus(at(TaskCounters::kReady), requeued + restarted);
  const uint64_t started = minus(at(TaskCounters::kStarted), restarted);
  const uint64_t remote = minus(at(TaskCounters::kRemote), requeued);
  const uint64_t remote_failed =
      minus(minus(remote, at(TaskCounters::kRemoteDone)), in_flight);
  const uint64_t failed_here = minus(at(TaskCounters::kFailedOther), remote_failed);
  TaskCounts& t = s.tasks;
  t.submitted = at(TaskCounters::kSubmitted);
  t.waiting_for_arguments = minus(t.submitted, ready);
  t.waiting_for_resources = minus(ready, started + remote + failed_here);
  t.running = minus(started, at(TaskCounters::kDone) + at(TaskCounters::kFailedRunning));
  t.on_other_nodes = in_flight;
  t.done = at(TaskCounters::kDone) + at(TaskCounters::kRemoteDone);
  t.failed = at(TaskCounters::kFailedRunning) + at(TaskCounters::kFailedOther);
  t.retried = at(TaskCounters::kRetried);
  t.handed_off = scheduler_->handed_off_runs();

  s.objects.objects = static_cast<uint64_t>(std::max<int64_t>(0, store_->objects()));
  s.objects.primary_bytes = static_cast<uint64_t>(std::max<int64_t>(0, store_->used()));
  s.objects.capacity_bytes = static_cast<uint64_t>(std::max<int64_t>(0, store_->capacity()));
  s.objects.spilled_bytes = store_->spilled_bytes();
  s.objects.restored_bytes = store_->restored_bytes();
  if (DeviceSupport* d = device_support()) {
    d->copy_counts(&s.transfers.device_copies, &s.transfers.device_copy_bytes);
  }
  s.threads = scheduler_->thread_count();
  for (VariantPlanner::Usage& u : planner_.usage()) {
    VariantStats v;
    v.function = std::move(u.function);
    v.variant = std::move(u.variant);
    v.node = u.place.empty() ? node_id_ : std::move(u.place);
    v.processor = VariantPlanner::processor_name(u.processor);
    v.runs = u.runs;
    v.seconds = u.seconds;
    v.fallbacks = u.fallbacks;
    s.variants.push_back(std::move(v));
  }
  NodeStats here;
  here.node = node_id_;
  here.total = cluster_resources_here();
  here.available = available_resources();
  s.nodes.push_back(std::move(here));
  if (l != nullptr) l->add_stats(&s);
  // This node's own entry: what its runtime counts (the link added its secondary bytes).
  NodeStats& own = s.nodes.front();
  own.reported = true;
  own.reported_at = std::chrono::steady_clock::now();
  own.tasks_waiting_for_arguments = t.waiting_for_arguments;
  own.tasks_queued = t.waiting_for_resources;
  own.tasks_running = t.running;
  own.tasks_done = at(TaskCounters::kDone);
  own.tasks_failed = failed_here + at(TaskCounters::kFailedRunning);
  own.objects = s.objects.objects;
  own.primary_bytes = s.objects.primary_bytes;
  own.capacity_bytes = s.objects.capacity_bytes;
  own.secondary_bytes = s.objects.secondary_bytes;
  own.spilled_bytes = s.objects.spilled_bytes;
  own.threads = s.threads;
  own.pulls = s.transfers.node_pulls;
  own.pulled_bytes = s.transfers.node_pulled_bytes;
  own.served = s.transfers.node_served;
  own.served_bytes = s.transfers.node_served_bytes;
  return s;
}

std::map<std::string, double> RuntimeCore::cluster_resources_here() const {
  auto m = scheduler_->totals();
  m["object_store_memory"] = static_cast<double>(store_->capacity());
  return m;
}

std::map<std::string, double> RuntimeCore::available_resources() const {
  auto m = scheduler_->available();
  // Task results are accepted beyond the capacity (refusing would lose them): never below 0.
  m["object_store_memory"] =
      static_cast<double>(std::max<int64_t>(0, store_->capacity() - store_->used()));
  return m;
}

}  // namespace prism::internal
