// Device timing — when a GPU task's work ran on its device, for the timeline (prism::timeline,
// the dashboard), beside the host-side span of its run.
//
// begin() records a timing event on the task's stream as its run starts, end() another as it
// ends; once both have completed on the device, collect() turns them into a span on the host's
// steady clock through a reference event of the same device whose host time is known (recorded
// on an idle stream of that device and waited for; renewed every 10 s, as device and host clocks
// drift). Only the task's first granted device is timed. Pending spans are bounded
// (kMaxPendingSpans, the oldest dropped).
//
// Invariants (under the module's mutex): every pending span holds two events of its device and a
// reference of that device, destroyed together when it is collected or dropped.
//
// Thread-safe: begin/end pair up per thread (nesting allowed); collect and drop from any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace prism::gpu::internal {

inline constexpr size_t kMaxPendingSpans = 100000;

struct DeviceSpan {
  std::string name;
  int device = 0;
  std::chrono::steady_clock::time_point start;
  std::chrono::steady_clock::time_point end;
};

// The calling thread's run begins: for runtime `owner`, timed on `device`'s `stream` when
// `device` >= 0 (else nothing is timed; end() still pairs with it).
void device_timing_begin(uint64_t owner, const char* name, int device, void* stream) noexcept;
void device_timing_end() noexcept;
// `owner`'s spans whose work has completed, oldest first (removed from the pending ones).
std::vector<DeviceSpan> device_timing_collect(uint64_t owner) noexcept;
// Forgets `owner`'s pending spans (its runtime stopped).
void device_timing_drop(uint64_t owner) noexcept;
// Spans waiting for their work to complete (all owners): for tests.
size_t device_timing_pending() noexcept;

}  // namespace prism::gpu::internal
