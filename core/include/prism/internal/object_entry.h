// prism/internal/object_entry.h — the state behind an ObjectRef: one record per object.
//
// An ObjectEntry is created when the object's producer is submitted (or by put), is counted by
// the ObjectRefs and task records that name it, and is freed when the last of them goes. It is
// pending until completed exactly once, with a value or an error. Dependents (tasks waiting for
// their arguments, blocked get/wait calls) hang in an intrusive list and are notified, outside
// any lock, by the thread that completes the entry.
//
// An entry names no runtime: its id carries its owner (the runtime's generation), and a done
// entry needs nothing else, so refs stay readable after their runtime is gone. While pending it
// knows its producer (the task that will complete it), so that a task blocked on it can run the
// producer itself (claim_producer): the producer completes every result before it is deleted,
// and completion takes the entry's lock, so under that lock a pending entry's producer exists.
//
// TypedEntry<T> holds the value inline, so a task result costs one allocation. Values are
// immutable once the entry is ready.
//
// Thread-safe: every method may be called from any thread; value() only after ready.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <new>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "prism/internal/buffer_pool.h"
#include "prism/internal/ids.h"
#include "prism/internal/placement.h"
#include "prism/internal/small_pool.h"
#include "prism/internal/thread_annotations.h"
#include "prism/serialize.h"

namespace prism {

// Objects whose estimated size is at least this many bytes count against the object store's
// capacity; smaller ones live with their owner only (Ray's inline-object threshold).
inline constexpr size_t kInlineObjectBytes = 100 * 1024;

// Customization point: specialize to report how many bytes a value of T holds, for object
// store accounting. The default understands contiguous containers, strings and Eigen-like
// matrices (rows()/cols()/Scalar) and falls back to sizeof(T).
template <typename T>
concept ContiguousValue = requires(const T& v) {
  v.data();
  v.size();
  typename T::value_type;
};
template <typename T>
concept MatrixValue = requires(const T& v) {
  v.rows();
  v.cols();
  typename T::Scalar;
};

template <typename T>
struct ObjectSize {
  static size_t bytes(const T&) { return sizeof(T); }
};
template <ContiguousValue T>
struct ObjectSize<T> {
  static size_t bytes(const T& v) {
    return sizeof(T) + static_cast<size_t>(v.size()) * sizeof(typename T::value_type);
  }
};
template <MatrixValue T>
  requires(!ContiguousValue<T>)
struct ObjectSize<T> {
  static size_t bytes(const T& v) {
    return sizeof(T) + static_cast<size_t>(v.rows()) * static_cast<size_t>(v.cols()) *
                           sizeof(typename T::Scalar);
  }
};

namespace internal {

class ObjectEntry;
class EntryPtr;
class Dependent;
class TaskRecord;

// A link in an entry's list of dependents. Owned by the dependent (a task record holds one per
// argument; a blocked get holds one on its stack).
struct DepNode {
  DepNode* next = nullptr;
  Dependent* owner = nullptr;
};

// Something that waits for objects. on_ready runs on the completing thread with no lock held;
// after it returns the entry no longer touches `node`.
class Dependent {
 public:
  virtual void on_ready(ObjectEntry* entry) noexcept = 0;

 protected:
  ~Dependent() = default;
};

// kRemote (cluster mode): done, but the value lives on another node; the first reader here
// fetches it (RemoteValue::fetch), after which the entry is kReady.
enum class ObjState : uint32_t { kPending = 0, kReady = 1, kFailed = 2, kRemote = 3 };

// Where a kRemote entry's value is, as the cluster module knows it. The entry keeps it for its
// whole life: dropping it frees the copies on other nodes.
class RemoteValue {
 public:
  virtual ~RemoteValue() = default;
  // Brings the value here. On return the entry is kReady; throws prism::Error (kUnavailable:
  // the value was lost with its node) or TimeoutError (`deadline` passed first; the transfer goes
  // on for later readers) and leaves it kRemote otherwise. Concurrent callers share one transfer.
  virtual void fetch(ObjectEntry* entry, std::chrono::steady_clock::time_point deadline) = 0;
  // The size of the value's serialized bytes, where known (0: unknown): what a fetch moves.
  virtual uint64_t size() const noexcept { return 0; }
  // Set by whoever completes the entry (it knows the type): builds the entry's value from its
  // serialized bytes and marks it ready (TypedEntry<T>::set_fetched). Throws on malformed bytes.
  void (*materialize)(ObjectEntry* entry, std::string_view bytes) = nullptr;

