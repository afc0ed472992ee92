// prism/internal/task_record.h — a submitted task, from submission until it has run.
//
// A TaskRecord is allocated once per call (with its callable and arguments inline in the
// derived TaskImpl), waits for its arguments through one DepNode per pending argument, is
// handed to the scheduler when the last argument is ready, runs once (or again on a retry),
// completes its result entries and is deleted. One party owns it at a time: the submitter until
// the guard count drops, then the dependency that completes last, then the scheduler's queue,
// then the thread that runs it.
//
// The one exception is a queued task claimed by a blocked parent (get() on its result runs it
// inline, see Scheduler::block): the queue still holds the pointer while the parent runs it.
// run_state_ settles who deletes it:
//   kQueued   set by mark_queued() before the task is published in a scheduler queue, cleared
//             by take_from_queue() when a consumer takes it out;
//   kClaimed  the right to run (or fail) the task, taken once: by take_from_queue() (the queue's
//             consumer) or by try_claim() (a parent, only while kQueued);
//   kRunDone  set by release_run() once the claimant has run or failed it.
// The record is deleted by whichever of release_run() and take_from_queue() comes second, so a
// claimed record stays valid for the queue, and the queue's consumer skips it.
//
// Thread-safe: on_ready may race with itself and with the submitter's registration; the
// run-state calls are atomic; everything else is called by the current owner only.
#pragma once

#include <atomic>
#include <cstdint>
#include <exception>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "prism/internal/ids.h"
#include "prism/internal/object_entry.h"
#include "prism/internal/small_pool.h"

namespace prism::internal {

class ActorCore;
class RuntimeCore;

// Resources in integer units: CPU and GPU in 1/10000 (so 0.5 + 0.5 == 1 exactly), memory in
// bytes, custom resources in 1/10000.
inline constexpr int64_t kUnitsPerResource = 10000;

struct ResourceRequest {
  int64_t cpu = 0;
  int64_t gpu = 0;
  int64_t memory = 0;
  int64_t gpu_memory = 0;  // bytes on each granted GPU
  std::vector<std::pair<std::string, int64_t>> custom;

  bool empty() const {
    return cpu == 0 && gpu == 0 && memory == 0 && gpu_memory == 0 && custom.empty();
  }
};

// Converts user amounts to units; throws prism::Error(kInvalidArgument) for negative, NaN or
// infinite amounts, for GPU amounts above 1 that are not whole, and for gpu_memory without GPUs.
ResourceRequest make_request(double cpus, double gpus, int64_t memory, int64_t gpu_memory,
                             const std::vector<std::pair<std::string, double>>& custom);

// The default request: one CPU.
const ResourceRequest& one_cpu_request() noexcept;

// Options that most tasks do not have, allocated only when a call sets one.
struct ResourceShape;  // the scheduler's queue for one request (scheduler/resource_shape.h)
struct VariantRun;     // a heterogeneous task's variants and choice (variant_run.h)

struct TaskExtras {
  std::string name;
  ResourceRequest request;
  ResourceShape* shape = nullptr;  // request's interned shape; null: the per-task path
  bool default_request = true;
  int retries_left = 0;
  bool retry_exceptions = false;
  // A heterogeneous task (prism/variants.h): its variants; request and shape are the chosen
  // variant's once the runtime dispatched it.
  std::shared_ptr<VariantRun> variant;
};

// A task's extras: its own (freed with the task), or one shared by every task of a request shape
// that sets no other option (owned by the scheduler's ResourceShape, never written: a shared
// record has no retries to count down). Tagged in the pointer's low bit to keep tasks small.
class ExtrasPtr {
 public:
  ExtrasPtr() noexcept = default;
  ExtrasPtr(std::nullptr_t) noexcept {}  // NOLINT: as unique_ptr
  explicit ExtrasPtr(std::unique_ptr<TaskExtras> own) noexcept
      : bits_(reinterpret_cast<uintptr_t>(own.release())) {}
  static ExtrasPtr shared(TaskExtras* x) noexcept {
    ExtrasPtr e;
    e.bits_ = reinterpret_cast<uintptr_t>(x) | kShared;
    return e;
  }
  ExtrasPtr(ExtrasPtr&& o) noexcept : bits_(std::exchange(o.bits_, 0)) {}
  ExtrasPtr& operator=(ExtrasPtr&& o) noexcept {
    if (this != &o) {
      reset();
      bits_ = std::exchange(o.bits_, 0);
    }
    return *this;
  }
  ExtrasPtr(const ExtrasPtr&) = delete;
  ExtrasPtr& operator=(const ExtrasPtr&) = delete;
  ~ExtrasPtr() { reset(); }

