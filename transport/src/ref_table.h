// ref_table.h — ObjectRefs lent to other processes of the cluster, and borrowed from them
// (DESIGN §3, "borrowers").
//
// A ref serialized into a message for another process (prism/object_ref.h's Serializer, through
// a RefScope) lends its object to that process under a key, and the message lists the keys it
// carries, once per occurrence (CallMsg::refs and the like). The lender keeps the object (its
// entry pinned) while any peer borrows it. The borrower makes one local entry per key; it
// completes when the lender says the object is done (RefReadyMsg: where to pull its value, or
// its error), and when its last local ref drops the borrower tells the lender how many times it
// was lent the key (RefReleaseMsg), which ends that peer's borrow.
//
// Keys are unique in the cluster: the lending process's index plus one (driver 0, node i) in
// the top 16 bits, a counter below. A key sent back to the peer it was borrowed from is not lent
// again (a pass-back): that peer finds its own lent record and the original entry. The driver
// lends keys it borrowed from one node on to another node (a forward, `via`), holding its own
// borrow while it does.
//
// This class is the bookkeeping only: it never sends, completes or frees anything itself. Its
// methods return Effects for the caller to carry out with no lock held (entries may be freed,
// messages sent, values serialized).
//
// Invariants (under mu_):
//   - lent_[k].to[p] = occurrences of k in the messages prepared for p, less those p released;
//     the record lives while some count is nonzero. It pins its entry (if it has one), and a
//     forwarded record holds one `holds` of its borrowed record (via, k) for its whole life.
//   - p is in lent_[k].announced once a message lending k was sent to p; the RefReady of k goes
//     to p with every message lending k sent once `ready` exists, and to every announced peer
//     when it comes to exist (a borrower ignores a second one; it needs the one after a message
//     that arrived after it had released an earlier borrow of k).
//   - borrowed_[(p, k)].received = occurrences of k received from p. The record is released to p
//     (one RefRelease with `received`) and erased exactly once: when it has no live entry, no
//     message carrying k is still being decoded (inflight) and no forward holds it.
//   - borrowed_[(p, k)].entry is the local entry, without a reference: the entry's keeper calls
//     dropped() as it dies, and users take a reference with try_ref() under mu_.
//
// Thread-safe: every method may be called from any thread.
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "prism/internal/object_entry.h"
#include "prism/internal/thread_annotations.h"
#include "wire.h"

namespace prism::cluster {

using PeerId = uint64_t;

class RefTable {
 public:
  using ValueWriter = void (*)(internal::ObjectEntry*, std::string*);

  // This process's index (the driver 0, node i i), once known: it makes this process's keys.
  void set_self(uint32_t index);
  // The process that made `key` (its index).
  static uint32_t owner_index(uint64_t key) noexcept {
    return static_cast<uint32_t>(key >> kKeyShift) - 1;
  }
  // Whether an object number is a key or a pull number (new_pull: a copy a lender holds for its
  // borrowers), not one of the driver's object numbers (ObjectTable::new_id: below 2^48), whose copies the
  // driver's own table frees.
  static bool is_key(uint64_t number) noexcept { return (number >> kKeyShift) != 0; }

  // An object lent in a message being sent: an entry of this process's, or a forward.
  struct Lend {
    uint64_t key = 0;
    internal::EntryPtr entry;   // null for a forward
    ValueWriter write = nullptr;
    PeerId via = 0;             // a forward: the peer the key is borrowed from
  };

  // What the caller does next, with no lock held.
  struct Completion {
    internal::EntryPtr entry;  // a borrowed entry (one reference)
    PeerId from = 0;
    RefReadyMsg ready;
    internal::RemoteMaterializer materialize = nullptr;
  };
  struct Effects {
    std::vector<internal::EntryPtr> unpinned;  // drop them (may free entries)
    std::vector<uint64_t> freed_pulls;         // values held here for borrowers' pulls: free
    // (lender, pull): a borrow's copy of its value here (a pull number: see is_key), to free
    std::vector<std::pair<PeerId, uint64_t>> forgotten_pulls;
    std::vector<std::pair<PeerId, RefReleaseMsg>> releases;     // send
    std::vector<std::pair<PeerId, RefReadyMsg>> readies;        // send
    std::vector<Lend> watch;  // lent entries to watch: done() once each is done
    std::vector<Completion> completions;                        // complete these entries
    // (lender, ready): where a borrowed value is, newly known (the driver records it, to pass
    // the value on to the nodes it lends it to, whether it has an entry for it or not)
    std::vector<std::pair<PeerId, RefReadyMsg>> located;
    bool empty() const noexcept {
      return unpinned.empty() && freed_pulls.empty() && forgotten_pulls.empty() &&
             releases.empty() && readies.empty() && watch.empty() && completions.empty() &&
             located.empty();
    }
  };

  // --- lending ---
  // The key `entry` travels under: its borrowed key, else its own (made now).
  uint64_t key_of(internal::ObjectEntry* entry);
  // A number for a copy of a lent value held here for its borrowers' pulls (RefReadyMsg::pull):
  // made like a key (its owner_index is this process's), never made twice. Not the key itself:
  // a key is lent again after its record ended (its keys were chosen while it lived: a message
  // encoded meanwhile, an actor's constructor), and the ended record's free (freed_pulls, carried
  // out after the table's lock) must not reach the copy held for the new record.
  uint64_t new_pull();
  // A key borrowed from `from` (in a message being decoded) lent on to another peer.
  static Lend forward(PeerId from, uint64_t key) {
    Lend l;
    l.key = key;
    l.via = from;
    return l;
  }
  // Before the message carrying `lends` goes to `to`: records the lends (a pass-back records
  // nothing). Returns the message's refs.
  std::vector<uint64_t> prepare(const std::vector<Lend>& lends, PeerId to);
  // After it was sent: RefReady of those already done, and entries to watch.
  Effects announce(const std::vector<Lend>& lends, PeerId to);
  // It was not sent: prepare() undone.
  Effects unprepare(const std::vector<Lend>& lends, PeerId to);
  // The entry lent as `key` is done (`ready`: where to pull it, or its error). `held_here`: its
  // value is held here for the borrowers' pulls under ready.pull (a new_pull()), to free with the
  // record, or at once if the record is gone or has its copy already (a borrowed entry lent on
  // names its lender's copy instead, under the same number).
  Effects done(uint64_t key, const RefReadyMsg& ready, bool held_here);
  // `from` dropped its last refs of these keys.
  Effects release(PeerId from, const RefReleaseMsg& msg);

