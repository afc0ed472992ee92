#include "copy_cache.h"

#include <utility>
#include <vector>

#include "storage.h"

namespace prism::gpu::internal {

CopyCache& CopyCache::instance() {
  static CopyCache* cache = new CopyCache;  // (never destroyed: storages may outlive statics)
  return *cache;
}

void CopyCache::erase_locked(Device& d, std::list<Entry>::iterator it) {
  d.index.erase(it->key);
  d.lru.erase(it);
}

void CopyCache::added(const std::shared_ptr<Storage>& owner, int device, size_t bytes) {
  prism::internal::MutexLock lock(mu_);
  Device& d = devices_[device];
  if (auto found = d.index.find(owner.get()); found != d.index.end()) {
    erase_locked(d, found->second);  // (a storage gone, whose address was reused)
  }
  d.lru.push_front(Entry{owner, owner.get(), bytes});
  d.index[owner.get()] = d.lru.begin();
  // Entries of storages that are gone: dropped once they could make up half of the list.
  if (d.lru.size() >= 64 && d.lru.size() % 64 == 0) {
    for (auto it = d.lru.begin(); it != d.lru.end();) {
      auto next = std::next(it);
      if (it->owner.expired()) erase_locked(d, it);
      it = next;
    }
  }
}

void CopyCache::used(const std::shared_ptr<Storage>& owner, int device) {
  prism::internal::MutexLock lock(mu_);
  auto dev = devices_.find(device);
  if (dev == devices_.end()) return;
  Device& d = dev->second;
  auto found = d.index.find(owner.get());
  if (found == d.index.end()) return;  // (evicted meanwhile: made again by its next reader)
  d.lru.splice(d.lru.begin(), d.lru, found->second);
}

size_t CopyCache::evict(int device, size_t bytes) {
  // Destroyed once mu_ is released (the owners too: one whose last handle went meanwhile).
  std::vector<std::shared_ptr<Storage>> evicted;
  size_t freed = 0;
  {
    prism::internal::MutexLock lock(mu_);
    auto dev = devices_.find(device);
    if (dev == devices_.end()) return 0;
    Device& d = dev->second;
    evicted.reserve(2 * d.lru.size());  // (no allocation below: nothing is destroyed under mu_)
    for (auto it = d.lru.end(); it != d.lru.begin() && freed < bytes;) {
      --it;
      std::shared_ptr<Storage> owner = it->owner.lock();
      std::shared_ptr<Storage> copy;
      if (owner) copy = owner->take_unused_copy(device);
      const bool kept = owner && !copy;  // in use (or being made): kept, and its entry too
      if (owner) evicted.push_back(std::move(owner));
      if (kept) continue;
      if (copy) {
        freed += copy->bytes();
        evicted.push_back(std::move(copy));
      }
      auto gone = it;
      it = std::next(it);
      erase_locked(d, gone);
    }
  }
  evicted.clear();
  return freed;
}

size_t CopyCache::listed_for_testing(int device) {
  prism::internal::MutexLock lock(mu_);
  auto dev = devices_.find(device);
  return dev == devices_.end() ? 0 : dev->second.lru.size();
}

}  // namespace prism::gpu::internal
