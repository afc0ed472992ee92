// prism/internal/placement.h — a hook for value types whose memory has a place (a device).
//
// Prism calls Placement<T>::on_produced(value) when a task returns a T (before anyone can read
// it), and hands readers Placement<T>::for_reader(stored) by value instead of a reference to the
// stored value: task arguments (ObjectRef<T> resolved for the task) and get(). The GPU module
// specializes it for prism::gpu::Tensor so that a tensor reaches each reader on the reader's
// device. Types without a specialization are untouched (readers get const T&).
// With `static bool reads_in_place(const T&)` a specialization says when a reader here may use
// the stored value as it is (for_reader would give the same thing, with nothing to do): a task
// whose callable accepts the value as const T& is then handed the stored value itself
// (task_impl.h, Borrow), sparing the copy.
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
// `static const void* live_tag()`, and refuses the stub anywhere else). Its `where()` names the
// GPU it is kept on: under that device's memory pressure the node turns it into host bytes
// (release_live_results below).
//
// Not for users.
#pragma once

#include <cstddef>
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

// Device memory pressure (cluster mode): the GPU module calls release_live_results when an
// allocation on GPU `device` fails after its cached copies were given back. The cluster module
// (set_live_results_releaser, once per process) then turns the results its node keeps live on
// that device into host bytes, least recently used first, until about `bytes` of it were let
// go. Returns the device bytes let go (0: none, or no releaser: the allocation fails). Device
// memory a reader still holds goes when that reader lets go.
using LiveResultsReleaser = size_t (*)(int device, size_t bytes);
void set_live_results_releaser(LiveResultsReleaser releaser) noexcept;
size_t release_live_results(int device, size_t bytes) noexcept;

}  // namespace prism::internal
