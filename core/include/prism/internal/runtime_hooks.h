// prism/internal/runtime_hooks.h — the non-template entry points that the API templates call.
//
// The public headers are templates over user types; everything they need from the runtime goes
// through these few functions, implemented in core/src/api/. Not for users.
//
// Thread-safe: every function may be called from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <typeinfo>
#include <vector>

#include "prism/internal/ids.h"
#include "prism/internal/object_entry.h"
#include "prism/internal/task_record.h"
#include "prism/options.h"

namespace prism::internal {

class RuntimeCore;
class ActorCore;

// A task's function returned and its results are about to be published (the result slots call
// it): a GPU task's profiler range and device timing end here, and with a timeline the run's span
// is recorded now, before whoever waits on the results wakes and submits more (the worker is
// then free for it). Nothing otherwise.
void run_returned() noexcept;

using Clock = std::chrono::steady_clock;
using Deadline = Clock::time_point;
inline constexpr Deadline kNoDeadline = Deadline::max();

template <typename Rep, typename Period>
Deadline deadline_after(std::chrono::duration<Rep, Period> timeout) {
  const auto now = Clock::now();
  if (timeout <= std::chrono::duration<Rep, Period>::zero()) return now;
  if (std::chrono::duration_cast<std::chrono::duration<double>>(timeout).count() >
      std::chrono::duration_cast<std::chrono::duration<double>>(kNoDeadline - now).count()) {
    return kNoDeadline;
  }
  return now + std::chrono::duration_cast<Clock::duration>(timeout);
}

// ---- runtime lifetime ----
// API objects that may outlive their runtime (a TaskCaller made by Runtime::task, an actor's
// handles) name it by a RuntimeRef: a never-freed slot plus the runtime's generation (its owner
// id, unique in the process). A call that needs the runtime pins it first: the pin fails with
// prism::Error(kUnavailable) once the runtime is gone, and a runtime is destroyed (and shutdown
// finishes) only after every pin taken on it was released. A pin costs a store to a per-thread
// slot and a load; pins taken by the runtime's own task threads are free (it is alive then).
struct RuntimeSlot;
struct RuntimeRef {
  RuntimeSlot* slot = nullptr;
  uint64_t generation = 0;
  bool empty() const noexcept { return slot == nullptr; }
};

class RuntimePin {
 public:
  RuntimePin() noexcept = default;
  RuntimePin(RuntimeCore* core, std::atomic<RuntimeSlot*>* hazard) noexcept
      : core_(core), hazard_(hazard) {}
  RuntimePin(RuntimePin&& o) noexcept : core_(o.core_), hazard_(o.hazard_) {
    o.core_ = nullptr;
    o.hazard_ = nullptr;
  }
  RuntimePin& operator=(RuntimePin&&) = delete;
  RuntimePin(const RuntimePin&) = delete;
  ~RuntimePin() {
    if (hazard_ != nullptr) hazard_->store(nullptr, std::memory_order_release);
  }
  RuntimeCore* get() const noexcept { return core_; }
  explicit operator bool() const noexcept { return core_ != nullptr; }

 private:
  RuntimeCore* core_ = nullptr;
  std::atomic<RuntimeSlot*>* hazard_ = nullptr;
};

RuntimeRef runtime_ref(RuntimeCore* rt) noexcept;
// Pins the runtime `ref` names; throws prism::Error(kUnavailable) if it is gone.
RuntimePin pin_runtime(RuntimeRef ref);
// As pin_runtime, but an empty pin instead of the error.
RuntimePin try_pin_runtime(RuntimeRef ref) noexcept;
// The runtime that API calls without an explicit Runtime use: the one running the current task,
// else the global one. Throws prism::Error(kInvalidArgument) if there is none.
RuntimePin pin_current_runtime();

ObjectId next_object_id(RuntimeCore* rt) noexcept;
TaskId next_task_id(RuntimeCore* rt) noexcept;

// Throws if the runtime no longer accepts work (shut down).
void check_accepting(RuntimeCore* rt);
// True if a default task (one CPU) can run on the node.
bool default_feasible(RuntimeCore* rt) noexcept;
// Throws InfeasibleError (naming `function_name`) if the node has no whole CPU (a default task
// could never run).
void check_default_feasible(RuntimeCore* rt, const std::string& function_name);
// A callable's name for error messages, computed only when one is written (finding it can mean
// a registry lookup and demangling: too dear for every submission).
class LazyName {
 public:
  LazyName(std::string (*fn)(const void*), const void* arg) noexcept : fn_(fn), arg_(arg) {}
  explicit LazyName(const std::string& name) noexcept : fn_(&from_string), arg_(&name) {}
  std::string operator()() const { return fn_(arg_); }

