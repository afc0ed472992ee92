// RefTable (transport/src/ref_table.h): the bookkeeping of ObjectRefs lent to other processes
// and borrowed from them, driven directly, one process's view at a time. The cluster tests
// (tests/cluster/borrow_test.cc) run the same protocol between real processes.
#include <gtest/gtest.h>

#include <cstdint>
#include <set>
#include <vector>

#include "prism/internal/object_entry.h"
#include "ref_table.h"

namespace prism::cluster {
namespace {

using internal::EntryPtr;
using internal::ObjectEntry;
using internal::TypedEntry;

constexpr PeerId kA = 11;  // peers (their numbers are the transport's; any nonzero value)
constexpr PeerId kB = 12;

ObjectId id_of(uint64_t seq) {
  ObjectId id;
  id.owner = 1;
  id.sequence = seq;
  return id;
}

EntryPtr new_entry(uint64_t seq) { return EntryPtr(new TypedEntry<int>(id_of(seq))); }

void write_int(ObjectEntry*, std::string* out) { out->append("int"); }

RefTable::Lend lend(RefTable* t, const EntryPtr& e) {
  RefTable::Lend l;
  l.key = t->key_of(e.get());
  l.entry = e;
  l.write = &write_int;
  return l;
}

RefReadyMsg ok_ready(uint64_t key, uint64_t pull, uint64_t bytes) {
  RefReadyMsg r;
  r.key = key;
  r.pull = pull;
  r.bytes = bytes;
  return r;
}

RefReadyMsg failed_ready(uint64_t key, const std::string& message) {
  RefReadyMsg r;
  r.key = key;
  r.status = CallStatus::kSystemError;
  r.error_type = "prism::OwnerDiedError";
  r.message = message;
  return r;
}

TEST(RefTableTest, KeysNameTheProcessThatMadeThem) {
  RefTable driver;
  driver.set_self(0);
  RefTable node;
  node.set_self(3);
  EntryPtr a = new_entry(1), b = new_entry(2);
  const uint64_t k1 = driver.key_of(a.get());
  const uint64_t k2 = node.key_of(b.get());
  EXPECT_EQ(RefTable::owner_index(k1), 0u);
  EXPECT_EQ(RefTable::owner_index(k2), 3u);
  EXPECT_NE(driver.key_of(b.get()), k1);  // another entry, another key
  EXPECT_NE(k1, 0u);
}

// A pending entry lent twice in one message: it stays pinned until the borrower releases both
// occurrences, its RefReady goes out once it is done, and its value held for the borrower's
// pull is freed with the record.
TEST(RefTableTest, LentEntryIsPinnedUntilReleasedAndAnnouncedOnceDone) {
  RefTable t;
  t.set_self(0);
  EntryPtr e = new_entry(1);
  RefTable::Lend l = lend(&t, e);
  const uint64_t key = l.key;
  const std::vector<RefTable::Lend> lends = {l, l};
  EXPECT_EQ(t.prepare(lends, kA), (std::vector<uint64_t>{key, key}));
  EXPECT_EQ(t.lent_to(key, kA), 2u);
  EXPECT_EQ(t.key_of(e.get()), key);  // an entry lent once keeps its key

  RefTable::Effects fx = t.announce(lends, kA);
  ASSERT_EQ(fx.watch.size(), 1u);  // pending: watched once, not yet announced as ready
  EXPECT_EQ(fx.watch[0].key, key);
  EXPECT_TRUE(fx.readies.empty());

  fx = t.done(key, ok_ready(key, key, 3), /*held_here=*/true);
  ASSERT_EQ(fx.readies.size(), 1u);
  EXPECT_EQ(fx.readies[0].first, kA);
  EXPECT_EQ(fx.readies[0].second.pull, key);

  RefReleaseMsg one;
  one.keys = {{key, 1}};
  fx = t.release(kA, one);
  EXPECT_TRUE(fx.unpinned.empty());  // one occurrence is still borrowed
  EXPECT_EQ(t.lent_count(), 1u);
  fx = t.release(kA, one);
  ASSERT_EQ(fx.unpinned.size(), 1u);
  EXPECT_EQ(fx.unpinned[0].get(), e.get());
  EXPECT_EQ(fx.freed_pulls, std::vector<uint64_t>{key});
  EXPECT_EQ(t.lent_count(), 0u);
  // A release of a key no longer lent (a duplicate, a malformed message) changes nothing.
  EXPECT_TRUE(t.release(kA, one).empty());
}

// A record that ended while its entry was pending leaves a watch behind; lent again under the
// same key (an actor restarted with its constructor's refs), the entry is watched twice. Each
// watch holds a copy under a number of its own (new_pull): the first is announced and kept, the
// second freed, and the ended record's free never names the new record's copy.
TEST(RefTableTest, ASecondDoneFreesOnlyItsOwnCopy) {
  RefTable t;
  t.set_self(0);
  EntryPtr e = new_entry(1);
  const std::vector<RefTable::Lend> lends = {lend(&t, e)};
  const uint64_t key = lends[0].key;
  t.prepare(lends, kA);
  EXPECT_EQ(t.announce(lends, kA).watch.size(), 1u);
  RefReleaseMsg one;
  one.keys = {{key, 1}};
  RefTable::Effects fx = t.release(kA, one);  // the record ends, its watch waits on
  EXPECT_EQ(fx.unpinned.size(), 1u);
  EXPECT_TRUE(fx.freed_pulls.empty());  // (it had no copy yet)
  EXPECT_EQ(t.lent_count(), 0u);
  t.prepare(lends, kB);  // the same key, lent again
  EXPECT_EQ(t.announce(lends, kB).watch.size(), 1u);  // watched a second time
  const uint64_t first = t.new_pull();
  const uint64_t second = t.new_pull();
  fx = t.done(key, ok_ready(key, first, 3), /*held_here=*/true);
  ASSERT_EQ(fx.readies.size(), 1u);
  EXPECT_EQ(fx.readies[0].first, kB);
  EXPECT_EQ(fx.readies[0].second.pull, first);
  EXPECT_TRUE(fx.freed_pulls.empty());
  fx = t.done(key, ok_ready(key, second, 3), /*held_here=*/true);  // the second watch
  EXPECT_EQ(fx.freed_pulls, std::vector<uint64_t>{second}) << "the second copy stays";
  EXPECT_TRUE(fx.readies.empty());
  // The record's end frees the copy it announced.
  fx = t.release(kB, one);
  EXPECT_EQ(fx.freed_pulls, std::vector<uint64_t>{first});
  // With the record gone, a late done frees the copy it made (nothing keeps it).
  const uint64_t late = t.new_pull();
  EXPECT_EQ(t.done(key, ok_ready(key, late, 3), /*held_here=*/true).freed_pulls,
            std::vector<uint64_t>{late});
}

// Pull numbers name one copy each, for good: they are never made twice, never a key, and name
// the process that holds the copy (as its keys do: a driver finds a node's lent copies by it).
TEST(RefTableTest, PullNumbersAreNeverMadeTwiceAndNameTheirHolder) {
  RefTable t;
  t.set_self(3);
  EntryPtr e = new_entry(1);
  std::set<uint64_t> seen;
  for (int i = 0; i < 100; ++i) {
    const uint64_t pull = t.new_pull();
    EXPECT_TRUE(RefTable::is_key(pull));
    EXPECT_EQ(RefTable::owner_index(pull), 3u);
    EXPECT_TRUE(seen.insert(pull).second) << "made twice: " << pull;
    if (i % 10 == 0) EXPECT_TRUE(seen.insert(lend(&t, e).key).second) << "a key's number";
  }
}

TEST(RefTableTest, AnEntryDoneBeforeItIsLentIsAnnouncedAtOnce) {
  RefTable t;
  EntryPtr e = new_entry(1);
  const std::vector<RefTable::Lend> lends = {lend(&t, e)};
  const uint64_t key = lends[0].key;
  t.prepare(lends, kA);
  RefTable::Effects fx = t.announce(lends, kA);
  ASSERT_EQ(fx.watch.size(), 1u);
  t.done(key, ok_ready(key, 77, 5), /*held_here=*/false);
  // Lent again to another peer: it gets the ready at once, and nothing is watched again.
  t.prepare(lends, kB);
  fx = t.announce(lends, kB);
  EXPECT_TRUE(fx.watch.empty());
  ASSERT_EQ(fx.readies.size(), 1u);
  EXPECT_EQ(fx.readies[0].first, kB);
  EXPECT_EQ(fx.readies[0].second.pull, 77u);
  // Each message lending it carries the ready (the borrower ignores one it has).
  EXPECT_EQ(t.announce(lends, kB).readies.size(), 1u);
}

// A borrowed entry lent on to another peer: its ready names the lender's copy (the same number
// as its key), which is not this process's to free.
TEST(RefTableTest, ABorrowedEntryLentOnDoesNotFreeItsLendersCopy) {
  RefTable t;
  const uint64_t key = (2ull << 48) | 3;
  RefTable::Incoming in = t.receive(kA, {key});
  EntryPtr e = new_entry(1);
  EntryPtr existing;
  t.adopt(in, key, e.get(), nullptr, &existing);
  t.finish(in);
  RefTable::Lend on;
  on.key = t.key_of(e.get());
  on.entry = e;
  EXPECT_EQ(on.key, key);
  t.prepare({on}, kB);
  t.announce({on}, kB);
  EXPECT_EQ(t.done(key, ok_ready(key, key, 4), /*held_here=*/false).readies.size(), 1u);
  RefReleaseMsg rel;
  rel.keys = {{key, 1}};
  RefTable::Effects fx = t.release(kB, rel);
  EXPECT_EQ(fx.unpinned.size(), 1u);
  EXPECT_TRUE(fx.freed_pulls.empty());
  EXPECT_TRUE(fx.releases.empty());  // the entry still lives here
  fx = RefTable::Effects();
  on = RefTable::Lend();
  fx = t.dropped(kA, key, e.get());
  ASSERT_EQ(fx.releases.size(), 1u);
  EXPECT_EQ(fx.releases[0].first, kA);
}

// A borrower released a key (its release still on its way) and is lent it again: the second
// message gets the ready too (the borrower's new record needs it).
TEST(RefTableTest, EveryMessageLendingADoneObjectCarriesItsReady) {
  RefTable t;
  EntryPtr e = new_entry(1);
  const std::vector<RefTable::Lend> lends = {lend(&t, e)};
  const uint64_t key = lends[0].key;
  t.prepare(lends, kA);
  t.announce(lends, kA);
  t.done(key, ok_ready(key, key, 1), /*held_here=*/true);
  t.prepare(lends, kA);
  RefTable::Effects fx = t.announce(lends, kA);
  ASSERT_EQ(fx.readies.size(), 1u);
  EXPECT_EQ(fx.readies[0].first, kA);
  RefReleaseMsg rel;
  rel.keys = {{key, 1}};
  EXPECT_TRUE(t.release(kA, rel).unpinned.empty());  // the first release: one still lent
  EXPECT_EQ(t.release(kA, rel).unpinned.size(), 1u);
}

TEST(RefTableTest, AReadyIsLocatedOnceAndABorrowedEntryNamesIt) {
  RefTable t;
  const uint64_t key = (2ull << 48) | 8;
  RefTable::Incoming in = t.receive(kA, {key});
  EntryPtr e = new_entry(1);
  EntryPtr existing;
  t.adopt(in, key, e.get(), nullptr, &existing);
  EXPECT_FALSE(t.borrowed_ready(e.get()));  // not known yet
  RefTable::Effects fx = t.ready(kA, ok_ready(key, key, 64));
  ASSERT_EQ(fx.located.size(), 1u);
  EXPECT_EQ(fx.located[0].first, kA);
  EXPECT_EQ(fx.located[0].second.bytes, 64u);
  EXPECT_TRUE(t.ready(kA, ok_ready(key, key, 64)).located.empty());
  ASSERT_TRUE(t.borrowed_ready(e.get()));
  EXPECT_EQ(t.borrowed_ready(e.get())->pull, key);
  EntryPtr mine = new_entry(2);
  EXPECT_FALSE(t.borrowed_ready(mine.get()));  // not a borrowed entry
  t.finish(in);
  t.dropped(kA, key, e.get());
}

// Once closed (the link is going), the table forgets the borrowed entries (they will not say
// when they go) and adopts no more.
TEST(RefTableTest, AClosedTableKeepsNoBorrowedEntry) {
  RefTable t;
  const uint64_t key = (2ull << 48) | 9;
  RefTable::Incoming in = t.receive(kA, {key});
  EntryPtr e = new_entry(1);
  EntryPtr existing;
  t.adopt(in, key, e.get(), nullptr, &existing);
  t.close();
  EXPECT_FALSE(t.find(in, key));
  EXPECT_TRUE(t.ready(kA, ok_ready(key, key, 1)).completions.empty());
  EntryPtr other = new_entry(2);
  EXPECT_TRUE(t.adopt(in, key, other.get(), nullptr, &existing).empty());
  EXPECT_FALSE(existing);
}

// Lent first as an AnyRef (no writer), then as a typed ref: the typed ref's writer serves the
// borrowers' pulls.
TEST(RefTableTest, ATypedLendGivesAnUntypedOneItsWriter) {
  RefTable t;
  EntryPtr e = new_entry(1);
  RefTable::Lend untyped = lend(&t, e);
  untyped.write = nullptr;
  t.prepare({untyped}, kA);
  EXPECT_EQ(t.writer_of(untyped.key), nullptr);
  RefTable::Lend typed = lend(&t, e);
  EXPECT_EQ(typed.key, untyped.key);
  t.prepare({typed}, kB);
  EXPECT_EQ(t.writer_of(untyped.key), &write_int);
  EXPECT_EQ(t.writer_of(untyped.key + 1), nullptr);
  t.unprepare({untyped}, kA);
  t.unprepare({typed}, kB);
  EXPECT_EQ(t.lent_count(), 0u);
}

TEST(RefTableTest, AMessageThatWasNotSentLendsNothing) {
  RefTable t;
  EntryPtr e = new_entry(1);
  const std::vector<RefTable::Lend> lends = {lend(&t, e)};
  t.prepare(lends, kA);
  RefTable::Effects fx = t.unprepare(lends, kA);
  ASSERT_EQ(fx.unpinned.size(), 1u);
  EXPECT_EQ(t.lent_count(), 0u);
  EXPECT_TRUE(fx.freed_pulls.empty());  // nothing was held for it
}

// The borrower's side: one entry per key however many messages carry it; released once, with
// every occurrence, when the entry is gone and no message carrying the key is being decoded.
TEST(RefTableTest, BorrowIsReleasedOnceWithEveryOccurrence) {
  RefTable t;
  t.set_self(1);
  const uint64_t key = (1ull << 48) | 5;  // made by the driver
  RefTable::Incoming in = t.receive(kA, {key, key});
  EXPECT_TRUE(in.lists(key));
  EXPECT_FALSE(in.lists(key + 1));
  EXPECT_EQ(t.source_of(in, key), kA);
  EXPECT_FALSE(t.find(in, key));

  EntryPtr mine = new_entry(1);
  EntryPtr existing;
  RefTable::Effects fx = t.adopt(in, key, mine.get(), nullptr, &existing);
  EXPECT_FALSE(existing);
  EXPECT_TRUE(fx.completions.empty());  // not ready yet
  // A second decoder of the same message finds it.
  EntryPtr again = t.find(in, key);
  EXPECT_EQ(again.get(), mine.get());
  again = EntryPtr();

  // The lender says where its value is: the entry is completed.
  fx = t.ready(kA, ok_ready(key, key, 9));
  ASSERT_EQ(fx.completions.size(), 1u);
  EXPECT_EQ(fx.completions[0].entry.get(), mine.get());
  EXPECT_EQ(fx.completions[0].from, kA);
  fx = RefTable::Effects();
  // Told twice (a duplicate): nothing more.
  EXPECT_TRUE(t.ready(kA, ok_ready(key, key, 9)).completions.empty());

  // A later message lends the key again while the entry lives.
  RefTable::Incoming in2 = t.receive(kA, {key});
  EXPECT_EQ(t.find(in2, key).get(), mine.get());

  // The entry goes while in2 is being decoded: no release yet.
  fx = t.dropped(kA, key, mine.get());
  EXPECT_TRUE(fx.releases.empty());
  fx = t.finish(in);
  EXPECT_TRUE(fx.releases.empty());
  fx = t.finish(in2);
  ASSERT_EQ(fx.releases.size(), 1u);
  EXPECT_EQ(fx.releases[0].first, kA);
  ASSERT_EQ(fx.releases[0].second.keys.size(), 1u);
  EXPECT_EQ(fx.releases[0].second.keys[0], std::make_pair(key, uint64_t{3}));
  // Its value, pulled here, is forgotten at its lender.
  ASSERT_EQ(fx.forgotten_pulls.size(), 1u);
  EXPECT_EQ(fx.forgotten_pulls[0], std::make_pair(kA, key));
  EXPECT_EQ(t.borrowed_count(), 0u);
  mine = EntryPtr();
}

TEST(RefTableTest, AMessageDecodedWithoutMakingTheEntryStillReleasesIt) {
  RefTable t;
  const uint64_t key = (2ull << 48) | 1;
  RefTable::Incoming in = t.receive(kA, {key});
  RefTable::Effects fx = t.finish(in);
  ASSERT_EQ(fx.releases.size(), 1u);
  EXPECT_EQ(fx.releases[0].second.keys[0], std::make_pair(key, uint64_t{1}));
  EXPECT_TRUE(fx.forgotten_pulls.empty());
  EXPECT_EQ(t.borrowed_count(), 0u);
}

// A lent object whose value is one of the driver's numbered objects (a node's ref to a result
// the driver placed): the borrower's copy of it is the driver's to free, not the borrow's.
TEST(RefTableTest, ABorrowOfADriverNumberedValueLeavesItsCopyAlone) {
  RefTable t;
  const uint64_t key = (2ull << 48) | 6;
  EXPECT_TRUE(RefTable::is_key(key));
  EXPECT_FALSE(RefTable::is_key(42));
  RefTable::Incoming in = t.receive(kA, {key});
  EntryPtr e = new_entry(1);
  EntryPtr existing;
  t.adopt(in, key, e.get(), nullptr, &existing);
  t.ready(kA, ok_ready(key, /*pull=*/42, 1000));
  t.finish(in);
  RefTable::Effects fx = t.dropped(kA, key, e.get());
  EXPECT_EQ(fx.releases.size(), 1u);
  EXPECT_TRUE(fx.forgotten_pulls.empty());
}

TEST(RefTableTest, ReadyBeforeTheEntryIsMadeCompletesItAsItIsAdopted) {
  RefTable t;
  const uint64_t key = (1ull << 48) | 2;
  RefTable::Incoming in = t.receive(kA, {key});
  EXPECT_TRUE(t.ready(kA, ok_ready(key, key, 1)).completions.empty());
  EntryPtr e = new_entry(1);
  EntryPtr existing;
  RefTable::Effects fx = t.adopt(in, key, e.get(), nullptr, &existing);
  ASSERT_EQ(fx.completions.size(), 1u);
  EXPECT_EQ(fx.completions[0].entry.get(), e.get());
  // Two decoders raced: the second's entry is not adopted; it gets the first one.
  EntryPtr other = new_entry(2);
  fx = t.adopt(in, key, other.get(), nullptr, &existing);
  EXPECT_EQ(existing.get(), e.get());
  EXPECT_TRUE(fx.completions.empty());
  existing = EntryPtr();
  t.dropped(kA, key, e.get());
  EXPECT_EQ(t.finish(in).releases.size(), 1u);
}

// A ref borrowed from kA and lent back to kA is not lent again (kA keeps its own record), and a
// ref kA lent here and sends back names this process's own entry.
TEST(RefTableTest, PassBacksAreNotLentAgain) {
  RefTable t;
  // Borrowed from kA, then sent back to it.
  const uint64_t theirs = (2ull << 48) | 1;
  RefTable::Incoming in = t.receive(kA, {theirs});
  EntryPtr borrowed = new_entry(1);
  EntryPtr existing;
  t.adopt(in, theirs, borrowed.get(), nullptr, &existing);
  EXPECT_EQ(t.key_of(borrowed.get()), theirs);  // it travels under its borrowed key
  RefTable::Lend back;
  back.key = theirs;
  back.entry = borrowed;
  EXPECT_EQ(t.prepare({back}, kA), std::vector<uint64_t>{theirs});
  EXPECT_EQ(t.lent_count(), 0u);
  EXPECT_TRUE(t.announce({back}, kA).empty());
  // Sent to another peer, it is lent (a node's borrowed ref lent on by the driver).
  t.prepare({back}, kB);
  EXPECT_EQ(t.lent_to(theirs, kB), 1u);
  back = RefTable::Lend();

  // Ours, lent to kA and received back from it: the original entry.
  EntryPtr own = new_entry(2);
  const std::vector<RefTable::Lend> lends = {lend(&t, own)};
  const uint64_t key = lends[0].key;
  t.prepare(lends, kA);
  RefTable::Incoming back_in = t.receive(kA, {key});
  EXPECT_TRUE(back_in.borrowed.empty());
  EXPECT_EQ(t.find(back_in, key).get(), own.get());
  EXPECT_TRUE(t.finish(back_in).releases.empty());  // nothing borrowed: nothing to release
  t.dropped(kA, theirs, borrowed.get());
  t.finish(in);
}

// The driver lends a node's ref on to another node (a forward): its own borrow lasts as long as
// the forward, the lender's RefReady is passed on, and the lender's death fails it there too.
TEST(RefTableTest, ForwardHoldsTheBorrowAndPassesTheReadyOn) {
  RefTable t;
  t.set_self(0);
  const uint64_t key = (2ull << 48) | 4;  // made by node 1 (kA)
  RefTable::Incoming in = t.receive(kA, {key});
  const std::vector<RefTable::Lend> fwd = {RefTable::forward(kA, key)};
  EXPECT_EQ(t.prepare(fwd, kB), std::vector<uint64_t>{key});
  EXPECT_TRUE(t.announce(fwd, kB).readies.empty());  // not ready yet
  EXPECT_TRUE(t.finish(in).releases.empty());        // the forward holds the borrow

  RefTable::Effects fx = t.ready(kA, ok_ready(key, key, 100));
  ASSERT_EQ(fx.readies.size(), 1u);
  EXPECT_EQ(fx.readies[0].first, kB);
  EXPECT_EQ(fx.readies[0].second.pull, key);

  // kB passes it back to the driver in a result: the driver's record is the forward.
  RefTable::Incoming back = t.receive(kB, {key});
  EXPECT_TRUE(back.borrowed.empty());
  EXPECT_EQ(t.source_of(back, key), kA);
  EntryPtr e = new_entry(1);
  EntryPtr existing;
  fx = t.adopt(back, key, e.get(), nullptr, &existing);  // the driver's borrow gets its entry
  ASSERT_EQ(fx.completions.size(), 1u);                   // ready already
  EXPECT_EQ(t.find(back, key).get(), e.get());
  t.finish(back);

  // kB releases: the forward ends, but the driver's entry still borrows from kA.
  RefReleaseMsg rel;
  rel.keys = {{key, 1}};
  fx = t.release(kB, rel);
  EXPECT_TRUE(fx.releases.empty());
  EXPECT_EQ(t.lent_count(), 0u);
  fx = t.dropped(kA, key, e.get());
  ASSERT_EQ(fx.releases.size(), 1u);
  EXPECT_EQ(fx.releases[0].first, kA);
  EXPECT_EQ(fx.releases[0].second.keys[0], std::make_pair(key, uint64_t{1}));
  EXPECT_EQ(t.borrowed_count(), 0u);
}

TEST(RefTableTest, ALostLenderFailsItsBorrowsAndTheirForwards) {
  RefTable t;
  const uint64_t pending = (2ull << 48) | 1;
  const uint64_t done = (2ull << 48) | 2;
  RefTable::Incoming in = t.receive(kA, {pending, done});
  EntryPtr p = new_entry(1), d = new_entry(2);
  EntryPtr existing;
  t.adopt(in, pending, p.get(), nullptr, &existing);
  t.adopt(in, done, d.get(), nullptr, &existing);
  t.ready(kA, ok_ready(done, done, 8));
  const std::vector<RefTable::Lend> fwd = {RefTable::forward(kA, pending)};
  t.prepare(fwd, kB);
  t.announce(fwd, kB);
  t.finish(in);

  RefTable::Effects fx = t.lose_peer(kA, failed_ready(0, "node1 was lost"));
  // The pending one fails here and at kB; the done one's value is forgotten (a reader's pull
  // finds its owner gone); nothing is released to the dead peer.
  ASSERT_EQ(fx.completions.size(), 1u);
  EXPECT_EQ(fx.completions[0].entry.get(), p.get());
  EXPECT_EQ(fx.completions[0].ready.status, CallStatus::kSystemError);
  EXPECT_EQ(fx.completions[0].ready.key, pending);
  ASSERT_EQ(fx.readies.size(), 1u);
  EXPECT_EQ(fx.readies[0].first, kB);
  EXPECT_EQ(fx.readies[0].second.message, "node1 was lost");
  EXPECT_TRUE(fx.releases.empty());
  ASSERT_EQ(fx.forgotten_pulls.size(), 1u);
  EXPECT_EQ(fx.forgotten_pulls[0], std::make_pair(kA, done));

  // The records go with their entries, still without a release.
  EXPECT_TRUE(t.dropped(kA, done, d.get()).releases.empty());
  EXPECT_TRUE(t.dropped(kA, pending, p.get()).releases.empty());
  RefReleaseMsg rel;
  rel.keys = {{pending, 1}};
  EXPECT_TRUE(t.release(kB, rel).releases.empty());
  EXPECT_EQ(t.borrowed_count(), 0u);
  EXPECT_EQ(t.lent_count(), 0u);
}

TEST(RefTableTest, ALostBorrowerUnpinsWhatItBorrowed) {
  RefTable t;
  EntryPtr e = new_entry(1);
  const std::vector<RefTable::Lend> lends = {lend(&t, e)};
  t.prepare(lends, kA);
  t.prepare(lends, kB);
  t.announce(lends, kA);
  RefTable::Effects fx = t.lose_peer(kA, failed_ready(0, "gone"));
  EXPECT_TRUE(fx.unpinned.empty());  // kB still borrows it
  fx = t.lose_peer(kB, failed_ready(0, "gone"));
  ASSERT_EQ(fx.unpinned.size(), 1u);
  EXPECT_EQ(t.lent_count(), 0u);
}

}  // namespace
}  // namespace prism::cluster
