// The non-template entry points of the API templates (prism/internal/runtime_hooks.h).
#include "prism/internal/runtime_hooks.h"

#include <cxxabi.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "actor/actor_core.h"
#include "api/runtime_core.h"
#include "api/global.h"
#include "common/event.h"
#include "common/spin.h"
#include "prism/errors.h"
#include "worker/exec_context.h"

namespace prism::internal {

RuntimeCore* current_runtime() {
  if (RuntimeCore* rt = exec_context().runtime) return rt;
  if (RuntimeCore* rt = global_core()) return rt;
  throw Error(ErrorCode::kInvalidArgument,
              "Prism is not initialized: call prism::init() (or use a prism::Runtime) first");
}

namespace {
struct IdBlock {
  uint64_t owner = 0;
  uint64_t next = 0;
  uint64_t end = 0;
};
constexpr uint64_t kIdBlock = 1024;

uint64_t next_sequence(RuntimeCore* rt) noexcept {
  thread_local IdBlock block;
  if (block.owner != rt->owner() || block.next == block.end) {
    block.owner = rt->owner();
    block.next = rt->reserve_ids(kIdBlock);
    block.end = block.next + kIdBlock;
  }
  return block.next++;
}
}  // namespace

ObjectId next_object_id(RuntimeCore* rt) noexcept {
  ObjectId id;
  id.owner = rt->owner();
  id.sequence = next_sequence(rt);
  return id;
}

TaskId next_task_id(RuntimeCore* rt) noexcept {
  TaskId id;
  id.owner = rt->owner();
  id.sequence = next_sequence(rt);
  return id;
}

void check_accepting(RuntimeCore* rt) {
  if (!rt->accepting()) {
    throw Error(ErrorCode::kUnavailable, "the Prism runtime has been shut down");
  }
}

void check_default_feasible(RuntimeCore* rt) {
  if (rt->scheduler().cpu_slots() == 0) {
    throw InfeasibleError(
        "infeasible task: it asks for 1 CPU but the node has less than one; set .num_cpus(0) "
        "or a fraction, or give the runtime CPUs");
  }
}

std::unique_ptr<TaskExtras> make_task_extras(RuntimeCore* rt, const TaskOptions& options) {
  return rt->make_extras(options);
}

void submit(TaskRecord* task) noexcept {
  if (task->release_guard()) task->runtime()->dispatch(task);
}

void check_ref(const ObjectEntry* entry, const char* what) {
  if (entry == nullptr) {
    throw Error(ErrorCode::kInvalidArgument, std::string(what) + ": the ObjectRef is empty");
  }
}

void check_arg_ref(const ObjectEntry* entry, RuntimeCore* rt) {
  check_ref(entry, "a task argument");
  if (entry->runtime() != rt) {
    throw Error(ErrorCode::kInvalidArgument,
                "a task argument is an ObjectRef of another prism::Runtime; pass the value, or "
                "submit the task to the runtime that owns the ref");
  }
}

// ---- blocking ----

namespace {

// Lends the calling task's CPU back while it blocks (so nested tasks can run), if it is a task.
class LendScope {
 public:
  LendScope() {
    RuntimeCore* rt = exec_context().runtime;
    if (rt != nullptr && rt->scheduler().lend_current()) sched_ = &rt->scheduler();
  }
  ~LendScope() {
    if (sched_ != nullptr) sched_->reclaim_current();
  }
  LendScope(const LendScope&) = delete;
  LendScope& operator=(const LendScope&) = delete;

