// CachingPool — host memory by size class, kept after free and handed out again (up to
// `max_cached` bytes cached in all, kMaxCachedBytes by default), over a raw allocator: aligned malloc for the host backend,
// pinned memory for the CUDA backend's host buffers. Sizes are rounded up to their class
// (powers of two up to 1 MiB, then whole MiB), aligned to kAlignment.
//
// Thread-safe: one mutex around the free lists; the raw allocator is called outside it.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <string>
#include <unordered_map>
#include <vector>

#include "prism/errors.h"
#include "prism/internal/thread_annotations.h"

namespace prism::gpu::internal {

inline constexpr size_t kAlignment = 256;  // what cudaMalloc guarantees; kernels may rely on it
inline constexpr size_t kMaxCachedBytes = size_t{1} << 30;

// Size classes: powers of two up to 1 MiB, then multiples of 1 MiB.
inline size_t size_class(size_t bytes) {
  if (bytes <= kAlignment) return kAlignment;
  if (bytes <= (size_t{1} << 20)) {
    size_t c = kAlignment;
    while (c < bytes) c <<= 1;
    return c;
  }
  const size_t mib = size_t{1} << 20;
  return (bytes + mib - 1) / mib * mib;
}

class CachingPool {
 public:
  using RawAlloc = void* (*)(size_t bytes);  // null when out of memory
  using RawFree = void (*)(void* p);

  CachingPool(RawAlloc raw_alloc, RawFree raw_free, size_t max_cached = kMaxCachedBytes)
      : raw_alloc_(raw_alloc), raw_free_(raw_free), max_cached_(max_cached) {}
  ~CachingPool() PRISM_NO_THREAD_SAFETY_ANALYSIS {  // no other user is left
    for (auto& [size, blocks] : free_) {
      for (void* p : blocks) raw_free_(p);
    }
  }
  CachingPool(const CachingPool&) = delete;
  CachingPool& operator=(const CachingPool&) = delete;
  void* allocate(size_t bytes) {
    void* p = try_allocate(bytes);
    if (p == nullptr) {
      throw Error(ErrorCode::kResourceExhausted,
                  "out of host memory allocating " + std::to_string(bytes) + " bytes");
    }
    return p;
  }
  // As allocate(), but null when the raw allocator has none.
  void* try_allocate(size_t bytes) {
    const size_t c = size_class(bytes);
    {
      prism::internal::MutexLock lock(mu_);
      auto it = free_.find(c);
      if (it != free_.end() && !it->second.empty()) {
        void* p = it->second.back();
        it->second.pop_back();
        cached_ -= c;
        sizes_[p] = c;
        return p;
      }
    }
    void* p = raw_alloc_(c);
    if (p == nullptr) return nullptr;
    prism::internal::MutexLock lock(mu_);
    sizes_[p] = c;
    return p;
  }
  void free(void* p) noexcept { (void)free_if_owned(p, /*foreign_too=*/true); }
  // Takes back a block this pool handed out; false (and nothing done) for any other pointer,
  // unless `foreign_too`, which gives it to the raw free.
  bool free_if_owned(void* p, bool foreign_too = false) noexcept {
    if (p == nullptr) return true;
    prism::internal::MutexLock lock(mu_);
    auto it = sizes_.find(p);
    if (it == sizes_.end() && !foreign_too) return false;
    const size_t c = it == sizes_.end() ? 0 : it->second;
    if (it != sizes_.end()) sizes_.erase(it);
    if (c == 0 || cached_ + c > max_cached_) {
      lock.unlock();
      raw_free_(p);
      return true;
    }
    try {
      free_[c].push_back(p);
      cached_ += c;
    } catch (...) {
      lock.unlock();
      raw_free_(p);
    }
    return true;
  }

 private:
  const RawAlloc raw_alloc_;
  const RawFree raw_free_;
  const size_t max_cached_;
  prism::internal::Mutex mu_;
  // size class -> cached blocks
  std::unordered_map<size_t, std::vector<void*>> free_ PRISM_GUARDED_BY(mu_);
  std::unordered_map<void*, size_t> sizes_ PRISM_GUARDED_BY(mu_);  // live block -> size class
  size_t cached_ PRISM_GUARDED_BY(mu_) = 0;
};

}  // namespace prism::gpu::internal