 private:
  friend class ObjectEntry;
  // What attach() tied to the entry while it was pending (ObjectEntry::complete_remote moves it
  // here, so that it still lives as long as the entry).
  std::shared_ptr<void> kept_;
};
using RemoteMaterializer = void (*)(ObjectEntry* entry, std::string_view bytes);

// ObjectRefs inside values that cross nodes (cluster mode: prism/object_ref.h's Serializer of
// ObjectRef). The cluster module sets a thread's scope while it encodes a message for another
// node (export: the object is lent to that node, which borrows it until its last ref there
// drops) or decodes one from another node (import: a local entry for the borrowed object).
// Outside a scope an ObjectRef cannot be serialized (export_ref/import_ref throw).
// Values decoded from one object's bytes held on this node (cluster mode: an argument that came
// by reference, kept here for every task of the node that reads it). A decoder whose value is
// expensive to build (a GPU tensor: a host tensor and the device copies made from it) keeps
// it here, tagged with its type, so that the node's readers of the object share one. Lives as
// long as the bytes.
struct DecodedSlot {
  Mutex mu;  // held while the first reader decodes (the others wait for its value)
  const void* type PRISM_GUARDED_BY(mu) = nullptr;  // what `value` is (a tag of the decoder's)
  std::shared_ptr<void> value PRISM_GUARDED_BY(mu);
};

class RefScope {
 public:
  // The slot of the object whose bytes start at `at` in the message being read, if it has one.
  virtual DecodedSlot* decoded_at(const void* at) noexcept {
    (void)at;
    return nullptr;
  }
  // `entry`'s key in messages. `write` serializes its value (null: T is not serializable, or
  // void); the value is read by borrowers through pulls.
  virtual uint64_t export_ref(ObjectEntry* entry, void (*write)(ObjectEntry*, std::string*)) = 0;
  // The local entry for `key` (made by `make` with a fresh id when there is none yet; its value
  // is built by `materialize` when read, null for an untyped ref).
  virtual EntryPtr import_ref(uint64_t key, ObjectEntry* (*make)(ObjectId),
                              RemoteMaterializer materialize) = 0;

 protected:
  ~RefScope() = default;
};
// The calling thread's scope (null: none).
RefScope*& current_ref_scope() noexcept;
// True while the calling thread decodes a value to be stored in an entry (not handed to a task):
// a decoder of a value with a place (a GPU tensor) then leaves it in host memory.
bool& decoding_to_store() noexcept;
class DecodeToStoreGuard {
 public:
  DecodeToStoreGuard() noexcept : saved_(std::exchange(decoding_to_store(), true)) {}
  ~DecodeToStoreGuard() { decoding_to_store() = saved_; }
  DecodeToStoreGuard(const DecodeToStoreGuard&) = delete;
  DecodeToStoreGuard& operator=(const DecodeToStoreGuard&) = delete;

 private:
  const bool saved_;
};
// The calling thread's scope's slot for the object whose bytes start at `at`, or null.
inline DecodedSlot* decoded_slot_at(const void* at) noexcept {
  RefScope* scope = current_ref_scope();
  return scope == nullptr ? nullptr : scope->decoded_at(at);
}
// Throw prism::Error(kInvalidArgument) outside a scope.
uint64_t export_ref(ObjectEntry* entry, void (*write)(ObjectEntry*, std::string*));
EntryPtr import_ref(uint64_t key, ObjectEntry* (*make)(ObjectId), RemoteMaterializer materialize);
// Sets a thread's scope for its life, restoring the previous one after (null: a task's body runs
// outside the scope of the message that carried its arguments).
class RefScopeGuard {
 public:
  explicit RefScopeGuard(RefScope* scope) noexcept
      : saved_(std::exchange(current_ref_scope(), scope)) {}
  ~RefScopeGuard() { current_ref_scope() = saved_; }
  RefScopeGuard(const RefScopeGuard&) = delete;
  RefScopeGuard& operator=(const RefScopeGuard&) = delete;

