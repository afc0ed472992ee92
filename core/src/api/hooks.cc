// The non-template entry points of the API templates (prism/internal/runtime_hooks.h).
#include "prism/internal/runtime_hooks.h"

#include <cxxabi.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "actor/actor_core.h"
#include "api/runtime_core.h"
#include "common/log.h"
#include "object_store/spilled_value.h"
#include "api/runtime_registry.h"
#include "common/event.h"
#include "common/spin.h"
#include "prism/errors.h"
#include "worker/exec_context.h"

namespace prism::internal {

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

bool default_feasible(RuntimeCore* rt) noexcept { return rt->scheduler().cpu_slots() > 0; }

void check_default_feasible(RuntimeCore* rt, const std::string& function_name) {
  if (!default_feasible(rt)) {
    // In a cluster another node may have the CPU (dispatch fails the task if it cannot go there).
    if (ClusterLink* l = rt->link()) {
      if (l->infeasible_elsewhere(one_cpu_request(), /*actor=*/false).empty() || l->waits_for_nodes()) return;
    }
    throw InfeasibleError("infeasible task '" + function_name +
                          "': it asks for 1 CPU but the node has less than one; set "
                          ".num_cpus(0) or a fraction, or give the runtime CPUs");
  }
}

ExtrasPtr make_task_extras(RuntimeCore* rt, const TaskOptions& options,
                           const LazyName& function_name) {
  return rt->make_extras(options, function_name);
}

void submit(TaskRecord* task) noexcept {
  RuntimeCore* rt = task->runtime();
  rt->counters().add(TaskCounters::kSubmitted);
  if (task->release_guard()) rt->dispatch(task);
}

void fetch_remote(ObjectEntry* entry, Deadline deadline) {
  // (Null once another reader has fetched it: the entry is kReady.)
  if (RemoteValue* where = entry->remote_value()) where->fetch(entry, deadline);
}

void throw_empty_ref(const char* what) {
  throw Error(ErrorCode::kInvalidArgument, std::string(what) + ": the ObjectRef is empty");
}

void check_arg_ref(const ObjectEntry* entry, RuntimeCore* rt) {
  check_ref(entry, "a task argument");
  // The owner id is the runtime's generation: a ref of an earlier runtime is refused even if
  // the new one lives at the same address.
  if (entry->id().owner != rt->owner()) {
    throw Error(ErrorCode::kInvalidArgument,
                "a task argument is an ObjectRef of another prism::Runtime (or of one that was "
                "shut down); pass the value, or submit the task to the runtime that owns the ref");
  }
}

// ---- blocking ----

namespace {

// Wakes a thread that is not one of a scheduler's: a futex event on its stack.
class EventWaker final : public Waker {
 public:
  void wake() noexcept override { event.set(); }
  Event event;
};

// What a blocked parent may run itself: a plain task of the same runtime whose request fits
// within what the parent holds (see Scheduler::block).
struct ClaimContext {
  RuntimeCore* rt;
  int64_t held_cpu;
  const Allocation* held;
};

bool accept_inline(const TaskRecord& t, const void* p) {
  const auto& c = *static_cast<const ClaimContext*>(p);
  if (t.runtime() != c.rt || t.actor() != nullptr) return false;
  if (t.has_default_request()) return c.held_cpu >= kUnitsPerResource;
  Allocation scratch;
  return c.rt->scheduler().carve(t.extras()->request, c.held_cpu, c.held, &scratch);
}

TaskRecord* claim_producer_of(ObjectEntry* e, int64_t held_cpu) noexcept {
  const ExecContext& ctx = exec_context();
  if (ctx.runtime == nullptr) return nullptr;
  const ClaimContext c{ctx.runtime, held_cpu, ctx.alloc};
  return e->claim_producer(&accept_inline, &c);
}

// One object. The `delivered_` store is the completing thread's last touch of this object and of
// the waker (which may live in the waiter's frame): after it, disarm() may return and the frame go.
class OneWait final : public BlockedWait, public Dependent {
 public:
  explicit OneWait(ObjectEntry* e) noexcept : entry_(e) {}
  bool ready() const noexcept override { return entry_->is_done(); }
  TaskRecord* claim(int64_t held_cpu) noexcept override {
    return claim_producer_of(entry_, held_cpu);
  }
  bool arm(Waker* waker) noexcept override {
    waker_ = waker;
    node_.owner = this;
    armed_ = entry_->add_dependent(&node_);
    return armed_;
  }
  void disarm() noexcept override {
    if (!armed_ || entry_->remove_dependent(&node_)) return;
    // Completed meanwhile: the notification is on its way; wait until it is done with us.
    for (int i = 0; !delivered_.load(std::memory_order_acquire); ++i) {
      if (i > 64) std::this_thread::yield();
    }
  }
  void on_ready(ObjectEntry*) noexcept override {
    waker_->wake();  // the waker may live in the waiter's frame: wake before saying delivered
    delivered_.store(true, std::memory_order_release);
  }

