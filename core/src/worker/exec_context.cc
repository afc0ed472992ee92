#include "worker/exec_context.h"

#include <iterator>
#include <string>
#include <vector>

#include "api/runtime_core.h"
#include "prism/context.h"
#include "prism/internal/device_support.h"
#include "prism/internal/runtime_hooks.h"

namespace prism {
namespace internal {

ExecContext& exec_context() noexcept {
  thread_local ExecContext ctx;
  return ctx;
}

DeviceSupport* enter_devices(const Allocation* alloc, const Allocation* outer,
                             DeviceSupport::Saved* saved, bool* ok, std::string* why) noexcept {
  *ok = true;
  const bool has_gpu = alloc != nullptr && !alloc->gpus.empty();
  const bool outer_gpu = outer != nullptr && !outer->gpus.empty();
  if (!has_gpu && !outer_gpu) return nullptr;
  DeviceSupport* support = device_support();
  if (support == nullptr) return nullptr;
  int devices[8];
  size_t count = 0;
  std::vector<int> many;
  const int* list = devices;
  if (has_gpu) {
    if (alloc->gpus.size() <= std::size(devices)) {
      for (const auto& g : alloc->gpus) devices[count++] = g.first;
    } else {
      try {
        many = alloc->gpu_ids();
      } catch (...) {
        many.clear();  // out of memory for the list: the first device only
      }
      if (many.empty()) {
        devices[count++] = alloc->gpus.front().first;
      } else {
        list = many.data();
        count = many.size();
      }
    }
  }
  // Inside no other task's run (a lease's task, or the lease's own entry): an entry that finds
  // its devices current may keep them (DeviceSupport::Saved::may_keep). A null `outer` also
  // comes with runs inside a default CPU task (run with no allocation) or a caller-run actor
  // call; those never keep, since the thread's devices are then the host or another owner's:
  // a GPU device set with no task around it exists only between a lease's tasks, and leases run
  // at a thread's top level only (helpers run one task at a time, with no lease frame).
  saved->may_keep = outer == nullptr;
  *ok = support->enter(list, count, has_gpu ? alloc->device_owner : 0, saved, why);
  return support;
}

DeviceScope::~DeviceScope() {
  if (support_ != nullptr) support_->leave(saved_);
}

}  // namespace internal

std::vector<int> gpu_ids() {
  const internal::ExecContext& c = internal::exec_context();
  if (c.alloc == nullptr) return {};
  return c.alloc->gpu_ids();
}

TaskId current_task_id() {
  const internal::ExecContext& c = internal::exec_context();
  return c.task != nullptr ? c.task->id() : TaskId{};
}

bool in_task() { return internal::exec_context().task != nullptr; }

std::string node_id() { return internal::pin_current_runtime().get()->node_id(); }

}  // namespace prism
