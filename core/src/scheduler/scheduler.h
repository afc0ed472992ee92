// Scheduler — one node's local scheduler: worker threads, CPU, resource waits, and what a task
// does while it is blocked in get()/wait().
//
// Work comes in three forms:
//  * Ready tasks with the default request (one CPU, nothing else) go to the lock-free ReadyQueue.
//    A thread holding a CPU slot (one CPU taken from the pool) runs them back to back without a
//    lock and gives the slot back when the queue is empty or when someone wants CPU.
//  * Tasks with any other request go to their shape's lock-free queue (resource_shape.h). A
//    thread granted one allocation of the shape (a lease, itself a job that waited in
//    WaitQueues) runs them back to back, as a slot does, until the queue runs dry or another
//    request waits for what the lease holds.
//  * Jobs: work that waits in WaitQueues (one FIFO per request shape) until its resources are
//    free, then runs on a thread holding its Allocation: leases, actor creation (which keeps its
//    Allocation for the actor's life), tasks of shapes beyond kMaxShapes; and actor mailbox
//    drains, which need no resources.
//  * Resumers: threads whose blocked task can go on and must first take back the CPU it lent.
//
// ---- Hand-off (hand_off()) ----
// A default task made ready by the results of the task a slot loop runs (its body has returned,
// its results are being published) is handed to that thread instead of queued: the loop runs it
// next, with no queue, no wake-up, and its input still in the core's cache (a chain, or a
// stencil's neighbour, runs where its input was made; Tokio's LIFO slot, oneTBB's bypass task).
// A lease loop does the same for a task of its own shape (a chain of GPU tasks stays on the
// thread and device share that made its input, instead of going to another lease's spinner);
// a loop takes only tasks it may run: the slot loop default ones, a lease loop its shape's.
// Invariants: a thread holds at most one handed task, marked queued (a blocked parent may still
// claim it; the loop then skips it, as it skips a claimed task it pops); the loop runs it or
// queues it (to its shape's queue, for a lease loop) before it leaves, whatever the way out (one
// task done, CPU wanted; a lease's yield, failed device or dry queue), and before its thread
// blocks, so no
// handed task waits behind a wait; after kMaxHandOffs in a row the loop takes from the queue,
// so a chain cannot starve what is queued. Tasks made ready by a task run inline inside a
// blocked one, or by an actor call, are queued as before (their thread is in another task).
//
// ---- Blocking inside a task (block()) ----
// Rejected designs: keeping the CPU while blocked deadlocks nested graphs; lending the CPU and
// starting a thread per blocked task (the design this replaces) needs a thread per level of
// nesting, so deep recursion exhausts max_threads and hangs; lending and taking the CPU back
// unconditionally on resume over-subscribes the node. What block() does instead, in order:
//  1. Run what it waits for: if the object's producer is a plain task still queued whose request
//     fits within what the blocked thread holds, claim it (TaskRecord::try_claim) and run it on
//     this thread, inside the parent's holdings (oneTBB's task_group does the same). Never an
//     actor call: calls run on their actor's drain, in order.
//  2. Otherwise lend: the lease's CPU goes back to the pool (lent: free for tasks, never for a
//     long-lived actor, which would keep it), another thread takes it, this one sleeps.
//  3. Where no thread can be had for the work that CPU could run (max_threads reached, or the
//     system refused a thread), a blocked thread is asked to help: it runs one job or one ready
//     task on its own stack, then looks at its wait again.
// On waking, a blocked task takes its CPU back before it goes on: from the pool if it is free,
// else it queues as a resumer. Resumers come before anything else that wants CPU, and slot
// holders give their slot back after their current task while one waits (cpu_wanted_). So the
// CPU held by running tasks never exceeds the node's CPUs, at any time.
//
// ---- The counters and who guards them ----
// Under mu_: pool_ (free, lent and reserved resources), waiting_, jobs_, resumers_, parked_,
// blocked_ (threads asleep in block(), which may be asked to help), blocked_tasks_ (waits in
// block(); while any exists, WaitQueues holds no reservation), workers_, the waking_for_*
// counts, job_spinners_, every Worker's flags and every CpuLease's active/blocked/lent counts.
// Atomics, read without the lock:
//  * holders_: threads holding a CPU slot of the ready loop and not lent (<= cpu_slots_).
//  * spinners_: slot holders spinning on an empty queue before they give the slot back.
//  * cpu_wanted_: some resumer, reservation or waiting head lacks only CPU: slot holders give their
//    slot back after their current task. Written under mu_.
//  * jobs_count_: jobs_.size(), for threads spinning after a job.
//
// ---- No lost wake-up ----
// Ready work: a submitter pushes (the queue's seq_cst size) and then reads holders_ and spinners_
// (seq_cst); a slot holder that gives its slot back decrements holders_ (seq_cst) and then
// re-checks the queue under mu_; a spinner decrements spinners_ and then pops once more. One of
// the two always sees the other: either the submitter sees no free holder and wakes a thread
// under mu_, or the holder sees the task. A holder that gave its slot back while another holder
// spins leaves the queue to the spinner (which pops once more after its spin, and re-checks
// under mu_ after giving its own slot back): two threads would only compete for each task. A
// woken thread is counted in waking_for_ready_ until it looks at the queue, so that one task
// wakes one thread, and a thread that finds more work than it can take passes the wake-up on.
// Submitters read that count too (an atomic, changed only under mu_, seq_cst): holders plus
// threads on their way covering every slot, a push wakes no one. A woken thread stops counting
// (seq_cst) before it re-checks the queue (seq_cst), so it sees any push that saw it counted.
// A spin only polls a hint (ReadyQueue::next_is_filled: the next cell, not the producer's count,
// whose line the producer writes on every push); what decides is the seq_cst re-check
// (maybe_nonempty) once the holder leaves its loop.
// get() outside a task spins for its result only while some core runs no task: a spinning
// holder counts as idle (g_slot_spinners), a holder running a task does not.
// Shaped tasks: see resource_shape.h. A lease holder blocked in get()/wait() stops counting as
// running its shape (and asks for another lease if the queue has tasks), so a blocked holder
// never strands its shape's queue.
// Jobs and resumers are only added and taken under mu_, and every release of resources calls
// distribute_locked(), which serves resumers, grants waiting jobs and wakes threads for what was
// granted. A thread looks at jobs_, the ready queue and stopping_ under mu_ before it parks.
// Sleeping threads wait on their Worker's `signal` futex word: a waker sets it after changing the
// state the sleeper will re-check (under mu_, or the awaited object's state); the sleeper clears it
// under mu_ before re-checking, so a wake-up between the check and the sleep is kept.
//
// ---- Threads ----
// Threads start on demand up to max_threads and never exit before stop(): thread_count() is the
// peak. They run under SCHED_BATCH on Linux (enter_batch_policy in scheduler.cc): a woken worker
// takes a free core but does not preempt, on waking, the thread running where it wakes (often
// the submitter). A thread is woken or started for work only when no parked thread is already on its way
// (waking_for_*), and a thread that cannot be started (max_threads, or std::thread throwing
// EAGAIN) never aborts: the work waits for a thread that finishes, blocked threads help with it,
// and if no thread exists at all the queued tasks fail with a ResourceExhausted error.
//
// Thread-safe: every public method may be called from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "prism/internal/device_support.h"
#include "prism/internal/thread_annotations.h"
#include "prism/internal/runtime_hooks.h"
#include "prism/internal/task_record.h"
#include "scheduler/job.h"
#include "scheduler/ready_queue.h"
#include "scheduler/resource_shape.h"
#include "scheduler/resources.h"
#include "scheduler/wait_queues.h"

