// ResourcePool — one node's resources: totals, what is free, and allocation of requests.
//
// Amounts are integer units (see kUnitsPerResource) so that fractions add up exactly. GPUs are
// per device: a fractional request (<= 1 GPU) takes units on one device (best fit); a request
// above 1 takes whole devices. gpu_memory is per device too: a request's gpu_memory is taken on
// each device it is granted.
//
// CPU has two more states besides held and free:
//  * lent: CPU that a task blocked in get()/wait() gave back while it waits (lend). It is free
//    for tasks, but not for long-lived holders (actors), which would keep it: a long-lived
//    acquisition may only use cpu_free() - lent(). take_back() returns it to its lender.
//  * reserved: set aside for the oldest waiting request (reserve_step, see WaitQueues); it is
//    held, not free, until granted or released. A reservation never takes lent CPU: it holds
//    what it takes, and the lender needs its CPU back to go on.
// Free CPU never goes below zero: nothing is ever over-subscribed.
//
// Not thread-safe: the scheduler guards it with its mutex. The custom resource names are fixed at
// construction, so infeasible_reason() and carve() need no lock.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "prism/internal/task_record.h"

namespace prism::internal {

// Resource kinds, as bits: what a request holds, or what a waiting request lacks.
enum ResourceKind : uint32_t {
  kKindCpu = 1u << 0,
  kKindMemory = 1u << 1,
  kKindGpu = 1u << 2,  // GPU units or gpu_memory
  kKindCustom = 1u << 3,
};
uint32_t kinds_of(const ResourceRequest& request) noexcept;

// What a running task or a live actor holds.
struct Allocation {
  int64_t cpu = 0;
  int64_t memory = 0;
  int64_t gpu_memory = 0;                       // bytes on each device in `gpus`
  std::vector<std::pair<int, int64_t>> gpus;    // (device, units)
  std::vector<std::pair<int, int64_t>> custom;  // (resource index, units)
  // Whose device streams the holder's tasks use (DeviceSupport::enter): 0 for the running
  // thread's, an actor's number for the allocation it holds for life. Not copied by carve().
  uint64_t device_owner = 0;
  // Held for the holder's life (an actor's): ResourcePool counts its GPUs apart (gpu_long_held_).
  bool long_lived = false;

  bool empty() const { return cpu == 0 && memory == 0 && gpus.empty() && custom.empty(); }
  std::vector<int> gpu_ids() const;
};

// Resources set aside for one waiting request as they come free (see ResourcePool::reserve_step).
struct PartialAllocation {
  int64_t cpu = 0;
  int64_t memory = 0;
  std::vector<int> gpu_devices;     // chosen at the first step that needs GPUs
  std::vector<int64_t> gpu_units;   // per chosen device
  std::vector<int64_t> gpu_memory;  // per chosen device, bytes
  std::vector<int64_t> custom;      // per entry of the request's custom list

  bool empty() const;
};

struct NodeResources {
  int64_t cpu = 0;  // units
  int num_gpus = 0;  // whole devices ...
  int64_t gpu_fraction = 0;  // ... plus a fractional last device, in units (0 if none)
  int64_t memory = 0;  // bytes
  int64_t gpu_memory = 0;  // bytes per GPU
  std::vector<std::pair<std::string, int64_t>> custom;  // units
};

// True if `allocation` holds a device reported failed (report_device_failure). Lock-free.
bool uses_failed_gpu(const Allocation& allocation) noexcept;

// "1 CPU", "2.5 CPUs", "1 GPU": amounts of units as people write them.
std::string describe_amount(int64_t units, const char* singular, const char* plural);

class ResourcePool {
 public:
  explicit ResourcePool(const NodeResources& totals);

  // Empty if some node of this size could ever run `request`; otherwise the reason, e.g.
  // "it asks for 2 GPUs but the node has 1 GPU".
  std::string infeasible_reason(const ResourceRequest& request) const;

