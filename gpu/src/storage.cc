#include "storage.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>

#include "backend.h"
#include "copy_cache.h"
#include "device_health.h"
#include "prism/errors.h"
#include "device_context.h"
#include "prism/gpu/tensor.h"
#include "prism/internal/placement.h"

namespace prism::gpu {
namespace internal {
namespace {

struct Counters {
  std::atomic<uint64_t> h2d{0}, d2h{0}, d2d{0}, bytes{0};
  std::atomic<uint64_t> sends{0}, receives{0}, network_bytes{0};
};
Counters& counters() {
  static Counters c;
  return c;
}

std::atomic<size_t>& stage_chunk() {
  static std::atomic<size_t> bytes{[] {
    const char* env = std::getenv("PRISM_STAGE_CHUNK_BYTES");
    if (env == nullptr || *env == '\0') return size_t{4} << 20;
    char* end = nullptr;
    const unsigned long long v = std::strtoull(env, &end, 10);
    return end != nullptr && *end == '\0' ? static_cast<size_t>(v) : size_t{4} << 20;
  }()};
  return bytes;
}

// The pinned staging buffers and their events of one read_chunks(); given back after every copy
// queued into them has run (also when the sink throws midway).
struct Staging {
  Staging(DeviceBackend& b, int device, void* stream, size_t buffers, size_t bytes)
      : b(b), device(device), stream(stream) {
    try {
      for (size_t i = 0; i < buffers; ++i) {
        buffer[i] = static_cast<char*>(b.host_allocate(bytes));
        event[i] = b.event_create(device);
      }
    } catch (...) {
      release();
      throw;
    }
  }
  ~Staging() {
    bool synced = true;
    try {
      b.stream_synchronize(stream);
    } catch (...) {
      synced = false;
    }
    if (!synced && !device_failed(device, nullptr)) {
      // A copy queued into the buffers may still be running (an error that is not sticky need
      // not stop the stream's other work): the pinned pool must not hand them out again, so
      // they are kept (one pair per such failed read). After a sticky error the device is
      // marked failed and runs nothing more: they go back. The events may go: destroying one
      // whose work is pending is allowed.
      buffer[0] = buffer[1] = nullptr;
    }
    release();
  }
  Staging(const Staging&) = delete;
  Staging& operator=(const Staging&) = delete;

  // Waits until the copy last queued into buffer i has run.
  void wait(size_t i) {
    if (event[i] != nullptr) {
      b.event_synchronize(event[i]);
    } else {
      b.stream_synchronize(stream);  // (the host backend: its copies ran already)
    }
  }
  void release() noexcept {
    for (size_t i = 0; i < 2; ++i) {
      if (event[i] != nullptr) b.event_destroy(device, event[i]);
      b.host_free(buffer[i]);
      event[i] = nullptr;
      buffer[i] = nullptr;
    }
  }

