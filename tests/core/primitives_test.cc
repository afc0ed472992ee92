// The concurrency primitives under the scheduler, driven directly: Event, ObjectEntry (one
// completion, dependents notified once, registration racing completion, claiming the producer)
// and ReadyQueue (every task popped exactly once, with the overflow path). Real threads, every
// wait bounded.

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common/event.h"
#include "prism/internal/object_entry.h"
#include "prism/internal/task_record.h"
#include "scheduler/ready_queue.h"
#include "test_util.h"

namespace prism::internal {
namespace {

using prism_test::kTimeout;

Deadline in(std::chrono::milliseconds ms) { return Clock::now() + ms; }

// ---- Event ----

TEST(EventTest, SetBeforeWaitReturnsAtOnce) {
  Event e;
  e.set();
  EXPECT_TRUE(e.is_set());
  EXPECT_TRUE(e.wait_until(in(std::chrono::milliseconds(0))));
  e.wait();
}

TEST(EventTest, WaitUntilReturnsFalseAtTheDeadline) {
  Event e;
  EXPECT_FALSE(e.wait_until(in(std::chrono::milliseconds(5))));
  EXPECT_FALSE(e.is_set());
}

TEST(EventTest, EveryWaiterWakes) {
  for (int threads : {1, 2, 4, 8}) {
    Event e;
    std::atomic<int> woken{0};
    prism_test::Rendezvous all_waiting(threads + 1);
    std::vector<std::thread> waiters;
    for (int i = 0; i < threads; ++i) {
      waiters.emplace_back([&] {
        (void)all_waiting.arrive_and_wait();
        if (e.wait_until(Clock::now() + kTimeout)) woken.fetch_add(1);
      });
    }
    ASSERT_TRUE(all_waiting.arrive_and_wait());
    e.set();
    for (auto& t : waiters) t.join();
    EXPECT_EQ(woken.load(), threads) << threads << " waiters";
  }
}

// ---- ObjectEntry ----

struct Counter final : Dependent {
  void on_ready(ObjectEntry*) noexcept override { calls.fetch_add(1); }
  std::atomic<int> calls{0};
};

ObjectId id_of(uint64_t seq) {
  ObjectId id;
  id.owner = 1;
  id.sequence = seq;
  return id;
}

TEST(ObjectEntryTest, CompletesOnceAndNotifiesEachDependentOnce) {
  auto* e = new TypedEntry<int>(id_of(1));
  EntryPtr hold(e);
  Counter c;
  DepNode a, b;
  a.owner = &c;
  b.owner = &c;
  ASSERT_TRUE(e->add_dependent(&a));
  ASSERT_TRUE(e->add_dependent(&b));
  EXPECT_TRUE(e->set_value(7));
  EXPECT_EQ(c.calls.load(), 2);
  EXPECT_FALSE(e->complete_error(std::make_exception_ptr(std::runtime_error("late"))));
  EXPECT_FALSE(e->set_value(8));  // the first completion wins
  EXPECT_EQ(e->state(), ObjState::kReady);
  EXPECT_EQ(e->value(), 7);
  DepNode late;
  late.owner = &c;
  EXPECT_FALSE(e->add_dependent(&late));  // done: the caller handles it itself
  EXPECT_EQ(c.calls.load(), 2);
}

TEST(ObjectEntryTest, APutsValueIsPublishedBeforeAnyoneSeesTheEntry) {
  // A put's entry is its caller's alone until the ref is returned: published without the lock
  // (publish_unshared), it is done for everyone who gets it afterwards, on any thread.
  auto* e = new TypedEntry<int>(id_of(4));
  EntryPtr hold(e);
  e->set_put_value(nullptr, 41);
  EXPECT_EQ(e->state(), ObjState::kReady);
  EXPECT_FALSE(e->set_value(8));  // already complete: the put's value stays
  EXPECT_FALSE(e->complete_error(std::make_exception_ptr(std::runtime_error("late"))));
  Counter c;
  DepNode n;
  n.owner = &c;
  EXPECT_FALSE(e->add_dependent(&n));  // done: the caller reads it at once
  int seen = 0;
  ObjState state = ObjState::kPending;
  std::thread reader([&, entry = EntryPtr(hold)] {
    state = entry->state();
    seen = static_cast<TypedEntry<int>*>(entry.get())->value();
  });
  reader.join();
  EXPECT_EQ(state, ObjState::kReady);
  EXPECT_EQ(seen, 41);
  EXPECT_EQ(c.calls.load(), 0);
}

TEST(ObjectEntryTest, RemovedDependentIsNotNotified) {
  auto* e = new TypedEntry<int>(id_of(2));
  EntryPtr hold(e);
  Counter c;
  DepNode n;
  n.owner = &c;
  ASSERT_TRUE(e->add_dependent(&n));
  EXPECT_TRUE(e->remove_dependent(&n));
  EXPECT_FALSE(e->remove_dependent(&n));
  e->complete_error(std::make_exception_ptr(std::runtime_error("x")));
  EXPECT_EQ(c.calls.load(), 0);
  EXPECT_EQ(e->state(), ObjState::kFailed);
}

TEST(ObjectEntryTest, RegistrationRacingCompletionIsCountedExactlyOnce) {
  // Each round: one thread completes the entry while others register; every registrant is either
  // notified (add_dependent returned true) or told it was too late (false), never both/neither.
  for (int threads : {1, 2, 4}) {
    for (int round = 0; round < 200; ++round) {
      auto* e = new TypedEntry<int>(id_of(100 + round));
      EntryPtr hold(e);
      std::vector<Counter> counters(threads);
      std::vector<DepNode> nodes(threads);
      std::vector<int> added(threads, -1);
      prism_test::Rendezvous go(threads + 1);
      std::vector<std::thread> ts;
      for (int i = 0; i < threads; ++i) {
        ts.emplace_back([&, i] {
          nodes[i].owner = &counters[i];
          (void)go.arrive_and_wait();
          added[i] = e->add_dependent(&nodes[i]) ? 1 : 0;
        });
      }
      ASSERT_TRUE(go.arrive_and_wait());
      e->set_value(round);
      for (auto& t : ts) t.join();
      for (int i = 0; i < threads; ++i) {
        ASSERT_EQ(counters[i].calls.load(), added[i]) << "thread " << i << " round " << round;
      }
    }
  }
}

class InertTask final : public TaskRecord {
 public:
  explicit InertTask(std::atomic<int>* destroyed = nullptr)
      : TaskRecord(nullptr, TaskId{}, nullptr, nullptr), destroyed_(destroyed) {}
  ~InertTask() override {
    if (destroyed_ != nullptr) destroyed_->fetch_add(1);
  }
  std::exception_ptr run() noexcept override { return nullptr; }
  void fail(const std::exception_ptr&) noexcept override {}
  bool cancel_requested() const noexcept override { return false; }
  std::string function_name() const override { return "inert"; }

