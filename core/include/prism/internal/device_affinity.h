// prism/internal/device_affinity.h — which GPU a call's arguments already live on.
//
// A GPU task runs on the device that holds most of its arguments' bytes when that device has
// room (TaskRecord::preferred_gpu, read by the scheduler's lease holder as it takes the task:
// Scheduler::run_lease_loop moves the lease's GPU there, ResourcePool::move_gpu): reading them
// there costs no peer copy. Only arguments that are here and ready count (the task is queued
// once all are), through Placement<T>::where (a GPU tensor says its device); types without it
// count for nothing, so a call without such arguments pays only the fold over its types.
//
// Not for users.
#pragma once

#include <cstdint>
#include <type_traits>
#include <vector>

#include "prism/internal/object_entry.h"
#include "prism/internal/placement.h"
#include "prism/object_ref.h"

namespace prism::internal {

template <typename X>
struct IsVectorOfRefs : std::false_type {};
template <typename T>
struct IsVectorOfRefs<std::vector<ObjectRef<T>>> : std::true_type {};

// Argument bytes per GPU (devices beyond kMax are not counted: no preference among them).
struct DeviceTally {
  static constexpr int kMax = 16;
  int64_t bytes[kMax] = {};

  void add(const DataWhere& w) {
    if (w.device >= 0 && w.device < kMax) bytes[w.device] += w.bytes;
  }
  // The device holding the most bytes (the lowest on a tie); -1 if none holds any.
  int best() const {
    int out = -1;
    for (int d = 0; d < kMax; ++d) {
      if (bytes[d] > 0 && (out < 0 || bytes[d] > bytes[out])) out = d;
    }
    return out;
  }
};

template <typename T>
void tally_value(const T& v, DeviceTally* t) {
  if constexpr (requires { Placement<T>::where(v); }) t->add(Placement<T>::where(v));
}

template <typename X>
void tally_arg(const X& a, DeviceTally* t) {
  tally_value<X>(a, t);
}
template <typename T>
void tally_arg(const ObjectRef<T>& a, DeviceTally* t) {
  if constexpr (!std::is_void_v<T>) {
    if constexpr (requires(const T& v) { Placement<T>::where(v); }) {
      ObjectEntry* e = a.entry();
      if (e != nullptr && e->state() == ObjState::kReady) tally_value<T>(value_of<T>(e), t);
    }
  }
}
template <typename T>
void tally_arg(const std::vector<T>& a, DeviceTally* t) {
  if constexpr (requires(const T& v) { Placement<T>::where(v); }) {
    for (const T& v : a) tally_value<T>(v, t);
  }
}
template <typename T>
void tally_arg(const std::vector<ObjectRef<T>>& a, DeviceTally* t) {
  for (const auto& r : a) tally_arg(r, t);
}

// The GPU of this node holding most of the arguments' bytes, -1 if none.
template <typename... X>
int preferred_gpu_of(const X&... args) {
  DeviceTally t;
  (tally_arg(args, &t), ...);
  return t.best();
}

}  // namespace prism::internal
