#include "object_table.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <set>

#include "common/log.h"
#include "object_store/spill_dir.h"

#include "prism/internal/buffer_pool.h"
#include "prism/internal/thread_policy.h"

namespace prism::cluster {

using internal::MutexLock;

Blob make_blob(std::string bytes) {
  std::shared_ptr<const std::string> owned;
  if (bytes.capacity() >= internal::BufferPool::kMinBytes) {
    // A large value's serialized form: its buffer goes back to the pool when the last reader
    // lets go (the next large result or lent value is written into it, already faulted in).
    owned = std::shared_ptr<const std::string>(new std::string(std::move(bytes)),
                                               [](const std::string* s) {
                                                 auto* mine = const_cast<std::string*>(s);
                                                 internal::BufferPool::offer_string(*mine);
                                                 delete mine;
                                               });
  } else {
    owned = std::make_shared<const std::string>(std::move(bytes));
  }
  const std::string_view view = *owned;
  return std::make_shared<const Bytes>(view, std::move(owned));
}

Blob make_blob(std::string_view view, std::shared_ptr<const void> owner) {
  return std::make_shared<const Bytes>(view, std::move(owner));
}

Blob make_live_blob(std::string stub, internal::LiveResult live) {
  auto owned = std::make_shared<const std::string>(std::move(stub));
  const std::string_view view = *owned;
  auto b = std::make_shared<Bytes>(view, std::move(owned));
  {
    MutexLock lock(b->decoded.mu);
    b->decoded.type = live.tag;
    b->decoded.value = live.value;
  }
  b->live = std::make_shared<const internal::LiveResult>(std::move(live));
  return b;
}

Blob wire_form(const Blob& b, std::string* error) {
  if (!b || !b->live) return b;
  try {
    std::string bytes;
    b->live->write(b->live->value.get(), &bytes);
    if (bytes.size() != b->live->wire_bytes) {
      *error = "its serialized form has " + std::to_string(bytes.size()) + " bytes, not " +
               std::to_string(b->live->wire_bytes);
      return nullptr;
    }
    return make_blob(std::move(bytes));
  } catch (const std::exception& e) {
    *error = std::string("it could not be serialized: ") + e.what();
    return nullptr;
  }
}

namespace {

// The bytes of a spilled copy, mapped from its file (read-only; unmapped with the last Blob).
Blob map_file(const std::string& path, uint64_t bytes, std::string* error) {
  if (bytes == 0) return make_blob(std::string());
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    *error = "cannot open " + path + ": " + std::strerror(errno);
    return nullptr;
  }
  void* p = ::mmap(nullptr, bytes, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) {
    *error = "cannot map " + path + ": " + std::strerror(errno);
    return nullptr;
  }
  std::shared_ptr<const void> owner(p, [bytes](const void* q) {
    ::munmap(const_cast<void*>(q), bytes);
  });
  return make_blob(std::string_view(static_cast<const char*>(p), bytes), std::move(owner));
}

// Writes `b` to a new file at `path`; false (and no file) if it cannot.
bool write_file(const std::string& path, const Bytes& b, std::string* error) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    *error = "cannot create " + path + ": " + std::strerror(errno);
    return false;
  }
  const char* p = b.view.data();
  size_t left = b.view.size();
  while (left > 0) {
    const ssize_t n = ::write(fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      *error = "cannot write " + path + ": " + std::strerror(n < 0 ? errno : ENOSPC);
      ::close(fd);
      ::unlink(path.c_str());
      return false;
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  ::close(fd);
  return true;
}

}  // namespace

namespace {

// Every ObjectTable of the process, for device memory pressure (release_live_results). A table
// is in the set from its construction to the start of its destruction: the releaser holds the
// set's mutex while it uses one.
struct Tables {
  internal::Mutex mu;
  std::set<ObjectTable*> all PRISM_GUARDED_BY(mu);
};
Tables& tables() {
  static Tables* t = new Tables;  // (never destroyed: tables may outlive static destructors)
  return *t;
}

size_t release_live_everywhere(int device, size_t bytes) noexcept {
  // (An allocation on a GPU inside a release, were a value's serializer to make one, gets no
  // second release: the set's mutex is held.)
  thread_local bool releasing = false;
  if (releasing) return 0;
  releasing = true;
  struct Reset {
    ~Reset() { releasing = false; }
  } reset;
  Tables& t = tables();
  MutexLock lock(t.mu);
  size_t released = 0;
  for (ObjectTable* table : t.all) {
    if (released >= bytes) break;
    released += table->release_live(device, bytes - released);
  }
  return released;
}

}  // namespace

