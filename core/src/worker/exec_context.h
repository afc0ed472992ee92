// ExecContext — what the calling thread is running: its runtime, task and allocation.
//
// Set by the runtime around each task (ExecScope); read by prism::gpu_ids(),
// current_task_id(), node_id(), and by API calls without an explicit runtime.
//
// Thread-safe: thread-local.
#pragma once

#include <chrono>
#include <string>

#include "prism/internal/device_support.h"
#include "prism/internal/task_record.h"
#include "scheduler/resources.h"

namespace prism::internal {

class RuntimeCore;

struct ExecContext {
  RuntimeCore* runtime = nullptr;
  TaskRecord* task = nullptr;
  const Allocation* alloc = nullptr;
  // With a timeline: when the running attempt of `task` began, until its span is recorded
  // (run_returned() records it before the results are published; null after, or without one).
  const std::chrono::steady_clock::time_point* span_start = nullptr;
  // A GPU task's profiler range and device timing, open from its run's start until
  // run_returned() (or the run's end, when it threw) closes them: before the host span is
  // recorded and before the results are published, so the device span ends within the run.
  DeviceSupport* device_annotate = nullptr;
  // Set by run_returned(): `task`'s body has returned and its results are being published (a
  // task they make ready may be handed to this thread: Scheduler::hand_off).
  bool returned = false;
};

ExecContext& exec_context() noexcept;

// Sets the context for one task and restores the previous one.
class ExecScope {
 public:
  ExecScope(RuntimeCore* rt, TaskRecord* task, const Allocation* alloc) noexcept
      : saved_(exec_context()) {
    exec_context() = ExecContext{rt, task, alloc};
  }
  ~ExecScope() { exec_context() = saved_; }
  ExecScope(const ExecScope&) = delete;
  ExecScope& operator=(const ExecScope&) = delete;

 private:
  ExecContext saved_;
};

}  // namespace prism::internal

namespace prism::internal {

// DeviceSupport::enter for a run with `alloc` inside one with `outer` (DeviceScope, below):
// returns the support it entered (leave it with *saved), or null if there was nothing to enter.
DeviceSupport* enter_devices(const Allocation* alloc, const Allocation* outer,
                             DeviceSupport::Saved* saved, bool* ok, std::string* why) noexcept;

// Brackets a task run with DeviceSupport::enter/leave: the task's GPUs if it was granted any
// (the first made current, streams of the allocation's device_owner); the host if it has none
// but runs inside a GPU task (`outer`: the allocation of the task the thread was running, e.g. a
// parent that runs its child inline). No-op otherwise or without the GPU module. ok() is false
// when a granted device has failed for good; why() then says which and why.
class DeviceScope {
 public:
  DeviceScope(const Allocation* alloc, const Allocation* outer) noexcept
      : support_(enter_devices(alloc, outer, &saved_, &ok_, &why_)) {}
  ~DeviceScope();
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;

  bool ok() const noexcept { return ok_; }
  const std::string& why() const noexcept { return why_; }

 private:
  // (Declared in the order the constructor's initializer fills them: support_ last.)
  DeviceSupport::Saved saved_;
  bool ok_ = true;
  std::string why_;
  DeviceSupport* support_ = nullptr;
};

}  // namespace prism::internal
