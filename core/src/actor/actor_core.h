// ActorCore — one actor: its instance, mailbox, resources and life cycle.
//
// Life: created (constructor task pending) -> alive -> dead. Method calls enter the mailbox in
// submission order; a call runs once its arguments are ready and every call before it has
// started. Calls are run by "drain" jobs on scheduler threads: one at a time, or up to
// max_concurrency drains at once (or by a waiting caller, below). A call is taken from the
// mailbox only under mu_ and only while running_ < max_concurrency, so callers and drains never
// run more at once than that, and take calls in mailbox order. The actor holds its Allocation from construction until it is
// finalized: killed, its constructor (or one of its arguments) failed, the runtime shut down, or
// (unnamed actors) its last handle went away with nothing queued. Finalizing destroys the
// instance (outside any lock) and returns the resources. A killed actor's name is free at once.
//
// Its CPU is one CpuLease shared by its running calls: when every running call is blocked in
// get()/wait(), the scheduler lends it to tasks (never to another actor) until a call goes on.
//
// A caller that waits for a call's result without a deadline runs the call on its own thread
// (run_here) when the call is next in the mailbox and nothing of the actor runs, as a blocked
// parent runs a task it waits for: a caller waiting for each result then pays no hand-over
// between threads. Only for actors that hold nothing a thread would have to lend or make current
// (no CPU, no GPU) and run one call at a time. A drain lingering for the next call leaves such a
// call a moment to its caller (caller_runs_) before it takes it.
//
// Handles (handles_): the live HandleTokens, plus handles counted for a caller that has not
// adopted them yet (find_named_actor, import_actor). The decision "no handle left: dead" and
// finalized_ are made together under mu_, and once finalized_ is set no handle is taken any more
// (try_acquire_handle refuses): a proxy still reachable while its last handle goes is never
// handed out again.
//
// Counts (ready_calls_, taken_calls_): every call made ready is taken from the mailbox once, by a
// drain or a caller, or dropped by die_locked; the lingering drain reads "ready != taken" as
// "something to start" (a hint: it looks again under mu_).
//
// The inbox (inbox_), for actors that run one call at a time: a call whose arguments are all
// ready when it is submitted enters without mu_, pushed on a lock-free stack. Whoever holds mu_
// moves the stack into the mailbox, oldest first, before it puts a call there or finds the
// mailbox empty (take_inbox_locked, absorb_locked): the mailbox's order is the order of
// submission. The submitter then takes mu_ only if no drain is counted (drains_seen_: drains_
// as last written); else that drain will look. No lost call: every change of drains_ is
// published (seq_cst) before its writer looks at the inbox (a seq_cst load), and the submitter
// pushes (seq_cst) before it reads drains_seen_; so either the submitter sees no drain and claims
// one itself, or the drain that stops being counted finds the call (claim_drain_locked absorbs
// first; a drain that finds one goes on). Death: dead_ is set (seq_cst) before die_locked takes
// the inbox, and a submitter reads it after its push; one that finds it set, or that takes mu_
// and finds the actor dead (finalized when its last handle went: a caller holds the core, not a
// handle), fails what is left in the inbox itself (fail_inbox). absorb_locked never takes a dead
// actor's inbox.
//
// Thread-safe: every public method may be called from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <string>
#include <typeinfo>

#include "prism/internal/thread_annotations.h"
#include "prism/internal/ids.h"
#include "prism/internal/task_record.h"
#include "prism/options.h"
#include "prism/internal/runtime_hooks.h"
#include "scheduler/job.h"
#include "scheduler/resources.h"

namespace prism::internal {

class RuntimeCore;
struct Job;

class ActorCore : public std::enable_shared_from_this<ActorCore> {
 public:
  ActorCore(RuntimeCore* rt, ActorId id, std::string type_name, const std::type_info& type,
            ActorOptions options, ResourceRequest request);
  ~ActorCore();
  ActorCore(const ActorCore&) = delete;
  ActorCore& operator=(const ActorCore&) = delete;

  RuntimeCore* runtime() const noexcept { return rt_; }
  RuntimeRef runtime_ref() const noexcept { return rt_ref_; }
  const ActorId& id() const noexcept { return id_; }
  const std::string& type_name() const noexcept { return type_name_; }
  const std::type_info& type() const noexcept { return *type_; }
  const std::string& name() const noexcept { return options_.name; }
  void* instance() const noexcept { return instance_; }
  const ActorOptions& options() const noexcept { return options_; }
  const ResourceRequest& request() const noexcept { return request_; }

  // Cluster mode: the actor was placed on another node under the cluster link's number `key`
  // (instead of running its constructor here). It holds nothing here; its calls are forwarded
  // there in submission order as their arguments become ready (ClusterLink::forward_actor_call),
  // and killing or dropping it here stops it there.
  void become_remote(uint64_t key) noexcept;
  // Set at creation by the typed code (null for proxies of imported handles).
  void set_handle_ops(const ActorHandleOps* ops) noexcept {
    handle_ops_.store(ops, std::memory_order_release);
  }
  const ActorHandleOps* handle_ops() const noexcept {
    return handle_ops_.load(std::memory_order_acquire);
  }