namespace prism::internal {

// What runs the work the scheduler hands out (the runtime; a fake in unit tests). Its methods are
// called with no scheduler lock held.
class JobRunner {
 public:
  // A ready default-request task, on a thread holding one CPU slot.
  virtual void run_task(TaskRecord* task) noexcept = 0;
  // A job; its allocation is released after it returns unless the runner moved it away.
  virtual void run_job(Job& job) noexcept = 0;
  // A task claimed by a blocked parent (Scheduler::block step 1), run on the parent's thread
  // within what the parent holds: `held_cpu` CPU units and its current allocation.
  virtual void run_inline(TaskRecord* task, int64_t held_cpu) noexcept = 0;
  // A task that cannot run: no thread exists and none could be started. Fail it with `why`.
  virtual void reject(TaskRecord* task, const std::string& why) noexcept = 0;
  // A lease's holder runs its tasks one after another on the calling thread (run_job, each with
  // `alloc`, the lease's grant) between lease_begin (before the first) and lease_end (after the
  // last, or when the lease moves to another GPU: begun again before the next task). What the
  // tasks share is set up once for them all (the grant's GPUs made current, so that each task's
  // own entry finds them so: DeviceSupport::Saved::kept). `frame` keeps what lease_begin
  // replaced until lease_end. Between the tasks the thread is on those devices: what runs there
  // outside a task (a task failed before it ran, records and arguments destroyed) sees them.
  struct LeaseFrame {
    DeviceSupport* support = nullptr;  // null: nothing entered
    DeviceSupport::Saved saved;
    bool begun = false;  // (the scheduler's: lease_begin called, lease_end not yet)
  };
  virtual void lease_begin(const Allocation& alloc, LeaseFrame* frame) noexcept {
    (void)alloc;
    (void)frame;
  }
  virtual void lease_end(LeaseFrame* frame) noexcept { (void)frame; }

