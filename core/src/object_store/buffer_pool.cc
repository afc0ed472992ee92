#include "prism/internal/buffer_pool.h"

#include <sys/mman.h>

#include <algorithm>
#include <deque>
#include <memory>
#include <string>

#include "prism/internal/thread_annotations.h"

namespace prism::internal {
namespace {

class Pool {
 public:
  struct Entry {
    const std::type_info* type;
    size_t bytes;
    void* vector;
    void (*destroy)(void*);
  };

  // Evicted entries are returned for the caller to destroy outside the lock.
  bool store(const Entry& e, std::vector<Entry>* evicted) {
    MutexLock lock(mu_);
    if (static_cast<int64_t>(e.bytes) > capacity_) return false;
    trim_locked(capacity_ - static_cast<int64_t>(e.bytes), evicted);
    held_.push_back(e);
    bytes_ += static_cast<int64_t>(e.bytes);
    return true;
  }
  bool take(const std::type_info& type, size_t min_bytes, size_t max_bytes, Entry* out) {
    MutexLock lock(mu_);
    for (auto it = held_.rbegin(); it != held_.rend(); ++it) {  // newest first: warmest
      if (it->bytes >= min_bytes && it->bytes <= max_bytes && *it->type == type) {
        *out = *it;
        bytes_ -= static_cast<int64_t>(it->bytes);
        held_.erase(std::next(it).base());
        ++reused_;
        return true;
      }
    }
    ++fresh_;
    return false;
  }
  void add_capacity(int64_t delta, std::vector<Entry>* evicted) {
    MutexLock lock(mu_);
    capacity_ = std::max<int64_t>(0, capacity_ + delta);
    trim_locked(capacity_, evicted);
  }
  void release_all(std::vector<Entry>* evicted) {
    MutexLock lock(mu_);
    trim_locked(0, evicted);
  }
  BufferPool::Stats stats() {
    MutexLock lock(mu_);
    BufferPool::Stats s;
    s.capacity = capacity_;
    s.bytes = bytes_;
    s.buffers = static_cast<int64_t>(held_.size());
    s.reused = reused_;
    s.fresh = fresh_;
    return s;
  }

 private:
  void trim_locked(int64_t limit, std::vector<Entry>* evicted) PRISM_REQUIRES(mu_) {
    while (bytes_ > limit && !held_.empty()) {  // oldest first
      bytes_ -= static_cast<int64_t>(held_.front().bytes);
      evicted->push_back(held_.front());
      held_.pop_front();
    }
  }

  Mutex mu_;
  std::deque<Entry> held_ PRISM_GUARDED_BY(mu_);
  int64_t bytes_ PRISM_GUARDED_BY(mu_) = 0;
  int64_t capacity_ PRISM_GUARDED_BY(mu_) = 0;
  int64_t reused_ PRISM_GUARDED_BY(mu_) = 0;
  int64_t fresh_ PRISM_GUARDED_BY(mu_) = 0;
};

// Never destroyed: entries may be freed during static destruction.
Pool& pool() {
  static Pool* const p = new Pool;
  return *p;
}

void destroy_all(const std::vector<Pool::Entry>& entries) noexcept {
  for (const Pool::Entry& e : entries) e.destroy(e.vector);
}

}  // namespace

bool BufferPool::store(Held h) noexcept {
  std::vector<Pool::Entry> evicted;
  bool kept = false;
  try {
    evicted.reserve(4);
    kept = pool().store(Pool::Entry{h.type, h.bytes, h.vector, h.destroy}, &evicted);
  } catch (...) {
    kept = false;  // out of memory for the bookkeeping: the caller frees the buffer
  }
  destroy_all(evicted);
  return kept;
}

BufferPool::Held BufferPool::take(const std::type_info& type, size_t min_bytes,
                                  size_t max_bytes) noexcept {
  Pool::Entry e{};
  if (!pool().take(type, min_bytes, max_bytes, &e)) return Held{};
  return Held{e.type, e.bytes, e.vector, e.destroy};
}

void BufferPool::add_capacity(int64_t bytes) noexcept {
  std::vector<Pool::Entry> evicted;
  try {
    pool().add_capacity(bytes, &evicted);
  } catch (...) {
  }
  destroy_all(evicted);
}

BufferPool::Stats BufferPool::stats() noexcept { return pool().stats(); }

bool BufferPool::reserve_large(std::string* out, size_t estimate) {
  const size_t want = estimate + 64;  // (+64: the serialized form's own counts and headers)
  if (estimate < kMinBytes || out->capacity() >= want) return false;
  if (out->empty()) {
    const Held h = take(typeid(std::string), want, want + want / 4);
    if (h.vector != nullptr) {
      std::unique_ptr<std::string> held(static_cast<std::string*>(h.vector));
      held->clear();
      out->swap(*held);  // (out's own small buffer goes with the holder)
      return true;
    }
  }
  out->reserve(want);
  advise_fresh(out->data(), out->capacity());
  return true;
}

void BufferPool::offer_string(std::string& s) noexcept {
  const size_t bytes = s.capacity();
  if (bytes < kMinBytes) return;
  try {
    auto* held = new std::string(std::move(s));  // (takes the buffer: no copy)
    if (!store(Held{&typeid(std::string), bytes, held,
                    [](void* p) { delete static_cast<std::string*>(p); }})) {
      s = std::move(*held);  // refused: the caller frees it
      delete held;
    }
  } catch (...) {
    // Out of memory for the holder: the buffer is simply freed.
  }
}

void BufferPool::release_held() noexcept {
  std::vector<Pool::Entry> evicted;
  try {
    pool().release_all(&evicted);
  } catch (...) {
  }
  destroy_all(evicted);
}

void BufferPool::fit_reserved(std::string* out) {
  if (out->capacity() > out->size() + out->size() / 4 + 64) out->shrink_to_fit();
}

void BufferPool::advise_fresh(void* p, size_t bytes) noexcept {
#ifdef MADV_HUGEPAGE
  constexpr uintptr_t kPage = 4096;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(p) + kPage - 1) & ~(kPage - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(p) + bytes) & ~(kPage - 1);
  if (end > begin) {
    // Advice only: where THP is off or the range is not eligible, nothing changes.
    (void)madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
  }
#else
  (void)p;
  (void)bytes;
#endif
}

}  // namespace prism::internal
