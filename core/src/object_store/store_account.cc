#include "object_store/store_account.h"

namespace prism::internal {

std::shared_ptr<void> StoreAccount::reserve(size_t bytes, bool enforce_capacity) {
  const auto n = static_cast<int64_t>(bytes);
  if (enforce_capacity) {
    int64_t used = used_.load(std::memory_order_relaxed);
    do {
      if (n > capacity_ - used) return nullptr;
    } while (!used_.compare_exchange_weak(used, used + n, std::memory_order_relaxed));
  } else {
    used_.fetch_add(n, std::memory_order_relaxed);
  }
  objects_.fetch_add(1, std::memory_order_relaxed);
  std::shared_ptr<StoreAccount> self = shared_from_this();
  return std::shared_ptr<void>(static_cast<void*>(this), [self, n](void*) {
    self->used_.fetch_sub(n, std::memory_order_relaxed);
    self->objects_.fetch_sub(1, std::memory_order_relaxed);
  });
}

}  // namespace prism::internal
