// prism/object_ref.h — futures for task results and stored objects: ObjectRef, get, wait, put.
//
//   prism::ObjectRef<int> r = prism::task(add).remote(1, 2);   // returns at once
//   int v = prism::get(r);                                     // blocks; rethrows task errors
//   auto big = prism::put(std::vector<float>(1 << 26));        // stored once, never copied
//   auto [ready, pending] = prism::wait(refs, 2, std::chrono::seconds(3));
//
// An ObjectRef<T> names an immutable object. Refs are cheap to copy (a reference count); the
// object is freed when the last ref, anywhere, is dropped. Passing a ref to a task makes the
// task wait for the object and receive the value (const T&) without a copy.
//
// Thread-safe: refs may be copied, passed and waited on from any thread.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "prism/errors.h"
#include "prism/internal/ids.h"
#include "prism/internal/object_entry.h"
#include "prism/internal/placement.h"
#include "prism/internal/runtime_hooks.h"

namespace prism {

class Runtime;

template <typename T>
class ObjectRef {
  static_assert(!std::is_reference_v<T> && !std::is_const_v<T>,
                "ObjectRef<T> takes a plain value type");

 public:
  using value_type = T;

  // An empty ref (valid() is false); get() on it throws prism::Error(kInvalidArgument).
  ObjectRef() noexcept = default;

  // Any ref converts to an untyped one (AnyRef = ObjectRef<void>): the same object, without its
  // type, e.g. to wait() on refs of several types at once. get() of an AnyRef waits for the
  // object and rethrows its error; as a task argument it is a dependency.
  template <typename U>
    requires(std::is_void_v<T> && !std::is_void_v<U>)
  ObjectRef(const ObjectRef<U>& other) noexcept  // NOLINT(google-explicit-constructor)
      : entry_(other.entry_) {}

  bool valid() const noexcept { return static_cast<bool>(entry_); }
  // The object's id (nil for an empty ref).
  ObjectId id() const noexcept { return entry_ ? entry_->id() : ObjectId{}; }
  // True once the object holds a value or an error. Never blocks.
  bool is_ready() const noexcept { return entry_ && entry_->is_done(); }

  friend bool operator==(const ObjectRef& a, const ObjectRef& b) noexcept {
    return a.entry_.get() == b.entry_.get();
  }

  // For Prism's own templates.
  internal::ObjectEntry* entry() const noexcept { return entry_.get(); }
  static ObjectRef adopt(internal::EntryPtr e) noexcept {
    ObjectRef r;
    r.entry_ = std::move(e);
    return r;
  }

