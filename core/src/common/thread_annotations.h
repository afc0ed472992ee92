// Clang thread-safety annotations (no-ops elsewhere), and an annotated mutex.
//
// Thread-safe: Mutex is a mutex.
#pragma once

#include <condition_variable>
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
#define PRISM_NO_THREAD_SAFETY_ANALYSIS PRISM_THREAD_ANNOTATION(no_thread_safety_analysis)

namespace prism::internal {

class PRISM_CAPABILITY("mutex") Mutex {
 public:
  void lock() PRISM_ACQUIRE() { mu_.lock(); }
  void unlock() PRISM_RELEASE() { mu_.unlock(); }
  std::mutex& native() { return mu_; }

 private:
  std::mutex mu_;
};

// Scoped lock that can be released and re-taken (for "collect, unlock, invoke").
class PRISM_SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex& mu) PRISM_ACQUIRE(mu) : lock_(mu.native()) {}
  ~MutexLock() PRISM_RELEASE() = default;
  void unlock() PRISM_RELEASE() { lock_.unlock(); }
  void lock() PRISM_ACQUIRE() { lock_.lock(); }
  std::unique_lock<std::mutex>& native() { return lock_; }

 private:
  std::unique_lock<std::mutex> lock_;
};

}  // namespace prism::internal
