#include "object_table.h"

#include <cstring>
#include <exception>

#include "prism/internal/buffer_pool.h"

namespace prism::cluster {

using internal::MutexLock;

Blob make_blob(std::string bytes) {
  auto owned = std::make_shared<const std::string>(std::move(bytes));
  const std::string_view view = *owned;
  return std::make_shared<const Bytes>(Bytes{view, std::move(owned)});
}

Blob make_blob(std::string_view view, std::shared_ptr<const void> owner) {
  return std::make_shared<const Bytes>(Bytes{view, std::move(owner)});
}

void ObjectTable::hold(uint64_t id, Blob blob, bool primary) {
  if (!blob) return;
  MutexLock lock(mu_);
  auto [it, inserted] = held_.try_emplace(id);
  if (!inserted) return;
  it->second = Copy{blob, primary};
  if (primary) {
    ++stats_.primary_objects;
    stats_.primary_bytes += blob->size();
  } else {
    ++stats_.secondary_objects;
    stats_.secondary_bytes += blob->size();
  }
}

Blob ObjectTable::find(uint64_t id) const {
  MutexLock lock(mu_);
  auto it = held_.find(id);
  return it == held_.end() ? nullptr : it->second.blob;
}

void ObjectTable::drop(uint64_t id) {
  Blob freed;  // (released outside the lock: freeing 100 MiB takes a while)
  {
    MutexLock lock(mu_);
    auto it = held_.find(id);
    if (it == held_.end()) return;
    freed = it->second.blob;  // (drop_locked counts its bytes)
    drop_locked(id);
  }
}

void ObjectTable::drop_locked(uint64_t id) {
  auto it = held_.find(id);
  if (it == held_.end()) return;
  const uint64_t bytes = it->second.blob ? it->second.blob->size() : 0;
  if (it->second.primary) {
    --stats_.primary_objects;
    stats_.primary_bytes -= bytes;
  } else {
    --stats_.secondary_objects;
    stats_.secondary_bytes -= bytes;
  }
  held_.erase(it);
}

ObjectTable::Stats ObjectTable::stats() const {
  MutexLock lock(mu_);
  return stats_;
}

void ObjectTable::count_served(size_t bytes) {
  MutexLock lock(mu_);
  ++stats_.served;
  stats_.served_bytes += bytes;
}

bool ObjectTable::await(uint64_t id, PeerId from, Waiter waiter, uint64_t expected_bytes) {
  MutexLock lock(mu_);
  auto [it, first] = pulls_.try_emplace(id);
  if (first) {
    it->second.from = from;
    it->second.expected = expected_bytes;
    ++stats_.pulls;
  }
  it->second.waiters.push_back(std::move(waiter));
  return first;
}

std::vector<ObjectTable::Waiter> ObjectTable::finish(uint64_t id, PeerId from, const Blob& blob,
                                                     bool keep) {
  std::vector<Waiter> waiters;
  {
    MutexLock lock(mu_);
    auto it = pulls_.find(id);
    if (it == pulls_.end() || it->second.from != from) return waiters;  // nobody asked it
    waiters = std::move(it->second.waiters);
    pulls_.erase(it);
    if (blob) stats_.pulled_bytes += blob->size();
  }
  if (blob && keep) hold(id, blob, /*primary=*/false);
  return waiters;
}

Blob ObjectTable::add_part(uint64_t id, PeerId from, uint64_t offset, uint64_t total,
                           std::string_view part, std::string* error) {
  std::shared_ptr<std::vector<char>> buffer;
  bool first = false;
  {
    MutexLock lock(mu_);
    auto it = pulls_.find(id);
    if (it == pulls_.end() || it->second.from != from) {
      *error = "a part of object " + std::to_string(id) + " nobody asked for";
      return nullptr;
    }
    const Pull& p = it->second;
    uint64_t expected = p.expected;
    if (auto loc = locations_.find(id); expected == 0 && loc != locations_.end()) {
      expected = loc->second.bytes;
    }
    if (expected != 0 && total != expected) {
      *error = "object " + std::to_string(id) + " came as " + std::to_string(total) +
               " bytes, not the " + std::to_string(expected) + " it has";
      return nullptr;
    }
    first = !p.parts;
    if (first && offset != 0) {
      *error = "the first part of object " + std::to_string(id) + " is not at its start";
      return nullptr;
    }
    buffer = p.parts;
  }
  if (first) {
    // Made (and faulted in) outside the lock; given back to the pool (its pages faulted in)
    // when the value's last reader lets go. Only this thread adds parts of this pull.
    try {
      buffer = std::shared_ptr<std::vector<char>>(
          new std::vector<char>(internal::BufferPool::sized<char>(total)),
          [](std::vector<char>* v) {
            internal::BufferPool::offer(*v);
            delete v;
          });
    } catch (const std::exception&) {
      *error = "no memory for object " + std::to_string(id) + " (" + std::to_string(total) +
               " bytes)";
      return nullptr;
    }
  }
  {
    MutexLock lock(mu_);
    auto it = pulls_.find(id);
    if (it == pulls_.end() || it->second.from != from) {
      *error = "the pull of object " + std::to_string(id) + " ended while its parts arrived";
      return nullptr;
    }
    Pull& p = it->second;
    if (first) p.parts = buffer;
    if (p.parts != buffer || p.parts->size() != total || offset != p.received ||
        part.size() > total - offset) {
      *error = "the parts of object " + std::to_string(id) + " do not fit together";
      return nullptr;
    }
    p.received += part.size();
  }
  // Copied outside the lock: the peer's parts arrive one after another on one thread.
  std::memcpy(buffer->data() + offset, part.data(), part.size());
  if (offset + part.size() != total) return nullptr;
  {
    MutexLock lock(mu_);
    if (auto it = pulls_.find(id); it != pulls_.end()) it->second.parts.reset();
  }
  const std::string_view whole(buffer->data(), buffer->size());
  return make_blob(whole, std::move(buffer));
}

std::vector<std::pair<uint64_t, std::vector<ObjectTable::Waiter>>> ObjectTable::fail_from(
    PeerId peer) {
  std::vector<std::pair<uint64_t, std::vector<Waiter>>> out;
  MutexLock lock(mu_);
  for (auto it = pulls_.begin(); it != pulls_.end();) {
    if (peer == kHere || it->second.from == peer) {
      out.emplace_back(it->first, std::move(it->second.waiters));
      it = pulls_.erase(it);
    } else {
      ++it;
    }
  }
  return out;
}

uint64_t ObjectTable::new_id() {
  MutexLock lock(mu_);
  return next_id_++;
}

void ObjectTable::locate(uint64_t id, uint64_t bytes, PeerId holder) {
  MutexLock lock(mu_);
  Location& l = locations_[id];
  l.bytes = bytes;
  l.holders.insert(holder);
}

bool ObjectTable::add_holder(uint64_t id, PeerId holder) {
  MutexLock lock(mu_);
  auto it = locations_.find(id);
  if (it == locations_.end()) return false;
  it->second.holders.insert(holder);
  return true;
}

bool ObjectTable::where(uint64_t id, std::vector<PeerId>* holders, uint64_t* bytes) const {
  MutexLock lock(mu_);
  auto it = locations_.find(id);
  if (it == locations_.end()) return false;
  if (holders != nullptr) holders->assign(it->second.holders.begin(), it->second.holders.end());
  if (bytes != nullptr) *bytes = it->second.bytes;
  return true;
}

uint64_t ObjectTable::id_of(const ObjectId& entry) const {
  MutexLock lock(mu_);
  auto it = by_entry_.find(entry);
  return it == by_entry_.end() ? 0 : it->second;
}

void ObjectTable::bind(const ObjectId& entry, uint64_t id) {
  MutexLock lock(mu_);
  by_entry_[entry] = id;
  locations_[id].entry = entry;
}

std::vector<PeerId> ObjectTable::forget(uint64_t id) {
  std::vector<PeerId> others;
  Blob freed;
  MutexLock lock(mu_);
  auto it = locations_.find(id);
  if (it != locations_.end()) {
    for (PeerId p : it->second.holders) {
      if (p != kHere) others.push_back(p);
    }
    if (!(it->second.entry == ObjectId{})) by_entry_.erase(it->second.entry);
    locations_.erase(it);
  }
  if (auto h = held_.find(id); h != held_.end()) {
    freed = h->second.blob;  // (the last reference goes after the lock, with `freed`)
    drop_locked(id);
  }
  return others;
}

std::vector<uint64_t> ObjectTable::lose_peer(PeerId peer) {
  std::vector<uint64_t> orphans;
  MutexLock lock(mu_);
  for (auto& [id, l] : locations_) {
    if (l.holders.erase(peer) > 0 && l.holders.empty()) orphans.push_back(id);
  }
  return orphans;
}

std::map<PeerId, std::pair<uint64_t, uint64_t>> ObjectTable::held_by_peer() const {
  std::map<PeerId, std::pair<uint64_t, uint64_t>> out;
  MutexLock lock(mu_);
  for (const auto& [id, l] : locations_) {
    for (PeerId p : l.holders) {
      ++out[p].first;
      out[p].second += l.bytes;
    }
  }
  return out;
}

}  // namespace prism::cluster
