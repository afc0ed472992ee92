#include "prism/internal/object_entry.h"

#include <sched.h>

#include <utility>

#include "prism/errors.h"
#include "prism/internal/runtime_hooks.h"
#include "prism/internal/task_record.h"

namespace prism::internal {

// The lock itself: the analysis cannot see an atomic flag become a held capability.
void SpinLock::lock() noexcept PRISM_NO_THREAD_SAFETY_ANALYSIS {
  for (int spins = 0;; ++spins) {
    if (!flag_.exchange(true, std::memory_order_acquire)) return;
    while (flag_.load(std::memory_order_relaxed)) {
      if (++spins > 64) sched_yield();  // the holder was preempted: let it run
    }
  }
}

ObjectEntry::~ObjectEntry() = default;

namespace {
thread_local int tls_notifying = 0;
}  // namespace

bool ObjectEntry::notifying_dependents() noexcept { return tls_notifying > 0; }

// A dependent may free its node (and itself) in on_ready, so the link is read first.
void ObjectEntry::notify_dependents(DepNode* list) noexcept {
  ++tls_notifying;
  while (list != nullptr) {
    DepNode* next = list->next;
    list->owner->on_ready(this);
    list = next;
  }
  --tls_notifying;
}

bool ObjectEntry::complete_error(std::exception_ptr error) noexcept {
  return complete(ObjState::kFailed, [&] { error_ = std::move(error); });
}

bool ObjectEntry::publish_value(size_t bytes, std::shared_ptr<void> token) noexcept {
  if (!token && bytes >= kInlineObjectBytes) token = account_result(bytes);
  return complete(ObjState::kReady, [&] { store_account_ = std::move(token); });
}

void ObjectEntry::publish_unshared(size_t bytes, std::shared_ptr<void> token) noexcept {
  if (!token && bytes >= kInlineObjectBytes) token = account_result(bytes);
  store_account_ = std::move(token);
  // (Release: the value and its accounting before the state, for whoever gets the ref later;
  // handing the ref to another thread orders it too.)
  state_.store(static_cast<uint32_t>(ObjState::kReady), std::memory_order_release);
}

bool ObjectEntry::complete_remote(std::shared_ptr<RemoteValue> where) noexcept {
  return complete(ObjState::kRemote, [&] {
    if (store_account_) where->kept_ = std::move(store_account_);  // (attached while pending)
    store_account_ = std::move(where);
  });
}

namespace {
thread_local RefScope* tls_ref_scope = nullptr;
}  // namespace

RefScope*& current_ref_scope() noexcept { return tls_ref_scope; }

bool& decoding_to_store() noexcept {
  thread_local bool to_store = false;
  return to_store;
}

uint64_t export_ref(ObjectEntry* entry, void (*write)(ObjectEntry*, std::string*)) {
  if (tls_ref_scope == nullptr) {
    throw Error(ErrorCode::kInvalidArgument,
                "an ObjectRef can be serialized only inside the arguments or the result of a "
                "call that goes to another node (cluster mode)");
  }
  return tls_ref_scope->export_ref(entry, write);
}

EntryPtr import_ref(uint64_t key, ObjectEntry* (*make)(ObjectId), RemoteMaterializer materialize) {
  if (tls_ref_scope == nullptr) {
    throw Error(ErrorCode::kInvalidArgument,
                "an ObjectRef can be read only from the arguments or the result of a call that "
                "came from another node (cluster mode)");
  }
  return tls_ref_scope->import_ref(key, make, materialize);
}

RemoteValue* ObjectEntry::remote_value() const noexcept {
  // store_account_ is written before the kRemote state is published and not again while the
  // entry is kRemote; once its value was built here (kReady) attach() may chain onto it, under
  // lock_: read it under lock_ too, and only while still kRemote. (The RemoteValue itself lives
  // as long as the entry, chained or not.)
  if (state() != ObjState::kRemote) return nullptr;
  lock_.lock();
  RemoteValue* v = state() == ObjState::kRemote ? static_cast<RemoteValue*>(store_account_.get())
                                                : nullptr;
  lock_.unlock();
  return v;
}

void ObjectEntry::attach(std::shared_ptr<void> keep) {
  struct Both {
    std::shared_ptr<void> first, second;
  };
  auto both = std::make_shared<Both>();  // (allocated before the lock: it may throw)
  both->second = std::move(keep);
  lock_.lock();
  both->first = std::move(store_account_);
  store_account_ = std::move(both);
  lock_.unlock();
}

bool ObjectEntry::add_dependent(DepNode* node) noexcept {
  lock_.lock();
  if (state_.load(std::memory_order_relaxed) != static_cast<uint32_t>(ObjState::kPending)) {
    lock_.unlock();
    return false;
  }
  node->next = dependents_;
  dependents_ = node;
  lock_.unlock();
  return true;
}

bool ObjectEntry::look_at_producer(bool (*look)(TaskRecord&, void*), void* ctx) noexcept {
  lock_.lock();
  const bool r =
      state_.load(std::memory_order_relaxed) == static_cast<uint32_t>(ObjState::kPending) &&
      producer_ != nullptr && look(*producer_, ctx);
  lock_.unlock();
  return r;
}

TaskRecord* ObjectEntry::claim_producer(bool (*accept)(const TaskRecord&, const void*),
                                        const void* ctx) noexcept {
  struct Claim {
    bool (*accept)(const TaskRecord&, const void*);
    const void* ctx;
    TaskRecord* claimed = nullptr;
  } c{accept, ctx};
  look_at_producer(
      [](TaskRecord& t, void* p) {
        auto& claim = *static_cast<Claim*>(p);
        if (!claim.accept(t, claim.ctx) || !t.try_claim()) return false;
        claim.claimed = &t;
        return true;
      },
      &c);
  return c.claimed;
}

bool ObjectEntry::remove_dependent(DepNode* node) noexcept {
  lock_.lock();
  for (DepNode** p = &dependents_; *p != nullptr; p = &(*p)->next) {
    if (*p == node) {
      *p = node->next;
      lock_.unlock();
      return true;
    }
  }
  lock_.unlock();
  return false;
}

}  // namespace prism::internal
