#include "storage.h"

#include <atomic>

#include "backend.h"
#include "device_context.h"
#include "prism/gpu/tensor.h"

namespace prism::gpu {
namespace internal {
namespace {

struct Counters {
  std::atomic<uint64_t> h2d{0}, d2h{0}, d2d{0}, bytes{0};
};
Counters& counters() {
  static Counters c;
  return c;
}

}  // namespace

void count_copy(Device from, Device to, size_t bytes) noexcept {
  Counters& c = counters();
  if (from.is_host() && !to.is_host()) {
    c.h2d.fetch_add(1, std::memory_order_relaxed);
  } else if (!from.is_host() && to.is_host()) {
    c.d2h.fetch_add(1, std::memory_order_relaxed);
  } else if (!from.is_host() && !to.is_host()) {
    c.d2d.fetch_add(1, std::memory_order_relaxed);
  } else {
    return;  // host to host is not a device copy
  }
  c.bytes.fetch_add(bytes, std::memory_order_relaxed);
}

Storage::Storage(Device device, size_t bytes, Stream stream)
    : device_(device), bytes_(bytes), writer_(stream) {
  DeviceBackend& b = backend_instance();
  if (device.is_host()) {
    data_ = b.host_allocate(bytes);
  } else {
    DeviceGuard on(device);
    data_ = b.allocate(device.index, bytes, stream.handle());
  }
}

Storage::~Storage() {
  DeviceBackend& b = backend_instance();
  copies_.clear();
  if (event_ != nullptr) b.event_destroy(device_.index, event_);
  if (device_.is_host()) {
    b.host_free(data_);
  } else {
    b.free(device_.index, data_);
  }
}

void Storage::record(Stream stream) {
  if (device_.is_host()) return;
  prism::internal::MutexLock lock(mu_);
  DeviceBackend& b = backend_instance();
  DeviceGuard on(device_);
  if (event_ == nullptr) event_ = b.event_create(device_.index);
  b.event_record(event_, stream.handle());
  writer_ = stream;
}

void Storage::wait_on(Stream stream) {
  if (device_.is_host()) return;
  prism::internal::MutexLock lock(mu_);
  DeviceBackend& b = backend_instance();
  if (event_ != nullptr) {
    b.stream_wait_event(stream.handle(), event_);
  } else if (writer_.handle() != stream.handle()) {
    // Never recorded: everything queued on the writer's stream so far stands in for it.
    DeviceGuard on(device_);
    event_ = b.event_create(device_.index);
    b.event_record(event_, writer_.handle());
    b.stream_wait_event(stream.handle(), event_);
  }
}

void Storage::synchronize() {
  if (device_.is_host()) return;
  prism::internal::MutexLock lock(mu_);
  DeviceBackend& b = backend_instance();
  DeviceGuard on(device_);
  if (event_ != nullptr) {
    b.event_synchronize(event_);
  } else {
    b.stream_synchronize(writer_.handle());
  }
}

std::shared_ptr<Storage> Storage::copy_to(Device to, const std::shared_ptr<Storage>& self) {
  if (to == device_) return self;
  {
    prism::internal::MutexLock lock(mu_);
    for (const auto& [index, copy] : copies_) {
      if (index == to.index) return copy;
    }
  }
  // Made once: concurrent readers of this storage wait for the first one's copy (copy_mu_ is
  // held only here; mu_ is taken inside it, never the other way round).
  prism::internal::MutexLock make_lock(copy_mu_);
  {
    prism::internal::MutexLock lock(mu_);
    for (const auto& [index, copy] : copies_) {
      if (index == to.index) return copy;
    }
  }
  DeviceBackend& b = backend_instance();
  std::shared_ptr<Storage> copy;
  if (to.is_host()) {
    // Download on the source device's stream of this thread, after the contents are complete.
    DeviceGuard on(device_);
    Stream s = thread_stream(device_);
    wait_on(s);
    copy = std::make_shared<Storage>(to, bytes_, Stream());
    b.copy(copy->data(), to, data_, device_, bytes_, s.handle());
    b.stream_synchronize(s.handle());
  } else {
    // Upload or peer copy on the destination's stream of this thread; the copy is ready when
    // that stream reaches its event.
    DeviceGuard on(to);
    Stream s = thread_stream(to);
    if (!device_.is_host()) wait_on(s);
    copy = std::make_shared<Storage>(to, bytes_, s);
    b.copy(copy->data(), to, data_, device_, bytes_, s.handle());
    copy->record(s);
    // An upload reads host memory that the pool may hand out again as soon as this storage is
    // freed: let it finish before anyone can.
    if (device_.is_host()) b.stream_synchronize(s.handle());
  }
  count_copy(device_, to, bytes_);
  prism::internal::MutexLock lock(mu_);
  copies_.emplace_back(to.index, copy);
  return copy;
}

}  // namespace internal

CopyStats copy_stats() noexcept {
  internal::Counters& c = internal::counters();
  CopyStats s;
  s.host_to_device = c.h2d.load(std::memory_order_relaxed);
  s.device_to_host = c.d2h.load(std::memory_order_relaxed);
  s.device_to_device = c.d2d.load(std::memory_order_relaxed);
  s.bytes = c.bytes.load(std::memory_order_relaxed);
  return s;
}

}  // namespace prism::gpu
