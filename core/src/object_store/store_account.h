// StoreAccount — the byte count of large objects held by one node's object store.
//
// In embedded mode values are shared in place (no copy, no serialization); the store accounts
// the large ones (>= kInlineObjectBytes) against a capacity. put() reserves before it stores;
// a value that does not fit goes to a file in the spill directory instead (spill_file(), when
// its type is serializable: spilled_value.h), else put() is refused with ObjectStoreFullError;
// task results are always accepted (refusing would lose a result already computed) and counted.
// Each large object holds a token that gives its bytes back when the object is freed; tokens
// (and spilled values) keep the account alive, so objects may outlive the runtime.
//
// Spill files live in a directory of this account's own under the spill root (PRISM_SPILL_DIR,
// else $TMPDIR or /tmp), made on first use and removed with the account.
//
// Thread-safe.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "prism/internal/thread_annotations.h"

namespace prism::internal {

class StoreAccount : public std::enable_shared_from_this<StoreAccount> {
 public:
  explicit StoreAccount(int64_t capacity) : capacity_(capacity) {}
  ~StoreAccount();

  // A token for `bytes`, or null if `enforce_capacity` and they do not fit.
  std::shared_ptr<void> reserve(size_t bytes, bool enforce_capacity);

  int64_t used() const noexcept { return used_.load(std::memory_order_relaxed); }
  int64_t capacity() const noexcept { return capacity_; }
  int64_t objects() const noexcept { return objects_.load(std::memory_order_relaxed); }

  // Writes `bytes` to a new file of the spill directory and returns its path; throws
  // prism::ObjectStoreFullError saying why if it cannot (no directory, a full disk).
  std::string spill_file(const std::string& bytes);
  // A spilled file was read back (`bytes` of it), or removed (its object freed).
  void count_restored(uint64_t bytes) noexcept {
    restored_.fetch_add(bytes, std::memory_order_relaxed);
  }
  void count_unspilled(uint64_t bytes) noexcept {
    spilled_.fetch_sub(bytes, std::memory_order_relaxed);
  }
  uint64_t spilled_bytes() const noexcept { return spilled_.load(std::memory_order_relaxed); }
  uint64_t restored_bytes() const noexcept { return restored_.load(std::memory_order_relaxed); }

 private:
  const int64_t capacity_;
  std::atomic<int64_t> used_{0};
  std::atomic<int64_t> objects_{0};
  std::atomic<uint64_t> spilled_{0};   // bytes in spill files now
  std::atomic<uint64_t> restored_{0};  // bytes read back from them (cumulative)
  Mutex spill_mu_;
  std::string spill_dir_ PRISM_GUARDED_BY(spill_mu_);  // made on first use
  uint64_t next_file_ PRISM_GUARDED_BY(spill_mu_) = 0;
};

}  // namespace prism::internal