  // --- borrowing ---
  // The refs of one received message, for the decoding of its bytes (import()).
  struct Incoming {
    PeerId from = 0;
    std::map<uint64_t, internal::EntryPtr> own;  // keys lent to `from` and passed back
    std::set<uint64_t> borrowed;                 // distinct keys borrowed from `from`
    bool lists(uint64_t key) const { return own.count(key) != 0 || borrowed.count(key) != 0; }
  };
  Incoming receive(PeerId from, const std::vector<uint64_t>& refs);
  // The message was decoded (or dropped).
  Effects finish(const Incoming& in);
  // The entry for `key` of `in`, when there is one already (a reference).
  internal::EntryPtr find(const Incoming& in, uint64_t key);
  // The peer `key` of `in` is borrowed from (in.from, or for a forward passed back the peer the
  // driver borrowed it from).
  PeerId source_of(const Incoming& in, uint64_t key) const;
  // `entry` (new, one reference the caller keeps) becomes the entry of (source_of, key), unless
  // another one became it since find(): then *existing is that one (a reference), and `entry`
  // is left alone. If its outcome is known already, it is in the returned completions.
  Effects adopt(const Incoming& in, uint64_t key, internal::ObjectEntry* entry,
                internal::RemoteMaterializer materialize, internal::EntryPtr* existing);
  // The entry of (from, key) is being freed.
  Effects dropped(PeerId from, uint64_t key, const internal::ObjectEntry* entry);
  // RefReady from `from`.
  Effects ready(PeerId from, const RefReadyMsg& msg);
  // How the value lent as `key` is serialized for its borrowers' pulls: from the first typed
  // ref that lent it (null: only AnyRefs did, or it is not lent).
  ValueWriter writer_of(uint64_t key) const;
  // The outcome of the borrow `entry` is the entry of, once known (a borrowed entry lent on
  // names its lender's copy, never one of its own).
  std::optional<RefReadyMsg> borrowed_ready(const internal::ObjectEntry* entry) const;
  // The link is going: entries freed from now on do not say so (dropped), so the table forgets
  // every entry it does not own now, and makes no more.
  void close();
  // `peer` is gone: its borrows end, and what it lent fails with `died` (its status and error).
  Effects lose_peer(PeerId peer, const RefReadyMsg& died);

  // For tests and stats.
  size_t lent_count() const;
  size_t borrowed_count() const;
  uint64_t lent_to(uint64_t key, PeerId peer) const;

 private:
  static constexpr int kKeyShift = 48;
  struct Lent {
    internal::EntryPtr entry;
    ValueWriter write = nullptr;
    PeerId via = 0;  // a forward (holds one `holds` of borrowed_[(via, key)])
    std::map<PeerId, uint64_t> to;
    std::set<PeerId> announced;
    std::optional<RefReadyMsg> ready;
    bool watching = false;
    bool own_pull = false;  // ready.pull is this process's copy, held for borrowers
  };
  struct Borrowed {
    internal::ObjectEntry* entry = nullptr;  // no reference (see the invariants)
    internal::RemoteMaterializer materialize = nullptr;
    uint64_t received = 0;
    uint32_t inflight = 0;
    uint32_t holds = 0;
    std::optional<RefReadyMsg> ready;
  };
  using BorrowKey = std::pair<PeerId, uint64_t>;

  // Erases lent_[key] if no peer borrows it any more.
  void maybe_end_lent_locked(uint64_t key, Effects* fx) PRISM_REQUIRES(mu_);
  void maybe_release_locked(const BorrowKey& k, Effects* fx) PRISM_REQUIRES(mu_);
  void take_back_locked(uint64_t key, PeerId peer, uint64_t count, Effects* fx)
      PRISM_REQUIRES(mu_);
  // `ready` known for a borrowed key: tell the peers it is forwarded to.
  void forward_ready_locked(PeerId from, uint64_t key, const RefReadyMsg& ready, Effects* fx)
      PRISM_REQUIRES(mu_);

  mutable internal::Mutex mu_;
  uint32_t self_ PRISM_GUARDED_BY(mu_) = 0;
  bool closed_ PRISM_GUARDED_BY(mu_) = false;
  uint64_t next_ PRISM_GUARDED_BY(mu_) = 1;
  std::unordered_map<uint64_t, Lent> lent_ PRISM_GUARDED_BY(mu_);
  std::map<BorrowKey, Borrowed> borrowed_ PRISM_GUARDED_BY(mu_);
  // Entries that have a key: their own (lent) or the one they were borrowed under.
  std::unordered_map<const internal::ObjectEntry*, uint64_t> keys_ PRISM_GUARDED_BY(mu_);
  // Borrowed keys' entries: which peer each came from.
  std::unordered_map<const internal::ObjectEntry*, PeerId> sources_ PRISM_GUARDED_BY(mu_);
};

}  // namespace prism::cluster