 private:
  template <typename U>
  friend class ObjectRef;
  internal::EntryPtr entry_;
};

// An untyped ref: any ObjectRef<T> converts to it (see ObjectRef's converting constructor).
using AnyRef = ObjectRef<void>;

template <typename T>
struct is_object_ref : std::false_type {};
template <typename T>
struct is_object_ref<ObjectRef<T>> : std::true_type {};
template <typename T>
inline constexpr bool is_object_ref_v = is_object_ref<std::remove_cv_t<std::remove_reference_t<T>>>::value;

namespace internal {

// The stored value of a done, not failed entry; a value that lives on another node (cluster
// mode) is fetched first, which may throw (prism::Error kUnavailable: lost with its node).
template <typename T>
const T& value_of(ObjectEntry* e) {
  if (e->state() == ObjState::kRemote) [[unlikely]] fetch_remote(e);
  return static_cast<const TypedEntry<T>*>(e)->value();
}

// ArgTransfer's and RefScope's `write`: the entry's value, serialized (a large one into a
// pooled buffer, or fresh memory asked for in huge pages: BufferPool::reserve_large).
template <typename T>
void serialize_entry_value(ObjectEntry* e, std::string* out) {
  out->clear();
  const T& v = value_of<T>(e);
  const bool reserved = BufferPool::reserve_large(out, ObjectSize<T>::bytes(v));
  Writer w(out);
  w.put(v);
  if (reserved) BufferPool::fit_reserved(out);
}

template <typename T>
ObjectEntry* new_typed_entry(ObjectId id) {
  return new TypedEntry<T>(id);
}

// The value as a reader here sees it: placed for the calling context if T has a place (see
// placement.h), else the stored value itself.
template <typename T>
decltype(auto) read_value(ObjectEntry* e) {
  if constexpr (Placement<T>::kCustom) {
    return T(Placement<T>::for_reader(value_of<T>(e)));
  } else {
    return value_of<T>(e);
  }
}

template <typename T>
inline constexpr bool kGetCopies = std::is_void_v<T> || std::is_copy_constructible_v<T>;

template <typename T>
T get_until(const ObjectRef<T>& ref, Deadline deadline) {
  if constexpr (!kGetCopies<T>) {
    static_assert(kGetCopies<T>,
                  "prism::get(ref) returns a copy of the value, and this T cannot be copied "
                  "(move-only): use prism::get_shared(ref), a std::shared_ptr<const T> to the "
                  "stored value (no copy)");
    __builtin_unreachable();
  } else {
    check_ref(ref.entry(), "prism::get");
    await(ref.entry(), deadline);
    if constexpr (!std::is_void_v<T>) {
      if (ref.entry()->state() == ObjState::kRemote) fetch_remote(ref.entry(), deadline);
      return read_value<T>(ref.entry());
    }
  }
}

template <typename T>
std::shared_ptr<const T> shared_until(const ObjectRef<T>& ref, Deadline deadline) {
  static_assert(!std::is_void_v<T>, "get_shared() of an ObjectRef<void>");
  check_ref(ref.entry(), "prism::get_shared");
  await(ref.entry(), deadline);
  ObjectEntry* e = ref.entry();
  if (e->state() == ObjState::kRemote) fetch_remote(e, deadline);
  e->ref();
  return std::shared_ptr<const T>(&value_of<T>(e), [e](const T*) { e->unref(); });
}

template <typename T>
std::vector<T> get_all_until(const std::vector<ObjectRef<T>>& refs, Deadline deadline) {
  static_assert(!std::is_void_v<T>, "get() of several ObjectRef<void>: use wait()");
  static_assert(kGetCopies<T>,
                "prism::get(refs) returns copies of the values, and this T cannot be copied "
                "(move-only): use prism::get_shared(ref) for each ref (no copy)");
  if constexpr (!kGetCopies<T>) __builtin_unreachable();
  std::vector<ObjectEntry*> entries;
  entries.reserve(refs.size());
  for (const auto& r : refs) {
    check_ref(r.entry(), "prism::get");
    entries.push_back(r.entry());
  }
  // One wait for all of them (one or two wake-ups, not one per object); then each in order: the
  // first that failed rethrows its error, the first not done by the deadline throws TimeoutError
  // (await), before anything is fetched from another node or read.
  if (entries.size() > 1) await_all(entries, deadline);
  bool remote = false;
  for (ObjectEntry* e : entries) {
    ObjState state = e->state();
    if (state == ObjState::kPending || state == ObjState::kFailed) {
      await(e, deadline);  // (throws unless it is now done and not failed)
      state = e->state();
    }
    remote = remote || state == ObjState::kRemote;
  }
  if (remote) {
    for (ObjectEntry* e : entries) {
      if (e->state() == ObjState::kRemote) fetch_remote(e, deadline);
    }
  }
  std::vector<T> out;
  out.reserve(refs.size());
  for (ObjectEntry* e : entries) out.push_back(read_value<T>(e));
  return out;
}

template <typename T>
ObjectRef<std::decay_t<T>> put_into(RuntimeCore* rt, T&& value) {
  using V = std::decay_t<T>;
  static_assert(!is_object_ref_v<V>, "put() of an ObjectRef: pass the ref itself instead");
  // Reserve before taking the value, so a full store loses nothing of the caller's. A value
  // that does not fit goes to a file instead when its type is serializable (a spilled value,
  // read back when first read), else the put is refused.
  std::shared_ptr<void> token;
  if constexpr (is_serializable_v<V>) {
    bool full = false;
    token = reserve_put(rt, ObjectSize<V>::bytes(value), &full);
    if (full) {
      std::optional<std::string> bytes;
      try {
        RefScopeGuard no_refs(nullptr);  // (a ref in a file could never be lent to a reader)
        bytes = to_bytes(value);
      } catch (const Error&) {
        // A value that cannot be written to a file (it holds ObjectRefs): refused below, as a
        // value that cannot spill is, unless room was made meanwhile.
      }
      if (bytes) {
        auto* e = new TypedEntry<V>(next_object_id(rt));
        EntryPtr owner(e);
        spill_put(rt, e, *bytes, &TypedEntry<V>::materialize);
        return ObjectRef<V>::adopt(std::move(owner));
      }
      token = reserve_put(rt, ObjectSize<V>::bytes(value));
    }
  } else {
    token = reserve_put(rt, ObjectSize<V>::bytes(value));
  }
  auto* e = new TypedEntry<V>(next_object_id(rt));
  EntryPtr owner(e);
  e->set_put_value(std::move(token), std::forward<T>(value));
  return ObjectRef<V>::adopt(std::move(owner));
}

}  // namespace internal

// An ObjectRef inside a value that goes to another node (cluster mode: a task's or an actor
// call's arguments or result): the object is lent to that node, whose ref borrows it. The
// object and its copies live while a ref to it lives on any node (DESIGN §3); a borrowed ref
// reads the value where it lives (pulled once per node), and fails with OwnerDiedError once the
// node that owns it died. An empty ref travels as an empty ref. Serializing a ref anywhere else
// (prism::to_bytes, a spill file) throws prism::Error(kInvalidArgument).
template <typename T>
struct Serializer<ObjectRef<T>> {
  static void write(Writer& w, const ObjectRef<T>& r) {
    uint64_t key = 0;
    if (r.valid()) {
      void (*value)(internal::ObjectEntry*, std::string*) = nullptr;
      if constexpr (!std::is_void_v<T>) {
        if constexpr (is_serializable_v<T>) value = &internal::serialize_entry_value<T>;
      }
      key = internal::export_ref(r.entry(), value);
    }
    w.put(key);
  }
  static void read(Reader& rd, ObjectRef<T>* r) {
    uint64_t key = 0;
    rd.get(&key);
    if (key == 0) {
      *r = ObjectRef<T>();
      return;
    }
    internal::RemoteMaterializer materialize = nullptr;
    if constexpr (!std::is_void_v<T>) {
      if constexpr (is_serializable_v<T>) materialize = &internal::TypedEntry<T>::materialize;
    }
    internal::EntryPtr e = internal::import_ref(key, &internal::new_typed_entry<T>, materialize);
    if constexpr (!std::is_void_v<T>) {
      // The same object may come back, or again, as a ref of another type (a peer's mistake, or
      // an AnyRef first): never read as the wrong type.
      if (dynamic_cast<internal::TypedEntry<T>*>(e.get()) == nullptr) {
        throw Error(ErrorCode::kInvalidArgument,
                    "an ObjectRef from another node names an object of another type than the "
                    "ref it is read into (was it sent as an AnyRef before?)");
      }
    }
    *r = ObjectRef<T>::adopt(std::move(e));
  }
};

// Blocks until the object is ready and returns a copy of its value (use get_shared for no
// copy). Rethrows the producing task's error (TaskError, TaskCancelledError, ...).
template <typename T>
T get(const ObjectRef<T>& ref) {
  return internal::get_until(ref, internal::kNoDeadline);
}

// As get(ref), but throws prism::TimeoutError if the object is not ready within `timeout`.
template <typename T, typename Rep, typename Period>
T get(const ObjectRef<T>& ref, std::chrono::duration<Rep, Period> timeout) {
  return internal::get_until(ref, internal::deadline_after(timeout));
}

// All values, in the order given. Throws the first failed object's error (in order).
template <typename T>
std::vector<T> get(const std::vector<ObjectRef<T>>& refs) {
  return internal::get_all_until(refs, internal::kNoDeadline);
}

template <typename T, typename Rep, typename Period>
std::vector<T> get(const std::vector<ObjectRef<T>>& refs,
                   std::chrono::duration<Rep, Period> timeout) {
  return internal::get_all_until(refs, internal::deadline_after(timeout));
}

// Zero-copy access: a shared pointer to the stored value, keeping the object alive.
template <typename T>
std::shared_ptr<const T> get_shared(const ObjectRef<T>& ref) {
  return internal::shared_until(ref, internal::kNoDeadline);
}

template <typename T, typename Rep, typename Period>
std::shared_ptr<const T> get_shared(const ObjectRef<T>& ref,
                                    std::chrono::duration<Rep, Period> timeout) {
  return internal::shared_until(ref, internal::deadline_after(timeout));
}

// Waits until `num_returns` of `refs` are ready (a value or an error) or `timeout` passes.
// Returns (ready, not_ready), each in the order given; ready holds at most num_returns refs.
// An empty `refs` returns two empty vectors at once (as Ray does); otherwise num_returns larger
// than refs.size() is an InvalidArgument error. Refs of different types can be waited on together
// as AnyRefs (std::vector<prism::AnyRef>).
template <typename T, typename Rep = int64_t, typename Period = std::milli>
std::pair<std::vector<ObjectRef<T>>, std::vector<ObjectRef<T>>> wait(
    const std::vector<ObjectRef<T>>& refs, size_t num_returns = 1,
    std::chrono::duration<Rep, Period> timeout = std::chrono::duration<Rep, Period>::max()) {
  if (refs.empty()) return {};
  if (num_returns > refs.size()) {
    throw Error(ErrorCode::kInvalidArgument,
                "prism::wait: num_returns is larger than the number of refs");
  }
  std::vector<internal::ObjectEntry*> entries;
  entries.reserve(refs.size());
  for (const auto& r : refs) {
    internal::check_ref(r.entry(), "prism::wait");
    entries.push_back(r.entry());
  }
  const internal::Deadline deadline = timeout == std::chrono::duration<Rep, Period>::max()
                                          ? internal::kNoDeadline
                                          : internal::deadline_after(timeout);
  const std::vector<bool> done = internal::await_some(entries, num_returns, deadline);
  std::pair<std::vector<ObjectRef<T>>, std::vector<ObjectRef<T>>> out;
  for (size_t i = 0; i < refs.size(); ++i) {
    if (done[i] && out.first.size() < num_returns) {
      out.first.push_back(refs[i]);
    } else {
      out.second.push_back(refs[i]);
    }
  }
  return out;
}

// Stores `value` in the current runtime's object store and returns its ref. Moving a value in
// costs no copy. Throws ObjectStoreFullError (and keeps the value) when it does not fit.
template <typename T>
ObjectRef<std::decay_t<T>> put(T&& value) {
  const internal::RuntimePin pin = internal::pin_current_runtime();
  return internal::put_into(pin.get(), std::forward<T>(value));
}

// Cancels the task producing `ref` if it has not finished: a task that has not started never
// runs; a running task finishes but its result is dropped. get() then throws
// TaskCancelledError, and dependent tasks fail with it. Returns false if the object was
// already ready (nothing to cancel).
template <typename T>
bool cancel(const ObjectRef<T>& ref) {
  internal::check_ref(ref.entry(), "prism::cancel");
  return internal::cancel(ref.entry());
}

}  // namespace prism

template <typename T>
struct std::hash<prism::ObjectRef<T>> {
  size_t operator()(const prism::ObjectRef<T>& r) const noexcept {
    return std::hash<const void*>{}(r.entry());
  }
};