 private:
  RefScope* const saved_;
};

// The cluster module's say, while a task is encoded for another node, on which arguments travel
// by reference (TaskRecord::encode_remote): those stay where they are until the node that runs
// the task pulls them (or finds them there already).
class ArgTransfer {
 public:
  // `entry` is done (kReady or kRemote). `write` serializes its local value; `estimate` is that
  // value's ObjectSize (0 when kRemote); `at` is where in the encoded arguments its bytes
  // belong. True: it travels by reference (the caller writes nothing for it).
  virtual bool by_reference(ObjectEntry* entry, void (*write)(ObjectEntry*, std::string*),
                            size_t estimate, size_t at) = 0;

 protected:
  ~ArgTransfer() = default;
};

// A large task result of `bytes` (>= kInlineObjectBytes), as its entry is completed on the
// thread that ran the task: reserves its space in that runtime's store if it fits (the token
// releases it); else sets *full and returns null (the caller may spill it). Null without *full
// outside a runtime's task (nothing to count against).
std::shared_ptr<void> reserve_result(size_t bytes, bool* full) noexcept;
// A result that did not fit: writes its serialized `bytes` to a spill file of that runtime's
// store and returns the RemoteValue that reads it back (`materialize`), or null if it cannot
// (the result is then kept in memory beyond the capacity).
std::shared_ptr<RemoteValue> spill_result(const std::string& bytes,
                                          void (*materialize)(ObjectEntry*, std::string_view));

class ObjectEntry {
 public:
  PRISM_SMALL_POOL_ALLOCATED  // made on the caller, freed on a worker: small_pool.h
  ObjectEntry(const ObjectEntry&) = delete;
  ObjectEntry& operator=(const ObjectEntry&) = delete;

