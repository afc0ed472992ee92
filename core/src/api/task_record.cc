#include "prism/internal/task_record.h"

#include "api/runtime_core.h"

namespace prism::internal {

const ResourceRequest& one_cpu_request() noexcept {
  static const ResourceRequest r = [] {
    ResourceRequest x;
    x.cpu = kUnitsPerResource;
    return x;
  }();
  return r;
}

TaskRecord::~TaskRecord() {
  if (deps_owned_) delete[] extra_deps_;
}

bool TaskRecord::take_from_queue() noexcept {
  uint8_t s = run_state_.load(std::memory_order_acquire);
  for (;;) {
    if ((s & kClaimed) != 0) {
      // A parent runs it: drop the queue's hold; the second of the two deletes.
      s = run_state_.fetch_and(static_cast<uint8_t>(~kQueued), std::memory_order_acq_rel);
      if ((s & kRunDone) != 0) delete this;
      return false;
    }
    if (run_state_.compare_exchange_weak(s, kClaimed, std::memory_order_acq_rel)) return true;
  }
}

void TaskRecord::release_run() noexcept {
  const uint8_t s = run_state_.fetch_or(kRunDone, std::memory_order_acq_rel);
  if ((s & kQueued) == 0) delete this;
}

TaskId TaskRecord::id() const noexcept {
  TaskId id;
  id.owner = runtime_->owner();
  id.sequence = sequence_;
  return id;
}

void TaskRecord::reserve_deps(size_t n) {
  if (n <= deps_capacity_) return;
  DepNode* extra = new DepNode[n - 1];
  if (deps_owned_) delete[] extra_deps_;
  extra_deps_ = extra;
  deps_owned_ = true;
  deps_capacity_ = static_cast<uint32_t>(n);
}

void TaskRecord::add_dep(ObjectEntry* entry) noexcept {
  if (entry->is_done()) {
    if (entry->state() == ObjState::kFailed) {
      ObjectEntry* expected = nullptr;
      failed_dep_.compare_exchange_strong(expected, entry, std::memory_order_acq_rel);
    }
    return;
  }
  DepNode* node = deps_used_ == 0 ? &inline_dep_ : &extra_deps_[deps_used_ - 1];
  ++deps_used_;
  node->owner = this;
  pending_.fetch_add(1, std::memory_order_relaxed);
  if (!entry->add_dependent(node)) {
    // Completed in the meantime.
    if (entry->state() == ObjState::kFailed) {
      ObjectEntry* expected = nullptr;
      failed_dep_.compare_exchange_strong(expected, entry, std::memory_order_acq_rel);
    }
    pending_.fetch_sub(1, std::memory_order_relaxed);
  }
}

void TaskRecord::on_ready(ObjectEntry* entry) noexcept {
  if (entry->state() == ObjState::kFailed) {
    ObjectEntry* expected = nullptr;
    failed_dep_.compare_exchange_strong(expected, entry, std::memory_order_acq_rel);
  }
  if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) runtime_->dispatch(this);
}

}  // namespace prism::internal
