// object_table.h — the objects one process keeps for the cluster, and the pulls it waits on.
//
// Values above the inline threshold stay where they were produced (DESIGN §3): a node keeps a
// large task result as serialized bytes (a Blob) under a number the driver chose, and answers
// the driver's pulls for it; a node that needs an argument it lacks pulls it once, however many
// of its tasks wait for it, and keeps the copy (secondary) for later readers. The driver owns
// the metadata: for each number, the value's size and every node holding a copy (`holders`,
// kHere for itself), and which local entry it belongs to; when that entry's last ref drops,
// every copy is freed (forget() returns the holders to tell).
//
// Invariants (under mu_):
//   - a number is in pulls_ only while a pull of it is in flight: exactly one request is
//     outstanding for it, to `from` (redirect() moves it to another peer, which is then the
//     only one whose answer counts), and every waiter is called exactly once, by finish() or
//     fail_*() (outside mu_);
//   - held_ has at most one copy per number; stats_ counts exactly what held_ holds;
//   - a pull's `parts`, once made, has the value's size, and `received` bytes of it are in
//     (parts arrive in order);
//   - locations_[n].holders lists the peers told to keep n (the driver's view); .pending, the
//     peers sent to pull n from another node (they keep what they pull, unless freed first),
//     which are not read from until they are holders. A node drops a
//     primary copy only when told, or at the job's end; a secondary copy also when it makes
//     room (below), without a word: the driver finds out when it asks for it (remove_holder).
//   - spilling (set_spill): memory_bytes_ counts the held copies in memory; a copy is either in
//     memory (blob) or in its file (spilled, blob null), never neither; a copy being written
//     (`spilling`) is still in memory and counted there until its file is complete.
//
// Spilling: once the copies in memory exceed the capacity, secondary copies are let go first,
// least recently used first (evicted: another process has the value, and pulls it again if
// needed); then primary copies, least recently used first, are written to files in a directory
// of the table's own (spill_dir.h: under PRISM_SPILL_DIR) and their memory is let go (a reader
// holding a Blob keeps its bytes until it is done); find() maps a spilled copy back from its
// file on demand. The caller of hold() writes the files, unless it
// may not block (the network thread: a copy a pull brought), in which case the table's spiller
// thread does. The directory is removed with the table.
//
// Thread-safe: every method may be called from any thread; waiters are called with no lock held.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "prism/internal/ids.h"
#include "prism/internal/object_entry.h"
#include "prism/internal/remote_call.h"
#include "prism/internal/thread_annotations.h"

namespace prism::cluster {

// An object's serialized bytes: a view, and what keeps it alive (its own string, or the pooled
// buffer a message arrived in: received values are kept where UCX put them, not copied).
struct Bytes {
  Bytes(std::string_view v, std::shared_ptr<const void> o) : view(v), owner(std::move(o)) {}
  std::string_view view;
  std::shared_ptr<const void> owner;
  // What this node's readers decoded from the bytes, shared by them (a GPU tensor's host copy).
  mutable internal::DecodedSlot decoded;
  // A result kept live here (remote_call.h, LiveResult: a GPU tensor on its GPU): `view` is its
  // stub, which only this node's tasks read (the value is in `decoded`); anything that sends
  // the bytes elsewhere or writes them to a file asks for wire_form() instead. Null otherwise.
  std::shared_ptr<const internal::LiveResult> live;
  size_t size() const noexcept { return view.size(); }
};
using Blob = std::shared_ptr<const Bytes>;
Blob make_blob(std::string bytes);
Blob make_blob(std::string_view view, std::shared_ptr<const void> owner);
// A live result's object: `stub` as its bytes, the value in its DecodedSlot.
Blob make_live_blob(std::string stub, internal::LiveResult live);
// The bytes to send to another process: `b` itself, or a live result's serialized form, made
// now (a GPU tensor downloaded: not kept, each reader elsewhere pulls once). Null, with
// *error, if it cannot be made.
Blob wire_form(const Blob& b, std::string* error);
using PeerId = uint64_t;
inline constexpr PeerId kHere = 0;  // "this process" among holders

class ObjectTable {
 public:
  ObjectTable();
  ~ObjectTable();

