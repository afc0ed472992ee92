// StoreAccount — the byte count of large objects held by one node's object store.
//
// In embedded mode values are shared in place (no copy, no serialization); the store accounts
// the large ones (>= kInlineObjectBytes) against a capacity. put() reserves before it stores and
// is refused with ObjectStoreFullError when the value does not fit; task results are always
// accepted (refusing would lose a result already computed) and counted. Each large object holds
// a token that gives its bytes back when the object is freed; tokens keep the account alive, so
// objects may outlive the runtime.
//
// Thread-safe.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

namespace prism::internal {

class StoreAccount : public std::enable_shared_from_this<StoreAccount> {
 public:
  explicit StoreAccount(int64_t capacity) : capacity_(capacity) {}

  // A token for `bytes`, or null if `enforce_capacity` and they do not fit.
  std::shared_ptr<void> reserve(size_t bytes, bool enforce_capacity);

  int64_t used() const noexcept { return used_.load(std::memory_order_relaxed); }
  int64_t capacity() const noexcept { return capacity_; }
  int64_t objects() const noexcept { return objects_.load(std::memory_order_relaxed); }

 private:
  const int64_t capacity_;
  std::atomic<int64_t> used_{0};
  std::atomic<int64_t> objects_{0};
};

}  // namespace prism::internal