  // True if `request` fits now. A long-lived request (an actor's) may not use lent CPU.
  bool fits(const ResourceRequest& request, bool long_lived) const;
  // True if everything but the CPU of `request` fits now.
  bool fits_except_cpu(const ResourceRequest& request) const;
  // The resource kinds (ResourceKind bits) that `request` lacks now; 0 if it fits.
  uint32_t lacking(const ResourceRequest& request, bool long_lived) const;
  // Allocates `request` if it fits now.
  bool try_acquire(const ResourceRequest& request, bool long_lived, Allocation* out);
  void release(const Allocation& allocation);
  // Moves a one-device GPU allocation (a lease's) to GPU `device` if the same units and
  // gpu_memory are free there now (a whole device for a whole GPU; not a failed device; a
  // fraction onto a whole free device only if it leaves its own device whole free): the old
  // device's share is given back. False, and nothing changes, otherwise.
  bool move_gpu(Allocation* allocation, int device);
  // True if `allocation` holds a device that failed for good while healthy devices could hold
  // the same request: its holder (a lease) should give it back rather than run more tasks there.
  bool uses_avoidable_failed_gpu(const Allocation& allocation) const;

  // Reservations: moves into `partial` what `request` still lacks, as far as it is free now
  // (devices for GPUs are chosen at the first step that needs them). complete() says when the
  // whole request is held; to_allocation() then turns it into the Allocation to run with.
  void reserve_step(const ResourceRequest& request, bool long_lived, PartialAllocation* partial);
  bool complete(const ResourceRequest& request, const PartialAllocation& partial) const;
  Allocation to_allocation(const ResourceRequest& request, PartialAllocation&& partial,
                           bool long_lived);
  void release(const PartialAllocation& partial, const ResourceRequest& request);

  // The share of a parent's holdings that a child task running inline would use: false if
  // `request` does not fit within `parent_cpu` CPU units and `parent` (null: CPU only). Touches
  // no counter (the parent keeps holding everything).
  bool carve(const ResourceRequest& request, int64_t parent_cpu, const Allocation* parent,
             Allocation* child) const;

  int64_t cpu_free() const { return cpu_free_; }
  int64_t cpu_lent() const { return cpu_lent_; }
  int64_t cpu_total() const { return cpu_total_; }
  // Whole CPUs free for a ready-loop slot.
  bool slot_free() const { return cpu_free_ >= kUnitsPerResource; }
  void take_slot() { cpu_free_ -= kUnitsPerResource; }
  void return_slot() { cpu_free_ += kUnitsPerResource; }
  // A blocked task's CPU: free for tasks until taken back.
  void lend(int64_t units) {
    cpu_free_ += units;
    cpu_lent_ += units;
  }
  // Takes back up to `units` of lent CPU that is free now; returns how much it took.
  int64_t take_back(int64_t units);

  std::map<std::string, double> totals() const;
  std::map<std::string, double> available() const;

 private:
  int custom_index(const std::string& name) const;
  int64_t cpu_usable(bool long_lived) const {
    return long_lived ? cpu_free_ - cpu_lent_ : cpu_free_;
  }
  bool pick_gpus(int64_t units, int64_t gpu_memory,
                 std::vector<std::pair<int, int64_t>>* out) const;
  // True if devices outside `failed` (report_device_failure) could some day hold `units` GPU
  // units with `gpu_memory` bytes each: their totals less what long-lived holders keep.
  bool healthy_could_serve(int64_t units, int64_t gpu_memory, uint64_t failed) const;
  void choose_reserved_gpus(const ResourceRequest& r, PartialAllocation* p) const;
  void hold_for_life(Allocation* a);

  int64_t cpu_total_;
  int64_t cpu_free_;
  int64_t cpu_lent_ = 0;
  int64_t memory_total_;
  int64_t memory_free_;
  std::vector<int64_t> gpu_total_;  // per device
  std::vector<int64_t> gpu_free_;
  std::vector<int64_t> gpu_long_held_;  // per device: units held for life (actors)
  std::vector<int64_t> gpu_memory_total_;  // per device, bytes
  std::vector<int64_t> gpu_memory_free_;
  std::vector<std::string> custom_names_;
  std::vector<int64_t> custom_total_;
  std::vector<int64_t> custom_free_;
};

}  // namespace prism::internal
