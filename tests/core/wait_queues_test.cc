// ResourcePool and WaitQueues, driven directly (no threads): lent CPU, reservations, carving a
// child's share, per-shape queues, oldest-first grants and the starvation bound.

#include <gtest/gtest.h>

#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "prism/internal/device_support.h"
#include "prism/internal/task_record.h"
#include "scheduler/resource_shape.h"
#include "scheduler/resources.h"
#include "scheduler/wait_queues.h"

namespace prism::internal {
namespace {

constexpr int64_t kCpu = kUnitsPerResource;

ResourceRequest cpus(double n) { return make_request(n, 0, 0, 0, {}); }
ResourceRequest gpus(double n, double cpu = 0) { return make_request(cpu, n, 0, 0, {}); }

NodeResources node(double cpu, int num_gpus = 0, std::vector<std::pair<std::string, int64_t>> custom = {}) {
  NodeResources r;
  r.cpu = static_cast<int64_t>(cpu * kCpu);
  r.num_gpus = num_gpus;
  r.memory = int64_t{1} << 30;
  r.gpu_memory = int64_t{1} << 30;
  r.custom = std::move(custom);
  return r;
}

// A job tagged with a number (in alloc.memory of a copy kept by the test: jobs carry no payload,
// so the tag rides in `lease`'s address space instead: a distinct CpuLease per job).
struct Tagged {
  std::vector<std::unique_ptr<CpuLease>> leases;
  Job make(int tag, Job::Kind kind = Job::Kind::kActorDrain) {
    leases.push_back(std::make_unique<CpuLease>());
    leases.back()->cpu = tag;
    Job j;
    j.kind = kind;
    j.lease = leases.back().get();
    return j;
  }
  static int tag(const Job& j) { return static_cast<int>(j.lease->cpu); }
};

std::vector<int> tags(const std::deque<Job>& jobs) {
  std::vector<int> out;
  for (const Job& j : jobs) out.push_back(Tagged::tag(j));
  return out;
}

// ---- ResourcePool ----

TEST(ResourcePoolTest, LentCpuIsForTasksNotForLongLivedHolders) {
  ResourcePool pool(node(2));
  Allocation a;
  ASSERT_TRUE(pool.try_acquire(cpus(2), false, &a));
  EXPECT_FALSE(pool.fits(cpus(1), false));
  pool.lend(kCpu);  // a task holding one CPU blocks
  EXPECT_TRUE(pool.fits(cpus(1), /*long_lived=*/false));
  EXPECT_FALSE(pool.fits(cpus(1), /*long_lived=*/true));
  EXPECT_EQ(pool.cpu_lent(), kCpu);
  // It comes back to its lender.
  EXPECT_EQ(pool.take_back(kCpu), kCpu);
  EXPECT_EQ(pool.cpu_free(), 0);
  EXPECT_EQ(pool.cpu_lent(), 0);
}

// A lease's GPU share moves to the device its next task's data is on, when that share is free
// there (ResourcePool::move_gpu); nothing changes otherwise.
TEST(ResourcePoolTest, AGpuShareMovesOnlyToADeviceWithRoomForIt) {
  ResourcePool pool(node(8, 3));
  Allocation whole;
  ASSERT_TRUE(pool.try_acquire(gpus(1), false, &whole));
  ASSERT_EQ(whole.gpu_ids(), std::vector<int>{0});
  EXPECT_TRUE(pool.move_gpu(&whole, 2));
  EXPECT_EQ(whole.gpu_ids(), std::vector<int>{2});
  Allocation next;  // device 0 was given back: the next whole GPU gets it
  ASSERT_TRUE(pool.try_acquire(gpus(1), false, &next));
  EXPECT_EQ(next.gpu_ids(), std::vector<int>{0});
  EXPECT_FALSE(pool.move_gpu(&whole, 0)) << "device 0 is taken";
  EXPECT_FALSE(pool.move_gpu(&whole, 7)) << "no such device";
  EXPECT_FALSE(pool.move_gpu(&whole, -1));
  EXPECT_EQ(whole.gpu_ids(), std::vector<int>{2});
  Allocation half;  // half of device 1
  ASSERT_TRUE(pool.try_acquire(gpus(0.5), false, &half));
  ASSERT_EQ(half.gpu_ids(), std::vector<int>{1});
  EXPECT_FALSE(pool.move_gpu(&whole, 1)) << "a whole GPU needs all of device 1";
  Allocation other_half;
  ASSERT_TRUE(pool.try_acquire(gpus(0.5), false, &other_half));
  EXPECT_EQ(other_half.gpu_ids(), std::vector<int>{1});
  pool.release(next);
  EXPECT_FALSE(pool.move_gpu(&half, 0))
      << "a half share breaks up the whole free device 0 and frees no whole one";
  pool.release(other_half);
  EXPECT_TRUE(pool.move_gpu(&half, 0)) << "now it leaves device 1 whole free in exchange";
  EXPECT_EQ(half.gpu_ids(), std::vector<int>{0});
  Allocation quarter;  // a fraction onto a device already shared: allowed
  ASSERT_TRUE(pool.try_acquire(gpus(0.25), false, &quarter));
  ASSERT_EQ(quarter.gpu_ids(), std::vector<int>{0}) << "best fit";
  pool.release(whole);
  ASSERT_TRUE(pool.try_acquire(gpus(1), false, &whole));
  ASSERT_EQ(whole.gpu_ids(), std::vector<int>{1});
  EXPECT_FALSE(pool.move_gpu(&whole, 0)) << "device 0 is partly in use";
  pool.release(quarter);
  pool.release(whole);
  pool.release(half);
  // Everything back: three whole devices free.
  Allocation all;
  ASSERT_TRUE(pool.try_acquire(gpus(3), false, &all));
  EXPECT_FALSE(pool.move_gpu(&all, 0)) << "a share of several devices does not move";
  pool.release(all);
}

// A device the GPU module reported failed is skipped wherever a healthy one could ever serve the
// request, and still granted where only it could (its task then fails fast instead of waiting).
class ResourcePoolFailedGpuTest : public ::testing::Test {
 protected:
  void TearDown() override { reset_device_failures_for_testing(); }
};

TEST_F(ResourcePoolFailedGpuTest, SkipsAFailedDeviceWhereAHealthyOneCouldServe) {
  ResourcePool pool(node(8, 3));
  report_device_failure(0);
  Allocation a, b;
  ASSERT_TRUE(pool.try_acquire(gpus(0.5), false, &a));
  ASSERT_EQ(a.gpus.size(), 1u);
  EXPECT_NE(a.gpus[0].first, 0);
  // Two whole GPUs: devices 1 and 2 could, but one is half taken; device 0 is free but failed.
  EXPECT_FALSE(pool.try_acquire(gpus(2), false, &b));
  pool.release(a);
  Allocation two;
  ASSERT_TRUE(pool.try_acquire(gpus(2), false, &two));
  ASSERT_EQ(two.gpus.size(), 2u);
  EXPECT_EQ(two.gpus[0].first, 1);
  EXPECT_EQ(two.gpus[1].first, 2);
  EXPECT_FALSE(pool.uses_avoidable_failed_gpu(two));
  // While the healthy ones are busy, a request they could serve waits rather than take device 0.
  EXPECT_FALSE(pool.fits(gpus(1), false));
  pool.release(two);
}

TEST_F(ResourcePoolFailedGpuTest, GrantsTheFailedDeviceWhereOnlyItCouldServe) {
  ResourcePool pool(node(8, 2));
  Allocation held;
  ASSERT_TRUE(pool.try_acquire(gpus(1), false, &held));  // granted before the failure
  report_device_failure(held.gpus[0].first);
  EXPECT_TRUE(pool.uses_avoidable_failed_gpu(held)) << "a lease there should give it back";
  pool.release(held);
  Allocation both;
  ASSERT_TRUE(pool.try_acquire(gpus(2), false, &both)) << "two GPUs exist only with the failed one";
  EXPECT_EQ(both.gpus.size(), 2u);
  EXPECT_FALSE(pool.uses_avoidable_failed_gpu(both));
  pool.release(both);
  // Reservations choose healthy devices the same way.
  PartialAllocation p;
  pool.reserve_step(gpus(1), false, &p);
  ASSERT_EQ(p.gpu_devices.size(), 1u);
  EXPECT_NE(p.gpu_devices[0], held.gpus[0].first);
  pool.release(p, gpus(1));
}

TEST_F(ResourcePoolFailedGpuTest, DevicesHeldForLifeDoNotCountAsComingFree) {
  // An actor holds the healthy device for its life: a task that only it could otherwise serve
  // gets the failed device (and fails fast there) instead of waiting for ever.
  ResourcePool pool(node(8, 2));
  Allocation actor;
  ASSERT_TRUE(pool.try_acquire(gpus(1), /*long_lived=*/true, &actor));
  ASSERT_EQ(actor.gpus.size(), 1u);
  const int healthy = actor.gpus[0].first;
  report_device_failure(1 - healthy);
  Allocation task;
  ASSERT_TRUE(pool.try_acquire(gpus(1), false, &task));
  EXPECT_EQ(task.gpus[0].first, 1 - healthy);
  pool.release(task);
  // Once the actor is gone the healthy device is preferred again.
  pool.release(actor);
  ASSERT_TRUE(pool.try_acquire(gpus(1), false, &task));
  EXPECT_EQ(task.gpus[0].first, healthy);
  pool.release(task);
}

TEST(ResourcePoolTest, TakeBackTakesOnlyWhatIsFree) {
  ResourcePool pool(node(1));
  pool.take_slot();
  pool.lend(kCpu);
  pool.take_slot();                      // a task runs on the lent CPU
  EXPECT_EQ(pool.take_back(kCpu), 0);    // nothing free: the lender waits
  pool.return_slot();
  EXPECT_EQ(pool.take_back(kCpu), kCpu);
  EXPECT_EQ(pool.cpu_free(), 0);
}

TEST(ResourcePoolTest, ReservationHoldsWhatIsMissingUpToTheRequest) {
  ResourcePool pool(node(4));
  Allocation held;
  ASSERT_TRUE(pool.try_acquire(cpus(3), false, &held));  // 1 CPU free
  const ResourceRequest want = cpus(2);
  PartialAllocation p;
  pool.reserve_step(want, false, &p);
  EXPECT_EQ(p.cpu, kCpu);
  EXPECT_FALSE(pool.complete(want, p));
  EXPECT_EQ(pool.cpu_free(), 0);
  pool.release(held);  // 3 CPUs back: the reservation takes only the one it lacks
  pool.reserve_step(want, false, &p);
  EXPECT_TRUE(pool.complete(want, p));
  EXPECT_EQ(pool.cpu_free(), 2 * kCpu);
  const Allocation a = pool.to_allocation(want, std::move(p), false);
  EXPECT_EQ(a.cpu, 2 * kCpu);
}

TEST(ResourcePoolTest, ReservationOfGpusChoosesDevicesAndFillsThem) {
  ResourcePool pool(node(4, /*num_gpus=*/2));
  Allocation a, b;
  ASSERT_TRUE(pool.try_acquire(gpus(0.5), false, &a));
  ASSERT_TRUE(pool.try_acquire(gpus(1), false, &b));
  const ResourceRequest want = gpus(1);
  PartialAllocation p;
  pool.reserve_step(want, false, &p);
  ASSERT_EQ(p.gpu_devices.size(), 1u);
  EXPECT_FALSE(pool.complete(want, p));
  pool.release(a);
  pool.release(b);
  pool.reserve_step(want, false, &p);
  EXPECT_TRUE(pool.complete(want, p));
  const Allocation got = pool.to_allocation(want, std::move(p), false);
  ASSERT_EQ(got.gpus.size(), 1u);
  EXPECT_EQ(got.gpus[0].second, kCpu);
  // Releasing the reservation's allocation returns everything.
  pool.release(got);
  EXPECT_DOUBLE_EQ(pool.available().at("GPU"), 2.0);
}

TEST(ResourcePoolTest, CarveGivesAChildItsShareOfTheParent) {
  ResourcePool pool(node(4, 2, {{"x", 2 * kCpu}}));
  Allocation parent;
  ASSERT_TRUE(pool.try_acquire(make_request(2, 1, 100, 10, {{"x", 1}}), false, &parent));
  Allocation child;
  EXPECT_TRUE(pool.carve(cpus(1), parent.cpu, &parent, &child));
  EXPECT_EQ(child.cpu, kCpu);
  EXPECT_TRUE(child.gpus.empty());
  EXPECT_TRUE(pool.carve(make_request(0.5, 0.5, 50, 5, {{"x", 0.5}}), parent.cpu, &parent, &child));
  ASSERT_EQ(child.gpus.size(), 1u);
  EXPECT_EQ(child.gpus[0].first, parent.gpus[0].first);
  EXPECT_FALSE(pool.carve(cpus(3), parent.cpu, &parent, &child));                   // more CPU
  EXPECT_FALSE(pool.carve(gpus(2), parent.cpu, &parent, &child));                   // more GPUs
  EXPECT_FALSE(pool.carve(make_request(1, 0, 0, 0, {{"x", 2}}), parent.cpu, &parent, &child));
  // A slot (one CPU, no allocation) fits CPU-only children only.
  EXPECT_TRUE(pool.carve(cpus(0.5), kCpu, nullptr, &child));
  EXPECT_FALSE(pool.carve(gpus(0.5, 1), kCpu, nullptr, &child));
  // Nothing was taken from the pool.
  EXPECT_EQ(pool.cpu_free(), 2 * kCpu);
}

TEST(ResourcePoolTest, InfeasibleReasonsCountProperly) {
  ResourcePool pool(node(1, 1));
  EXPECT_EQ(pool.infeasible_reason(gpus(2)), "it asks for 2 GPUs but the node has 1 GPU");
  EXPECT_EQ(pool.infeasible_reason(cpus(2)), "it asks for 2 CPUs but the node has 1 CPU");
  ResourcePool none(node(2.5));
  EXPECT_EQ(none.infeasible_reason(gpus(1)), "it asks for 1 GPU but the node has no GPU");
  EXPECT_EQ(none.infeasible_reason(cpus(3)), "it asks for 3 CPUs but the node has 2.5 CPUs");
  EXPECT_EQ(none.infeasible_reason(cpus(2)), "");
}

// ---- WaitQueues ----

TEST(WaitQueuesTest, AFittingRequestIsNotHiddenBehindManyThatDoNotFit) {
  ResourcePool pool(node(4, 1));
  Allocation gpu_holder;
  ASSERT_TRUE(pool.try_acquire(gpus(1, 0.5), false, &gpu_holder));
  WaitQueues q;
  Tagged t;
  for (int i = 0; i < 40; ++i) q.push(t.make(i), gpus(1));
  q.push(t.make(100), cpus(0.5));
  std::deque<Job> out;
  q.grant(pool, &out, true);
  EXPECT_EQ(tags(out), std::vector<int>{100});
  EXPECT_EQ(q.size(), 40u);
  // The GPU comes back: the GPU jobs go one at a time, oldest first.
  pool.release(gpu_holder);
  out.clear();
  q.grant(pool, &out, true);
  EXPECT_EQ(tags(out), std::vector<int>{0});
}

TEST(WaitQueuesTest, OldestFittingHeadGoesFirstAcrossShapes) {
  ResourcePool pool(node(8));
  WaitQueues q;
  Tagged t;
  q.push(t.make(1), cpus(1));
  q.push(t.make(2), cpus(2));
  q.push(t.make(3), cpus(1));
  q.push(t.make(4), cpus(0.5));
  std::deque<Job> out;
  q.grant(pool, &out, true);
  EXPECT_EQ(tags(out), (std::vector<int>{1, 2, 3, 4}));
  EXPECT_TRUE(q.empty());
}

TEST(WaitQueuesTest, ActorsMayNotTakeLentCpu) {
  ResourcePool pool(node(1));
  pool.take_slot();
  pool.lend(kCpu);  // the only CPU is lent by a blocked task
  WaitQueues q;
  Tagged t;
  q.push(t.make(1, Job::Kind::kActorCreate), cpus(1));
  q.push(t.make(2, Job::Kind::kTask), cpus(1));
  std::deque<Job> out;
  q.grant(pool, &out, true);
  EXPECT_EQ(tags(out), std::vector<int>{2});  // the task, not the actor
  EXPECT_EQ(q.size(), 1u);
  for (Job& j : out) pool.release(j.alloc);
  pool.take_back(kCpu);
  pool.return_slot();  // the blocked task finished: its CPU is really free now
  out.clear();
  q.grant(pool, &out, true);
  EXPECT_EQ(tags(out), std::vector<int>{1});
}

TEST(WaitQueuesTest, StarvedRequestGetsAReservationAfterTheBound) {
  constexpr int kBound = 4;
  ResourcePool pool(node(2));
  WaitQueues q(kBound);
  Tagged t;
  std::deque<Allocation> running;  // two one-CPU jobs hold both CPUs
  for (int i = 0; i < 2; ++i) {
    Allocation a;
    ASSERT_TRUE(pool.try_acquire(cpus(1), false, &a));
    running.push_back(a);
  }
  q.push(t.make(1), cpus(2));  // the big one waits
  std::deque<Job> out;
  int small_granted = 0;
  bool big_granted = false;
  // A stream of one-CPU jobs: whenever one finishes, another arrives and fits in the CPU it freed.
  for (int round = 0; round < 4 * kBound && !big_granted; ++round) {
    ASSERT_FALSE(running.empty());
    pool.release(running.front());
    running.pop_front();
    q.push(t.make(10 + round), cpus(1));
    out.clear();
    q.grant(pool, &out, true);
    for (Job& j : out) {
      if (Tagged::tag(j) == 1) {
        big_granted = true;
        running.push_back(j.alloc);
      } else {
        ++small_granted;
        running.push_back(j.alloc);
      }
    }
  }
  ASSERT_TRUE(big_granted) << "the 2-CPU request was starved by " << small_granted
                           << " one-CPU requests";
  EXPECT_GE(small_granted, kBound);      // it was passed over until the bound ...
  EXPECT_LE(small_granted, kBound + 2);  // ... and not much longer
  for (const Allocation& a : running) pool.release(a);
  EXPECT_EQ(pool.cpu_free(), 2 * kCpu);
}

TEST(WaitQueuesTest, SlotsTakenForReadyWorkCountTowardsTheBound) {
  constexpr int kBound = 3;
  ResourcePool pool(node(2));
  WaitQueues q(kBound);
  Tagged t;
  pool.take_slot();  // a ready-loop thread holds one CPU
  q.push(t.make(1), cpus(2));
  std::deque<Job> out;
  q.grant(pool, &out, true);
  EXPECT_TRUE(out.empty());
  EXPECT_TRUE(q.wants_cpu());  // it lacks only CPU: slot holders should give theirs back
  // The other slot is given back and taken again for ready work, again and again.
  for (int i = 0; i < kBound; ++i) {
    q.note_bypass(pool, true);  // (the pool has one CPU free: the big request is short of CPU)
  }
  // Reservation now: the free CPU is set aside; the next slot returned completes it.
  EXPECT_FALSE(pool.slot_free());
  EXPECT_TRUE(q.wants_cpu());
  pool.return_slot();
  q.grant(pool, &out, true);
  EXPECT_EQ(tags(out), std::vector<int>{1});
}

TEST(WaitQueuesTest, AReservationDoesNotBlockRequestsThatFitInWhatIsLeft) {
  constexpr int kBound = 1;
  ResourcePool pool(node(4, 1, {{"x", kCpu}}));
  WaitQueues q(kBound);
  Tagged t;
  Allocation gpu;
  ASSERT_TRUE(pool.try_acquire(gpus(1), false, &gpu));
  q.push(t.make(1), gpus(1, 1));    // oldest: waits for the GPU
  q.push(t.make(2), cpus(1));       // passes it over: the bound (1) is reached
  std::deque<Job> out;
  q.grant(pool, &out, true);
  EXPECT_EQ(tags(out), std::vector<int>{2});
  // The reservation holds one CPU for job 1; 3 - 1 = 2 CPUs are still free for others.
  q.push(t.make(3), cpus(2));
  out.clear();
  q.grant(pool, &out, true);
  EXPECT_EQ(tags(out), std::vector<int>{3});
  q.push(t.make(4), cpus(1));  // nothing left but the reserved CPU
  out.clear();
  q.grant(pool, &out, true);
  EXPECT_TRUE(out.empty());
  pool.release(gpu);
  q.grant(pool, &out, true);
  EXPECT_EQ(tags(out), std::vector<int>{1});
}

TEST(WaitQueuesTest, NoReservationIsHeldWhileTasksAreBlocked) {
  // A blocked task may need new tasks to run before it gives back what it holds: a reservation
  // holding what they need would deadlock. 2 CPUs: a running task holds one, a half-CPU actor
  // holds half and is blocked (lending it) on a child that needs a whole CPU.
  constexpr int kBound = 1;
  ResourcePool pool(node(2));
  WaitQueues q(kBound);
  Tagged t;
  Allocation running, actor;
  ASSERT_TRUE(pool.try_acquire(cpus(1), false, &running));
  ASSERT_TRUE(pool.try_acquire(cpus(0.5), true, &actor));
  pool.lend(kCpu / 2);
  q.push(t.make(1), cpus(2));
  q.push(t.make(2), cpus(1));  // passes the 2-CPU one over: the bound is reached
  std::deque<Job> out;
  q.grant(pool, &out, /*may_reserve=*/false);
  EXPECT_EQ(tags(out), std::vector<int>{2});
  for (Job& j : out) pool.release(j.alloc);  // it finished
  out.clear();
  q.grant(pool, &out, /*may_reserve=*/false);
  EXPECT_TRUE(out.empty());
  EXPECT_EQ(pool.cpu_free(), kCpu) << "nothing may be set aside while a task is blocked";
  // The blocked method's child can get its CPU.
  Allocation child;
  ASSERT_TRUE(pool.try_acquire(cpus(1), false, &child));
  pool.release(child);
  // The method goes on (takes its half back); nothing is blocked now: the reservation is taken
  // at once (the count was kept) and holds the free half CPU.
  EXPECT_EQ(pool.take_back(kCpu / 2), kCpu / 2);
  q.grant(pool, &out, /*may_reserve=*/true);
  EXPECT_TRUE(out.empty());
  EXPECT_EQ(pool.cpu_free(), 0);
  pool.release(running);
  pool.release(actor);
  q.grant(pool, &out, true);
  EXPECT_EQ(tags(out), std::vector<int>{1});
}

// A task record that only needs to exist (the queues look at its run state).
class InertTask final : public TaskRecord {
 public:
  InertTask() : TaskRecord(nullptr, TaskId{}, nullptr, nullptr) {}
  std::exception_ptr run() noexcept override { return nullptr; }
  void fail(const std::exception_ptr&) noexcept override {}
  bool cancel_requested() const noexcept override { return false; }
  std::string function_name() const override { return "inert"; }
};

TEST(WaitQueuesTest, ClaimedTasksAreDroppedAndReleasedByTheSecondParty) {
  ResourcePool pool(node(1));
  Allocation all;
  ASSERT_TRUE(pool.try_acquire(cpus(1), false, &all));
  WaitQueues q;
  auto* claimed = new InertTask;  // deleted by the queue or by release_run, whichever is second
  claimed->mark_queued();
  Job job;
  job.kind = Job::Kind::kTask;
  job.task = claimed;
  q.push(std::move(job), cpus(1));
  ASSERT_TRUE(claimed->try_claim());  // a blocked parent runs it
  claimed->release_run();             // ... and is done with it: the queue still holds it
  pool.release(all);
  std::deque<Job> out;
  q.grant(pool, &out, true);  // the queue drops it (and deletes it: ASan checks no leak/double free)
  EXPECT_TRUE(out.empty());
  EXPECT_TRUE(q.empty());
  EXPECT_EQ(pool.cpu_free(), kCpu);
}

// ---- what waiting requests lack (for leases, see resource_shape.h) ----

TEST(ResourcePoolTest, LackingNamesEachKindThatDoesNotFitNow) {
  ResourcePool pool(node(2, 1, {{"disk", 2 * kCpu}}));
  EXPECT_EQ(pool.lacking(cpus(1), false), 0u);
  Allocation a;
  ASSERT_TRUE(pool.try_acquire(make_request(2, 1, 0, 0, {{"disk", 2}}), false, &a));
  EXPECT_EQ(pool.lacking(cpus(1), false), uint32_t{kKindCpu});
  EXPECT_EQ(pool.lacking(gpus(0.5), false), uint32_t{kKindGpu});
  EXPECT_EQ(pool.lacking(make_request(0, 0, 0, 0, {{"disk", 1}}), false),
            uint32_t{kKindCustom});
  EXPECT_EQ(pool.lacking(make_request(1, 1, int64_t{2} << 30, 0, {}), false),
            uint32_t{kKindCpu | kKindGpu | kKindMemory});
  pool.release(a);
  EXPECT_EQ(pool.lacking(make_request(1, 1, 0, 0, {{"disk", 1}}), false), 0u);
}

TEST(WaitQueuesTest, LackingLeavesOutTheShapesOwnLeaseRequest) {
  ResourcePool pool(node(1));
  WaitQueues q;
  std::deque<Job> out;
  Allocation held;
  ASSERT_TRUE(pool.try_acquire(cpus(1), false, &held));
  ResourceShape quarter(cpus(0.25));
  Job lease;
  lease.kind = Job::Kind::kLease;
  lease.shape = &quarter;
  q.push(std::move(lease), quarter.request);
  q.grant(pool, &out, true);
  EXPECT_TRUE(out.empty());
  EXPECT_EQ(q.lacking_except(&quarter), 0u);  // only its own lease waits
  ResourceShape other(cpus(0.5));
  EXPECT_EQ(q.lacking_except(&other), uint32_t{kKindCpu});
  Tagged tagged;
  q.push(tagged.make(1, Job::Kind::kActorCreate), make_request(0, 1, 0, 0, {}));
  q.grant(pool, &out, true);
  EXPECT_EQ(q.lacking_except(&quarter), uint32_t{kKindGpu});
  pool.release(held);
  q.grant(pool, &out, true);
  ASSERT_EQ(out.size(), 1u);  // the lease; the GPU request waits forever on a node without one
  EXPECT_EQ(out.front().kind, Job::Kind::kLease);
  EXPECT_EQ(q.lacking_except(&quarter), uint32_t{kKindGpu});
  pool.release(out.front().alloc);
  std::vector<Job> rest;
  q.drain(pool, &rest);
}

}  // namespace
}  // namespace prism::internal