  void ref() noexcept { refs_.fetch_add(1, std::memory_order_relaxed); }
  // A reference to an entry found through a pointer that does not own one (a table that its
  // destructor clears): false if its last reference is already gone (it is being freed).
  bool try_ref() noexcept {
    uint32_t n = refs_.load(std::memory_order_relaxed);
    while (n != 0) {
      if (refs_.compare_exchange_weak(n, n + 1, std::memory_order_acq_rel)) return true;
    }
    return false;
  }
  void unref() noexcept {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

  ObjState state() const noexcept {
    return static_cast<ObjState>(state_.load(std::memory_order_acquire));
  }
  bool is_done() const noexcept { return state() != ObjState::kPending; }
  const ObjectId& id() const noexcept { return id_; }
  // The stored error; only meaningful once state() == kFailed.
  const std::exception_ptr& error() const noexcept { return error_; }

  // Completion, exactly once: the first call wins and returns true; later calls are ignored
  // (a cancelled object stays cancelled when its task finishes anyway). complete_value() is for
  // typed entries after their value was constructed.
  bool complete_error(std::exception_ptr error) noexcept;
  // Cluster mode: the pending -> kRemote transition (the value stays on another node, `where`
  // says which and keeps it there while this entry lives). False if already completed.
  bool complete_remote(std::shared_ptr<RemoteValue> where) noexcept;
  // The RemoteValue of a kRemote entry (null in any other state).
  RemoteValue* remote_value() const noexcept;
  // Ties `keep` to the life of this done entry (the cluster module's copies of a local value on
  // other nodes, freed when the entry goes).
  void attach(std::shared_ptr<void> keep);

  // Adds a dependent if the entry is still pending (returns true), else returns false and the
  // caller handles the finished entry itself.
  bool add_dependent(DepNode* node) noexcept;
  // Removes a dependent that was added and not yet notified. Returns false if the entry
  // completed first (the notification has been or is being delivered).
  bool remove_dependent(DepNode* node) noexcept;

  // True while the calling thread is delivering some entry's completion to its dependents (the
  // scheduler's hint that a task it dispatches became ready because the running one finished).
  static bool notifying_dependents() noexcept;

  void request_cancel() noexcept { cancel_requested_.store(true, std::memory_order_relaxed); }
  bool cancel_requested() const noexcept {
    return cancel_requested_.load(std::memory_order_relaxed);
  }

  // The task that completes this entry (`actor_call`: a method call of an actor); set once by
  // the submitter before the ref is shared (so without the lock: nobody else can see the entry
  // yet).
  void set_producer(TaskRecord* task, bool actor_call) noexcept PRISM_NO_THREAD_SAFETY_ANALYSIS {
    producer_ = task;
    actor_call_ = actor_call;
  }
  // Set once before the ref is shared: an actor's method call produces it.
  bool produced_by_actor_call() const noexcept { return actor_call_; }
  // If the entry is pending and `accept(producer, ctx)` agrees, claims the producer for the
  // caller to run (TaskRecord::try_claim) and returns it; else null. `accept` runs under the
  // entry's spinlock: it must be short and must not block.
  TaskRecord* claim_producer(bool (*accept)(const TaskRecord&, const void*),
                             const void* ctx) noexcept;
  // If the entry is pending and has a producer, calls `look(producer, ctx)` under the entry's
  // spinlock (the producer is alive meanwhile; short, must not block) and returns what it
  // returns; else false.
  bool look_at_producer(bool (*look)(TaskRecord&, void*), void* ctx) noexcept;

 protected:
  explicit ObjectEntry(ObjectId id) noexcept : id_(id) {}
  virtual ~ObjectEntry();

  // Marks a constructed value ready. `bytes` feeds object store accounting: `token` is a put's
  // reservation; without one, large values are accounted as task results of the runtime running
  // the calling thread's task. Returns false if the entry was already completed (the caller then
  // destroys its value).
  bool publish_value(size_t bytes, std::shared_ptr<void> token = nullptr) noexcept;
  // publish_value for an entry no other thread can reach yet (a put's, before its ref is
  // returned): nobody can be waiting on it or completing it, so no lock and no dependents.
  void publish_unshared(size_t bytes, std::shared_ptr<void> token) noexcept;
  // True if a value was published (as opposed to pending or failed).
  bool has_value() const noexcept { return state() == ObjState::kReady; }
  // kRemote -> kReady, once the value was built here (RemoteValue::fetch serializes callers).
  void publish_fetched() noexcept {
    state_.store(static_cast<uint32_t>(ObjState::kReady), std::memory_order_release);
  }

 private:
  // The pending -> done transition: under the lock, if still pending, `fill` stores the outcome
  // and the state is published; the dependents are then notified outside the lock.
  template <typename Fill>
  bool complete(ObjState final_state, Fill&& fill) noexcept {
    lock_.lock();
    if (state_.load(std::memory_order_relaxed) != static_cast<uint32_t>(ObjState::kPending)) {
      lock_.unlock();
      return false;
    }
    fill();
    state_.store(static_cast<uint32_t>(final_state), std::memory_order_release);
    DepNode* list = std::exchange(dependents_, nullptr);
    lock_.unlock();
    notify_dependents(list);
    return true;
  }
  void notify_dependents(DepNode* list) noexcept;

  // Laid out so that a TypedEntry<int> fits a 96-byte allocation (per-task memory matters).
  std::atomic<uint32_t> refs_{1};
  std::atomic<uint32_t> state_{0};
  mutable SpinLock lock_;  // guards dependents_, the pending -> done transition, attach()
  std::atomic<bool> cancel_requested_{false};

 protected:
  bool value_constructed_ = false;  // TypedEntry: the value exists (owned by the producer)

 private:
  bool actor_call_ = false;  // see produced_by_actor_call()

 private:
  DepNode* dependents_ PRISM_GUARDED_BY(lock_) = nullptr;
  TaskRecord* producer_ PRISM_GUARDED_BY(lock_) = nullptr;  // valid while pending (file comment)
  ObjectId id_;
  std::exception_ptr error_;
  // Set for large objects (returns the bytes on free); for a kRemote entry, its RemoteValue;
  // attach() chains more onto it.
  std::shared_ptr<void> store_account_;

  template <typename T>
  friend class TypedEntry;
};

// An entry that stores its T inline.
template <typename T>
class TypedEntry final : public ObjectEntry {
 public:
  explicit TypedEntry(ObjectId id) noexcept : ObjectEntry(id) {}