ObjectTable::ObjectTable() {
  internal::set_live_results_releaser(&release_live_everywhere);
  Tables& t = tables();
  MutexLock lock(t.mu);
  t.all.insert(this);
}

ObjectTable::~ObjectTable() {
  {
    Tables& t = tables();
    MutexLock lock(t.mu);  // (waits for a releaser using this table)
    t.all.erase(this);
  }
  {
    std::lock_guard<std::mutex> lock(wake_mu_);
    stop_ = true;
  }
  wake_cv_.notify_all();
  if (spiller_.joinable()) spiller_.join();
  std::string dir;
  {
    MutexLock lock(mu_);
    dir = spill_dir_;
  }
  if (!dir.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);  // (every spilled file of this process)
  }
}

void ObjectTable::set_spill(uint64_t capacity_bytes, std::string dir) {
  MutexLock lock(mu_);
  spill_capacity_ = capacity_bytes;
  spill_root_ = std::move(dir);
}

std::string ObjectTable::spill_path(uint64_t id) {
  MutexLock lock(mu_);
  if (spill_dir_.empty()) {
    try {
      spill_dir_ = internal::make_spill_dir(
          spill_root_.empty() ? internal::spill_root() : spill_root_, "prism-spill");
    } catch (const std::exception& e) {
      PRISM_LOG(kWarning) << "object store: " << e.what();
      return {};
    }
  }
  return spill_dir_ + "/" + std::to_string(id);
}

void ObjectTable::run_spiller() {
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(wake_mu_);
      wake_cv_.wait(lock, [this] { return wake_ || stop_; });
      if (stop_) return;
      wake_ = false;
    }
    spill_over();
  }
}

bool ObjectTable::holds(uint64_t id) const {
  MutexLock lock(mu_);
  return held_.count(id) != 0;
}

void ObjectTable::hold(uint64_t id, Blob blob, bool primary, bool may_block) {
  if (!blob) return;
  bool over = false;
  {
    MutexLock lock(mu_);
    over = hold_locked(id, std::move(blob), primary);  // (`blob` let go after the lock if not kept)
  }
  if (!over) return;
  if (may_block) return spill_over();
  wake_spiller();
}

bool ObjectTable::hold_locked(uint64_t id, Blob&& blob, bool primary) {
  auto [it, inserted] = held_.try_emplace(id);
  if (!inserted) return false;
  const uint64_t bytes = blob->size();
  // (Moved in, and only when kept: a copy spilled later lets its memory go at once.)
  it->second = Copy{std::move(blob), primary, false, bytes, ++use_clock_, {}};
  memory_bytes_ += bytes;
  if (primary) {
    ++stats_.primary_objects;
    stats_.primary_bytes += bytes;
  } else {
    ++stats_.secondary_objects;
    stats_.secondary_bytes += bytes;
  }
  return spill_capacity_ > 0 && memory_bytes_ > spill_capacity_;
}

void ObjectTable::wake_spiller() {
  {
    std::lock_guard<std::mutex> lock(wake_mu_);
    if (stop_) return;
    wake_ = true;
    if (!spiller_.joinable()) spiller_ = std::thread([this] {
      prism::internal::use_default_thread_policy();
      run_spiller();
    });
  }
  wake_cv_.notify_one();
}