  TaskExtras* get() const noexcept { return reinterpret_cast<TaskExtras*>(bits_ & ~kShared); }
  TaskExtras* operator->() const noexcept { return get(); }
  explicit operator bool() const noexcept { return bits_ != 0; }
  bool is_shared() const noexcept { return (bits_ & kShared) != 0; }

 private:
  static constexpr uintptr_t kShared = 1;
  void reset() noexcept {
    if (bits_ != 0 && !is_shared()) delete get();
    bits_ = 0;
  }
  uintptr_t bits_ = 0;
};

class TaskRecord : public Dependent {
 public:
  PRISM_SMALL_POOL_ALLOCATED  // made on the caller, freed on a worker: small_pool.h
  TaskRecord(const TaskRecord&) = delete;
  TaskRecord& operator=(const TaskRecord&) = delete;
  virtual ~TaskRecord();

  // Runs the task: resolves arguments, invokes, completes the results. Returns null on success
  // or the exception the user's code threw (the results are then NOT completed: the caller
  // decides between a retry and fail()).
  virtual std::exception_ptr run() noexcept = 0;
  // Completes every result with `error` (already converted for the user, e.g. a TaskError).
  virtual void fail(const std::exception_ptr& error) noexcept = 0;
  // True if any result was cancelled with prism::cancel.
  virtual bool cancel_requested() const noexcept = 0;
  // The function's name for errors and the timeline: .name(), else the registered name.
  virtual std::string function_name() const = 0;
  // The GPU of this node holding most of the task's argument bytes, -1 if none: a GPU task runs
  // there when it has room (prism/internal/device_affinity.h). Called once the task is queued.
  virtual int preferred_gpu() const noexcept { return -1; }

  // --- cluster mode (prism/internal/remote_call.h) ---
  // A task that may run on another node (a registered function with serializable parameters
  // and result) writes its registered name and its serialized arguments, which must all be
  // ready, and returns true; any other task returns false: it runs where it was submitted.
  // With `transfer`, each argument given as a ref to a value of exactly the parameter's type is
  // offered to it first; what it takes by reference is left out of `args`.
  virtual bool encode_remote(std::string* /*function*/, std::string* /*args*/,
                             ArgTransfer* /*transfer*/ = nullptr) const {
    return false;
  }
  // Completes the results from the serialized result of a remote run. Throws prism::Error
  // (kInvalidArgument) for a malformed payload; the caller then fails the task.
  virtual void complete_remote(std::string_view /*payload*/) {}
  // For a task with one serializable result: what builds that result from its bytes, so that
  // the result may stay on the node that ran it (complete_remote_value); else null.
  virtual RemoteMaterializer remote_materializer() const noexcept { return nullptr; }
  // Completes the one result as living on another node (ObjectEntry::complete_remote). False
  // if it was already completed (cancelled) or the task has no such result.
  virtual bool complete_remote_value(std::shared_ptr<RemoteValue> /*where*/) noexcept {
    return false;
  }
  // For a num_returns task whose N results are each serializable: N (each result may then stay
  // on the node that ran it, as one object of its own); else 0.
  virtual size_t remote_elements() const noexcept { return 0; }
  // What builds result `i` of such a task from its bytes (null if i >= remote_elements()).
  virtual RemoteMaterializer remote_element_materializer(size_t /*i*/) const noexcept {
    return nullptr;
  }
  // Completes such a task's results from a remote run that wrote them one by one: result i is
  // `where[i]` when that is not null (it stayed on the node), else the next `sizes[i]` bytes of
  // `inline_bytes`. Throws prism::Error (kInvalidArgument) for malformed bytes; the caller then
  // fails the task.
  virtual void complete_remote_elements(std::string_view /*inline_bytes*/,
                                        const uint64_t* /*sizes*/,
                                        std::shared_ptr<RemoteValue>* /*where*/) {}

  // Dependent: one argument became ready.
  void on_ready(ObjectEntry* entry) noexcept final;