 private:
  std::atomic<int>* destroyed_;
};

bool accept_all(const TaskRecord&, const void*) { return true; }
bool accept_none(const TaskRecord&, const void*) { return false; }

TEST(ObjectEntryTest, ClaimProducerOnlyWhilePendingQueuedAndAccepted) {
  std::atomic<int> destroyed{0};
  auto* producer = new InertTask(&destroyed);
  auto* e = new TypedEntry<int>(id_of(3));
  EntryPtr hold(e);
  e->set_producer(producer, /*actor_call=*/false);
  // Not queued yet (waiting for its arguments): nobody may claim it.
  EXPECT_EQ(e->claim_producer(&accept_all, nullptr), nullptr);
  producer->mark_queued();
  EXPECT_EQ(e->claim_producer(&accept_none, nullptr), nullptr);
  EXPECT_EQ(e->claim_producer(&accept_all, nullptr), producer);
  EXPECT_EQ(e->claim_producer(&accept_all, nullptr), nullptr);  // claimed once only
  // The claimant runs it; the queue still holds it: the second of the two deletes it.
  e->set_value(1);
  producer->release_run();
  EXPECT_EQ(destroyed.load(), 0);
  EXPECT_FALSE(producer->take_from_queue());
  EXPECT_EQ(destroyed.load(), 1);
  // Done entries never hand out their (gone) producer.
  EXPECT_EQ(e->claim_producer(&accept_all, nullptr), nullptr);
}

TEST(TaskRecordTest, QueueAndClaimantRaceToTakeATask) {
  // Exactly one of a queue's consumer and a blocked parent (claiming through the entry it waits
  // on, as the runtime does) gets the task; the record is deleted exactly once, by the second.
  for (int round = 0; round < 500; ++round) {
    std::atomic<int> destroyed{0};
    std::atomic<int> owners{0};
    auto* t = new InertTask(&destroyed);
    auto* e = new TypedEntry<int>(id_of(1000 + round));
    EntryPtr hold(e);
    e->set_producer(t, /*actor_call=*/false);
    t->mark_queued();
    // Whoever owns it runs it: completes the result (under the entry's lock), then releases it.
    auto run = [&](TaskRecord* task) {
      owners.fetch_add(1);
      e->set_value(round);
      task->release_run();
    };
    prism_test::Rendezvous go(2);
    std::thread claimant([&] {
      (void)go.arrive_and_wait();
      if (TaskRecord* claimed = e->claim_producer(&accept_all, nullptr)) run(claimed);
    });
    ASSERT_TRUE(go.arrive_and_wait());
    if (t->take_from_queue()) run(t);
    claimant.join();
    EXPECT_EQ(owners.load(), 1) << "round " << round;
    EXPECT_EQ(destroyed.load(), 1) << "round " << round;
    EXPECT_EQ(e->value(), round);
  }
}

// ---- ReadyQueue ----

TEST(ReadyQueueTest, FifoWithinTheRingAndNothingLostInTheOverflow) {
  ReadyQueue q(/*capacity_pow2=*/8);
  std::vector<std::unique_ptr<InertTask>> tasks;
  for (int i = 0; i < 50; ++i) tasks.push_back(std::make_unique<InertTask>());
  EXPECT_FALSE(q.maybe_nonempty());
  for (auto& t : tasks) q.push(t.get());
  EXPECT_TRUE(q.maybe_nonempty());
  EXPECT_EQ(q.size(), 50);
  // Popped on a fresh thread: every 32nd pop of a thread looks at the overflow first, and this
  // thread's count depends on the tests that ran before in the same process.
  std::vector<TaskRecord*> popped;
  std::thread([&] {
    while (TaskRecord* t = q.pop()) popped.push_back(t);
  }).join();
  ASSERT_EQ(popped.size(), 50u);
  // The first 8 fit the ring and come out first, in order.
  for (int i = 0; i < 8; ++i) EXPECT_EQ(popped[i], tasks[i].get());
  std::vector<TaskRecord*> sorted = popped;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(std::unique(sorted.begin(), sorted.end()), sorted.end());
  EXPECT_FALSE(q.maybe_nonempty());
}

TEST(ReadyQueueTest, ManyProducersAndConsumersPopEachTaskOnce) {
  for (int threads : {1, 2, 4}) {
    constexpr int kPerProducer = 20000;
    ReadyQueue q(/*capacity_pow2=*/1024);  // small: the overflow path is used too
    std::vector<std::unique_ptr<InertTask>> tasks;
    for (int i = 0; i < threads * kPerProducer; ++i) tasks.push_back(std::make_unique<InertTask>());
    std::unordered_map<TaskRecord*, size_t> index_of;  // read-only while the threads run
    for (size_t i = 0; i < tasks.size(); ++i) index_of[tasks[i].get()] = i;
    std::vector<std::atomic<int>> seen(tasks.size());
    std::atomic<int> produced_done{0};
    std::atomic<int64_t> popped{0};
    prism_test::Rendezvous go(2 * threads);
    std::vector<std::thread> ts;
    for (int p = 0; p < threads; ++p) {
      ts.emplace_back([&, p] {
        (void)go.arrive_and_wait();
        for (int i = 0; i < kPerProducer; ++i) q.push(tasks[p * kPerProducer + i].get());
        produced_done.fetch_add(1);
      });
    }
    const auto deadline = Clock::now() + kTimeout;
    for (int c = 0; c < threads; ++c) {
      ts.emplace_back([&] {
        (void)go.arrive_and_wait();
        while (Clock::now() < deadline) {
          TaskRecord* t = q.pop();
          if (t == nullptr) {
            if (produced_done.load() == threads && !q.maybe_nonempty()) return;
            continue;
          }
          seen[index_of.at(t)].fetch_add(1);
          popped.fetch_add(1);
        }
      });
    }
    for (auto& t : ts) t.join();
    ASSERT_EQ(popped.load(), static_cast<int64_t>(tasks.size())) << threads << " threads";
    for (size_t i = 0; i < seen.size(); ++i) ASSERT_EQ(seen[i].load(), 1) << "task " << i;
    EXPECT_EQ(q.size(), 0);
    EXPECT_FALSE(q.maybe_nonempty());
  }
}

// What the scheduler's wake-ups rest on (a Dekker pair): a producer pushes and then looks for
// an idle consumer; a consumer announces itself idle and then looks at the queue. However the
// two interleave, at least one of them sees the other (otherwise a task waits with every
// thread asleep). Rounds are run in lock step, each with a fresh push and announcement.
TEST(ReadyQueueTest, APushAndAnIdleConsumerAlwaysSeeEachOther) {
  constexpr int kRounds = 5000;
  ReadyQueue q;
  InertTask task;
  std::atomic<int> idle{0};
  std::atomic<int> producer_round{-1}, consumer_round{-1};
  std::atomic<int> start{0};
  std::vector<char> producer_saw_idle(kRounds), consumer_saw_task(kRounds);
  const auto deadline = Clock::now() + kTimeout;
  auto wait_for = [&](const std::atomic<int>& a, int value) {
    while (a.load() < value) {
      if (Clock::now() > deadline) return false;
      std::this_thread::yield();  // (three threads, perhaps fewer cores)
    }
    return true;
  };
  std::thread producer([&] {
    for (int r = 0; r < kRounds; ++r) {
      if (!wait_for(start, r + 1)) return;
      q.push(&task);
      producer_saw_idle[r] = idle.load(std::memory_order_seq_cst) != 0;
      producer_round.store(r);
    }
  });
  std::thread consumer([&] {
    for (int r = 0; r < kRounds; ++r) {
      if (!wait_for(start, r + 1)) return;
      idle.store(1, std::memory_order_seq_cst);
      consumer_saw_task[r] = q.maybe_nonempty();
      consumer_round.store(r);
    }
  });
  bool in_time = true;
  int popped = 0;
  for (int r = 0; r < kRounds && in_time; ++r) {
    start.store(r + 1);
    in_time = wait_for(producer_round, r) && wait_for(consumer_round, r);
    // (Between rounds: both threads wait for the next start.)
    if (in_time && q.pop() == &task) ++popped;
    idle.store(0);
  }
  if (!in_time) start.store(kRounds + 1);  // (let both threads run out their loops)
  producer.join();
  consumer.join();
  ASSERT_TRUE(in_time) << "the rounds did not finish in time";
  ASSERT_EQ(popped, kRounds);
  for (int r = 0; r < kRounds; ++r) {
    ASSERT_TRUE(producer_saw_idle[r] || consumer_saw_task[r]) << "round " << r;
  }
  EXPECT_FALSE(q.maybe_nonempty());
}

}  // namespace
}  // namespace prism::internal