  // Constructs the value and publishes it. Returns false (and keeps nothing) if the entry was
  // already completed, e.g. cancelled. A large result that does not fit in the store goes to a
  // spill file instead (when T is serializable; the entry is then done as a spilled value, read
  // back by its first reader), rather than overcommitting the store.
  template <typename... A>
  bool set_value(A&&... args) {
    if (is_done()) return false;
    T* v = ::new (static_cast<void*>(storage_)) T(std::forward<A>(args)...);
    value_constructed_ = true;
    const size_t bytes = ObjectSize<T>::bytes(*v);
    std::shared_ptr<void> token;
    if constexpr (is_serializable_v<T>) {
      if (bytes >= kInlineObjectBytes) {
        bool full = false;
        token = reserve_result(bytes, &full);
        if (full) {
          std::shared_ptr<RemoteValue> spilled;
          try {
            RefScopeGuard no_refs(nullptr);  // (refs in a file could never be lent: see below)
            spilled = spill_result(to_bytes(*v), &TypedEntry::materialize);
          } catch (...) {
            // (Out of memory while serializing, or a value holding ObjectRefs, which cannot be
            // written to a file: kept in memory beyond the capacity.)
          }
          if (spilled) {
            // Gone from memory before the entry is published: its first reader builds it anew.
            v->~T();
            value_constructed_ = false;
            return complete_remote(std::move(spilled));
          }
        }
      }
    }
    if (!publish_value(bytes, std::move(token))) {
      v->~T();
      value_constructed_ = false;
      return false;
    }
    return true;
  }

  // RemoteValue::materialize for a T: builds the value from its serialized bytes. Tensors in it
  // (the value itself, or inside a vector or struct) are stored where they arrived, in host
  // memory, whoever reads it first: a reader of a tensor gets it placed for itself
  // (Placement<T>::for_reader).
  static void materialize(ObjectEntry* e, std::string_view bytes) {
    DecodeToStoreGuard stored;
    static_cast<TypedEntry*>(e)->set_fetched(from_bytes<T>(bytes));
  }

  // The value of a put: space was reserved beforehand (token). A copied large vector lands in a
  // pooled buffer (BufferPool).
  template <typename U>
  void set_put_value(std::shared_ptr<void> token, U&& v) {
    T* p;
    if constexpr (PoolableVector<T>::value && std::is_lvalue_reference_v<U> &&
                  std::is_same_v<std::decay_t<U>, T>) {
      p = ::new (static_cast<void*>(storage_)) T(BufferPool::copy(v));
    } else {
      p = ::new (static_cast<void*>(storage_)) T(std::forward<U>(v));
    }
    value_constructed_ = true;
    publish_unshared(ObjectSize<T>::bytes(*p), std::move(token));  // (the caller's alone)
  }

  const T& value() const noexcept { return *std::launder(reinterpret_cast<const T*>(storage_)); }

  // A kRemote entry's value, fetched from another node (RemoteValue::materialize).
  void set_fetched(T&& v) {
    ::new (static_cast<void*>(storage_)) T(std::move(v));
    value_constructed_ = true;
    publish_fetched();
  }

  ~TypedEntry() override {
    if (!value_constructed_) return;
    T* v = std::launder(reinterpret_cast<T*>(storage_));
    if constexpr (PoolableVector<T>::value) BufferPool::offer(*v);  // a large buffer is kept
    v->~T();
  }

 private:
  alignas(T) unsigned char storage_[sizeof(T)];
};

template <>
class TypedEntry<void> final : public ObjectEntry {
 public:
  explicit TypedEntry(ObjectId id) noexcept : ObjectEntry(id) {}
  bool set_value() { return publish_value(0); }
};

// An owning pointer to an entry (one reference).
class EntryPtr {
 public:
  EntryPtr() noexcept = default;
  // Adopts one reference.
  explicit EntryPtr(ObjectEntry* e) noexcept : e_(e) {}
  EntryPtr(const EntryPtr& o) noexcept : e_(o.e_) {
    if (e_) e_->ref();
  }
  EntryPtr(EntryPtr&& o) noexcept : e_(std::exchange(o.e_, nullptr)) {}
  EntryPtr& operator=(EntryPtr o) noexcept {
    std::swap(e_, o.e_);
    return *this;
  }
  ~EntryPtr() {
    if (e_) e_->unref();
  }
  ObjectEntry* get() const noexcept { return e_; }
  ObjectEntry* operator->() const noexcept { return e_; }
  explicit operator bool() const noexcept { return e_ != nullptr; }
  ObjectEntry* release() noexcept { return std::exchange(e_, nullptr); }

 private:
  ObjectEntry* e_ = nullptr;
};

}  // namespace internal
}  // namespace prism