 private:
  ObjectEntry* entry_;
  DepNode node_;
  Waker* waker_ = nullptr;
  bool armed_ = false;
  std::atomic<bool> delivered_{false};
};

// Several objects, of which `needed` must be done.
class SomeWait final : public BlockedWait, public Dependent {
 public:
  SomeWait(const std::vector<ObjectEntry*>& entries, size_t needed)
      : entries_(entries), needed_(static_cast<int64_t>(needed)), nodes_(entries.size()),
        registered_(entries.size(), false) {}
  bool ready() const noexcept override {
    if (armed_) return remaining_.load(std::memory_order_acquire) <= 0;
    int64_t done = 0;
    for (ObjectEntry* e : entries_) done += e->is_done() ? 1 : 0;
    return done >= needed_;
  }
  TaskRecord* claim(int64_t held_cpu) noexcept override {
    for (ObjectEntry* e : entries_) {
      if (e->is_done()) continue;
      if (TaskRecord* t = claim_producer_of(e, held_cpu)) return t;
    }
    return nullptr;
  }
  bool arm(Waker* waker) noexcept override {
    waker_ = waker;
    armed_ = true;
    // Entries done now are counted here; every other one is registered, and one that completes
    // before its registration is counted when add_dependent refuses it.
    std::vector<bool> counted(entries_.size(), false);
    int64_t done = 0;
    for (size_t i = 0; i < entries_.size(); ++i) {
      counted[i] = entries_[i]->is_done();
      done += counted[i] ? 1 : 0;
    }
    remaining_.store(needed_ - done, std::memory_order_relaxed);
    if (needed_ - done <= 0) return false;
    for (size_t i = 0; i < entries_.size(); ++i) {
      if (counted[i]) continue;
      nodes_[i].owner = this;
      if (entries_[i]->add_dependent(&nodes_[i])) {
        registered_[i] = true;
      } else {
        remaining_.fetch_sub(1, std::memory_order_acq_rel);  // completed since it was counted
      }
    }
    return remaining_.load(std::memory_order_acquire) > 0;
  }
  void disarm() noexcept override {
    uint32_t in_flight = 0;
    for (size_t i = 0; i < entries_.size(); ++i) {
      if (registered_[i] && !entries_[i]->remove_dependent(&nodes_[i])) ++in_flight;
    }
    for (int i = 0; delivered_.load(std::memory_order_acquire) < in_flight; ++i) {
      if (i > 64) std::this_thread::yield();
    }
  }
  void on_ready(ObjectEntry*) noexcept override {
    if (remaining_.fetch_sub(1, std::memory_order_acq_rel) == 1) waker_->wake();
    // Last touch: after this the waiter may return and its frame (this, the waker) go.
    delivered_.fetch_add(1, std::memory_order_release);
  }

