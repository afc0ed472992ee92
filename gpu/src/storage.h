// Storage — the memory behind one or more Tensor handles, on the host or one GPU, with its
// stream-order state (when its contents are complete, which streams used it) and its cached
// copies on other devices.
//
// Contents are written by the task that allocated them, then shared read-only. Readiness: an
// event recorded on the writer's stream (record()); readers order themselves after it
// (wait_on() for a stream, synchronize() for the host). Before any record(), the whole writer
// stream as it is at that moment stands in for the event.
//
// Freeing (the last handle goes): device memory is freed stream-ordered on the stream it was
// allocated on (`home_`, one of Prism's pooled streams, which never go away), after
//  * the ready event (the writer's work),
//  * the work queued so far on every Prism stream that waited for the contents (wait_on: each
//    reader's stream, including a peer copy's destination stream on another device),
//  * every use recorded with record_use() (streams of the user's own, which may be gone by then:
//    an event is recorded at once instead). A host storage waits for these on the host before
//    its pinned memory goes back to the pool.
// So a block is never handed out again while a copy or kernel still reads it, and a free is not
// a barrier across the device's streams (as a free on the legacy stream would be).
//
// Copies: copy_to(device) makes the copy for a device once and keeps it for the storage's life,
// so a host read of a GPU tensor, or a GPU read of a host tensor, copies once however many
// readers there are. Each copy is counted in the process-wide copy stats. A copy on a GPU may
// be given back earlier when that device runs out of memory and no handle holds it (CopyCache:
// an allocation on a full device evicts such copies, least recently used first, and tries
// again); its next reader makes it again.
//
// Staged transfers (a tensor crossing nodes through host memory, issue 13): read_chunks()
// downloads a GPU storage through two pinned staging buffers of stage_chunk_bytes(), so the
// download of chunk i+1 runs while the caller consumes chunk i (writes it into a message);
// fill_and_copy_to() writes a new host storage from received bytes and uploads each chunk as
// soon as it is written, so the host copy of chunk i+1 runs while chunk i is uploaded. On the
// host backend copies are synchronous: the same steps run, without overlap.
//
// Locks: mu_ guards the state above and is never held while the host waits for the GPU. Making a
// copy holds only that destination's maker lock (readers of the same destination wait for the
// one copy; readers of other destinations do not). Two atomics, written under mu_ with what they
// mirror, spare a reader the lock where it would do nothing (a chain of tasks on one device
// takes it once per link, in record(); on the host backend, where such a record() changes
// nothing, not even that):
//   - writer_stream_ is writer_'s handle when the writer is one of Prism's streams (home_, or a
//     user: add_user_locked keeps only Prism's), else null. Such a stream is a user already (or
//     home_), never destroyed (its handle never names another stream) and of one device, and a
//     stream is ordered after its own earlier work: wait_on() of it has nothing to do, whatever
//     the event. (Not a user's stream, which may be destroyed and its handle reused, nor the
//     null handle, which names the legacy stream of every device.)
//   - placed_ has kHostCopy / kDeviceCopy set while copies_ holds a made copy there: placed()
//     reads it alone (a placement hint: a copy made or dropped meanwhile changes only a choice).
//
// Thread-safe: every method may be called from any thread.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <utility>
#include <vector>

#include "prism/gpu/device.h"
#include "prism/gpu/stream.h"
#include "prism/internal/thread_annotations.h"

namespace prism::gpu::internal {

class Storage : public std::enable_shared_from_this<Storage> {
 public:
  // Allocates `bytes` on `device`, stream-ordered on `stream` (one of Prism's streams for that
  // device: the running task's), for a tensor of `shape` (its handles' shape unless reshaped;
  // copies of it keep it).
  using Shape = std::shared_ptr<const std::vector<int64_t>>;
  Storage(Device device, size_t bytes, Stream stream, Shape shape);
  ~Storage() PRISM_NO_THREAD_SAFETY_ANALYSIS;  // the last handle is gone: no other user
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  Device device() const noexcept { return device_; }
  size_t bytes() const noexcept { return bytes_; }
  const Shape& shape() const noexcept { return shape_; }
  void* data() const noexcept { return data_; }

