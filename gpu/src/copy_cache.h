// CopyCache — the cached copies on each GPU, least recently used first, so that they can be
// given back when that device's memory runs out.
//
// A Storage keeps its copies on other devices for its whole life (Storage::copy_to): a tensor
// read by many GPU tasks is uploaded once per device. Those copies are secondary: the contents
// are still at the storage itself. When an allocation on a device fails (a task's tensor, a
// kernel's result, another copy), Storage asks this cache to evict copies on that device, least
// recently used first, that no handle outside the storage holds, and tries again. Primaries
// (the memory behind Tensor::empty and task results) are never evicted, nor copies in use.
//
// Entries name the storage that keeps the copy (weak: the storage may go first, taking its
// copies with it) and the device; copy_to reports each copy made (added) and each cache hit
// (used). Entries of storages that are gone are dropped as evict() meets them, and by added()
// once a device's list is long.
//
// Locks: mu_ guards the lists. Lock order: mu_, then a Storage's mu_ (Storage never calls in
// here while holding its own). Evicted copies are destroyed (their memory freed, stream-ordered
// after their users) after mu_ is released.
//
// Thread-safe: every method may be called from any thread.
#pragma once

#include <cstddef>
#include <list>
#include <map>
#include <memory>
#include <unordered_map>

#include "prism/internal/thread_annotations.h"

namespace prism::gpu::internal {

class Storage;

class CopyCache {
 public:
  // The process's cache. Never null; lives until the process exits.
  static CopyCache& instance();

  // `owner` made its copy on GPU `device` (`bytes`), or found it there: it is now the most
  // recently used.
  void added(const std::shared_ptr<Storage>& owner, int device, size_t bytes);
  void used(const std::shared_ptr<Storage>& owner, int device);
  // Evicts unused copies on GPU `device`, least recently used first, until `bytes` were given
  // back or none is left. Returns the bytes given back.
  size_t evict(int device, size_t bytes);

  // For tests: copies listed on `device` (storages that are gone included until dropped).
  size_t listed_for_testing(int device);

 private:
  struct Entry {
    std::weak_ptr<Storage> owner;
    const Storage* key = nullptr;  // owner's address, to find the entry (never dereferenced)
    size_t bytes = 0;
  };
  struct Device {
    std::list<Entry> lru;  // front: most recently used
    std::unordered_map<const Storage*, std::list<Entry>::iterator> index;  // of lru, by key
  };
  void erase_locked(Device& d, std::list<Entry>::iterator it) PRISM_REQUIRES(mu_);

  prism::internal::Mutex mu_;
  std::map<int, Device> devices_ PRISM_GUARDED_BY(mu_);
};

}  // namespace prism::gpu::internal