 private:
  const std::vector<ObjectEntry*>& entries_;
  const int64_t needed_;
  std::vector<DepNode> nodes_;
  std::vector<bool> registered_;
  Waker* waker_ = nullptr;
  bool armed_ = false;
  std::atomic<int64_t> remaining_{0};
  std::atomic<uint32_t> delivered_{0};
};

// Blocks until `wait` is ready or the deadline: inside a task through its scheduler (which runs
// what it waits for, lends the task's CPU or helps), elsewhere on an event. Returns ready().
bool block_on(BlockedWait& wait, Deadline deadline) {
  if (Scheduler* s = Scheduler::current(); s != nullptr && exec_context().task != nullptr) {
    return s->block(wait, deadline);
  }
  EventWaker waker;
  if (wait.arm(&waker)) waker.event.wait_until(deadline);
  wait.disarm();
  return wait.ready();
}

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
  // An actor's next call, with nothing of the actor running: run it here (the waiting thread has
  // nothing else to do). Not under a deadline: a call that runs cannot be left when it passes.
  if (deadline == kNoDeadline && entry->produced_by_actor_call() && !entry->is_done()) {
    ActorCore::run_producer_here(entry);
  }
  // A result that is a few microseconds away is cheaper to spin for than to sleep for, but a
  // spin that does not pay takes a core from the workers: spin only while spins keep paying,
  // and only while some core is not running a task.
  if (!entry->is_done() && should_spin() && Scheduler::has_idle_core()) {
    spin_paid(spin_for(kSpinBeforeBlock, [entry] { return entry->is_done(); }));
  }
  if (!entry->is_done()) {
    OneWait wait(entry);
    if (!block_on(wait, deadline)) throw_timeout("prism::get");
  }
  if (entry->state() == ObjState::kFailed) std::rethrow_exception(entry->error());
}

bool await_all(const std::vector<ObjectEntry*>& entries, Deadline deadline) {
  // The last one not done: tasks mostly finish in the order they were queued, so it is usually
  // the last entry, found at once.
  size_t last = entries.size();
  while (last > 0 && entries[last - 1]->is_done()) --last;
  if (last == 0) return true;
  // On a thread that is not running a task, first that one alone: once it is done the others
  // mostly are too, and the wait below registers with the few left instead of with every entry
  // (each registration is a lock on an entry, and each notification an atomic on the waiter's
  // shared count, on the completing threads' hot path). At most one wake-up more than a single
  // wait. (A task's wait stays one: its scheduler runs the producers of any of them meanwhile.)
  if (Scheduler::current() == nullptr || exec_context().task == nullptr) {
    OneWait wait(entries[last - 1]);
    if (!block_on(wait, deadline)) return false;
    --last;
  }
  std::vector<ObjectEntry*> pending;
  for (size_t i = 0; i < last; ++i) {
    if (!entries[i]->is_done()) pending.push_back(entries[i]);
  }
  if (pending.empty()) return true;
  SomeWait wait(pending, pending.size());
  return block_on(wait, deadline);
}

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
  if (num_ready == entries.size()) {
    await_all(entries, deadline);
  } else {
    SomeWait wait(entries, num_ready);
    block_on(wait, deadline);
  }
  for (size_t i = 0; i < entries.size(); ++i) done[i] = entries[i]->is_done();
  return done;
}

// ---- objects ----

std::shared_ptr<void> reserve_put(RuntimeCore* rt, size_t bytes, bool* full) {
  check_accepting(rt);
  if (bytes < kInlineObjectBytes) return nullptr;
  std::shared_ptr<void> token = rt->store().reserve(bytes, /*enforce_capacity=*/true);
  if (!token && full != nullptr) {
    *full = true;
    return nullptr;
  }
  if (!token) {
    throw ObjectStoreFullError("prism::put: an object of " + std::to_string(bytes) +
                               " bytes does not fit in the object store (" +
                               std::to_string(rt->store().used()) + " of " +
                               std::to_string(rt->store().capacity()) +
                               " bytes in use); free refs or raise object_store_bytes");
  }
  return token;
}

