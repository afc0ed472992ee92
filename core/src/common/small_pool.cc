// The small-block pool (prism/internal/small_pool.h).
#include "prism/internal/small_pool.h"

#include <pthread.h>

#include <array>
#include <cstdint>
#include <new>

#include "common/prefetch.h"
#include "prism/internal/thread_annotations.h"

namespace prism::internal::small_pool {
namespace {

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kEnabled = false;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kEnabled = false;
#else
constexpr bool kEnabled = true;
#endif
#else
constexpr bool kEnabled = true;
#endif

constexpr size_t kClasses = class_of(kMaxPooledBytes) + 1;

struct Block {
  Block* next;
};
static_assert(sizeof(Block) <= block_bytes(0));

// Class c holds blocks of c * kGranule + 8 bytes (block_bytes).
size_t class_bytes(size_t c) noexcept { return c * kGranule + 8; }

void free_list(Block* b) noexcept {
  while (b != nullptr) {
    Block* next = b->next;
    ::operator delete(static_cast<void*>(b));
    b = next;
  }
}

// One class's central list: batches of exactly kBatch blocks.
struct Central {
  Mutex mu;
  std::array<Block*, kMaxCentralBatches> batches PRISM_GUARDED_BY(mu){};  // [0, count): full
  size_t count PRISM_GUARDED_BY(mu) = 0;
  size_t limit = kMaxCentralBatches;  // max_central_batches of the class (set once)

  // Takes a batch (null if none).
  Block* take() noexcept {
    MutexLock lock(mu);
    return count == 0 ? nullptr : batches[--count];
  }
  // Keeps `batch` (kBatch blocks), or frees it when full.
  void give(Block* batch) noexcept {
    {
      MutexLock lock(mu);
      if (count < limit) {
        batches[count++] = batch;
        return;
      }
    }
    free_list(batch);
  }
};

Central* centrals();

// fork(): the child's only thread may allocate; no central lock may be held by a thread that
// the child does not have (as glibc's malloc does for its arenas).
void lock_all_for_fork() PRISM_NO_THREAD_SAFETY_ANALYSIS {
  for (size_t c = 0; c < kClasses; ++c) centrals()[c].mu.lock();
}
void unlock_all_after_fork() PRISM_NO_THREAD_SAFETY_ANALYSIS {
  for (size_t c = kClasses; c-- > 0;) centrals()[c].mu.unlock();
}

// Never destroyed: threads that exit after static destruction still hand their lists over.
Central* centrals() {
  static Central* c = [] {
    auto* made = new Central[kClasses];
    for (size_t c = 0; c < kClasses; ++c) made[c].limit = max_central_batches(class_bytes(c));
    pthread_atfork(lock_all_for_fork, unlock_all_after_fork, unlock_all_after_fork);
    return made;
  }();
  return c;
}

struct Bin {
  Block* head = nullptr;
  size_t count = 0;
};

struct ThreadCache {
  std::array<Bin, kClasses> bins{};

  ~ThreadCache() {
    // Whole batches go to the central lists; the rest back to the system.
    for (size_t c = 0; c < kClasses; ++c) {
      Bin& bin = bins[c];
      while (bin.count >= kBatch) centrals()[c].give(split_batch(&bin));
      free_list(bin.head);
      bin = Bin{};
    }
  }

  // Removes kBatch blocks from the front of `bin` (which holds at least that many).
  static Block* split_batch(Bin* bin) noexcept {
    Block* first = bin->head;
    Block* last = first;
    for (size_t i = 1; i < kBatch; ++i) last = last->next;
    bin->head = last->next;
    last->next = nullptr;
    bin->count -= kBatch;
    return first;
  }
};

// The calling thread's cache, or null once its thread is exiting — then blocks come from and
// go to the system directly. No C++ thread_local with a destructor here: registering one (on a
// thread's first use) takes glibc's loader lock, which a forked child may find held forever by
// a thread it does not have. The cache is made with malloc (which glibc keeps fork-safe) and
// given back at thread exit by a pthread key's destructor.
thread_local ThreadCache* t_cache = nullptr;
thread_local bool t_exiting = false;

void give_back_at_exit(void* p) noexcept {
  t_exiting = true;  // frees by later exit handlers of this thread go to the system
  t_cache = nullptr;
  delete static_cast<ThreadCache*>(p);
}

ThreadCache* cache() noexcept {
  if (t_cache != nullptr) return t_cache;
  if (t_exiting) return nullptr;
  static const pthread_key_t key = [] {
    pthread_key_t k;
    return pthread_key_create(&k, give_back_at_exit) == 0 ? k : pthread_key_t(-1);
  }();
  if (key == pthread_key_t(-1)) return nullptr;  // (no key: every block from the system)
  auto* tc = new (std::nothrow) ThreadCache;
  if (tc == nullptr) return nullptr;
  if (pthread_setspecific(key, tc) != 0) {
    delete tc;
    return nullptr;
  }
  t_cache = tc;
  return tc;
}

}  // namespace

void* allocate(size_t bytes) {
  if (!kEnabled || bytes > kMaxPooledBytes) return ::operator new(bytes);
  const size_t c = class_of(bytes);
  ThreadCache* tc = cache();
  if (tc == nullptr) return ::operator new(class_bytes(c));
  Bin& bin = tc->bins[c];
  if (bin.head == nullptr) {
    Block* batch = centrals()[c].take();
    if (batch == nullptr) return ::operator new(class_bytes(c));
    bin.head = batch;
    bin.count = kBatch;
  }
  Block* b = bin.head;
  bin.head = b->next;
  --bin.count;
  // The next block was most likely freed by another thread (a worker that ran a task) and its
  // lines sit modified in that core's cache: ask for them in the exclusive state now, so that
  // the next allocation's read of its link and the caller's writes of the object do not wait
  // for the transfer.
  if (bin.head != nullptr) prefetch_for_write(bin.head, class_bytes(c));
  return b;
}

void deallocate(void* p, size_t bytes) noexcept {
  if (p == nullptr) return;
  if (!kEnabled || bytes > kMaxPooledBytes) {
    ::operator delete(p);
    return;
  }
  const size_t c = class_of(bytes);
  ThreadCache* tc = cache();
  if (tc == nullptr) {
    ::operator delete(p);
    return;
  }
  Bin& bin = tc->bins[c];
  auto* b = static_cast<Block*>(p);
  b->next = bin.head;
  bin.head = b;
  if (++bin.count >= 2 * kBatch) centrals()[c].give(ThreadCache::split_batch(&bin));
}

size_t thread_blocks(size_t bytes) noexcept {
  if (bytes > kMaxPooledBytes) return 0;
  ThreadCache* tc = cache();
  return tc == nullptr ? 0 : tc->bins[class_of(bytes)].count;
}

size_t central_blocks(size_t bytes) noexcept {
  if (bytes > kMaxPooledBytes) return 0;
  Central& c = centrals()[class_of(bytes)];
  MutexLock lock(c.mu);
  return c.count * kBatch;
}

bool enabled() noexcept { return kEnabled; }

}  // namespace prism::internal::small_pool