  // --- copies held here ---
  // Copies in memory beyond `capacity_bytes` go to files under `dir` (made on first use: a
  // directory of this process's); 0: no spilling (the default).
  void set_spill(uint64_t capacity_bytes, std::string dir);
  // Keeps `blob` as object `id` (replacing nothing: a second copy of a held id is ignored). Over
  // the spill capacity, copies go to files now, or, when `may_block` is false, on the spiller
  // thread soon.
  void hold(uint64_t id, Blob blob, bool primary, bool may_block = true);
  // Whether a copy of `id` is held here (in memory or spilled), without reading it.
  bool holds(uint64_t id) const;
  Blob find(uint64_t id);
  // Frees the copy of `id` held here, if any; a pull of `id` in flight then ends without
  // keeping a copy (its waiters still get the bytes): the owner freed it meanwhile.
  void drop(uint64_t id);
  // Device memory pressure on GPU `device` (placement.h: release_live_results, which calls this
  // for every table of the process): the live copies kept on it become their wire form (host
  // bytes, spilled as any copy when over the capacity), least recently used first, until
  // `bytes` of device memory were let go or none is left. Returns the bytes let go. Only copies
  // no reader holds (a running task, a pull being sent) are taken: their memory would not go.
  // Later readers decode the bytes.
  size_t release_live(int device, size_t bytes) noexcept;

  struct Stats {
    uint64_t primary_objects = 0;    // produced here (in memory or spilled)
    uint64_t primary_bytes = 0;
    uint64_t secondary_objects = 0;  // pulled copies
    uint64_t secondary_bytes = 0;
    uint64_t pulls = 0;          // pulls this process sent
    uint64_t pulled_bytes = 0;   // bytes they brought
    uint64_t served = 0;         // pulls this process answered with bytes
    uint64_t served_bytes = 0;
    uint64_t spilled_objects = 0;   // copies in files now (their bytes: spilled_bytes)
    uint64_t spilled_bytes = 0;
    uint64_t spill_writes = 0;      // copies written to files, and their bytes (cumulative)
    uint64_t spill_written_bytes = 0;
    uint64_t restored_bytes = 0;    // bytes read back from files (cumulative)
    uint64_t evicted_objects = 0;   // secondary copies let go to make room, and their bytes
    uint64_t evicted_bytes = 0;     // (cumulative)
    uint64_t released_live = 0;     // live copies made host bytes by device pressure (cumulative)
    // ObjectRefs (filled by the cluster link, from its RefTable): objects this process lends
    // to others, and objects it borrows from others.
    uint64_t lent_refs = 0;
    uint64_t borrowed_refs = 0;
  };
  Stats stats() const;
  void count_served(size_t bytes);

