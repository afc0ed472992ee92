// Storage — the memory behind one or more Tensor handles, on the host or one GPU, with its
// stream-order state (when its contents are complete) and its cached copies on other devices.
//
// Contents are written by the task that allocated them, then shared read-only. Readiness: an
// event recorded on the writer's stream (record()); readers order themselves after it
// (wait_on() for a stream, synchronize() for the host). Before any record(), the whole writer
// stream as it is at that moment stands in for the event.
//
// Copies: copy_to(device) makes the copy for a device once and keeps it for the storage's life,
// so a host read of a GPU tensor, or a GPU read of a host tensor, copies once however many
// readers there are. Each copy is counted in the process-wide copy stats.
//
// Thread-safe: every method may be called from any thread.
#pragma once

#include <cstddef>
#include <memory>
#include <utility>
#include <vector>

#include "prism/gpu/device.h"
#include "prism/gpu/stream.h"
#include "prism/internal/thread_annotations.h"

namespace prism::gpu::internal {

class Storage {
 public:
  // Allocates `bytes` on `device`, stream-ordered on `stream` (the calling thread's stream for
  // that device).
  Storage(Device device, size_t bytes, Stream stream);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  Device device() const noexcept { return device_; }
  size_t bytes() const noexcept { return bytes_; }
  void* data() const noexcept { return data_; }

  // The contents are complete once the work queued on `stream` so far has run.
  void record(Stream stream);
  // `stream` waits for the contents (no host blocking).
  void wait_on(Stream stream);
  // The host waits for the contents.
  void synchronize();

  // The contents on `device`: this storage itself if it is there, else the cached copy (made
  // now if it does not exist yet).
  std::shared_ptr<Storage> copy_to(Device device, const std::shared_ptr<Storage>& self);

 private:
  const Device device_;
  const size_t bytes_;
  void* data_ = nullptr;

  // Held while a copy of this storage is made (no user code runs); taken before mu_.
  prism::internal::Mutex copy_mu_;
  prism::internal::Mutex mu_;
  Stream writer_ PRISM_GUARDED_BY(mu_);           // the stream the contents were written on
  void* event_ PRISM_GUARDED_BY(mu_) = nullptr;   // recorded on writer_ by record(); null before
  // (device index, copy)
  std::vector<std::pair<int, std::shared_ptr<Storage>>> copies_ PRISM_GUARDED_BY(mu_);
};

// Counts a copy for copy_stats().
void count_copy(Device from, Device to, size_t bytes) noexcept;

}  // namespace prism::gpu::internal