 private:
  Scheduler* sched_ = nullptr;
};

class OneWaiter final : public Dependent {
 public:
  void on_ready(ObjectEntry*) noexcept override { event.set(); }
  Event event;
};

constexpr std::chrono::microseconds kSpinBeforeBlock{10};

// Adaptive spinning, per thread: a spin that ends with the result earns credit, one that times
// out halves it; without credit the thread blocks at once, trying a spin again every 32 waits.
thread_local int tls_spin_credit = 4;
thread_local unsigned tls_waits = 0;

bool should_spin() noexcept { return tls_spin_credit > 0 || (++tls_waits & 31) == 0; }
void spin_paid(bool paid) noexcept {
  tls_spin_credit = paid ? (tls_spin_credit < 8 ? tls_spin_credit + 1 : 8) : tls_spin_credit / 2;
}

[[noreturn]] void throw_timeout(const char* what) {
  throw TimeoutError(std::string(what) + ": the object was not ready before the timeout");
}

}  // namespace

void await(ObjectEntry* entry, Deadline deadline) {
  // A result that is a few microseconds away is cheaper to spin for than to sleep for, but a
  // spin that does not pay takes a core from the workers: spin only while spins keep paying,
  // and only while some core is not running a task.
  if (!entry->is_done() && should_spin() && entry->runtime()->scheduler().has_idle_core()) {
    spin_paid(spin_for(kSpinBeforeBlock, [entry] { return entry->is_done(); }));
  }
  if (!entry->is_done()) {
    OneWaiter waiter;
    DepNode node;
    node.owner = &waiter;
    if (entry->add_dependent(&node)) {
      LendScope lend;
      if (!waiter.event.wait_until(deadline)) {
        if (entry->remove_dependent(&node)) throw_timeout("prism::get");
        waiter.event.wait();  // completed meanwhile: the notification is on its way
      }
    }
  }
  if (entry->state() == ObjState::kFailed) std::rethrow_exception(entry->error());
}

namespace {

class CountingWaiter final : public Dependent {
 public:
  explicit CountingWaiter(int64_t needed) : remaining_(needed) {}
  void on_ready(ObjectEntry*) noexcept override {
    if (remaining_.fetch_sub(1, std::memory_order_acq_rel) == 1) event.set();
    delivered_.fetch_add(1, std::memory_order_release);
    futex_wake_all(&delivered_);
  }
  // Counts an entry that was already done when registration was attempted.
  void count_done() noexcept {
    if (remaining_.fetch_sub(1, std::memory_order_acq_rel) == 1) event.set();
  }
  // Waits until `n` notifications have finished touching this object.
  void wait_delivered(uint32_t n) noexcept {
    for (uint32_t d = delivered_.load(std::memory_order_acquire); d < n;
         d = delivered_.load(std::memory_order_acquire)) {
      futex_wait(&delivered_, d, kNoDeadline);
    }
  }
  Event event;

