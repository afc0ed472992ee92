// BufferPool — large std::vector buffers kept after their object is freed, so that the next copy
// of the same size lands in memory that is already faulted in.
//
// Copying 800 MB into freshly mapped pages runs at a fraction of memcpy's speed here (every 4 KiB
// page faults on first touch; PLATFORM.md: ~1.8 GB/s against ~11-19 GB/s). A copying put of a
// vector therefore takes its destination from this pool: when an object store entry holding a
// large std::vector<T> (T trivially copyable, capacity >= kMinBytes) is destroyed, its vector is
// offered here instead of being freed; a copying put of a vector of the same element type takes
// a pooled vector of a capacity between the size it needs and 5/4 of it, and copies into it. A
// put that finds none allocates fresh, asking for transparent huge pages on the new buffer
// (512 times fewer faults where the kernel has THP in madvise mode).
//
// The serialized form of a large value (a task's result kept on a node, a value kept there for
// the nodes that pull it) is written into a std::string: reserve_large() gives it a pooled
// string's buffer when one fits, and such strings are offered back (offer_string) when the
// bytes are let go (cluster/object_table.cc: make_blob).
//
// Bounded: the pool holds at most capacity() bytes (a quarter of the object store of the
// runtimes alive; 0 when none is), oldest buffers are freed first, it is emptied when the
// last runtime shuts down, and release_held() empties it (memory pressure: an object store
// that spills gives back what the pool holds). Pooled bytes are process memory, not object store contents: they
// are not counted in object_store_memory. stats() says what it holds.
//
// Thread-safe: one mutex; buffers are freed outside it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

namespace prism::internal {

// True for std::vector<T> of trivially copyable T (the buffers the pool keeps); not for
// std::vector<bool>, which packs bits and has no data().
template <typename V>
struct PoolableVector : std::false_type {};
template <typename T>
struct PoolableVector<std::vector<T, std::allocator<T>>>
    : std::bool_constant<std::is_trivially_copyable_v<T> && !std::is_same_v<T, bool>> {};

class BufferPool {
 public:
  // Smaller buffers come from malloc's arenas, which reuse them already.
  static constexpr size_t kMinBytes = size_t{1} << 20;

  struct Stats {
    int64_t capacity = 0;  // bytes it may hold
    int64_t bytes = 0;     // bytes it holds
    int64_t buffers = 0;
    int64_t reused = 0;    // takes served from the pool, in all
    int64_t fresh = 0;     // takes that found nothing and allocated
  };
  static Stats stats() noexcept;

  // Runtimes add a quarter of their object store when they start and remove it when they stop.
  static void add_capacity(int64_t bytes) noexcept;

  template <typename T>
  static constexpr bool kPoolable = std::is_trivially_copyable_v<T>;

  // Keeps `v`'s buffer if it is large enough and fits; else leaves `v` alone.
  template <typename T>
  static void offer(std::vector<T>& v) noexcept {
    static_assert(kPoolable<T>);
    const size_t bytes = v.capacity() * sizeof(T);
    if (bytes < kMinBytes) return;
    try {
      auto* held = new std::vector<T>(std::move(v));
      if (!store(Held{&typeid(T), bytes, held, &destroy<T>})) {
        v = std::move(*held);  // refused: the caller frees it
        delete held;
      }
    } catch (...) {
      // Out of memory for the holder: the buffer is simply freed.
    }
  }

  // A vector of `n` elements in a pooled buffer if one fits (its contents are then whatever the
  // buffer held: the caller overwrites them), else a fresh zeroed one (asking for huge pages).
  template <typename T>
  static std::vector<T> sized(size_t n) {
    static_assert(kPoolable<T>);
    const size_t bytes = n * sizeof(T);
    std::vector<T> out;
    if (bytes >= kMinBytes) {
      Held h = take(typeid(T), bytes, bytes + bytes / 4);
      if (h.vector != nullptr) {
        auto* held = static_cast<std::vector<T>*>(h.vector);
        out = std::move(*held);
        delete held;
        out.resize(n);  // (a pooled vector is usually at least n long: no fill)
        return out;
      }
      out.reserve(n);
      advise_fresh(out.data(), bytes);
    }
    out.resize(n);
    return out;
  }

  // Transparent huge pages for a buffer about to be written for the first time (advice only:
  // 512 times fewer page faults where the kernel has THP in madvise mode).
  static void advise_fresh(void* p, size_t bytes) noexcept;

  // A value about to be serialized into `out` (empty) that is estimated at `estimate` bytes:
  // when large, `out` gets that room first, from a pooled string's buffer of a capacity between
  // that and 5/4 of it (already faulted in), else in fresh memory asked for in huge pages (a
  // string grown into fresh 4 KiB pages pays a fault per page). Returns whether it did; then
  // call fit_reserved() after writing.
  static bool reserve_large(std::string* out, size_t estimate);
  // Keeps `s`'s buffer (emptied) if it is large enough and fits; else leaves `s` alone.
  static void offer_string(std::string& s) noexcept;
  // Frees every buffer the pool holds (with no lock held).
  static void release_held() noexcept;
  // Gives back room beyond a quarter more than was written: an estimate (ObjectSize counts
  // sizeof per element) can be far above the wire bytes, e.g. for short strings, and the
  // serialized copy is usually kept.
  static void fit_reserved(std::string* out);

  // A copy of `src`, into a pooled buffer if one fits, else into a fresh one.
  template <typename T>
  static std::vector<T> copy(const std::vector<T>& src) {
    static_assert(kPoolable<T>);
    const size_t bytes = src.size() * sizeof(T);
    if (bytes < kMinBytes) return src;
    Held h = take(typeid(T), bytes, bytes + bytes / 4);
    std::vector<T> out;
    if (h.vector != nullptr) {
      auto* held = static_cast<std::vector<T>*>(h.vector);
      out = std::move(*held);
      delete held;
    } else {
      out.reserve(src.size());
      advise_fresh(out.data(), bytes);
    }
    out.assign(src.begin(), src.end());  // within the capacity: no reallocation
    return out;
  }

 private:
  struct Held {
    const std::type_info* type = nullptr;
    size_t bytes = 0;  // capacity in bytes
    void* vector = nullptr;
    void (*destroy)(void*) = nullptr;
  };
  template <typename T>
  static void destroy(void* p) noexcept {
    delete static_cast<std::vector<T>*>(p);
  }
  // True if the pool keeps `h` (it then owns it).
  static bool store(Held h) noexcept;
  // A held buffer of `type` with capacity in [min_bytes, max_bytes]; vector == null if none.
  static Held take(const std::type_info& type, size_t min_bytes, size_t max_bytes) noexcept;
};

}  // namespace prism::internal
