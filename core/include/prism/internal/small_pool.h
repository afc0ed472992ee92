// prism/internal/small_pool.h — memory for task records and result entries.
//
// Every call allocates a task record and a result entry, usually on the submitting thread, and
// frees them on the worker that ran the task. Through malloc, such a producer/consumer pattern
// misses the thread caches on both sides (the submitter's cache empties, the worker's fills and
// spills to a locked arena). This pool keeps freed blocks of each size class (block_bytes:
// 8, 24, 40, ... up to kMaxPooledBytes + 8) in a per-thread list; a list that grows past
// 2 * kBatch hands kBatch blocks to a central list, and a thread whose list is empty takes a
// batch from there, so blocks flow from the threads that free to the threads that allocate with
// one short lock per kBatch blocks. The central list keeps at most about kCentralBytes per class, between
// kMinCentralBatches and kMaxCentralBatches batches (max_central_batches; beyond that,
// blocks go back to the system), and a thread's list goes to it when the thread exits (a
// pthread key's destructor: no C++ thread_local destructor, whose registration would take a
// lock that a forked child may find held). fork() is safe: the central locks are taken
// before it and released after, in parent and child (pthread_atfork).
//
// Every block is a plain ::operator new of its class's size, so a block may always be freed
// with ::operator delete instead (as happens after the thread's cache is gone, during thread
// exit). Larger requests, and every request in AddressSanitizer builds (so that use after free
// stays detected), go straight to ::operator new.
//
// The classes are 8 bytes short of multiples of 16: glibc's malloc adds an 8-byte header to a
// block and rounds the whole to 16 bytes, so a block of 16k + 8 bytes fills its chunk where one
// of 16k leaves 8 bytes unused (16 bytes a task for an 88-byte result entry pooled as 96). The
// pool relies on the allocator's 16-byte alignment of every block, which glibc (and musl and
// jemalloc) give whatever the size; the standard promises only what an object of that size
// needs, 8 bytes for 16k + 8 (a test checks it here).
//
// Invariants: a thread's list holds only blocks of that list's class, at most 2 * kBatch of
// them; a central batch holds exactly kBatch blocks of its class; the central lists change
// only under their class's mutex.
//
// Thread-safe: allocate and deallocate from any thread; a block may be freed on another thread
// than the one that allocated it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <new>

namespace prism::internal::small_pool {

inline constexpr size_t kGranule = 16;
inline constexpr size_t kMaxPooledBytes = 512;
// The class of a request of `bytes`, and the size of its blocks: 16 * class + 8, the smallest
// such size >= bytes.
constexpr size_t class_of(size_t bytes) noexcept { return (bytes + 7) / kGranule; }
constexpr size_t block_bytes(size_t bytes) noexcept { return class_of(bytes) * kGranule + 8; }
inline constexpr size_t kBatch = 64;
// A submitter that runs thousands of tasks ahead of the workers (a task graph submitted whole)
// takes that many blocks from the central list, and the workers give them back: the list keeps
// about a megabyte per class so that such bursts come from the pool, not from malloc.
inline constexpr size_t kCentralBytes = size_t{1} << 20;
inline constexpr size_t kMinCentralBatches = 16;
inline constexpr size_t kMaxCentralBatches = 256;
// The most batches the central list keeps for blocks of `bytes` (<= kMaxPooledBytes).
constexpr size_t max_central_batches(size_t bytes) noexcept {
  const size_t fit = kCentralBytes / (kBatch * block_bytes(bytes));
  return fit < kMinCentralBatches ? kMinCentralBatches
                                  : fit > kMaxCentralBatches ? kMaxCentralBatches : fit;
}

// `bytes` of memory aligned to __STDCPP_DEFAULT_NEW_ALIGNMENT__; throws std::bad_alloc.
void* allocate(size_t bytes);
// Frees a block from allocate(`bytes`) (the same `bytes`).
void deallocate(void* p, size_t bytes) noexcept;

// For tests: blocks of the class of `bytes` held by the calling thread's list and by the
// central list.
size_t thread_blocks(size_t bytes) noexcept;
size_t central_blocks(size_t bytes) noexcept;
// True if this build pools at all (not under AddressSanitizer).
bool enabled() noexcept;

}  // namespace prism::internal::small_pool

// Gives a class (and every class derived from it) the pool's memory: a class-specific
// operator new/delete, plus the over-aligned forms, which go to the global ones (a class
// whose operator new is declared would otherwise get the plain form for an over-aligned type).
#define PRISM_SMALL_POOL_ALLOCATED                                                          \
  static void* operator new(std::size_t bytes) {                                           \
    return ::prism::internal::small_pool::allocate(bytes);                                 \
  }                                                                                        \
  static void operator delete(void* p, std::size_t bytes) noexcept {                       \
    ::prism::internal::small_pool::deallocate(p, bytes);                                   \
  }                                                                                        \
  static void* operator new(std::size_t bytes, std::align_val_t align) {                   \
    return ::operator new(bytes, align);                                                   \
  }                                                                                        \
  static void operator delete(void* p, std::align_val_t align) noexcept {                  \
    ::operator delete(p, align); /* (unsized: clang declares sized ones only on request) */ \
  }