void spill_put(RuntimeCore* rt, ObjectEntry* entry, const std::string& bytes,
               void (*materialize)(ObjectEntry*, std::string_view)) {
  std::string path;
  try {
    path = rt->store().spill_file(bytes);
  } catch (const ObjectStoreFullError& e) {
    throw ObjectStoreFullError("prism::put: an object of " + std::to_string(bytes.size()) +
                               " bytes does not fit in the object store (" +
                               std::to_string(rt->store().used()) + " of " +
                               std::to_string(rt->store().capacity()) + " bytes in use), and " +
                               e.what());
  }
  auto spilled = std::make_shared<SpilledValue>(rt->store_ptr(), std::move(path), bytes.size());
  spilled->materialize = materialize;
  entry->complete_remote(std::move(spilled));
}

std::shared_ptr<void> reserve_result(size_t bytes, bool* full) noexcept {
  RuntimeCore* rt = exec_context().runtime;
  if (rt == nullptr) return nullptr;
  try {
    std::shared_ptr<void> token = rt->store().reserve(bytes, /*enforce_capacity=*/true);
    if (!token) *full = true;
    return token;
  } catch (...) {
    return nullptr;  // out of memory for the token: the object lives on, uncounted
  }
}

std::shared_ptr<RemoteValue> spill_result(const std::string& bytes,
                                          void (*materialize)(ObjectEntry*, std::string_view)) {
  RuntimeCore* rt = exec_context().runtime;
  if (rt == nullptr) return nullptr;
  std::string path;
  try {
    path = rt->store().spill_file(bytes);
  } catch (const std::exception& e) {
    PRISM_LOG(kWarning) << "a task result of " << bytes.size()
                        << " bytes is kept in memory beyond the object store's capacity: "
                        << e.what();
    return nullptr;
  }
  auto spilled = std::make_shared<SpilledValue>(rt->store_ptr(), std::move(path), bytes.size());
  spilled->materialize = materialize;
  return spilled;
}

std::shared_ptr<void> account_result(size_t bytes) noexcept {
  RuntimeCore* rt = exec_context().runtime;
  if (rt == nullptr) return nullptr;
  try {
    return rt->store().reserve(bytes, /*enforce_capacity=*/false);
  } catch (...) {
    return nullptr;  // out of memory for the token: the object lives on, uncounted
  }
}