  // --- pulls in flight ---
  // Called once with the bytes, or with an empty blob and why not.
  using Waiter = std::function<void(const Blob& blob, const std::string& error)>;
  // Adds `waiter` for object `id`. True if no pull of it was in flight: the caller sends one, to
  // `from` (remembered for fail_from). `expected_bytes`, when known (nonzero), is the value's
  // size: a value arriving in parts must have it.
  bool await(uint64_t id, PeerId from, Waiter waiter, uint64_t expected_bytes = 0);
  // The pull of `id` sent to `from` ended with `blob` (null: failed). Returns the waiters to call
  // (outside any lock); none if no such pull is in flight (an answer from another peer is not
  // trusted). A blob is held here as a secondary copy when `keep`.
  std::vector<Waiter> finish(uint64_t id, PeerId from, const Blob& blob, bool keep);
  // One part of the value the pull of `id` sent to `from` brings: `part` at `offset` of a value
  // of `total` bytes (a value larger than one message comes in parts, in order). The parts are
  // gathered in one buffer of `total` bytes (from the buffer pool: already faulted in); returns
  // the whole value once its last part is in (finish() it then), null while parts are missing.
  // Sets *error, and returns null, when no such pull is in flight, when `total` is not the size
  // this process knows for the value (the pull's expected_bytes, or the directory's), when the
  // part is not the next one, or when there is no memory for it: the caller fails the pull.
  // Parts come from one thread (the peer's messages arrive in order).
  Blob add_part(uint64_t id, PeerId from, uint64_t offset, uint64_t total, std::string_view part,
                std::string* error);
  // The pulls sent to `peer` (every pull when peer == kHere): they can no longer complete.
  std::vector<std::pair<uint64_t, std::vector<Waiter>>> fail_from(PeerId peer);
  // The pull of `id` that was sent to `from` is sent to `to` instead (a redirect, or a direct
  // pull falling back to the driver): its waiters stay, parts already in are discarded (the new
  // holder sends the value from its start), and `expected_bytes`, when nonzero, becomes the
  // value's size where none was known. False (nothing changed) if no such pull is in flight.
  bool redirect(uint64_t id, PeerId from, PeerId to, uint64_t expected_bytes = 0);
  // Every pull sent to `from` is sent to `to` instead (as redirect()); returns their numbers.
  std::vector<uint64_t> redirect_all(PeerId from, PeerId to);
  // How many pulls in flight were sent to `from` (those freed on their way included: their
  // answer is still to come).
  size_t pulls_from(PeerId from) const;
  // Whether a pull of `id` waits for its answer from `from`.
  bool awaits(uint64_t id, PeerId from) const;
  // Every byte of the pull of `id` from `from` has come (it is being placed: a GPU value
  // landing): `from` going away no longer moves or fails it (redirect_all, fail_from of that
  // peer); its finish() does. False if no such pull.
  bool arrived(uint64_t id, PeerId from);

  // --- the driver's directory ---
  uint64_t new_id();
  // `n` consecutive numbers (n >= 1); returns the first.
  uint64_t new_ids(size_t n);
  // Records that `holder` has a copy of `id` (of `bytes`), creating the record if needed.
  void locate(uint64_t id, uint64_t bytes, PeerId holder);
  // Records that `holder` has a copy of `id` too; false (nothing recorded) if `id` is gone.
  bool add_holder(uint64_t id, PeerId holder);
  // Records that `peer` was told to pull `id` from another node directly: it may keep a copy,
  // so forget() names it, but it is no holder to read from (where() does not list it) until
  // add_holder() or confirm_holder(); a holder that asks (it let its copy go) becomes pending
  // again. False (nothing recorded) if `id` is gone.
  bool add_pending_holder(uint64_t id, PeerId peer);
  // A pending holder said it has the copy now: a holder. False (nothing changed) if `peer` is
  // not pending for `id` (or `id` is gone).
  bool confirm_holder(uint64_t id, PeerId peer);
  // `holder` said it has no copy of `id` (it evicted it): it is no holder to read from any more,
  // but stays pending (a copy already on its way there may land, and must be freed too).
  void remove_holder(uint64_t id, PeerId holder);
  // The holders of `id` and its size (either may be null); false if there is no such record.
  bool where(uint64_t id, std::vector<PeerId>* holders, uint64_t* bytes) const;
  // The number of the local entry `entry`, if it has one (0: none).
  uint64_t id_of(const ObjectId& entry) const;
  void bind(const ObjectId& entry, uint64_t id);
  // The last ref of `id` dropped: forgets it and frees the copy here. Returns the other holders,
  // pending ones included (to be told to free theirs).
  std::vector<PeerId> forget(uint64_t id);
  // Driver: the borrows of a value a node lent (`id`: that node's pull number, RefReadyMsg).
  // One borrow of a number follows another (the RefTable has one record per lender and key),
  // but a borrow's beginning (its RefReady named `holder`, of `bytes`) and its end are carried
  // out on different threads after the RefTable's lock, so the end of one may come after the
  // beginning of the next, or before its own beginning: a count, not their order, says whether
  // a borrow lives. True when none is left: `id` was forgotten as by forget(), and *others are
  // the holders to tell.
  bool begin_borrow(uint64_t id, uint64_t bytes, PeerId holder, std::vector<PeerId>* others);
  bool end_borrow(uint64_t id, std::vector<PeerId>* others);
  // `peer` is gone: it holds nothing any more. Returns the numbers it was the only holder of.
  std::vector<uint64_t> lose_peer(PeerId peer);
  // Bytes of the records held by each peer (for `prism status`).
  std::map<PeerId, std::pair<uint64_t, uint64_t>> held_by_peer() const;  // objects, bytes

