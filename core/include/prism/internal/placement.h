// prism/internal/placement.h — a hook for value types whose memory has a place (a device).
//
// Prism calls Placement<T>::on_produced(value) when a task returns a T (before anyone can read
// it), and hands readers Placement<T>::for_reader(stored) by value instead of a reference to the
// stored value: task arguments (ObjectRef<T> resolved for the task) and get(). The GPU module
// specializes it for prism::gpu::Tensor so that a tensor reaches each reader on the reader's
// device. Types without a specialization are untouched (readers get const T&).
// A specialization may also say where a value's bytes are, `static DataWhere where(const T&)`,
// for the planner of heterogeneous tasks (prism/variants.h); without it a value is on the host.
//
// Not for users.
#pragma once

#include <cstdint>

namespace prism::internal {

struct DataWhere {
  int64_t bytes = 0;
  bool on_host = true;     // a host copy exists
  bool on_device = false;  // a copy on some GPU exists
  int device = -1;         // the GPU its own memory is on (-1: the host), device_affinity.h
};

template <typename T>
struct Placement {
  static constexpr bool kCustom = false;
};

}  // namespace prism::internal