 protected:
  ~JobRunner() = default;
};

// Starts the scheduler's threads. Tests wrap it to make starting fail.
class ThreadStarter {
 public:
  // Throws (std::system_error, as std::thread does with EAGAIN) when no thread can be started.
  virtual std::thread start(std::function<void()> body) = 0;

 protected:
  ~ThreadStarter() = default;
};
ThreadStarter& default_thread_starter() noexcept;

// Someone to wake when a blocked wait may be over (a scheduler thread, or an event for others).
class Waker {
 public:
  virtual void wake() noexcept = 0;

 protected:
  ~Waker() = default;
};

// What a task blocked in get()/wait() waits for; implemented by the waiting code (api/hooks.cc).
class BlockedWait {
 public:
  virtual bool ready() const noexcept = 0;
  // Claims a queued task that this wait needs and that fits within `held_cpu` CPU units and the
  // current task's allocation (step 1 of block()); null if there is none.
  virtual TaskRecord* claim(int64_t held_cpu) noexcept = 0;
  // Asks for waker->wake() once the wait may be over; false if it is over already. Either way
  // disarm() must follow.
  virtual bool arm(Waker* waker) noexcept = 0;
  // Cancels arm(); returns only once no wake-up is in flight any more.
  virtual void disarm() noexcept = 0;

 protected:
  ~BlockedWait() = default;
};

class Scheduler {
 public:
  // `starter`: null for the default (std::thread). `starvation_bound`: see WaitQueues.
  Scheduler(JobRunner* runner, const NodeResources& totals, int max_threads,
            ThreadStarter* starter = nullptr,
            int starvation_bound = WaitQueues::kDefaultStarvationBound);
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Empty if the node could ever run `request`, else why not.
  std::string infeasible_reason(const ResourceRequest& request) const;
  // True if a task of `request` would start now: it fits in what is free, or (a default task) a
  // ready-loop thread idles on an empty queue to take it. Takes the lock (for placement across
  // nodes, not for the local hot path).
  bool fits_now(const ResourceRequest& request) const;
  // CPU slots of this node (whole CPUs): 0 means default tasks can never run here.
  int64_t cpu_slots() const noexcept { return cpu_slots_; }
  // ResourcePool::carve (no lock: it reads only what never changes).
  bool carve(const ResourceRequest& request, int64_t parent_cpu, const Allocation* parent,
             Allocation* child) const PRISM_NO_THREAD_SAFETY_ANALYSIS {
    return pool_.carve(request, parent_cpu, parent, child);
  }

  // Shapes interned by a node at most; requests beyond take the per-task path.
  static constexpr size_t kMaxShapes = 256;
  // The interned shape of `request` (its `infeasible` says whether the node can ever run it),
  // or null once kMaxShapes shapes exist. Lives as long as the scheduler. Lock-free when the
  // calling thread asked for the same request last.
  ResourceShape* shape_for(const ResourceRequest& request);

  // A ready task with the default request.
  void enqueue_ready(TaskRecord* task) noexcept;
  // A ready task with the default request, made ready by the results of `finished`: true if the
  // calling thread runs it next, as `finished`'s slot holder (a hand-off: no queue, no wake-up,
  // and the results it reads are still in this core's cache); false (nothing done) otherwise.
  // Only for the results of the task a slot loop runs (not one run inline inside it), only
  // while the thread has not handed off kMaxHandOffs in a row (the queue is not starved), and
  // not after a long task: the hand-off saves under a microsecond, which matters for short
  // tasks; after a long one the queue's order (oldest first) is worth more (a tree of long adds
  // would otherwise run depth-first, leaving a thread idle). "Long": kHandOffLongRun or more
  // since the thread's previous hand_off (or since its loop began), on the kernel's coarse
  // clock (a few ns to read, 1-4 ms resolution), read once per hand_off, not per task.
  // `shape`: a task of that shape (enqueue_shaped's), handed to a lease loop of the shape;
  // null: a default task, handed to a slot loop.
  bool hand_off(TaskRecord* task, const TaskRecord* finished,
                ResourceShape* shape = nullptr) noexcept;
  static constexpr int kMaxHandOffs = 32;
  static constexpr std::chrono::milliseconds kHandOffLongRun{10};
  // A ready plain task with `shape`'s request (shape_for; feasible).
  void enqueue_shaped(TaskRecord* task, ResourceShape* shape) noexcept;
  // A job that first waits for `request` (copied).
  void enqueue_with_resources(Job job, const ResourceRequest& request) noexcept;
  // A job that needs no resources.
  void enqueue_job(Job job) noexcept;
  // Gives back an allocation held outside a job (an actor's lifetime resources).
  void release(const Allocation& allocation) noexcept;