  // --- registration, by the submitter (template code) ---
  // Reserves DepNodes for `n` possibly pending arguments (allocated beyond the first)...
  void reserve_deps(size_t n);
  // ... or gives the record `capacity - 1` DepNodes beyond its own one that live as long as it
  // (the derived record's: no allocation). Once, before the first add_dep.
  void use_deps(DepNode* extra, uint32_t capacity) noexcept {
    extra_deps_ = extra;
    deps_capacity_ = capacity;
    deps_owned_ = false;
  }
  // Adds an argument; if it is pending, the task waits for it.
  void add_dep(ObjectEntry* entry) noexcept;
  // Drops the submitter's guard; returns true if the task is ready now (the caller dispatches).
  bool release_guard() noexcept { return pending_.fetch_sub(1, std::memory_order_acq_rel) == 1; }
  // Every argument is ready: only the submitter's guard is left (release_guard will return
  // true). Only the submitter may ask, before it releases the guard.
  bool only_guard_left() const noexcept {
    return pending_.load(std::memory_order_acquire) == 1;
  }

  // --- run state (see the class comment) ---
  // Before the task is published in a scheduler queue.
  void mark_queued() noexcept { run_state_.store(kQueued, std::memory_order_release); }
  // By a queue's consumer: true if the caller now owns the task (run or fail it, then
  // release_run()); false if a parent claimed it (the record may be gone: do not touch it).
  bool take_from_queue() noexcept;
  // By a parent blocked on the task's result: true if it may run the task itself.
  bool try_claim() noexcept {
    uint8_t expected = kQueued;
    return run_state_.compare_exchange_strong(expected, kQueued | kClaimed,
                                              std::memory_order_acq_rel);
  }
  bool is_claimed() const noexcept {
    return (run_state_.load(std::memory_order_acquire) & kClaimed) != 0;
  }
  // The owner ran or failed the task: deletes it unless a queue still holds it.
  void release_run() noexcept;
  // The owner gives the task back without running it to the end, to dispatch it again: true if
  // no queue holds it (it was taken from its queue, or never queued), and its run state is then
  // as before it was first queued; false (nothing changed) if a parent claimed it from a queue
  // that still holds it.
  bool try_requeue() noexcept {
    uint8_t expected = kClaimed;
    return run_state_.compare_exchange_strong(expected, 0, std::memory_order_acq_rel);
  }

  // The first argument that failed, if any (its error is the task's error).
  ObjectEntry* failed_dep() const noexcept { return failed_dep_.load(std::memory_order_acquire); }

  RuntimeCore* runtime() const noexcept { return runtime_; }
  TaskId id() const noexcept;
  ActorCore* actor() const noexcept { return actor_; }
  TaskExtras* extras() const noexcept { return extras_.get(); }
  // Its extras are its own (not a request shape's shared record): they may be written.
  bool owns_extras() const noexcept { return extras_ && !extras_.is_shared(); }
  bool has_default_request() const noexcept { return !extras_ || extras_->default_request; }
  // What the task asks for (one CPU unless it said otherwise).
  const ResourceRequest& request() const noexcept {
    return has_default_request() ? one_cpu_request() : extras_->request;
  }

  // Intrusive link for the scheduler's queues and an actor's inbox (owned by whoever queues the
  // task; an actor call is never in a scheduler queue).
  TaskRecord* next_in_queue = nullptr;

 protected:
  TaskRecord(RuntimeCore* runtime, TaskId id, ActorCore* actor, ExtrasPtr extras) noexcept
      : runtime_(runtime), sequence_(id.sequence), actor_(actor), extras_(std::move(extras)) {}

 private:
  static constexpr uint8_t kQueued = 1;
  static constexpr uint8_t kClaimed = 2;
  static constexpr uint8_t kRunDone = 4;

  std::atomic<int32_t> pending_{1};  // pending arguments + the submitter's guard
  std::atomic<uint8_t> run_state_{0};

 public:
  // Actor bookkeeping, guarded by the actor's lock (packed beside pending_: memory per task).
  bool actor_creation = false;  // the constructor task (else a method call)
  bool in_mailbox = false;
  bool actor_ready = false;     // its arguments are ready
  // Retries taken by a task without extras of its own (RuntimeCore::take_retry): it has
  // kDefaultMaxRetries. Written by the task's owner only.
  uint8_t default_retries_used = 0;

 private:
  bool deps_owned_ = false;  // extra_deps_ was allocated by reserve_deps (else: use_deps, or none)
  std::atomic<ObjectEntry*> failed_dep_{nullptr};
  RuntimeCore* runtime_;
  uint64_t sequence_;  // the id's owner is the runtime's
  ActorCore* actor_;
  ExtrasPtr extras_;
  uint32_t deps_used_ = 0;
  uint32_t deps_capacity_ = 1;
  DepNode inline_dep_;
  DepNode* extra_deps_ = nullptr;
};

}  // namespace prism::internal