size_t ObjectTable::release_live(int device, size_t bytes) noexcept {
  size_t released = 0;
  std::set<uint64_t> passed;  // copies a reader holds too, or that cannot be written
  try {
    while (released < bytes) {
      uint64_t id = 0;
      Blob live;
      {
        MutexLock lock(mu_);
        uint64_t oldest = UINT64_MAX;
        for (auto& [n, c] : held_) {
          // Only a copy nobody else holds: a reader's Blob (a task running with it, a pull
          // being sent) keeps the value and its memory. A new holder gets one only through
          // find(), under mu_.
          if (c.blob && c.blob->live && c.blob->live->device == device &&
              c.blob.use_count() == 1 && c.last_use < oldest && passed.count(n) == 0) {
            oldest = c.last_use;
            id = n;
          }
        }
        if (id == 0) break;
        live = held_[id].blob;
      }
      // (Outside the lock: a download.)
      std::string error;
      Blob plain = wire_form(live, &error);
      if (!plain) {
        PRISM_LOG(kWarning) << "object store: object " << id << " stays on GPU " << device
                            << " under memory pressure: " << error;
        passed.insert(id);
        continue;
      }
      bool over = false;
      bool freed = false;
      {
        MutexLock lock(mu_);
        auto it = held_.find(id);
        if (it != held_.end() && it->second.blob == live) {
          Copy& c = it->second;
          const uint64_t before = c.bytes;
          c.blob = std::move(plain);
          c.bytes = c.blob->size();
          memory_bytes_ += c.bytes - before;
          (c.primary ? stats_.primary_bytes : stats_.secondary_bytes) += c.bytes - before;
          ++stats_.released_live;
          over = spill_capacity_ > 0 && memory_bytes_ > spill_capacity_;
        }  // (else dropped meanwhile)
        // (A reader that took it meanwhile keeps the value: its memory goes when it is done.)
        freed = live.use_count() == 1;
        if (!freed) passed.insert(id);
      }
      if (freed) released += static_cast<size_t>(live->live->wire_bytes);
      live.reset();  // the value goes, unless a task still holds a handle of its own
      if (over) wake_spiller();
    }
  } catch (...) {  // (no memory for the bytes: what was let go so far stands)
  }
  return released;
}

void ObjectTable::spill_over() {
  MutexLock one(spill_mu_);
  // Memory is short: once copies were let go here, what the buffer pool holds goes too (a copy
  // let go may land there: make_blob's strings, UcxComm's receive buffers).
  struct ReleasePool {
    bool let_go = false;
    ~ReleasePool() {
      if (let_go) internal::BufferPool::release_held();
    }
  } pool;
  for (;;) {
    uint64_t id = 0;
    Blob blob;
    {
      MutexLock lock(mu_);
      if (spill_capacity_ == 0 || memory_bytes_ <= spill_capacity_) return;
      // The least recently used secondary copy in memory is let go; else the least recently
      // used primary one (not being written already) is spilled.
      uint64_t oldest = UINT64_MAX;
      uint64_t oldest_secondary = UINT64_MAX;
      uint64_t secondary = 0;
      for (auto& [n, c] : held_) {
        // (A live result's memory is not the host's: its stub stays, and the value with it.)
        if (!c.blob || c.spilling || c.bytes == 0 || c.blob->live) continue;
        if (!c.primary && c.last_use < oldest_secondary) {
          oldest_secondary = c.last_use;
          secondary = n;
        } else if (c.primary && c.last_use < oldest) {
          oldest = c.last_use;
          id = n;
        }
      }
      if (secondary != 0) {
        ++stats_.evicted_objects;
        stats_.evicted_bytes += held_[secondary].bytes;
        blob = held_[secondary].blob;  // (freed outside the lock, at the next turn)
        drop_locked(secondary);
        pool.let_go = true;
        continue;
      }
      if (id == 0) return;
      Copy& c = held_[id];
      c.spilling = true;
      blob = c.blob;
    }
    std::string error;
    const std::string path = spill_path(id);
    const bool written = !path.empty() && write_file(path, *blob, &error);
    MutexLock lock(mu_);
    auto it = held_.find(id);
    if (it == held_.end() || !written) {
      // Dropped meanwhile (its file goes too), or the disk refused it: it stays in memory, over
      // the capacity, rather than being lost.
      if (written) ::unlink(path.c_str());
      if (it != held_.end()) it->second.spilling = false;
      if (!written) {
        PRISM_LOG(kWarning) << "object store: cannot spill object " << id << " ("
                            << (path.empty() ? std::string("no spill directory") : error)
                            << "); it stays in memory";
        return;
      }
      continue;
    }
    Copy& c = it->second;
    c.spilling = false;
    c.blob.reset();  // (a reader holding it keeps its bytes until done)
    pool.let_go = true;
    c.file = path;
    memory_bytes_ -= c.bytes;
    ++stats_.spilled_objects;
    stats_.spilled_bytes += c.bytes;
    ++stats_.spill_writes;
    stats_.spill_written_bytes += c.bytes;
  }
}

