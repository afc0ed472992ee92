#include "ref_table.h"

#include <utility>

namespace prism::cluster {

using internal::EntryPtr;
using internal::MutexLock;
using internal::ObjectEntry;

void RefTable::set_self(uint32_t index) {
  MutexLock lock(mu_);
  self_ = index;
}

uint64_t RefTable::key_of(ObjectEntry* entry) {
  MutexLock lock(mu_);
  if (auto it = keys_.find(entry); it != keys_.end()) return it->second;
  // (Recorded by prepare(), with the lend: an entry that never goes out keeps no key, and its
  // address may be reused.)
  return (static_cast<uint64_t>(self_ + 1) << kKeyShift) | next_++;
}

uint64_t RefTable::new_pull() {
  MutexLock lock(mu_);
  return (static_cast<uint64_t>(self_ + 1) << kKeyShift) | next_++;
}

std::vector<uint64_t> RefTable::prepare(const std::vector<Lend>& lends, PeerId to) {
  std::vector<uint64_t> refs;
  refs.reserve(lends.size());
  MutexLock lock(mu_);
  for (const Lend& l : lends) {
    refs.push_back(l.key);
    if (l.entry) {
      auto s = sources_.find(l.entry.get());
      if (s != sources_.end() && s->second == to) continue;  // a pass-back: lent by `to`
    } else if (l.via == to) {
      continue;  // (a forward back to where it came from: a pass-back too)
    }
    Lent& r = lent_[l.key];
    if (l.entry && !r.entry) {
      r.entry = l.entry;
      keys_.emplace(l.entry.get(), l.key);  // (an entry keeps its first key)
    }
    if (l.entry && !r.write) r.write = l.write;  // (an AnyRef first has none: a typed ref may)
    if (l.via != 0 && r.via == 0 && !r.entry) {
      auto b = borrowed_.find({l.via, l.key});
      if (b != borrowed_.end()) {
        r.via = l.via;
        ++b->second.holds;
        if (b->second.ready) r.ready = b->second.ready;
      }
    }
    ++r.to[to];
  }
  return refs;
}

RefTable::Effects RefTable::announce(const std::vector<Lend>& lends, PeerId to) {
  Effects fx;
  MutexLock lock(mu_);
  for (const Lend& l : lends) {
    auto it = lent_.find(l.key);
    if (it == lent_.end() || it->second.to.count(to) == 0) continue;  // (a pass-back)
    Lent& r = it->second;
    r.announced.insert(to);
    if (r.ready) {
      fx.readies.emplace_back(to, *r.ready);
    } else if (r.entry && !r.watching) {
      r.watching = true;
      Lend w;
      w.key = l.key;
      w.entry = r.entry;
      w.write = r.write;
      fx.watch.push_back(std::move(w));
    }
  }
  return fx;
}

RefTable::Effects RefTable::unprepare(const std::vector<Lend>& lends, PeerId to) {
  Effects fx;
  MutexLock lock(mu_);
  for (const Lend& l : lends) take_back_locked(l.key, to, 1, &fx);
  return fx;
}

void RefTable::take_back_locked(uint64_t key, PeerId peer, uint64_t count, Effects* fx) {
  auto it = lent_.find(key);
  if (it == lent_.end()) return;
  auto t = it->second.to.find(peer);
  if (t == it->second.to.end()) return;
  t->second = count >= t->second ? 0 : t->second - count;
  if (t->second == 0) {
    it->second.to.erase(t);
    it->second.announced.erase(peer);
  }
  maybe_end_lent_locked(key, fx);
}

void RefTable::maybe_end_lent_locked(uint64_t key, Effects* fx) {
  auto it = lent_.find(key);
  if (it == lent_.end() || !it->second.to.empty()) return;
  Lent& r = it->second;
  if (r.entry) {
    auto k = keys_.find(r.entry.get());
    if (k != keys_.end() && k->second == key && sources_.count(r.entry.get()) == 0) keys_.erase(k);
    fx->unpinned.push_back(std::move(r.entry));
  }
  if (r.own_pull) fx->freed_pulls.push_back(r.ready->pull);
  const PeerId via = r.via;
  lent_.erase(it);
  if (via != 0) {
    auto b = borrowed_.find({via, key});
    if (b != borrowed_.end() && b->second.holds > 0) {
      --b->second.holds;
      maybe_release_locked(b->first, fx);
    }
  }
}

RefTable::Effects RefTable::done(uint64_t key, const RefReadyMsg& ready, bool held_here) {
  Effects fx;
  MutexLock lock(mu_);
  auto it = lent_.find(key);
  if (it == lent_.end() || it->second.ready) {
    // No longer lent, or known already (a second watch of one entry, left by a record that
    // ended while it waited, when the key is lent again: an actor restarted with the refs of
    // its constructor): nothing keeps the copy made for it. (Each copy has its own number: this
    // frees this one only.)
    if (held_here) fx.freed_pulls.push_back(ready.pull);
    return fx;
  }
  Lent& r = it->second;
  r.ready = ready;
  r.own_pull = held_here;
  for (PeerId p : r.announced) fx.readies.emplace_back(p, ready);
  return fx;
}

RefTable::Effects RefTable::release(PeerId from, const RefReleaseMsg& msg) {
  Effects fx;
  MutexLock lock(mu_);
  for (const auto& [key, count] : msg.keys) take_back_locked(key, from, count, &fx);
  return fx;
}

RefTable::Incoming RefTable::receive(PeerId from, const std::vector<uint64_t>& refs) {
  Incoming in;
  in.from = from;
  MutexLock lock(mu_);
  for (uint64_t key : refs) {
    // Lent to `from` and passed back: the entry here (its record lives until `from` releases
    // it, which it does only after this message).
    if (auto l = lent_.find(key); l != lent_.end() && l->second.to.count(from) != 0) {
      if (in.own.count(key) == 0) {
        if (l->second.entry) {
          in.own.emplace(key, l->second.entry);
        } else {
          in.own.emplace(key, EntryPtr());  // a forward passed back: import() uses the borrow
        }
      }
      continue;
    }
    Borrowed& b = borrowed_[{from, key}];
    ++b.received;
    if (in.borrowed.insert(key).second) ++b.inflight;
  }
  return in;
}

RefTable::Effects RefTable::finish(const Incoming& in) {
  Effects fx;
  MutexLock lock(mu_);
  for (uint64_t key : in.borrowed) {
    auto b = borrowed_.find({in.from, key});
    if (b == borrowed_.end()) continue;
    if (b->second.inflight > 0) --b->second.inflight;
    maybe_release_locked(b->first, &fx);
  }
  return fx;
}

EntryPtr RefTable::find(const Incoming& in, uint64_t key) {
  MutexLock lock(mu_);
  if (closed_) return EntryPtr();
  if (auto o = in.own.find(key); o != in.own.end()) {
    if (o->second) return o->second;
    // A forward passed back: the driver's own borrow of it, under the lender it came from.
    auto l = lent_.find(key);
    if (l == lent_.end() || l->second.via == 0) return EntryPtr();
    auto b = borrowed_.find({l->second.via, key});
    if (b != borrowed_.end() && b->second.entry != nullptr && b->second.entry->try_ref()) {
      return EntryPtr(b->second.entry);
    }
    return EntryPtr();
  }
  auto b = borrowed_.find({in.from, key});
  if (b != borrowed_.end() && b->second.entry != nullptr && b->second.entry->try_ref()) {
    return EntryPtr(b->second.entry);
  }
  return EntryPtr();
}

PeerId RefTable::source_of(const Incoming& in, uint64_t key) const {
  if (in.own.count(key) == 0) return in.from;
  MutexLock lock(mu_);
  auto l = lent_.find(key);
  return l == lent_.end() ? 0 : l->second.via;
}

RefTable::Effects RefTable::adopt(const Incoming& in, uint64_t key, ObjectEntry* entry,
                                  internal::RemoteMaterializer materialize, EntryPtr* existing) {
  Effects fx;
  MutexLock lock(mu_);
  if (closed_) return fx;  // (it would not say when it goes)
  PeerId from = in.from;
  if (in.own.count(key) != 0) {  // (a forward passed back, whose borrow had no entry yet)
    auto l = lent_.find(key);
    if (l == lent_.end() || l->second.via == 0) return fx;
    from = l->second.via;
  }
  auto b = borrowed_.find({from, key});
  if (b == borrowed_.end()) return fx;
  if (b->second.entry != nullptr && b->second.entry->try_ref()) {
    *existing = EntryPtr(b->second.entry);
    return fx;
  }
  b->second.entry = entry;
  b->second.materialize = materialize;
  keys_[entry] = key;
  sources_[entry] = from;
  if (b->second.ready) {
    entry->ref();
    fx.completions.push_back(Completion{EntryPtr(entry), from, *b->second.ready, materialize});
  }
  return fx;
}

RefTable::Effects RefTable::dropped(PeerId from, uint64_t key, const ObjectEntry* entry) {
  Effects fx;
  MutexLock lock(mu_);
  if (auto k = keys_.find(entry); k != keys_.end() && k->second == key) keys_.erase(k);
  sources_.erase(entry);
  auto b = borrowed_.find({from, key});
  if (b == borrowed_.end() || b->second.entry != entry) return fx;
  b->second.entry = nullptr;
  maybe_release_locked(b->first, &fx);
  return fx;
}

void RefTable::maybe_release_locked(const BorrowKey& k, Effects* fx) {
  auto b = borrowed_.find(k);
  if (b == borrowed_.end()) return;
  const Borrowed& r = b->second;
  if (r.entry != nullptr || r.inflight != 0 || r.holds != 0) return;
  if (r.received > 0) {
    RefReleaseMsg msg;
    msg.keys.emplace_back(k.second, r.received);
    fx->releases.emplace_back(k.first, std::move(msg));
  }
  if (r.ready && r.ready->status == CallStatus::kOk && is_key(r.ready->pull)) {
    fx->forgotten_pulls.emplace_back(k.first, r.ready->pull);
  }
  borrowed_.erase(b);
}

void RefTable::forward_ready_locked(PeerId from, uint64_t key, const RefReadyMsg& ready,
                                    Effects* fx) {
  auto l = lent_.find(key);
  if (l == lent_.end() || l->second.via != from || l->second.ready) return;
  l->second.ready = ready;
  for (PeerId p : l->second.announced) fx->readies.emplace_back(p, ready);
}

RefTable::Effects RefTable::ready(PeerId from, const RefReadyMsg& msg) {
  Effects fx;
  MutexLock lock(mu_);
  auto b = borrowed_.find({from, msg.key});
  if (b == borrowed_.end() || b->second.ready) return fx;  // (not borrowed, or told already)
  b->second.ready = msg;
  if (msg.status == CallStatus::kOk) fx.located.emplace_back(from, msg);
  if (closed_) return fx;
  if (b->second.entry != nullptr && b->second.entry->try_ref()) {
    fx.completions.push_back(
        Completion{EntryPtr(b->second.entry), from, msg, b->second.materialize});
  }
  forward_ready_locked(from, msg.key, msg, &fx);
  return fx;
}

RefTable::Effects RefTable::lose_peer(PeerId peer, const RefReadyMsg& died) {
  Effects fx;
  MutexLock lock(mu_);
  std::vector<uint64_t> lent_keys;
  for (auto& [key, r] : lent_) {
    if (r.to.erase(peer) != 0) lent_keys.push_back(key);
    r.announced.erase(peer);
  }
  for (uint64_t key : lent_keys) maybe_end_lent_locked(key, &fx);
  // What `peer` lent fails (also where its value was pulled already: the owner's copies went
  // with it); the records stay until their entries go, but release nothing to a dead peer.
  for (auto b = borrowed_.lower_bound({peer, 0}); b != borrowed_.end() && b->first.first == peer;
       ++b) {
    Borrowed& r = b->second;
    r.received = 0;
    RefReadyMsg failed = died;
    failed.key = b->first.second;
    const bool was_ok = r.ready && r.ready->status == CallStatus::kOk;
    if (was_ok && is_key(r.ready->pull)) fx.forgotten_pulls.emplace_back(peer, r.ready->pull);
    if (!r.ready || was_ok) {
      const bool pending = !r.ready;
      r.ready = failed;
      if (pending && r.entry != nullptr && r.entry->try_ref()) {
        fx.completions.push_back(Completion{EntryPtr(r.entry), peer, failed, r.materialize});
      }
      auto l = lent_.find(b->first.second);
      if (l != lent_.end() && l->second.via == peer) {
        l->second.ready = failed;
        for (PeerId p : l->second.announced) fx.readies.emplace_back(p, failed);
      }
    }
  }
  for (auto b = borrowed_.lower_bound({peer, 0}); b != borrowed_.end() && b->first.first == peer;) {
    const BorrowKey k = b->first;
    ++b;
    maybe_release_locked(k, &fx);
  }
  return fx;
}

RefTable::ValueWriter RefTable::writer_of(uint64_t key) const {
  MutexLock lock(mu_);
  auto it = lent_.find(key);
  return it == lent_.end() ? nullptr : it->second.write;
}

std::optional<RefReadyMsg> RefTable::borrowed_ready(const ObjectEntry* entry) const {
  MutexLock lock(mu_);
  auto s = sources_.find(entry);
  auto k = keys_.find(entry);
  if (s == sources_.end() || k == keys_.end()) return std::nullopt;
  auto b = borrowed_.find({s->second, k->second});
  if (b == borrowed_.end() || b->second.entry != entry) return std::nullopt;
  return b->second.ready;
}

void RefTable::close() {
  MutexLock lock(mu_);
  closed_ = true;
  for (auto& [k, b] : borrowed_) b.entry = nullptr;
  sources_.clear();
  for (auto it = keys_.begin(); it != keys_.end();) {
    auto l = lent_.find(it->second);
    const bool owned = l != lent_.end() && l->second.entry.get() == it->first;
    it = owned ? std::next(it) : keys_.erase(it);
  }
}

size_t RefTable::lent_count() const {
  MutexLock lock(mu_);
  return lent_.size();
}

size_t RefTable::borrowed_count() const {
  MutexLock lock(mu_);
  return borrowed_.size();
}

uint64_t RefTable::lent_to(uint64_t key, PeerId peer) const {
  MutexLock lock(mu_);
  auto it = lent_.find(key);
  if (it == lent_.end()) return 0;
  auto t = it->second.to.find(peer);
  return t == it->second.to.end() ? 0 : t->second;
}

}  // namespace prism::cluster