  DeviceBackend& b;
  const int device;
  void* const stream;
  char* buffer[2] = {nullptr, nullptr};
  void* event[2] = {nullptr, nullptr};
};

}  // namespace

size_t stage_chunk_bytes() noexcept { return stage_chunk().load(std::memory_order_relaxed); }
void set_stage_chunk_bytes(size_t bytes) noexcept {
  stage_chunk().store(bytes, std::memory_order_relaxed);
}

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

void count_network(bool sent, size_t bytes) noexcept {
  Counters& c = counters();
  (sent ? c.sends : c.receives).fetch_add(1, std::memory_order_relaxed);
  c.network_bytes.fetch_add(bytes, std::memory_order_relaxed);
}

Storage::Storage(Device device, size_t bytes, Stream stream, Shape shape)
    : device_(device), bytes_(bytes), shape_(std::move(shape)), home_(stream), writer_(stream),
      writer_stream_(stream.handle()) {
  DeviceBackend& b = backend_instance();
  if (device.is_host()) {
    data_ = b.host_allocate(bytes);
  } else {
    DeviceGuard on(device);
    // A full device gives back the cached copies nobody uses, least recently used first, then
    // the allocation is tried again (CopyCache). Bounded: readers on other threads may make
    // copies again as fast as they are given back; after kEvictionRounds the error stands.
    constexpr int kEvictionRounds = 16;
    for (int round = 0;; ++round) {
      try {
        data_ = b.allocate(device.index, bytes, stream.handle());
        break;
      } catch (const Error& e) {
        // (Then a cluster node turns the results it keeps live there into host bytes.)
        if (e.code() != ErrorCode::kResourceExhausted || round == kEvictionRounds ||
            (CopyCache::instance().evict(device.index, bytes) == 0 &&
             prism::internal::release_live_results(device.index, bytes) == 0)) {
          throw;
        }
      }
    }
  }
}

Storage::~Storage() {
  DeviceBackend& b = backend_instance();
  copies_.clear();
  if (device_.is_host()) {
    // Work of the user's own streams recorded with record_use (a copy out of this pinned memory,
    // say) must have read it before the pool hands it out again.
    for (void* e : use_events_) {
      try {
        b.event_synchronize(e);
      } catch (...) {
        // A failed device: its work is gone with it.
      }
      b.event_destroy(-1, e);
    }
    b.host_free(data_);
    return;
  }
  // The ready event joins the recorded uses; without memory for that, the host waits for it.
  if (event_ != nullptr) {
    try {
      use_events_.push_back(event_);
      event_ = nullptr;
    } catch (...) {
      try {
        b.event_synchronize(event_);
      } catch (...) {
      }
    }
  }
  b.free(device_.index, data_, home_.handle(), users_, use_events_);
  for (void* e : use_events_) b.event_destroy(device_.index, e);
  if (event_ != nullptr) b.event_destroy(device_.index, event_);
}

bool Storage::add_user_locked(Stream stream) {
  if (stream.handle() == nullptr) return false;
  if (stream.handle() == home_.handle()) return true;
  for (const Stream& u : users_) {
    if (u.handle() == stream.handle()) return true;
  }
  // Only Prism's streams outlive the storage for sure: others must call record_use().
  if (!is_pool_stream(stream.handle())) return false;
  users_.push_back(stream);
  return true;
}

void Storage::record(Stream stream) {
  if (device_.is_host()) return;
  // The host backend has no events and its streams' work has run already: written again on the
  // Prism stream that wrote it last (a chain of tasks on one device), nothing would change.
  // (On CUDA the event is recorded again, under mu_: a record on another stream meanwhile must
  // fold that stream's work into the same event.)
  if (!on_cuda_backend() && ordered_on(stream)) return;
  DeviceBackend& b = backend_instance();
  prism::internal::MutexLock lock(mu_);
  DeviceGuard on(device_);
  if (event_ == nullptr) {
    event_ = b.event_create(device_.index);
  } else if (writer_.handle() != stream.handle()) {
    // Written on another stream before (e.g. the user's, then Prism's when the task returns):
    // the new event must also cover that work, for readers and for the free.
    b.stream_wait_event(stream.handle(), event_);
  }
  b.event_record(event_, stream.handle());
  writer_ = stream;
  // (Published once it is a user, and only if it is one of Prism's streams: Locks, above.)
  const bool prisms = add_user_locked(stream);
  writer_stream_.store(prisms ? stream.handle() : nullptr, std::memory_order_release);
}

void Storage::wait_on(Stream stream) {
  if (device_.is_host()) return;
  // (The writer's own stream, one of Prism's: ordered after its work already, and a user. Locks,
  // above.)
  if (ordered_on(stream)) return;
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
  add_user_locked(stream);
}

void Storage::record_use(Stream stream) {
  // A null handle on a GPU is that device's legacy default stream (stream 0), which is not
  // ordered with Prism's streams: its uses are recorded like any other stream's.
  if (stream.device().is_host()) return;
  DeviceBackend& b = backend_instance();
  DeviceGuard on(stream.device());
  void* e = b.event_create(stream.device().index);
  if (e == nullptr) return;  // the host backend: work on a stream has run already
  try {
    b.event_record(e, stream.handle());
    prism::internal::MutexLock lock(mu_);
    use_events_.push_back(e);
  } catch (...) {
    b.event_destroy(stream.device().index, e);
    throw;
  }
}

void Storage::synchronize() {
  if (device_.is_host()) return;
  void* event;
  Stream writer;
  {
    prism::internal::MutexLock lock(mu_);
    event = event_;  // destroyed only with the storage, which the caller holds
    writer = writer_;
  }
  DeviceBackend& b = backend_instance();
  DeviceGuard on(device_);
  if (event != nullptr) {
    b.event_synchronize(event);
  } else {
    b.stream_synchronize(writer.handle());
  }
}

size_t Storage::users_for_testing() {
  prism::internal::MutexLock lock(mu_);
  return users_.size() + use_events_.size();
}

void Storage::placed(bool* on_host, bool* on_device) {
  const uint8_t copies = placed_.load(std::memory_order_relaxed);
  *on_host = device_.is_host() || (copies & kHostCopy) != 0;
  *on_device = !device_.is_host() || (copies & kDeviceCopy) != 0;
}

void Storage::note_copies_locked() {
  uint8_t copies = 0;
  for (const Copy& c : copies_) {
    if (c.storage) copies |= c.device < 0 ? kHostCopy : kDeviceCopy;
  }
  placed_.store(copies, std::memory_order_relaxed);
}

std::shared_ptr<Storage> Storage::take_unused_copy(int device) {
  prism::internal::MutexLock lock(mu_);
  for (Copy& c : copies_) {
    // (Handles are made from copies_ only under mu_: a count of 1 stays 1 while it is held.)
    if (c.device == device && c.storage && c.storage.use_count() == 1) {
      std::shared_ptr<Storage> taken = std::move(c.storage);
      note_copies_locked();
      return taken;
    }
  }
  return nullptr;
}

std::shared_ptr<Storage> Storage::copy_to(Device to, const std::shared_ptr<Storage>& self) {
  if (to == device_) return self;
  std::shared_ptr<prism::internal::Mutex> maker;
  {
    std::shared_ptr<Storage> cached;
    {
      prism::internal::MutexLock lock(mu_);
      Copy& entry = copy_entry_locked(to.index);
      if (entry.storage) {
        cached = entry.storage;
      } else {
        maker = entry.maker;
      }
    }
    if (cached) {
      if (!to.is_host()) CopyCache::instance().used(self, to.index);
      return cached;
    }
  }
  // Made once: readers of this destination wait here for the first one's copy; no lock of the
  // storage is held meanwhile.
  prism::internal::MutexLock make_lock(*maker);
  {
    prism::internal::MutexLock lock(mu_);
    for (const Copy& c : copies_) {
      if (c.device == to.index && c.storage) return c.storage;
    }
  }
  std::shared_ptr<Storage> copy = make_copy(to);  // on failure the next reader tries again
  count_copy(device_, to, bytes_);
  {
    prism::internal::MutexLock lock(mu_);
    copy_entry_locked(to.index).storage = copy;
    note_copies_locked();
  }
  if (!to.is_host()) CopyCache::instance().added(self, to.index, bytes_);
  return copy;
}

Storage::Copy& Storage::copy_entry_locked(int device) {
  for (Copy& c : copies_) {
    if (c.device == device) return c;
  }
  copies_.push_back(Copy{device, nullptr, std::make_shared<prism::internal::Mutex>()});
  return copies_.back();
}

void Storage::read_chunks(const std::function<void(const char*, size_t)>& sink) {
  if (bytes_ == 0) return;
  if (device_.is_host()) {
    sink(static_cast<const char*>(data_), bytes_);
    return;
  }
  std::shared_ptr<Storage> host;  // a host copy made earlier: read from it, no download
  {
    prism::internal::MutexLock lock(mu_);
    for (const Copy& c : copies_) {
      if (c.device < 0 && c.storage) host = c.storage;
    }
  }
  if (host) {
    sink(static_cast<const char*>(host->data()), bytes_);
    return;
  }
  DeviceBackend& b = backend_instance();
  DeviceGuard on(device_);
  Stream s = task_stream(device_);
  wait_on(s);  // after the contents; this storage's free waits for the downloads
  const size_t want = stage_chunk_bytes();
  const size_t chunk = want == 0 ? bytes_ : std::min(want, bytes_);
  const size_t chunks = (bytes_ + chunk - 1) / chunk;
  Staging staging(b, device_.index, s.handle(), chunks > 1 ? 2 : 1, chunk);
  const char* const src = static_cast<const char*>(data_);
  auto length = [&](size_t i) { return std::min(chunk, bytes_ - i * chunk); };
  auto queue = [&](size_t i) {
    b.copy(staging.buffer[i % 2], Device::host(), src + i * chunk, device_, length(i), s.handle());
    if (staging.event[i % 2] != nullptr) b.event_record(staging.event[i % 2], s.handle());
  };
  // Invariant: when chunk i is handed to the sink, the download of chunk i+1 is queued into the
  // other buffer, whose previous chunk (i-1) the sink has already consumed.
  // (Counted before the last chunk reaches the sink, which may send it: a reader elsewhere that
  // has every byte finds the download counted.)
  queue(0);
  for (size_t i = 0; i < chunks; ++i) {
    if (i + 1 < chunks) queue(i + 1);
    staging.wait(i % 2);
    if (i + 1 == chunks) count_copy(device_, Device::host(), bytes_);
    sink(staging.buffer[i % 2], length(i));
  }
}

void Storage::fill_and_copy_to(const void* src, Device to) {
  if (!device_.is_host() || to.is_host()) {
    throw Error(ErrorCode::kInternal, "fill_and_copy_to: from a host storage to a GPU only");
  }
  std::shared_ptr<Storage> self = shared_from_this();
  DeviceBackend& b = backend_instance();
  DeviceGuard on(to);
  Stream s = task_stream(to);
  auto copy = std::make_shared<Storage>(to, bytes_, s, shape_);
  const size_t want = stage_chunk_bytes();
  const size_t chunk = want == 0 || bytes_ == 0 ? std::max<size_t>(bytes_, 1)
                                                : std::min(want, bytes_);
  char* const host = static_cast<char*>(data_);
  char* const device = static_cast<char*>(copy->data());
  const char* const from = static_cast<const char*>(src);
  try {
    // Each chunk's upload is queued as soon as its host copy is written: the next host copy
    // runs while it uploads.
    for (size_t at = 0; at < bytes_; at += chunk) {
      const size_t n = std::min(chunk, bytes_ - at);
      std::memcpy(host + at, from + at, n);
      b.copy(device + at, to, host + at, device_, n, s.handle());
    }
    copy->record(s);
    // The uploads read this host memory, which the pool may hand out again once this storage is
    // freed: they finish first (as make_copy's upload does).
    b.stream_synchronize(s.handle());
  } catch (...) {
    try {
      b.stream_synchronize(s.handle());
    } catch (...) {
    }
    throw;
  }
  count_copy(device_, to, bytes_);
  {
    prism::internal::MutexLock lock(mu_);
    copy_entry_locked(to.index).storage = copy;
    note_copies_locked();
  }
  CopyCache::instance().added(self, to.index, bytes_);
}

std::shared_ptr<Storage> Storage::make_copy(Device to) {
  DeviceBackend& b = backend_instance();
  std::shared_ptr<Storage> copy;
  if (to.is_host()) {
    // Download on the running task's stream for the source device, after the contents are
    // complete (wait_on also makes the source's free wait for the download).
    DeviceGuard on(device_);
    Stream s = task_stream(device_);
    wait_on(s);
    copy = std::make_shared<Storage>(to, bytes_, Stream(), shape_);
    b.copy(copy->data(), to, data_, device_, bytes_, s.handle());
    b.stream_synchronize(s.handle());
  } else {
    // Upload or peer copy on the destination's stream; the copy is ready when that stream
    // reaches its event. A peer copy reads this storage from another device's stream: wait_on
    // makes this storage's free wait for it.
    DeviceGuard on(to);
    Stream s = task_stream(to);
    if (!device_.is_host()) wait_on(s);
    copy = std::make_shared<Storage>(to, bytes_, s, shape_);
    b.copy(copy->data(), to, data_, device_, bytes_, s.handle());
    copy->record(s);
    // An upload reads host memory that the pool may hand out again as soon as this storage is
    // freed: let it finish before anyone can.
    if (device_.is_host()) b.stream_synchronize(s.handle());
  }
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
  s.network_sends = c.sends.load(std::memory_order_relaxed);
  s.network_receives = c.receives.load(std::memory_order_relaxed);
  s.network_bytes = c.network_bytes.load(std::memory_order_relaxed);
  return s;
}

}  // namespace prism::gpu
