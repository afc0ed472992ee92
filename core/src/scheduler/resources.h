// ResourcePool — one node's resources: totals, what is free, and allocation of requests.
//
// Amounts are integer units (see kUnitsPerResource) so that fractions add up exactly. GPUs are
// per device: a fractional request (<= 1 GPU) takes units on one device (best fit); a request
// above 1 takes whole devices. gpu_memory is per device too: a request's gpu_memory is taken on
// each device it is granted. The CPU may go negative for a while: a task blocked in get()
// lends its CPU back and takes it again when it resumes, even if that over-subscribes.
//
// Not thread-safe: the scheduler guards it with its mutex.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "prism/internal/task_record.h"

namespace prism::internal {

// What a running task or a live actor holds.
struct Allocation {
  int64_t cpu = 0;
  int64_t memory = 0;
  int64_t gpu_memory = 0;                       // bytes on each device in `gpus`
  std::vector<std::pair<int, int64_t>> gpus;    // (device, units)
  std::vector<std::pair<int, int64_t>> custom;  // (resource index, units)

  bool empty() const { return cpu == 0 && memory == 0 && gpus.empty() && custom.empty(); }
  std::vector<int> gpu_ids() const;
};

struct NodeResources {
  int64_t cpu = 0;  // units
  int num_gpus = 0;  // whole devices ...
  int64_t gpu_fraction = 0;  // ... plus a fractional last device, in units (0 if none)
  int64_t memory = 0;  // bytes
  int64_t gpu_memory = 0;  // bytes per GPU
  std::vector<std::pair<std::string, int64_t>> custom;  // units
};

class ResourcePool {
 public:
  explicit ResourcePool(const NodeResources& totals);

  // Empty if some node of this size could ever run `request`; otherwise the reason.
  std::string infeasible_reason(const ResourceRequest& request) const;
  // Allocates `request` if it fits now.
  bool try_acquire(const ResourceRequest& request, Allocation* out);
  void release(const Allocation& allocation);

  int64_t cpu_available() const { return cpu_available_; }
  void add_cpu(int64_t units) { cpu_available_ += units; }
  // True if everything but the CPU of `request` fits now (used to tell whether CPU is what a
  // waiting request lacks).
  bool fits_except_cpu(const ResourceRequest& request) const;

  std::map<std::string, double> totals() const;
  std::map<std::string, double> available() const;

 private:
  int custom_index(const std::string& name) const;
  bool pick_gpus(int64_t units, int64_t gpu_memory,
                 std::vector<std::pair<int, int64_t>>* out) const;

  int64_t cpu_total_;
  int64_t cpu_available_;
  int64_t memory_total_;
  int64_t memory_available_;
  std::vector<int64_t> gpu_total_;  // per device
  std::vector<int64_t> gpu_available_;
  std::vector<int64_t> gpu_memory_total_;  // per device, bytes
  std::vector<int64_t> gpu_memory_available_;
  std::vector<std::string> custom_names_;
  std::vector<int64_t> custom_total_;
  std::vector<int64_t> custom_available_;
};

}  // namespace prism::internal
