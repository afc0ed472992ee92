// prism/internal/thread_annotations.h — clang thread-safety annotations and the annotated locks.
//
//   class Queue {
//     void push(int v) PRISM_EXCLUDES(mu_) { MutexLock lock(mu_); items_.push_back(v); }
//     void drop_locked() PRISM_REQUIRES(mu_);
//     Mutex mu_;
//     std::vector<int> items_ PRISM_GUARDED_BY(mu_);
//   };
//
// Every build made with clang checks them (-Wthread-safety -Werror=thread-safety, see the top
// CMakeLists.txt); elsewhere the macros are empty. The locks expose no native handle, so no wait
// can take a lock behind the analysis' back; Prism's blocking waits are futex events instead.
//
// Not for users. Thread-safe: Mutex and SpinLock are locks.
#pragma once

#include <atomic>
#include <mutex>

#if defined(__clang__)
#define PRISM_THREAD_ANNOTATION(x) __attribute__((x))
#else
#define PRISM_THREAD_ANNOTATION(x)
#endif

#define PRISM_CAPABILITY(x) PRISM_THREAD_ANNOTATION(capability(x))
#define PRISM_SCOPED_CAPABILITY PRISM_THREAD_ANNOTATION(scoped_lockable)
#define PRISM_GUARDED_BY(x) PRISM_THREAD_ANNOTATION(guarded_by(x))
#define PRISM_PT_GUARDED_BY(x) PRISM_THREAD_ANNOTATION(pt_guarded_by(x))
#define PRISM_REQUIRES(...) PRISM_THREAD_ANNOTATION(requires_capability(__VA_ARGS__))
#define PRISM_EXCLUDES(...) PRISM_THREAD_ANNOTATION(locks_excluded(__VA_ARGS__))
#define PRISM_ACQUIRE(...) PRISM_THREAD_ANNOTATION(acquire_capability(__VA_ARGS__))
#define PRISM_RELEASE(...) PRISM_THREAD_ANNOTATION(release_capability(__VA_ARGS__))
#define PRISM_ASSERT_CAPABILITY(x) PRISM_THREAD_ANNOTATION(assert_capability(x))
#define PRISM_NO_THREAD_SAFETY_ANALYSIS PRISM_THREAD_ANNOTATION(no_thread_safety_analysis)

namespace prism::internal {

class PRISM_CAPABILITY("mutex") Mutex {
 public:
  void lock() PRISM_ACQUIRE() { mu_.lock(); }
  void unlock() PRISM_RELEASE() { mu_.unlock(); }
  // Tells the analysis that this mutex is held: for a lock reached through another path (e.g.
  // `worker->sched->mu_` while the caller holds `mu_` of the same scheduler). No runtime check.
  void assert_held() const PRISM_ASSERT_CAPABILITY(this) {}

 private:
  std::mutex mu_;
};

// Scoped lock that can be released and re-taken (for "collect, unlock, invoke").
class PRISM_SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex& mu) PRISM_ACQUIRE(mu) : mu_(&mu) { mu.lock(); }
  ~MutexLock() PRISM_RELEASE() {
    if (held_) mu_->unlock();
  }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;
  void unlock() PRISM_RELEASE() {
    held_ = false;
    mu_->unlock();
  }
  void lock() PRISM_ACQUIRE() {
    mu_->lock();
    held_ = true;
  }

 private:
  Mutex* mu_;
  bool held_ = true;
};

// A one-byte lock for very short critical sections (a few pointer writes).
class PRISM_CAPABILITY("spinlock") SpinLock {
 public:
  void lock() noexcept PRISM_ACQUIRE();
  void unlock() noexcept PRISM_RELEASE() { flag_.store(false, std::memory_order_release); }

 private:
  std::atomic<bool> flag_{false};
};

}  // namespace prism::internal
