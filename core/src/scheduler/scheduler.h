// Scheduler — one node's local scheduler: worker threads, CPU slots, resource waits, parking.
//
// Two kinds of work:
//  * Ready tasks with the default request (exactly one CPU, nothing else) go to a lock-free
//    ReadyQueue. A thread that holds a CPU slot (one CPU taken from the ResourcePool) runs them
//    back to back without any lock; it gives the slot back when the queue is empty. Submitters
//    take the scheduler lock only when fewer threads hold slots than there are CPUs, i.e. when
//    a thread may need waking.
//  * Jobs: tasks with other requests (GPUs, memory, custom, fractional CPUs) wait in a FIFO
//    until their resources are free, then run holding an Allocation; actor work (creation and
//    mailbox drains) runs as jobs too.
// Threads are started on demand (a task blocked in get() lends its CPU back and another thread
// takes it; actors run concurrently) up to a cap, park on their own condition variable when
// idle (no spinning), and are joined by stop().
//
// Thread-safe: every public method may be called from any thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/thread_annotations.h"
#include "prism/internal/task_record.h"
#include "scheduler/ready_queue.h"
#include "scheduler/resources.h"

namespace prism::internal {

class ActorCore;

struct Job {
  enum class Kind { kTask, kActorCreate, kActorDrain };
  Kind kind = Kind::kTask;
  TaskRecord* task = nullptr;           // kTask, kActorCreate
  std::shared_ptr<ActorCore> actor;     // kActorCreate, kActorDrain
  Allocation alloc;                     // granted resources; released after the job unless moved
};

// What runs the work the scheduler hands out (the runtime; a fake in unit tests).
class JobRunner {
 public:
  // A ready default-request task, on a thread holding one CPU slot.
  virtual void run_task(TaskRecord* task) noexcept = 0;
  // A job; its allocation is released after it returns unless the runner moved it away.
  virtual void run_job(Job& job) noexcept = 0;

 protected:
  ~JobRunner() = default;
};

class Scheduler {
 public:
  Scheduler(JobRunner* runner, const NodeResources& totals, int max_threads);
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Empty if the node could ever run `request`, else why not.
  std::string infeasible_reason(const ResourceRequest& request) const;
  // CPU slots of this node (whole CPUs): 0 means default tasks can never run here.
  int64_t cpu_slots() const noexcept { return cpu_slots_; }

  // A ready task with the default request.
  void enqueue_ready(TaskRecord* task) noexcept;
  // A job that first waits for `request` (which must outlive the wait).
  void enqueue_with_resources(Job job, const ResourceRequest* request) noexcept;
  // A job that needs no resources.
  void enqueue_job(Job job) noexcept;
  // Gives back an allocation held outside a job (an actor's lifetime resources).
  void release(const Allocation& allocation) noexcept;

  // Called by a thread of this scheduler before it blocks in get()/wait() inside a task: its
  // CPU goes back to the pool (another thread may use it). reclaim() takes it again.
  // No-ops on threads that are not this scheduler's.
  bool lend_current() noexcept;
  void reclaim_current() noexcept;
  // True on one of this scheduler's threads.
  bool is_own_thread() const noexcept;
  // True if fewer threads hold CPU slots than the machine has hardware threads: a caller may
  // spin briefly for a result without taking a core from a running task.
  bool has_idle_core() const noexcept {
    return holders_.load(std::memory_order_relaxed) < hardware_threads_;
  }

  // Stops taking work: returns the queued tasks and jobs that never started (the caller fails
  // them). Threads keep running what is in flight; join() waits for them.
  void stop(std::vector<TaskRecord*>* tasks, std::vector<Job>* jobs);
  void join();

  std::map<std::string, double> totals() const;
  std::map<std::string, double> available() const;
  int thread_count() const;

  struct Worker;  // one per thread (defined in scheduler.cc)

 private:

  void thread_main(Worker* w);
  void run_slot_loop() noexcept;
  void schedule_waiting_locked() PRISM_REQUIRES(mu_);
  void wake_for_ready_locked() PRISM_REQUIRES(mu_);
  void wake_for_job_locked() PRISM_REQUIRES(mu_);
  // Wakes a parked thread, or starts one, counted as on its way to ready work or to a job.
  void wake_one_locked(bool for_ready) PRISM_REQUIRES(mu_);
  void spawn_locked(bool for_ready) PRISM_REQUIRES(mu_);

  JobRunner* const runner_;
  const int max_threads_;
  int64_t cpu_slots_ = 0;
  const int64_t hardware_threads_;
  ReadyQueue ready_;
  std::atomic<int64_t> holders_{0};       // threads holding a CPU slot
  std::atomic<bool> cpu_wanted_{false};   // a waiting job lacks only CPU
  std::atomic<int> spinners_{0};          // idle slot holders spinning before they park
  std::atomic<bool> stopping_{false};

  mutable Mutex mu_;
  ResourcePool pool_ PRISM_GUARDED_BY(mu_);
  struct Waiting {
    Job job;
    const ResourceRequest* request;
  };
  std::deque<Waiting> waiting_ PRISM_GUARDED_BY(mu_);
  std::deque<Job> jobs_ PRISM_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<Worker>> workers_ PRISM_GUARDED_BY(mu_);
  std::vector<Worker*> parked_ PRISM_GUARDED_BY(mu_);
  int64_t waking_for_ready_ PRISM_GUARDED_BY(mu_) = 0;
  int64_t waking_for_jobs_ PRISM_GUARDED_BY(mu_) = 0;
  int64_t job_spinners_ PRISM_GUARDED_BY(mu_) = 0;  // threads spinning after a job
  std::atomic<int64_t> jobs_count_{0};  // jobs_.size(), for spinners to watch without the lock
  bool warned_thread_cap_ PRISM_GUARDED_BY(mu_) = false;
};

}  // namespace prism::internal
