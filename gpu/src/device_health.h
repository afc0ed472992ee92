// Devices that failed for good during the run (a sticky CUDA error: illegal address, launch
// failure, uncorrectable ECC, ...; what `nvidia-smi` reports as an Xid). A failed device's context
// is unusable for the rest of the process: tasks granted it fail fast (GpuSupport::enter) with
// the reason recorded here, and the schedulers stop granting it wherever another device could
// serve the request (core's report_device_failure).
//
// Thread-safe: every function may be called from any thread.
#pragma once

#include <string>

namespace prism::gpu::internal {

// Marks Prism device `device` failed because of `why` (the first reason is kept), logs it once
// and tells the schedulers.
void mark_device_failed(int device, const std::string& why) noexcept;
// True if `device` failed; *why (if not null) gets the message a task granted it fails with.
bool device_failed(int device, std::string* why);
// Forgets every failure (here and in the schedulers). For tests only: a real failed device stays
// failed.
void clear_device_failures_for_testing() noexcept;

}  // namespace prism::gpu::internal
