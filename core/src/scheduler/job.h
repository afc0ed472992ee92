// Job and CpuLease — the units of work the scheduler hands to threads, and the CPU they hold.
//
// Thread-safe: plain data; CpuLease's counters belong to the scheduler, under its lock.
#pragma once

#include <memory>

#include "prism/internal/task_record.h"
#include "scheduler/resources.h"

namespace prism::internal {

class ActorCore;
class Scheduler;
struct ResourceShape;

// The CPU that running work holds, which it lends to the node while every thread running under
// it is blocked in get()/wait() (Scheduler::block). A ready-loop slot and a resource-holding
// task have a lease of their own; an actor has one for its life, shared by its running calls.
struct CpuLease {
  int64_t cpu = 0;    // units held (fixed)
  bool slot = false;  // a ready-loop slot: counted in the scheduler's holders_ while not lent

 private:
  // Only the scheduler touches these, in functions that require its lock (PRISM_REQUIRES(mu_)):
  // the lease cannot name that lock itself, so access is what the compiler checks.
  friend class Scheduler;
  int active = 0;     // threads running under the lease, not blocked
  int blocked = 0;    // threads under the lease blocked in get()/wait()
  int64_t lent = 0;   // units lent to the pool and not yet taken back (0 or up to cpu)
};

struct Job {
  // kLease: one allocation of `shape`, under which a thread runs the shape's ready tasks back
  // to back (see resource_shape.h); the scheduler runs it itself, never the JobRunner.
  enum class Kind { kTask, kActorCreate, kActorDrain, kLease };
  Kind kind = Kind::kTask;
  TaskRecord* task = nullptr;        // kTask, kActorCreate
  ResourceShape* shape = nullptr;    // kLease
  std::shared_ptr<ActorCore> actor;  // kActorCreate, kActorDrain
  Allocation alloc;                  // granted resources; released after the job unless moved
  CpuLease* lease = nullptr;         // actor jobs: the actor's lease; null: the job's own
};

}  // namespace prism::internal
