// WaitQueues — jobs waiting for resources: one FIFO per request shape, granted oldest first.
//
// Jobs with the same request (the same CPU, GPU, memory, gpu_memory and custom amounts, and the
// same lifetime: actors' requests are long-lived) share a queue, so granting looks at one head
// per shape: a release costs O(shapes), not O(waiting jobs), and a request that fits is never
// hidden behind many that do not (a num_cpus(0.5) task behind thousands waiting for a GPU runs
// as soon as half a CPU is free). Among the heads that fit, the oldest goes first.
//
// Starvation: a large request (say 4 CPUs) can be passed over forever by a stream of small ones
// that each fit in what is free. Every time something else takes resources while the oldest
// request waits short of them (a grant of another shape, or a CPU slot taken for ready work —
// see note_bypass), a counter grows; at `starvation_bound` the oldest gets a reservation: from
// then on, the resources it still lacks are set aside for it as they are freed, up to its
// request (PartialAllocation). Whatever is not reserved stays available, so requests that fit
// in what is left still run. One reservation at a time; it ends when its job is granted.
// A reservation is held only while no task is blocked in get()/wait() (`may_reserve`): a blocked
// task may need new tasks to run before it gives back what it holds (lent CPU, its GPUs), and a
// reservation that set aside what those tasks need would wait for it forever. While tasks are
// blocked the reservation is released and the count kept, so it is taken again at once after.
//
// A waiting task that a blocked parent claimed (TaskRecord::try_claim) is dropped when it
// reaches the head of its queue.
//
// Not thread-safe: the scheduler guards it with its mutex.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "scheduler/job.h"
#include "scheduler/resources.h"

namespace prism::internal {

class WaitQueues {
 public:
  static constexpr int kDefaultStarvationBound = 16;

  explicit WaitQueues(int starvation_bound = kDefaultStarvationBound)
      : starvation_bound_(starvation_bound) {}
  WaitQueues(const WaitQueues&) = delete;
  WaitQueues& operator=(const WaitQueues&) = delete;

  // Adds a job waiting for `request`. Actor creations (Job::Kind::kActorCreate) are long-lived:
  // they may not use CPU lent by blocked tasks.
  void push(Job job, const ResourceRequest& request);
  // Grants, oldest first, every waiting job whose request fits (the reservation first), each
  // with its Allocation; appends them to `out`. `may_reserve`: no task is blocked (see above).
  void grant(ResourcePool& pool, std::deque<Job>* out, bool may_reserve);
  // CPU was taken for ready work (a slot) while jobs wait: counts towards the starvation bound
  // if the oldest request is short of CPU.
  void note_bypass(ResourcePool& pool, bool may_reserve);
  // True if some waiting request (or the reservation) lacks CPU and nothing else: threads
  // holding CPU slots should give them back so it can run.
  bool wants_cpu() const noexcept { return wants_cpu_; }
  // The resource kinds (ResourceKind bits) that waiting requests lack as of the last grant(),
  // leaving out a lease request of `own` (a shape's holders do not make way for their own next
  // lease). Holders of a lease that holds one of these kinds give it back (see resource_shape.h).
  uint32_t lacking_except(const ResourceShape* own) const noexcept;
  bool empty() const noexcept { return waiting_ == 0; }
  size_t size() const noexcept { return waiting_; }
  // Removes every waiting job (for the scheduler's stop) and releases the reservation; jobs of
  // claimed tasks are dropped.
  void drain(ResourcePool& pool, std::vector<Job>* out);

 private:
  struct Entry {
    Job job;
    uint64_t seq;
  };
  struct Shape {
    ResourceRequest request;
    bool long_lived;
    std::deque<Entry> queue;
    uint32_t lacking = 0;  // what its head lacked at the last grant() (ResourceKind bits)
  };
  struct Key {
    int64_t cpu, gpu, memory, gpu_memory;
    bool long_lived;
    std::vector<std::pair<std::string, int64_t>> custom;  // sorted by name
    bool operator<(const Key& o) const;
  };
  static Key key_of(const ResourceRequest& request, bool long_lived);

  // Drops claimed tasks at the head of `s`; true if `s` still has a job.
  bool settle_head(Shape* s);
  void remove_if_empty(Shape* s);
  void start_reservation(ResourcePool& pool, Shape* oldest);
  void end_reservation();
  // Gives back what the reservation holds and ends it, keeping the bypass count.
  void suspend_reservation(ResourcePool& pool);

  const int starvation_bound_;
  uint64_t next_seq_ = 0;
  size_t waiting_ = 0;
  std::map<Key, std::unique_ptr<Shape>> shapes_;
  std::vector<Shape*> active_;  // shapes with waiting jobs
  bool wants_cpu_ = false;
  // The oldest waiting job as of the last look, and how often it was passed over since.
  uint64_t watched_seq_ = UINT64_MAX;
  Shape* watched_ = nullptr;
  int bypassed_ = 0;
  // The reservation: the head of `reserved_` (seq `reserved_seq_`) and what is set aside for it.
  Shape* reserved_ = nullptr;
  uint64_t reserved_seq_ = 0;
  PartialAllocation partial_;
};

}  // namespace prism::internal
