// prism/context.h — what a running task can ask about itself.
//
//   void step() {
//     for (int gpu : prism::gpu_ids()) use_device(gpu);
//     log(prism::current_task_id().to_string(), prism::node_id());
//   }
//
// Thread-safe: each call answers for the calling thread's task.
#pragma once

#include <string>
#include <vector>

#include "prism/internal/ids.h"

namespace prism {

// Logical ids of the GPUs granted to the running task (or actor). A fractional request shares
// one device, so it gets one id. Empty outside tasks and for tasks without GPUs.
std::vector<int> gpu_ids();

// The running task's id; nil outside tasks. Actor method calls have their own task ids.
TaskId current_task_id();

// True while the calling thread runs a task or actor method.
bool in_task();

// The id of the node this code runs on (the current runtime's node); throws prism::Error if no
// runtime is running.
std::string node_id();

}  // namespace prism