  // The contents are complete once the work queued on `stream` so far has run.
  void record(Stream stream);
  // `stream` waits for the contents (no host blocking); a Prism stream is remembered as a user.
  void wait_on(Stream stream);
  // Whether wait_on(stream) has nothing to do: `stream` is the Prism stream that wrote the
  // contents last (Locks, below).
  bool ordered_on(Stream stream) const noexcept {
    return stream.handle() != nullptr &&
           stream.handle() == writer_stream_.load(std::memory_order_acquire);
  }
  // The work queued on `stream` so far uses the memory: it is not freed before that work ran.
  void record_use(Stream stream);
  // The host waits for the contents.
  void synchronize();

  // The contents on `device`: this storage itself if it is there, else the cached copy (made
  // now if it does not exist yet).
  std::shared_ptr<Storage> copy_to(Device device, const std::shared_ptr<Storage>& self);

  // Whether the contents exist on the host (here or as a made copy) and on some GPU.
  void placed(bool* on_host, bool* on_device);

  // Device memory pressure (CopyCache::evict): this storage's copy on GPU `device` if nothing
  // but the storage holds it, no longer kept (the caller drops it); else null.
  std::shared_ptr<Storage> take_unused_copy(int device);

  // A GPU storage's contents, in order, `sink(chunk, bytes)` for each chunk of at most
  // stage_chunk_bytes() (all of it at once when that is 0), downloaded on the running task's
  // stream for this device after the contents are complete. Makes no cached host copy: a
  // storage that has one (copy_to(host)) is read from it instead. The sink runs on the calling
  // thread and may throw (the staging buffers are given back after the copies in flight).
  void read_chunks(const std::function<void(const char*, size_t)>& sink);
  // A new host storage (no other handle yet) gets its contents from `src` (bytes() of them),
  // and its copy on GPU `to` is made at the same time, chunk by chunk (see above), then cached
  // as copy_to's copies are (the next copy_to(to) finds it).
  void fill_and_copy_to(const void* src, Device to);

  // For tests: how many streams and recorded uses the free will wait for.
  size_t users_for_testing();

 private:
  struct Copy {
    int device = -1;
    std::shared_ptr<Storage> storage;                   // null until made
    std::shared_ptr<prism::internal::Mutex> maker;      // held while it is made
  };
  // Keeps `stream` among the users if it is one of Prism's streams (the free waits for those);
  // returns whether it is one of Prism's: home_, or a user now. Not the null handle.
  bool add_user_locked(Stream stream) PRISM_REQUIRES(mu_);
  // placed_ from copies_, after a copy was made or dropped.
  void note_copies_locked() PRISM_REQUIRES(mu_);
  // The entry of copies_ for `device`, added (not made yet) if there is none.
  Copy& copy_entry_locked(int device) PRISM_REQUIRES(mu_);
  std::shared_ptr<Storage> make_copy(Device to);

  const Device device_;
  const size_t bytes_;
  const Shape shape_;
  const Stream home_;  // allocated (and freed) on this stream
  void* data_ = nullptr;

  prism::internal::Mutex mu_;
  Stream writer_ PRISM_GUARDED_BY(mu_);           // the stream the contents were written on
  // Recorded on writer_ (after the earlier writers' work); null before record().
  void* event_ PRISM_GUARDED_BY(mu_) = nullptr;
  std::vector<Stream> users_ PRISM_GUARDED_BY(mu_);      // Prism streams other than home_
  std::vector<void*> use_events_ PRISM_GUARDED_BY(mu_);  // record_use() events
  std::vector<Copy> copies_ PRISM_GUARDED_BY(mu_);
  std::atomic<void*> writer_stream_;  // writer_.handle() (see Locks above)
  static constexpr uint8_t kHostCopy = 1, kDeviceCopy = 2;
  std::atomic<uint8_t> placed_{0};  // copies made (see Locks above)
};

// The staged transfers' chunk (default 4 MiB); 0: one chunk, not pipelined. For tests and the
// bench; PRISM_STAGE_CHUNK_BYTES sets it at start.
size_t stage_chunk_bytes() noexcept;
void set_stage_chunk_bytes(size_t bytes) noexcept;

// Counts a copy for copy_stats().
void count_copy(Device from, Device to, size_t bytes) noexcept;
// Counts a tensor of `bytes` written for another node (sent) or read from one.
void count_network(bool sent, size_t bytes) noexcept;

}  // namespace prism::gpu::internal