  // Submission (by the templates, through the hooks): the call enters the mailbox, and is
  // dispatched (on_call_ready) once its arguments are ready; at once, under the same lock, if
  // they are. The call holds its submitter's guard (TaskRecord::release_guard) until then.
  void submit_call(TaskRecord* call) noexcept;
  // Dispatch: the task's arguments are ready.
  void on_call_ready(TaskRecord* call) noexcept;
  void on_create_ready(TaskRecord* create) noexcept;
  // Its constructor will never run (`error`: a failed argument, or the cluster link found nowhere
  // it could be built): `create` fails with it, the actor dies, and is finalized once its
  // handles are gone. Instead of building it or placing it (ClusterLink::offer_actor may call it).
  void refuse_creation(TaskRecord* create, std::exception_ptr error) noexcept;
  // Scheduler jobs.
  void run_creation(Job& job) noexcept;
  void drain() noexcept;
  // A caller about to wait, without a deadline, for `result`: if an actor call produces it and
  // is this actor's next call with nothing of the actor running, runs it on the calling thread
  // and returns true (the result is then done); else false, changing nothing.
  static bool run_producer_here(ObjectEntry* result) noexcept;

  // From the constructor task.
  void set_instance(void* instance, void (*deleter)(void*)) noexcept;
  void creation_failed(const std::exception_ptr& error) noexcept;

  void handle_acquired() noexcept;
  void handle_released() noexcept;
  // handle_acquired(), unless the actor is already finalized (its last handle went, or it was
  // killed and has stopped): then false, changing nothing. For a proxy found again by the cluster
  // link, which must not hand out one that is being torn down.
  bool try_acquire_handle() noexcept;
  // Stops the actor; `why` ends up in the ActorDiedError of calls that will not run.
  void kill(const std::string& why) noexcept;
  // After the scheduler stopped: destroys what is left (shutdown only).
  void finalize_now() noexcept;

 private:
  enum class State { kCreating, kAlive, kDead };

  void die_locked(std::exception_ptr error, std::vector<TaskRecord*>* to_fail)
      PRISM_REQUIRES(mu_);
  // True if a drain job should start now (counted in drains_); the caller then calls
  // start_drain() after releasing mu_.
  bool claim_drain_locked() PRISM_REQUIRES(mu_);
  // Moves the inbox into the mailbox, oldest first.
  void take_inbox_locked() PRISM_REQUIRES(mu_);
  // take_inbox_locked() where the mailbox is empty (the inbox holds only later calls), unless the
  // actor is dead.
  void absorb_locked() PRISM_REQUIRES(mu_);
  // Fails the calls left in a dead actor's inbox (a submitter that pushed after the death).
  void fail_inbox() noexcept PRISM_EXCLUDES(mu_);
  void set_drains_locked(int drains) PRISM_REQUIRES(mu_) {
    drains_ = drains;
    drains_seen_.store(drains, std::memory_order_seq_cst);
  }
  // The call's arguments are ready: it may start once it is the front. Returns
  // claim_drain_locked().
  bool mark_ready_locked(TaskRecord* call) PRISM_REQUIRES(mu_);
  void start_drain() noexcept;
  // A drain whose mailbox ran empty may wait a few microseconds for the next call (lock released
  // meanwhile); true if it waited (the caller looks at the mailbox again).
  bool linger_for_next_call() PRISM_REQUIRES(mu_);
  // run_producer_here for one of this actor's calls (`call` is only compared, never read, unless
  // it is the mailbox's front).
  bool run_here(const TaskRecord* call) noexcept;
  bool should_finalize_locked() PRISM_REQUIRES(mu_);
  void finalize() noexcept;
  void fail_all(const std::vector<TaskRecord*>& calls) noexcept;

  RuntimeCore* const rt_;
  const RuntimeRef rt_ref_;
  const ActorId id_;
  const std::string type_name_;
  const std::type_info* const type_;
  const ActorOptions options_;
  const ResourceRequest request_;

  Mutex mu_;
  State state_ PRISM_GUARDED_BY(mu_) = State::kCreating;
  bool creating_ PRISM_GUARDED_BY(mu_) = true;  // the constructor task has not finished
  bool finalized_ PRISM_GUARDED_BY(mu_) = false;
  std::deque<TaskRecord*> mailbox_ PRISM_GUARDED_BY(mu_);
  // Read by a lingering drain while callers write them: a cache line of their own.
  alignas(64) std::atomic<uint32_t> ready_calls_{0};  // calls made ready so far
  std::atomic<uint32_t> taken_calls_{0};  // calls taken from the mailbox, or dropped, so far
  std::atomic<bool> caller_runs_{false};  // a caller ran a call itself since a drain last had to
  // Written once at construction: calls may run on their callers' threads (run_here).
  const bool runs_on_callers_ =
      options_.max_concurrency == 1 && request_.cpu == 0 && request_.gpu == 0;
  // Calls pushed without mu_, newest first, linked by next_in_queue (see the file comment).
  alignas(64) std::atomic<TaskRecord*> inbox_{nullptr};
  std::atomic<int> drains_seen_{0};  // drains_, as last written (set_drains_locked)
  std::atomic<bool> dead_{false};    // state_ is kDead (set before die_locked takes the inbox)
  // Drain jobs scheduled or running, callers running a call. Written by set_drains_locked only.
  int drains_ PRISM_GUARDED_BY(mu_) = 0;
  int running_ PRISM_GUARDED_BY(mu_) = 0;  // calls running (on drains or their callers)
  int handles_ PRISM_GUARDED_BY(mu_) = 0;
  std::exception_ptr death_ PRISM_GUARDED_BY(mu_);
  // Written once by the constructor (before the actor is alive), freed by finalize().
  uint64_t remote_key_ PRISM_GUARDED_BY(mu_) = 0;  // non-zero: the actor lives on another node
  void* instance_ = nullptr;
  // Set by the creating thread just after the actor is in the directory (a lookup by name may
  // see it before: null then).
  std::atomic<const ActorHandleOps*> handle_ops_{nullptr};
  void (*deleter_)(void*) = nullptr;
  Allocation alloc_;  // held for life; written by run_creation before the constructor runs
  CpuLease lease_;    // its CPU, lent while all its running calls are blocked (scheduler's lock)
};

}  // namespace prism::internal