Blob ObjectTable::find(uint64_t id) {
  std::string file;
  uint64_t bytes = 0;
  {
    MutexLock lock(mu_);
    auto it = held_.find(id);
    if (it == held_.end()) return nullptr;
    it->second.last_use = ++use_clock_;
    if (it->second.blob) return it->second.blob;
    file = it->second.file;
    bytes = it->second.bytes;
  }
  // Spilled: mapped back from its file (its memory is the page cache's, not counted here).
  std::string error;
  Blob b = map_file(file, bytes, &error);
  MutexLock lock(mu_);
  if (!b) {
    PRISM_LOG(kWarning) << "object store: cannot restore object " << id << ": " << error;
    return nullptr;
  }
  stats_.restored_bytes += bytes;
  return b;
}

void ObjectTable::drop(uint64_t id) {
  Blob freed;  // (released outside the lock: freeing 100 MiB takes a while)
  {
    MutexLock lock(mu_);
    if (auto p = pulls_.find(id); p != pulls_.end()) p->second.dropped = true;
    auto it = held_.find(id);
    if (it == held_.end()) return;
    freed = it->second.blob;  // (drop_locked counts its bytes)
    drop_locked(id);
  }
}

void ObjectTable::drop_locked(uint64_t id) {
  auto it = held_.find(id);
  if (it == held_.end()) return;
  const uint64_t bytes = it->second.bytes;
  if (it->second.blob) {
    memory_bytes_ -= bytes;
  } else {
    --stats_.spilled_objects;
    stats_.spilled_bytes -= bytes;
    ::unlink(it->second.file.c_str());  // (a mapping of it stays valid until unmapped)
  }
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
  bool over = false;
  {
    MutexLock lock(mu_);
    auto it = pulls_.find(id);
    if (it == pulls_.end() || it->second.from != from) return waiters;  // nobody asked it
    if (it->second.dropped) keep = false;
    waiters = std::move(it->second.waiters);
    pulls_.erase(it);
    if (blob) stats_.pulled_bytes += blob->size();
    // Kept in the critical section that ends the pull: a drop() (the object freed) between the
    // two would find neither the pull to mark nor the copy to let go, and the copy would stay.
    if (blob && keep) over = hold_locked(id, Blob(blob), /*primary=*/false);
  }
  // (Maybe on the network thread: files, if any, are written by the spiller thread.)
  if (over) wake_spiller();
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
    if (peer == kHere || (it->second.from == peer && !it->second.arrived)) {
      out.emplace_back(it->first, std::move(it->second.waiters));
      it = pulls_.erase(it);
    } else {
      ++it;
    }
  }
  return out;
}

bool ObjectTable::redirect(uint64_t id, PeerId from, PeerId to, uint64_t expected_bytes) {
  std::shared_ptr<std::vector<char>> parts;  // (let go outside the lock)
  MutexLock lock(mu_);
  auto it = pulls_.find(id);
  if (it == pulls_.end() || it->second.from != from) return false;
  Pull& p = it->second;
  p.from = to;
  parts = std::move(p.parts);
  p.received = 0;
  p.arrived = false;
  if (p.expected == 0) p.expected = expected_bytes;
  return true;
}

std::vector<uint64_t> ObjectTable::redirect_all(PeerId from, PeerId to) {
  std::vector<uint64_t> ids;
  std::vector<std::shared_ptr<std::vector<char>>> parts;
  MutexLock lock(mu_);
  for (auto& [id, p] : pulls_) {
    if (p.from != from || p.arrived) continue;
    p.from = to;
    if (p.parts) parts.push_back(std::move(p.parts));
    p.received = 0;
    ids.push_back(id);
  }
  return ids;
}

size_t ObjectTable::pulls_from(PeerId from) const {
  MutexLock lock(mu_);
  size_t n = 0;
  for (const auto& [id, p] : pulls_) n += p.from == from ? 1 : 0;
  return n;
}

