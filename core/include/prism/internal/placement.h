// prism/internal/placement.h — a hook for value types whose memory has a place (a device).
//
// Prism calls Placement<T>::on_produced(value) when a task returns a T (before anyone can read
// it), and hands readers Placement<T>::for_reader(stored) by value instead of a reference to the
// stored value: task arguments (ObjectRef<T> resolved for the task) and get(). The GPU module
// specializes it for prism::gpu::Tensor so that a tensor reaches each reader on the reader's
// device. Types without a specialization are untouched (readers get const T&).
// A specialization may also say where a value's bytes are, `static DataWhere where(const T&)`,
// for the planner of heterogeneous tasks (prism/variants.h); without it a value is on the host.
// And with `static constexpr bool kKeepsLive = true` a task result kept on a cluster node stays
// there as it is (a GPU tensor on its GPU) rather than serialized when the task ends
// (remote_call.h, LiveResult): `static bool keep_live(const T&)` (whether this value should),
// `static uint64_t wire_bytes(const T&)` (the size of its serialized form, without making it),
// `static void write_into(const T&, char* out, const std::function<void(uint64_t)>& written)`
// (its serialized form written into `out`, reporting each prefix that is complete),
// `static void write_stub(Writer&, const T&)` (what stands for it in the node's bytes: its
// reader there finds the value itself in the object's DecodedSlot, object_entry.h, under
// `static const void* live_tag()`, and refuses the stub anywhere else).
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

template <typename T>
concept KeepsLive = Placement<T>::kCustom && requires { requires Placement<T>::kKeepsLive; };

}  // namespace prism::internal