  // The scheduler whose thread is calling, or null.
  static Scheduler* current() noexcept;
  // On one of this scheduler's threads, inside a task: waits until wait.ready() or the deadline
  // (see the file comment: runs what it waits for, lends its CPU, helps). Returns wait.ready().
  bool block(BlockedWait& wait, Deadline deadline) noexcept;

  // True if fewer CPU slots are held in this process than it has hardware threads: a caller
  // may spin briefly for a result without taking a core from a running task.
  static bool has_idle_core() noexcept;

  // Stops taking work: returns the queued tasks and jobs that never started (the caller fails
  // them). Threads keep running what is in flight; join() waits for them.
  void stop(std::vector<TaskRecord*>* tasks, std::vector<Job>* jobs);
  void join();

  std::map<std::string, double> totals() const;
  std::map<std::string, double> available() const;
  // Threads started so far (they only exit in join()).
  int thread_count() const;
  // Handed-off tasks that slot and lease loops ran (hand_off), since the scheduler started.
  uint64_t handed_off_runs() const;
  // Leases begun so far (each ran one or more tasks of a shape under one grant).
  uint64_t leases_started() const noexcept {
    return leases_started_.load(std::memory_order_relaxed);
  }

  struct Worker;  // one per thread (defined in scheduler.cc)

 private:
  void thread_main(Worker* w) noexcept;
  // Runs one job from jobs_ if there is one (lock released meanwhile); false if none.
  // `one_task`: a helper, which runs one task of a lease and gives it back.
  bool run_one_job_locked(Worker* w, bool one_task = false) PRISM_REQUIRES(mu_);
  // A lease job: runs its shape's tasks until the queue is dry or the lease must yield.
  void run_lease_locked(Worker* w, Job& job, bool one_task) PRISM_REQUIRES(mu_);
  // `watch_failures`: return as soon as a device of the grant is reported failed.
  void run_lease_loop(ResourceShape* shape, Job& job, bool one_task, bool watch_failures) noexcept;
  // `devices`: the loop's lease frame (JobRunner::lease_begin), null for one task.
  void run_lease_tasks(Worker* w, ResourceShape* shape, Job& job, bool one_task,
                       bool watch_failures, JobRunner::LeaseFrame* devices) noexcept;
  // Asks for a lease of `shape` if none is asked for yet.
  void request_lease_locked(ResourceShape* shape) PRISM_REQUIRES(mu_);
  // Sets each leased shape's `yield` (see resource_shape.h).
  void update_yields_locked() PRISM_REQUIRES(mu_);
  // Tasks queued in shapes, for stop() and reject_if_no_threads().
  void take_shaped_locked(std::vector<TaskRecord*>* tasks) PRISM_REQUIRES(mu_);
  // Takes a CPU slot and runs ready tasks (one, or until the queue is empty or CPU is wanted).
  void run_slot_locked(Worker* w, bool one_task) PRISM_REQUIRES(mu_);
  void run_slot_loop(Worker* w, bool one_task) noexcept;
  void run_slot_tasks(Worker* w, bool one_task) noexcept;  // (run_slot_loop's loop)
  // Queues a task a slot or lease loop was handed (hand_off) and will not run itself.
  void requeue_handed_off(Worker* w) noexcept PRISM_EXCLUDES(mu_);
  // Pushes a task already marked queued, waking a thread for it if none will look.
  void push_ready(TaskRecord* task) noexcept PRISM_EXCLUDES(mu_);
  // The same for a task of `shape`: a lease runs it.
  void push_shaped(TaskRecord* task, ResourceShape* shape) noexcept PRISM_EXCLUDES(mu_);
  bool can_take_slot_locked() const PRISM_REQUIRES(mu_);
  // One piece of work for a blocked thread asked to help.
  void help_locked(Worker* w) PRISM_REQUIRES(mu_);