bool ObjectTable::arrived(uint64_t id, PeerId from) {
  MutexLock lock(mu_);
  auto it = pulls_.find(id);
  if (it == pulls_.end() || it->second.from != from) return false;
  it->second.arrived = true;
  return true;
}

bool ObjectTable::awaits(uint64_t id, PeerId from) const {
  MutexLock lock(mu_);
  auto it = pulls_.find(id);
  return it != pulls_.end() && it->second.from == from;
}

uint64_t ObjectTable::new_id() {
  MutexLock lock(mu_);
  return next_id_++;
}

uint64_t ObjectTable::new_ids(size_t n) {
  MutexLock lock(mu_);
  const uint64_t first = next_id_;
  next_id_ += n;
  return first;
}

void ObjectTable::locate(uint64_t id, uint64_t bytes, PeerId holder) {
  MutexLock lock(mu_);
  Location& l = locations_[id];
  l.bytes = bytes;
  l.holders.insert(holder);
  l.pending.erase(holder);
}

bool ObjectTable::add_holder(uint64_t id, PeerId holder) {
  MutexLock lock(mu_);
  auto it = locations_.find(id);
  if (it == locations_.end()) return false;
  it->second.holders.insert(holder);
  it->second.pending.erase(holder);
  return true;
}

bool ObjectTable::confirm_holder(uint64_t id, PeerId peer) {
  MutexLock lock(mu_);
  auto it = locations_.find(id);
  if (it == locations_.end() || it->second.pending.erase(peer) == 0) return false;
  it->second.holders.insert(peer);
  return true;
}

bool ObjectTable::add_pending_holder(uint64_t id, PeerId peer) {
  MutexLock lock(mu_);
  auto it = locations_.find(id);
  if (it == locations_.end()) return false;
  // (A holder that asks has no copy: it let it go without a word. Pending again.)
  it->second.holders.erase(peer);
  it->second.pending.insert(peer);
  return true;
}

void ObjectTable::remove_holder(uint64_t id, PeerId holder) {
  MutexLock lock(mu_);
  auto it = locations_.find(id);
  if (it != locations_.end() && it->second.holders.erase(holder) > 0) {
    it->second.pending.insert(holder);  // (a copy on its way there may still land: freed too)
  }
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
  Blob freed;  // (the last reference goes after the lock)
  MutexLock lock(mu_);
  forget_locked(id, &others, &freed);
  return others;
}

void ObjectTable::forget_locked(uint64_t id, std::vector<PeerId>* others, Blob* freed) {
  auto it = locations_.find(id);
  if (it != locations_.end()) {
    for (PeerId p : it->second.holders) {
      if (p != kHere) others->push_back(p);
    }
    for (PeerId p : it->second.pending) others->push_back(p);
    if (!(it->second.entry == ObjectId{})) by_entry_.erase(it->second.entry);
    locations_.erase(it);
  }
  if (auto h = held_.find(id); h != held_.end()) {
    *freed = h->second.blob;
    drop_locked(id);
  }
}

bool ObjectTable::begin_borrow(uint64_t id, uint64_t bytes, PeerId holder,
                               std::vector<PeerId>* others) {
  Blob freed;  // (the last reference goes after the lock)
  MutexLock lock(mu_);
  Location& l = locations_[id];
  if (++l.borrows == 0) {  // its end came first: nothing borrows it
    forget_locked(id, others, &freed);
    return true;
  }
  l.bytes = bytes;
  l.holders.insert(holder);
  l.pending.erase(holder);
  return false;
}

bool ObjectTable::end_borrow(uint64_t id, std::vector<PeerId>* others) {
  Blob freed;  // (the last reference goes after the lock)
  MutexLock lock(mu_);
  Location& l = locations_[id];
  if (--l.borrows != 0) return false;  // another borrow lives, or this one's beginning is to come
  forget_locked(id, others, &freed);
  return true;
}

std::vector<uint64_t> ObjectTable::lose_peer(PeerId peer) {
  std::vector<uint64_t> orphans;
  MutexLock lock(mu_);
  for (auto& [id, l] : locations_) {
    l.pending.erase(peer);
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