 private:
  struct Copy {
    Blob blob;            // null once spilled
    bool primary = false;
    bool spilling = false;  // its file is being written (outside the lock)
    uint64_t bytes = 0;
    uint64_t last_use = 0;  // use_clock_ at its last hold/find
    std::string file;       // spilled: where its bytes are
  };
  struct Pull {
    PeerId from = 0;
    std::vector<Waiter> waiters;
    // A value arriving in parts (add_part): its buffer, and how much of it is in.
    std::shared_ptr<std::vector<char>> parts;
    uint64_t received = 0;
    uint64_t expected = 0;  // the value's size, when the asker knew it (0: unknown)
    bool dropped = false;   // freed while on its way (drop): not kept when it arrives
    bool arrived = false;   // every byte is here, still being placed (arrived())
  };
  struct Location {
    uint64_t bytes = 0;
    std::set<PeerId> holders;
    std::set<PeerId> pending;  // add_pending_holder: never also in holders
    ObjectId entry{};  // the local entry it belongs to (bind), or zero
    int64_t borrows = 0;  // begin_borrow less end_borrow (below 0: an end came first)
  };

  void drop_locked(uint64_t id) PRISM_REQUIRES(mu_);
  // forget()'s work; the copy here (if any) goes to *freed, to be let go after the lock.
  void forget_locked(uint64_t id, std::vector<PeerId>* others, Blob* freed) PRISM_REQUIRES(mu_);
  // hold()'s bookkeeping; true if memory is now over the spill capacity (the caller spills).
  // `blob` is moved from only when kept.
  bool hold_locked(uint64_t id, Blob&& blob, bool primary) PRISM_REQUIRES(mu_);
  // Writes the least recently used copies to files until those in memory fit the capacity.
  void spill_over();
  void wake_spiller();
  std::string spill_path(uint64_t id);

  mutable internal::Mutex mu_;
  std::unordered_map<uint64_t, Copy> held_ PRISM_GUARDED_BY(mu_);
  std::unordered_map<uint64_t, Pull> pulls_ PRISM_GUARDED_BY(mu_);
  std::unordered_map<uint64_t, Location> locations_ PRISM_GUARDED_BY(mu_);
  std::unordered_map<ObjectId, uint64_t> by_entry_ PRISM_GUARDED_BY(mu_);
  Stats stats_ PRISM_GUARDED_BY(mu_);
  uint64_t spill_capacity_ PRISM_GUARDED_BY(mu_) = 0;  // 0: no spilling
  std::string spill_root_ PRISM_GUARDED_BY(mu_);  // PRISM_SPILL_DIR (or the temp directory)
  std::string spill_dir_ PRISM_GUARDED_BY(mu_);   // this process's directory, once made
  uint64_t memory_bytes_ PRISM_GUARDED_BY(mu_) = 0;
  uint64_t use_clock_ PRISM_GUARDED_BY(mu_) = 0;
  internal::Mutex spill_mu_;  // one spiller at a time (taken before mu_, never inside it)
  // The spiller thread (started by the first hold() that may not block).
  void run_spiller();
  std::mutex wake_mu_;
  std::condition_variable wake_cv_;
  bool wake_ = false;  // (under wake_mu_) spill_over() is wanted
  bool stop_ = false;  // (under wake_mu_) the table goes
  std::thread spiller_;
  uint64_t next_id_ PRISM_GUARDED_BY(mu_) = 1;
};

}  // namespace prism::cluster