 private:
  std::atomic<int64_t> remaining_;
  std::atomic<uint32_t> delivered_{0};
};

}  // namespace

std::vector<bool> await_some(const std::vector<ObjectEntry*>& entries, size_t num_ready,
                             Deadline deadline) {
  std::vector<bool> done(entries.size(), false);
  size_t ready = 0;
  for (size_t i = 0; i < entries.size(); ++i) {
    if (entries[i]->is_done()) {
      done[i] = true;
      ++ready;
    }
  }
  if (ready >= num_ready) return done;
  CountingWaiter waiter(static_cast<int64_t>(num_ready - ready));
  std::vector<DepNode> nodes(entries.size());
  std::vector<bool> registered(entries.size(), false);
  for (size_t i = 0; i < entries.size(); ++i) {
    if (done[i]) continue;
    nodes[i].owner = &waiter;
    if (entries[i]->add_dependent(&nodes[i])) {
      registered[i] = true;
    } else {
      waiter.count_done();
    }
  }
  {
    LendScope lend;
    waiter.event.wait_until(deadline);
  }
  uint32_t in_flight = 0;
  for (size_t i = 0; i < entries.size(); ++i) {
    if (registered[i] && !entries[i]->remove_dependent(&nodes[i])) ++in_flight;
  }
  waiter.wait_delivered(in_flight);
  for (size_t i = 0; i < entries.size(); ++i) done[i] = entries[i]->is_done();
  return done;
}

// ---- objects ----

std::shared_ptr<void> reserve_put(RuntimeCore* rt, size_t bytes) {
  check_accepting(rt);
  if (bytes < kInlineObjectBytes) return nullptr;
  std::shared_ptr<void> token = rt->store().reserve(bytes, /*enforce_capacity=*/true);
  if (!token) {
    throw ObjectStoreFullError("prism::put: an object of " + std::to_string(bytes) +
                               " bytes does not fit in the object store (" +
                               std::to_string(rt->store().used()) + " of " +
                               std::to_string(rt->store().capacity()) +
                               " bytes in use); free refs or raise object_store_bytes");
  }
  return token;
}

std::shared_ptr<void> account_result(RuntimeCore* rt, size_t bytes) noexcept {
  try {
    return rt->store().reserve(bytes, /*enforce_capacity=*/false);
  } catch (...) {
    return nullptr;  // out of memory for the token: the object lives on, uncounted
  }
}

bool cancel(ObjectEntry* entry) noexcept {
  if (entry->is_done()) return false;
  entry->request_cancel();
  return entry->complete_error(std::make_exception_ptr(TaskCancelledError(
      "the task producing object " + entry->id().to_string() + " was cancelled")));
}

// ---- errors ----

std::string demangle(const char* mangled) {
  int status = 0;
  char* d = abi::__cxa_demangle(mangled, nullptr, nullptr, &status);
  if (status != 0 || d == nullptr) return mangled;
  std::string out(d);
  std::free(d);
  return out;
}

std::exception_ptr capture_task_error(const std::string& function_name) noexcept {
  const std::exception_ptr current = std::current_exception();
  try {
    RuntimeCore* rt = exec_context().runtime;
    const std::string node = rt != nullptr ? rt->node_id() : std::string("?");
    const std::type_info* type = abi::__cxa_current_exception_type();
    const std::string type_name = type != nullptr ? demangle(type->name()) : "unknown";
    try {
      throw;
    } catch (const Error&) {
      // Prism's own errors (a failed get inside the task, a timeout, a dead actor) keep their
      // type so that callers can catch them; a TaskError keeps naming the task that threw.
      return current;
    } catch (const std::exception& e) {
      return std::make_exception_ptr(TaskError(function_name, type_name, e.what(), node, current));
    } catch (...) {
      return std::make_exception_ptr(TaskError(function_name, type_name, "", node, current));
    }
  } catch (...) {
    return current;
  }
}

// ---- actors ----

std::shared_ptr<ActorCore> new_actor(RuntimeCore* rt, const ActorOptions& options,
                                     const std::type_info& type, const char* type_name) {
  if (options.max_concurrency < 1) {
    throw Error(ErrorCode::kInvalidArgument, "max_concurrency must be >= 1");
  }
  ResourceRequest request =
      make_request(options.num_cpus, options.num_gpus, options.memory, options.gpu_memory,
                   options.resources);
  const std::string reason = rt->scheduler().infeasible_reason(request);
  const std::string name = demangle(type_name);
  if (!reason.empty()) {
    throw InfeasibleError("infeasible actor " + name + ": " + reason + "; no node can ever run it");
  }
  ActorId id;
  id.owner = rt->owner();
  id.sequence = rt->reserve_ids(1);
  auto actor = std::make_shared<ActorCore>(rt, id, name, type, options, std::move(request));
  rt->actors().add(actor);
  return actor;
}

void submit_actor_creation(ActorCore* actor, TaskRecord* task) noexcept {
  (void)actor;
  task->actor_creation = true;
  submit(task);
}

void submit_actor_call(ActorCore* actor, TaskRecord* task) noexcept {
  actor->enqueue_call(task);
  submit(task);
}

void set_actor_instance(ActorCore* actor, void* instance, void (*deleter)(void*)) noexcept {
  actor->set_instance(instance, deleter);
}

void actor_creation_failed(ActorCore* actor, const std::exception_ptr& error) noexcept {
  actor->creation_failed(error);
}

void* actor_instance(ActorCore* actor) noexcept { return actor->instance(); }
RuntimeCore* actor_runtime(ActorCore* actor) noexcept { return actor->runtime(); }
const ActorId& actor_id(ActorCore* actor) noexcept { return actor->id(); }
const std::string& actor_type_name(ActorCore* actor) noexcept { return actor->type_name(); }
void actor_handle_acquired(ActorCore* actor) noexcept { actor->handle_acquired(); }
void actor_handle_released(ActorCore* actor) noexcept { actor->handle_released(); }
void kill_actor(ActorCore* actor) noexcept { actor->kill("was killed"); }

std::shared_ptr<ActorCore> find_named_actor(RuntimeCore* rt, const std::string& name,
                                            const std::type_info& type) {
  return rt->actors().find(name, type);
}

}  // namespace prism::internal