 private:
  static std::string from_string(const void* p) { return *static_cast<const std::string*>(p); }
  std::string (*fn_)(const void*);
  const void* arg_;
};
// Validates per-call options, checks feasibility against the node's total resources and
// returns the extras record. `function_name` names the task in errors when options.name is empty.
ExtrasPtr make_task_extras(RuntimeCore* rt, const TaskOptions& options,
                           const LazyName& function_name);
// Hands a registered task to the runtime: drops the submitter's guard and dispatches it if all
// of its arguments are ready. Takes ownership.
void submit(TaskRecord* task) noexcept;

// Blocks until `entry` is done or `deadline` passes. A task that blocks here lends its CPU slot
// back while it waits. Throws TimeoutError on deadline; rethrows the stored error if failed.
void await(ObjectEntry* entry, Deadline deadline);
// Blocks until every one of `entries` is done or `deadline` passes; true if all are done.
// (Neither rethrows an error nor throws on the deadline: the caller looks at each entry.)
bool await_all(const std::vector<ObjectEntry*>& entries, Deadline deadline);
// Blocks until at least `num_ready` of `entries` are done or `deadline` passes; returns which
// are done (entries done at the moment of return).
std::vector<bool> await_some(const std::vector<ObjectEntry*>& entries, size_t num_ready,
                             Deadline deadline);
// Brings the value of a kRemote entry here (RemoteValue::fetch); nothing if it is not kRemote.
void fetch_remote(ObjectEntry* entry, Deadline deadline = kNoDeadline);
// Throws prism::Error(kInvalidArgument) naming `what` when `entry` is null (an empty ref).
[[noreturn]] void throw_empty_ref(const char* what);
inline void check_ref(const ObjectEntry* entry, const char* what) {
  if (entry == nullptr) [[unlikely]] throw_empty_ref(what);
}
// For a task argument: not empty, and made by the runtime `rt` that runs the task (a ref of
// another Runtime, or of an earlier runtime, is an InvalidArgument error).
void check_arg_ref(const ObjectEntry* entry, RuntimeCore* rt);

// Reserves object store space for a put of `bytes`. Returns the token that releases the space
// (null for small objects). When it does not fit: with `full` null, throws
// ObjectStoreFullError; else sets *full and returns null (the caller spills the value:
// spill_put).
std::shared_ptr<void> reserve_put(RuntimeCore* rt, size_t bytes, bool* full = nullptr);
// A put that did not fit: its serialized `bytes` go to a file of the store's spill directory and
// `entry` is done as a spilled value (read back by `materialize` when first read). Throws
// ObjectStoreFullError (naming the capacity and why the spill failed) if the file cannot be
// written.
void spill_put(RuntimeCore* rt, ObjectEntry* entry, const std::string& bytes,
               void (*materialize)(ObjectEntry*, std::string_view));
// Accounts a task result of `bytes` against the store of the runtime running the calling thread's
// task (never refused). Null for small objects or outside tasks.
std::shared_ptr<void> account_result(size_t bytes) noexcept;

// Cancels the task that produces `entry` if it has not finished. Returns true if the entry was
// still pending (it now holds a TaskCancelledError).
bool cancel(ObjectEntry* entry) noexcept;

// Converts the exception currently being handled (call inside catch) into what get() rethrows:
// a TaskError naming `function_name` and this node, or the exception itself if it already is a
// prism::Error raised by Prism (e.g. a failed get inside the task).
std::exception_ptr capture_task_error(const std::string& function_name) noexcept;

// Demangled type name, for messages.
std::string demangle(const char* mangled);
// demangle() of a std::type_info::name() (static storage: cached per thread by its address).
std::string demangle_type_name(const char* typeid_name);

// --- actors ---
std::shared_ptr<ActorCore> new_actor(RuntimeCore* rt, const ActorOptions& options,
                                     const std::type_info& type, const char* type_name);
// Submits the constructor task (which calls set_actor_instance or fails).
void submit_actor_creation(ActorCore* actor, TaskRecord* task) noexcept;
// Enqueues a method call in submission order and submits it. Takes ownership.
void submit_actor_call(ActorCore* actor, TaskRecord* task) noexcept;
void set_actor_instance(ActorCore* actor, void* instance, void (*deleter)(void*)) noexcept;
void* actor_instance(ActorCore* actor) noexcept;
RuntimeRef actor_runtime(ActorCore* actor) noexcept;
const ActorId& actor_id(ActorCore* actor) noexcept;
const std::string& actor_type_name(ActorCore* actor) noexcept;
// Handle counting: an actor without handles (and without a name) stops once its queued calls
// have run.
void actor_handle_acquired(ActorCore* actor) noexcept;
void actor_handle_released(ActorCore* actor) noexcept;
void kill_actor(ActorCore* actor) noexcept;
// What find_named_actor and import_actor return comes with one handle already counted for the
// caller, who adopts it: ActorHandle<T>(core, AdoptHandle{}). (Counted where the actor is found,
// so that no proxy whose last handle is going can be handed out.)
struct AdoptHandle {};
// The named actor, or throws prism::Error(kInvalidArgument) if none (or of another type).
std::shared_ptr<ActorCore> find_named_actor(RuntimeCore* rt, const std::string& name,
                                            const std::type_info& type);

// --- function registry (names for cluster mode and for messages) ---
// A key for a callable: a function pointer's address or a member pointer's bytes.
struct FunctionKey {
  unsigned char bytes[16] = {};
  size_t size = 0;
};
template <typename F>
FunctionKey function_key(const F& f) noexcept {
  FunctionKey k;
  if constexpr (std::is_pointer_v<F> || std::is_member_function_pointer_v<F>) {
    static_assert(sizeof(F) <= sizeof(k.bytes));
    __builtin_memcpy(k.bytes, &f, sizeof(F));
    k.size = sizeof(F);
  }
  return k;
}
// Calls a registered function from serialized arguments (prism/internal/remote_call.h).
using RemoteInvoker = void (*)(const FunctionKey& key, std::string_view args, std::string* result);
// Cluster mode, on the node that holds an actor (prism/actor.h): submits a call of the method
// whose key is `key` on the actor whose ActorHandle<T> is at `handle`, from serialized
// arguments; returns the call's result entry and sets *write to what serializes its value.
// Throws prism::Error(kInvalidArgument) for malformed arguments.
using ActorValueWriter = void (*)(ObjectEntry* entry, std::string* out);
using ActorMethodInvoker = EntryPtr (*)(const FunctionKey& key, void* handle,
                                        std::string_view args, ActorValueWriter* write);
// ... and creates an actor on runtime `rt` from serialized constructor arguments with
// `options`: returns a new ActorHandle<T> (deleted by *drop) and sets *kill to what kills it.
using ActorCtorInvoker = void* (*)(RuntimeRef rt, const ActorOptions& options,
                                   std::string_view args, void (**kill)(void* handle),
                                   void (**drop)(void* handle));
// Cluster mode: an actor handle passed to a task on another node. export_actor (on the sender)
// returns the number the cluster knows the actor by (keeping `typed_handle`, a new
// ActorHandle<T> deleted by `drop`, for calls that arrive from other nodes); import_actor (on
// the receiver) returns a proxy whose calls go to the actor wherever it is (its handle counted,
// see AdoptHandle). Both throw
// prism::Error(kInvalidArgument) outside cluster mode or where the handle cannot travel.
uint64_t export_actor(ActorCore* actor, void* typed_handle, void (*kill)(void*),
                      void (*drop)(void*));
std::shared_ptr<ActorCore> import_actor(uint64_t key, const std::type_info& type,
                                        const char* type_name);
// What untyped code (the cluster module) needs to make, kill and delete an ActorHandle<T> of an
// actor: set once at its creation (prism/actor.h).
struct ActorHandleOps {
  void* (*make)(const std::shared_ptr<ActorCore>& actor);
  void (*kill)(void* handle);
  void (*drop)(void* handle);
};
void set_actor_handle_ops(ActorCore* actor, const ActorHandleOps* ops) noexcept;
// Registers the constructor invoker for one (actor type, argument types) under `key` (from
// static initialization: never throws).
bool register_actor_ctor(const char* key, ActorCtorInvoker invoker) noexcept;
// Registers `key` under `name`. Throws prism::Error(kInvalidArgument) if another callable has
// that name. During static initialization (PRISM_REMOTE) conflicts are recorded instead and
// reported by init(). `invoker` is null for callables that cannot run on another node; `type`
// (the callable's mangled type) makes the cluster's binary fingerprint.
void register_function(const std::string& name, const FunctionKey& key, bool throw_on_conflict,
                       RemoteInvoker invoker = nullptr, const char* type = "",
                       ActorMethodInvoker method_invoker = nullptr);
// The registered name of `key`, or empty.
std::string registered_name(const FunctionKey& key);
// PRISM_VARIANTS (prism/variants.h): registers variant i of the set `set` as the function
// "<set>/<names[i]>" with keys[i] and invokers[i], from static initialization (never throws;
// a set without a name, or a name taken by another callable, is reported by init()).
bool register_variants(const std::string& set, const std::vector<std::string>& names,
                       const FunctionKey* keys, const RemoteInvoker* invokers,
                       const char* type) noexcept;
// Whether every variant of `set` was registered with PRISM_VARIANTS (with an invoker).
bool variants_registered(const std::string& set, const std::vector<std::string>& names);

}  // namespace prism::internal