  // Leases (see job.h).
  void lend_locked(CpuLease* lease) PRISM_REQUIRES(mu_);
  void enter_lease_locked(Worker* w, CpuLease* lease) PRISM_REQUIRES(mu_);
  // True if it lent the lease's CPU (other calls of the same actor are blocked).
  bool leave_lease_locked(CpuLease* lease) PRISM_REQUIRES(mu_);
  void take_back_locked(Worker* w, CpuLease* lease) PRISM_REQUIRES(mu_);

  // Hands out what is free: resumers first, then waiting jobs; wakes threads for the work.
  void distribute_locked(bool wake_for_ready = true) PRISM_REQUIRES(mu_);
  void serve_resumers_locked() PRISM_REQUIRES(mu_);
  void wake_for_ready_locked() PRISM_REQUIRES(mu_);
  void wake_for_jobs_locked() PRISM_REQUIRES(mu_);
  // A parked thread, a new one, or a blocked one asked to help; false if none can be had.
  bool provide_thread_locked(bool for_ready) PRISM_REQUIRES(mu_);
  bool spawn_locked(bool for_ready) PRISM_REQUIRES(mu_);
  void clear_woken_locked(Worker* w) PRISM_REQUIRES(mu_);
  // If no thread exists and none could be started: fails what is queued (outside the lock).
  void reject_if_no_threads() noexcept;

  void holders_add(int64_t n) noexcept;
  // Counts a thread woken (n = 1) or no longer on its way (n = -1) for the ready queue
  // (for_ready) or for jobs.
  void count_waking_locked(bool for_ready, int64_t n) PRISM_REQUIRES(mu_);

  JobRunner* const runner_;
  ThreadStarter* const starter_;
  const int max_threads_;
  int64_t cpu_slots_ = 0;
  // The node's GPU devices (a fractional last one counts): with fewer than 2, a GPU task has no
  // other device to prefer, and its arguments' placement is not looked at.
  int gpu_devices_ = 0;
  ReadyQueue ready_;
  // Read by spinning threads: kept off the line of mu_, which submitters write.
  std::atomic<int64_t> holders_{0};
  // Threads woken for the ready queue that have not looked at it yet: changed only under mu_,
  // read without it by submitters (push_ready).
  std::atomic<int64_t> waking_for_ready_{0};
  std::atomic<int> spinners_{0};
  std::atomic<bool> cpu_wanted_{false};
  std::atomic<bool> stopping_{false};
  std::atomic<int64_t> jobs_count_{0};
  std::atomic<uint64_t> leases_started_{0};

  alignas(64) mutable Mutex mu_;
  ResourcePool pool_ PRISM_GUARDED_BY(mu_);
  WaitQueues waiting_ PRISM_GUARDED_BY(mu_);
  std::deque<Job> jobs_ PRISM_GUARDED_BY(mu_);
  std::deque<Worker*> resumers_ PRISM_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<Worker>> workers_ PRISM_GUARDED_BY(mu_);
  std::vector<Worker*> parked_ PRISM_GUARDED_BY(mu_);
  std::vector<Worker*> blocked_ PRISM_GUARDED_BY(mu_);  // sleeping blocked threads (helpers)
  int64_t blocked_tasks_ PRISM_GUARDED_BY(mu_) = 0;     // waits in block(), helping or not
  int64_t waking_for_jobs_ PRISM_GUARDED_BY(mu_) = 0;
  int64_t job_spinners_ PRISM_GUARDED_BY(mu_) = 0;  // threads spinning after a job
  bool warned_thread_cap_ PRISM_GUARDED_BY(mu_) = false;
  std::string no_thread_reason_ PRISM_GUARDED_BY(mu_);  // set when starting the first failed
  std::vector<ResourceShape*> leased_ PRISM_GUARDED_BY(mu_);  // shapes with live leases
  // Why the node can never run `request` (ResourcePool::infeasible_reason reads only the totals,
  // fixed at construction: no lock).
  std::string infeasible_unlocked(const ResourceRequest& request) const
      PRISM_NO_THREAD_SAFETY_ANALYSIS {
    return pool_.infeasible_reason(request);
  }

  // Interned shapes (never removed before the scheduler is destroyed).
  const uint64_t id_;  // tells this scheduler from any other in the calling threads' caches
  mutable Mutex shapes_mu_;
  std::vector<std::unique_ptr<ResourceShape>> shapes_ PRISM_GUARDED_BY(shapes_mu_);
};

}  // namespace prism::internal
