// ResourceShape — the ready queue of plain tasks that share one resource request (a "shape":
// num_cpus(0.25), num_gpus(1), memory(1 GiB) ...), and the leases that run them.
//
// Tasks with the default request run from the node's ReadyQueue on CPU slots, without a lock.
// Tasks with any other request used to go through the scheduler's lock once per task (queue,
// grant, run, release). Now each shape has a lock-free ready queue of its own, and a thread that
// is granted one allocation of the shape (a *lease*, Job::Kind::kLease) runs the shape's tasks
// back to back under it, as a CPU slot does for default tasks: the lock is taken once per lease,
// not once per task. A lease ends when the queue stays empty for a short spin, or when another
// request waits for something the lease holds (`yield`): its tasks then go on under a new lease
// requested through WaitQueues, behind the older request, so fairness and the starvation bound
// are those of WaitQueues.
//
// A GPU lease follows its tasks' data: before running a task whose arguments are on another GPU
// of the node (TaskRecord::preferred_gpu), the holder moves the lease's device there if the
// same share is free now (ResourcePool::move_gpu, under the scheduler's lock; only the holder
// touches its allocation). Otherwise the task runs on the lease's device (a peer copy).
//
// Shapes are interned per scheduler (Scheduler::shape_for) and live as long as it does. A node
// keeps at most Scheduler::kMaxShapes of them; requests beyond that take the per-task path.
//
// ---- The counters (see Scheduler for the protocol that uses them) ----
//  * running: lease holders of this shape that are running its tasks, or about to (not blocked
//    in get()/wait()). Changed under the scheduler's lock; read without it by submitters.
//  * spinners: holders spinning on the empty queue before they give their lease back.
//  * requested: leases asked for and not yet begun (0 or 1): waiting in WaitQueues, or granted
//    and queued as a job. Changed under the scheduler's lock.
//  * yield: some other request waits for a resource kind this shape holds (or a resumer waits
//    for CPU and this shape holds CPU): holders give their lease back after their current task.
//    Written under the scheduler's lock.
// No lost wake-up: a submitter pushes (seq_cst size) and then reads spinners and requested
// (seq_cst); it asks for a lease itself (under the lock) unless one of them is non-zero. A
// spinner decrements spinners before it pops once more; a lease decrements requested before its
// first pop; a holder that leaves decrements running and then re-checks the queue under the
// lock, and asks for a new lease if tasks are left. So a pushed task is always seen by a holder
// that pops after the push, or by a lease asked for after it. A task handed to a holder
// (Scheduler::hand_off) is in no queue: the holder runs it next, or pushes it as above before it
// leaves or blocks.
//
// Thread-safe: the atomics as above; `leases` under the scheduler's lock; the rest is immutable
// after interning.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include "prism/internal/task_record.h"
#include "scheduler/ready_queue.h"
#include "scheduler/resources.h"

namespace prism::internal {

class Scheduler;

struct ResourceShape {
  explicit ResourceShape(ResourceRequest r)
      : request(std::move(r)), kinds(kinds_of(request)), ready(kQueueCapacity) {
    extras.request = request;
    extras.default_request = false;
    extras.shape = this;
  }
  ResourceShape(const ResourceShape&) = delete;
  ResourceShape& operator=(const ResourceShape&) = delete;

  static constexpr size_t kQueueCapacity = 1024;  // the ring; more goes to its overflow list

  const ResourceRequest request;
  const uint32_t kinds;
  std::string infeasible;  // set at interning: why the node can never run it (empty: it can)
  // The extras of every task of this shape that sets no other option (ExtrasPtr::shared).
  TaskExtras extras;
  ReadyQueue ready;
  alignas(64) std::atomic<int> running{0};
  std::atomic<int> spinners{0};
  std::atomic<int> requested{0};
  std::atomic<bool> yield{false};

 private:
  // Live leases, blocked or not. Only the scheduler touches it, under its lock (in functions
  // that require it): the shape cannot name that lock itself, so access is what is checked.
  friend class Scheduler;
  int leases = 0;
};

}  // namespace prism::internal