bool cancel(ObjectEntry* entry) noexcept {
  if (entry->is_done()) return false;
  // Failing the object runs its dependents' dispatch: keep their runtime alive meanwhile. A
  // runtime that is gone left no pending object behind.
  RuntimePin pin = try_pin_owner(entry->id().owner);
  if (!pin) return false;
  entry->request_cancel();
  if (entry->complete_error(std::make_exception_ptr(TaskCancelledError(
          "the task producing object " + entry->id().to_string() + " was cancelled")))) {
    return true;
  }
  // Completed meanwhile: by the task itself (a value: too late to cancel), or by the runtime
  // failing the task because it saw this cancel request (cancelled after all).
  if (entry->state() != ObjState::kFailed) return false;
  try {
    std::rethrow_exception(entry->error());
  } catch (const TaskCancelledError&) {
    return true;
  } catch (...) {
    return false;
  }
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

std::string demangle_type_name(const char* mangled) {
  // The timeline asks for the names of lambdas and functors on every run it records: each thread
  // keeps its recent ones, by the address of the typeid name (static storage, one per type).
  struct Cached {
    const char* mangled;
    std::string name;
  };
  thread_local std::vector<Cached> cache;
  for (const Cached& c : cache) {
    if (c.mangled == mangled) return c.name;
  }
  std::string name = demangle(mangled);
  constexpr size_t kCached = 16;
  if (cache.size() == kCached) cache.erase(cache.begin());
  cache.push_back({mangled, name});
  return name;
}

namespace {
// The text of an exception not derived from std::exception, where it has one: a thrown string's
// characters, a number's value.
std::string describe_thrown(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const char* s) {
    return s != nullptr ? s : "";
  } catch (const std::string& s) {
    return s;
  } catch (const std::string_view& s) {
    return std::string(s);
  } catch (bool v) {
    return v ? "true" : "false";
  } catch (char v) {
    return std::string(1, v);
  } catch (int v) {
    return std::to_string(v);
  } catch (unsigned v) {
    return std::to_string(v);
  } catch (long v) {
    return std::to_string(v);
  } catch (unsigned long v) {
    return std::to_string(v);
  } catch (long long v) {
    return std::to_string(v);
  } catch (unsigned long long v) {
    return std::to_string(v);
  } catch (double v) {
    return std::to_string(v);
  } catch (float v) {
    return std::to_string(v);
  } catch (...) {
  }
  return "(no message: the exception is not a std::exception)";
}
}  // namespace

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
      return std::make_exception_ptr(
          TaskError(function_name, type_name, describe_thrown(current), node, current));
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
  if (options.max_restarts < -1 || options.max_task_retries < -1) {
    throw Error(ErrorCode::kInvalidArgument,
                "max_restarts and max_task_retries must be >= 0 (or -1 for no limit)");
  }
  ResourceRequest request =
      make_request(options.num_cpus, options.num_gpus, options.memory, options.gpu_memory,
                   options.resources);
  std::string reason = rt->scheduler().infeasible_reason(request);
  const std::string name = demangle(type_name);
  // In a cluster another node may hold it (if its constructor's arguments can travel: else its
  // creation fails when it is placed).
  if (ClusterLink* l = rt->link(); !reason.empty() && l != nullptr) {
    const std::string elsewhere = l->infeasible_elsewhere(request, /*actor=*/true);
    reason = elsewhere.empty() ? std::string() : "on this node " + reason + "; " + elsewhere;
  }
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

void submit_actor_call(ActorCore* actor, TaskRecord* task) noexcept { actor->submit_call(task); }

void set_actor_instance(ActorCore* actor, void* instance, void (*deleter)(void*)) noexcept {
  actor->set_instance(instance, deleter);
}

void actor_creation_failed(ActorCore* actor, const std::exception_ptr& error) noexcept {
  actor->creation_failed(error);
}

void* actor_instance(ActorCore* actor) noexcept { return actor->instance(); }
RuntimeRef actor_runtime(ActorCore* actor) noexcept { return actor->runtime_ref(); }
const ActorId& actor_id(ActorCore* actor) noexcept { return actor->id(); }
const std::string& actor_type_name(ActorCore* actor) noexcept { return actor->type_name(); }
void actor_handle_acquired(ActorCore* actor) noexcept { actor->handle_acquired(); }
void actor_handle_released(ActorCore* actor) noexcept {
  // After its runtime is gone the actor was finalized by the shutdown: nothing to do.
  RuntimePin pin = try_pin_runtime(actor->runtime_ref());
  if (pin) actor->handle_released();
}
void kill_actor(ActorCore* actor) noexcept {
  RuntimePin pin = try_pin_runtime(actor->runtime_ref());
  if (pin) actor->kill("was killed");
}

std::shared_ptr<ActorCore> find_named_actor(RuntimeCore* rt, const std::string& name,
                                            const std::type_info& type) {
  ClusterLink* link = rt->link();
  std::shared_ptr<ActorCore> found;
  if (link == nullptr || rt->role() != ClusterRole::kNode) {
    found = rt->actors().find(name, type);
  } else {
    // On a node: its own actors first, then the driver's (named actors are cluster-wide).
    try {
      found = rt->actors().find(name, type);
    } catch (const Error&) {
      return link->find_named_actor(name, type);  // (counted there)
    }
  }
  found->handle_acquired();  // (a named actor is not finalized for lack of handles)
  return found;
}

void set_actor_handle_ops(ActorCore* actor, const ActorHandleOps* ops) noexcept {
  actor->set_handle_ops(ops);
}

}  // namespace prism::internal
