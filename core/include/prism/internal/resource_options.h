// prism/internal/resource_options.h — the resource setters shared by task and actor builders.
//
// A CRTP base: Derived keeps its options in a member `options_` (TaskOptions or ActorOptions)
// and befriends this class. Each setter works on an lvalue builder (returns Derived&) and on a
// temporary one (returns Derived&&), so `prism::task(f).num_cpus(2).remote(x)` chains.
//
// Not for users directly: the methods appear on TaskCaller and ActorCreator.
#pragma once

#include <cstdint>
#include <string>
#include <utility>

namespace prism::internal {

template <typename Derived>
class ResourceOptions {
 public:
  // CPUs held while running (tasks: default 1; actors: default 0, held for life). Fractions
  // and 0 are allowed.
  Derived& num_cpus(double n) & { return opts().num_cpus = n, self(); }
  Derived&& num_cpus(double n) && { return std::move(num_cpus(n)); }
  // GPUs: fractions up to 1 share one device; above 1, whole devices.
  Derived& num_gpus(double n) & { return opts().num_gpus = n, self(); }
  Derived&& num_gpus(double n) && { return std::move(num_gpus(n)); }
  // Bytes of node memory reserved.
  Derived& memory(int64_t bytes) & { return opts().memory = bytes, self(); }
  Derived&& memory(int64_t bytes) && { return std::move(memory(bytes)); }
  // Bytes of GPU memory reserved on each granted GPU (needs num_gpus > 0). Accounted per device:
  // a task waits until its GPU has that much unreserved; more than any GPU has fails at
  // submission. A reservation, not an allocation limit.
  Derived& gpu_memory(int64_t bytes) & { return opts().gpu_memory = bytes, self(); }
  Derived&& gpu_memory(int64_t bytes) && { return std::move(gpu_memory(bytes)); }
  // A custom resource declared in InitOptions::resources.
  Derived& resource(std::string name, double amount) & {
    opts().resources.emplace_back(std::move(name), amount);
    return self();
  }
  Derived&& resource(std::string name, double amount) && {
    return std::move(resource(std::move(name), amount));
  }

 private:
  Derived& self() { return static_cast<Derived&>(*this); }
  auto& opts() { return self().options_; }
};

}  // namespace prism::internal
