// Resources: CPU slots limit concurrency, fractional GPUs share a device, custom resources,
// memory, infeasible and invalid requests, and the resource views.

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "prism/internal/device_support.h"
#include "prism/prism.h"
#include "test_util.h"

namespace {

using prism_test::ConcurrencyTracker;
using prism_test::kTimeout;
using prism_test::Rendezvous;

int resources_noop() { return 1; }
PRISM_REMOTE(resources_noop);

struct ResourcesHolder {
  int ping() { return 1; }
};
PRISM_ACTOR(ResourcesHolder, &ResourcesHolder::ping);

// A task body that counts how many run at once and needs `r` parties inside together.
auto meeting(Rendezvous r, ConcurrencyTracker t) {
  return [r, t] {
    ConcurrencyTracker::Scope inside(t);
    return r.arrive_and_wait();
  };
}

// Expects `call` to throw prism::Error with code kInvalidArgument (and not InfeasibleError).
template <typename Call>
void ExpectInvalidArgument(Call&& call, const char* what) {
  try {
    call();
    ADD_FAILURE() << what << ": accepted";
  } catch (const prism::InfeasibleError&) {
    ADD_FAILURE() << what << ": reported as infeasible, expected an invalid argument";
  } catch (const prism::Error& e) {
    EXPECT_EQ(e.code(), prism::ErrorCode::kInvalidArgument) << what;
  }
}

class ResourcesCpuTest : public prism_test::CpuSweepTest {};

TEST_P(ResourcesCpuTest, NumCpusLimitsConcurrency) {
  Rendezvous all_slots(cpus());
  ConcurrencyTracker tracker;
  std::vector<prism::ObjectRef<bool>> refs;
  for (int i = 0; i < 3 * cpus() + 1; ++i) {
    refs.push_back(prism::task(meeting(all_slots, tracker)).remote());
  }
  for (bool met : prism::get(refs, kTimeout)) {
    EXPECT_TRUE(met) << "fewer than num_cpus tasks ran at once";
  }
  EXPECT_EQ(tracker.max(), cpus());
}

TEST_P(ResourcesCpuTest, TasksAskingForTwoCpus) {
  if (cpus() < 2) GTEST_SKIP() << "needs two CPU slots";
  Rendezvous pair(cpus() / 2);
  ConcurrencyTracker tracker;
  std::vector<prism::ObjectRef<bool>> refs;
  for (int i = 0; i < 6; ++i) {
    refs.push_back(prism::task(meeting(pair, tracker)).num_cpus(2).remote());
  }
  for (bool met : prism::get(refs, kTimeout)) EXPECT_TRUE(met);
  EXPECT_EQ(tracker.max(), cpus() / 2);
}

TEST_P(ResourcesCpuTest, FractionalCpus) {
  // Two half-CPU tasks per slot.
  Rendezvous all(2 * cpus());
  ConcurrencyTracker tracker;
  std::vector<prism::ObjectRef<bool>> refs;
  for (int i = 0; i < 4 * cpus(); ++i) {
    refs.push_back(prism::task(meeting(all, tracker)).num_cpus(0.5).remote());
  }
  for (bool met : prism::get(refs, kTimeout)) EXPECT_TRUE(met);
  EXPECT_EQ(tracker.max(), 2 * cpus());
}

TEST_P(ResourcesCpuTest, WaitingForArgumentsHoldsNoResources) {
  // Tasks waiting for a blocked producer must not keep an independent task from running.
  if (cpus() < 2) GTEST_SKIP() << "needs a slot besides the blocked producer";
  prism_test::Gate gate;
  auto producer = prism::task([gate] { return gate.wait() ? 1 : -1; }).remote();
  std::vector<prism::ObjectRef<int>> waiting;
  for (int i = 0; i < 4 * cpus(); ++i) {
    waiting.push_back(prism::task([](int x) { return x + 1; }).remote(producer));
  }
  EXPECT_EQ(prism::get(prism::task(resources_noop).remote(), kTimeout), 1);
  gate.open();
  for (int v : prism::get(waiting, kTimeout)) EXPECT_EQ(v, 2);
}

TEST_P(ResourcesCpuTest, ClusterResourcesReportTheNode) {
  const auto total = prism::cluster_resources();
  ASSERT_TRUE(total.count("CPU"));
  EXPECT_DOUBLE_EQ(total.at("CPU"), cpus());
  EXPECT_TRUE(total.count("memory"));
  EXPECT_TRUE(total.count("object_store_memory"));
  EXPECT_TRUE(prism_test::eventually([&] {
    const auto free = prism::available_resources();
    return free.count("CPU") && free.at("CPU") == cpus();
  }));
}

TEST_P(ResourcesCpuTest, RequestLargerThanTheNodeIsInfeasible) {
  try {
    prism::task(resources_noop).num_cpus(cpus() + 1).remote();
    FAIL() << "a request for more CPUs than the node has was accepted";
  } catch (const prism::InfeasibleError& e) {
    EXPECT_EQ(e.code(), prism::ErrorCode::kInfeasible);
  }
  // The runtime keeps working.
  EXPECT_EQ(prism::get(prism::task(resources_noop).num_cpus(cpus()).remote(), kTimeout), 1);
}

PRISM_TEST_SWEEP_CPUS(ResourcesCpuTest);

TEST(ResourcesGpuTest, FourQuarterGpuTasksShareOneDevice) {
  prism::Runtime rt({.num_cpus = 4, .num_gpus = 1});
  Rendezvous four(4);
  ConcurrencyTracker tracker;
  std::vector<prism::ObjectRef<std::vector<int>>> refs;
  for (int i = 0; i < 4; ++i) {
    refs.push_back(rt.task([four, tracker] {
                       ConcurrencyTracker::Scope inside(tracker);
                       if (!four.arrive_and_wait()) return std::vector<int>{-1};
                       return prism::gpu_ids();
                     })
                       .num_gpus(0.25)
                       .remote());
  }
  for (const auto& ids : prism::get(refs, kTimeout)) EXPECT_EQ(ids, std::vector<int>{0});
  EXPECT_EQ(tracker.max(), 4);
}

TEST(ResourcesGpuTest, HalfGpuTasksRunTwoAtATime) {
  prism::Runtime rt({.num_cpus = 4, .num_gpus = 1});
  Rendezvous two(2);
  ConcurrencyTracker tracker;
  std::vector<prism::ObjectRef<bool>> refs;
  for (int i = 0; i < 6; ++i) refs.push_back(rt.task(meeting(two, tracker)).num_gpus(0.5).remote());
  for (bool met : prism::get(refs, kTimeout)) EXPECT_TRUE(met);
  EXPECT_EQ(tracker.max(), 2);
}

TEST(ResourcesGpuTest, WholeGpuRequestsGetDistinctDevices) {
  prism::Runtime rt({.num_cpus = 4, .num_gpus = 2});
  auto both = rt.task([] { return prism::gpu_ids(); }).num_gpus(2).remote();
  EXPECT_EQ(prism::get(both, kTimeout), (std::vector<int>{0, 1}));

  Rendezvous two(2);
  std::vector<prism::ObjectRef<std::vector<int>>> singles;
  for (int i = 0; i < 2; ++i) {
    singles.push_back(rt.task([two] {
                          if (!two.arrive_and_wait()) return std::vector<int>{-1};
                          return prism::gpu_ids();
                        })
                          .num_gpus(1)
                          .remote());
  }
  std::set<int> seen;
  for (const auto& ids : prism::get(singles, kTimeout)) {
    ASSERT_EQ(ids.size(), 1u);
    seen.insert(ids[0]);
  }
  EXPECT_EQ(seen, (std::set<int>{0, 1}));
}

TEST(ResourcesGpuTest, NoGpuIdsOutsideGpuTasks) {
  prism::Runtime rt({.num_cpus = 2, .num_gpus = 1});
  EXPECT_TRUE(prism::gpu_ids().empty());
  auto cpu_only = rt.task([] { return prism::gpu_ids(); }).remote();
  EXPECT_TRUE(prism::get(cpu_only, kTimeout).empty());
}

TEST(ResourcesGpuTest, InvalidAndInfeasibleGpuRequests) {
  prism::Runtime rt({.num_cpus = 2, .num_gpus = 2});
  EXPECT_THROW(rt.task(resources_noop).num_gpus(3).remote(), prism::InfeasibleError);
  ExpectInvalidArgument([&] { rt.task(resources_noop).num_gpus(1.5).remote(); },
                        "num_gpus(1.5): above 1 and not whole");
  ExpectInvalidArgument([&] { rt.task(resources_noop).num_gpus(-0.25).remote(); },
                        "num_gpus(-0.25)");
  ExpectInvalidArgument(
      [&] { rt.task(resources_noop).num_gpus(std::numeric_limits<double>::quiet_NaN()).remote(); },
      "num_gpus(NaN)");
  prism::Runtime no_gpus({.num_cpus = 1, .num_gpus = 0});
  EXPECT_THROW(no_gpus.task(resources_noop).num_gpus(0.5).remote(), prism::InfeasibleError);
}

TEST(ResourcesCustomTest, CustomResourceLimitsConcurrency) {
  prism::Runtime rt({.num_cpus = 4, .resources = {{"res_slot", 2}}});
  Rendezvous two(2);
  ConcurrencyTracker tracker;
  std::vector<prism::ObjectRef<bool>> refs;
  for (int i = 0; i < 6; ++i) {
    refs.push_back(rt.task(meeting(two, tracker)).resource("res_slot", 1).remote());
  }
  for (bool met : prism::get(refs, kTimeout)) EXPECT_TRUE(met);
  EXPECT_EQ(tracker.max(), 2);
}

TEST(ResourcesCustomTest, FractionalCustomResource) {
  prism::Runtime rt({.num_cpus = 4, .resources = {{"res_slot", 1}}});
  Rendezvous four(4);
  ConcurrencyTracker tracker;
  std::vector<prism::ObjectRef<bool>> refs;
  for (int i = 0; i < 8; ++i) {
    refs.push_back(rt.task(meeting(four, tracker)).resource("res_slot", 0.25).remote());
  }
  for (bool met : prism::get(refs, kTimeout)) EXPECT_TRUE(met);
  EXPECT_EQ(tracker.max(), 4);
}

TEST(ResourcesCustomTest, InvalidAndInfeasibleCustomRequests) {
  prism::Runtime rt({.num_cpus = 2, .resources = {{"res_slot", 2}}});
  EXPECT_THROW(rt.task(resources_noop).resource("res_slot", 3).remote(), prism::InfeasibleError);
  EXPECT_THROW(rt.task(resources_noop).resource("res_unknown", 1).remote(),
               prism::InfeasibleError);
  ExpectInvalidArgument([&] { rt.task(resources_noop).resource("res_slot", -1).remote(); },
                        "resource(-1)");
  ExpectInvalidArgument(
      [&] {
        rt.task(resources_noop)
            .resource("res_slot", std::numeric_limits<double>::quiet_NaN())
            .remote();
      },
      "resource(NaN)");
  EXPECT_EQ(prism::get(rt.task(resources_noop).resource("res_slot", 2).remote(), kTimeout), 1);
}

TEST(ResourcesMemoryTest, MemoryLimitsConcurrency) {
  prism::Runtime rt({.num_cpus = 4, .memory = 1000});
  ConcurrencyTracker big_tracker;
  std::vector<prism::ObjectRef<int>> big;
  for (int i = 0; i < 4; ++i) {
    big.push_back(rt.task([big_tracker] {
                      ConcurrencyTracker::Scope inside(big_tracker);
                      return 1;
                    })
                      .memory(600)
                      .remote());
  }
  EXPECT_EQ(prism::get(big, kTimeout), std::vector<int>(4, 1));
  EXPECT_EQ(big_tracker.max(), 1);

  Rendezvous two(2);
  ConcurrencyTracker tracker;
  std::vector<prism::ObjectRef<bool>> halves;
  for (int i = 0; i < 4; ++i) {
    halves.push_back(rt.task(meeting(two, tracker)).memory(500).remote());
  }
  for (bool met : prism::get(halves, kTimeout)) EXPECT_TRUE(met);
  EXPECT_EQ(tracker.max(), 2);
}

TEST(ResourcesMemoryTest, InvalidAndInfeasibleMemoryRequests) {
  prism::Runtime rt({.num_cpus = 2, .memory = 1000});
  EXPECT_THROW(rt.task(resources_noop).memory(2000).remote(), prism::InfeasibleError);
  ExpectInvalidArgument([&] { rt.task(resources_noop).memory(-5).remote(); }, "memory(-5)");
}

TEST(ResourcesInvalidTest, NegativeOrNanCpuRequests) {
  prism::Runtime rt({.num_cpus = 2});
  ExpectInvalidArgument([&] { rt.task(resources_noop).num_cpus(-1).remote(); }, "num_cpus(-1)");
  ExpectInvalidArgument(
      [&] { rt.task(resources_noop).num_cpus(std::numeric_limits<double>::quiet_NaN()).remote(); },
      "num_cpus(NaN)");
  ExpectInvalidArgument(
      [&] { rt.task(resources_noop).num_cpus(std::numeric_limits<double>::infinity()).remote(); },
      "num_cpus(inf)");
  ExpectInvalidArgument([&] { rt.actor<ResourcesHolder>().num_cpus(-1).remote(); },
                        "actor num_cpus(-1)");
  EXPECT_EQ(prism::get(rt.task(resources_noop).remote(), kTimeout), 1);
}

TEST(ResourcesInvalidTest, NegativeCustomResourceAtInit) {
  ExpectInvalidArgument([] { prism::Runtime rt({.resources = {{"res_bad", -1}}}); },
                        "InitOptions::resources with a negative amount");
}

TEST(ResourcesZeroCpuTest, ZeroCpuNodeRunsZeroCpuTasks) {
  prism::Runtime rt({.num_cpus = 0});
  EXPECT_EQ(prism::get(rt.task(resources_noop).num_cpus(0).remote(), kTimeout), 1);
  EXPECT_THROW(rt.task(resources_noop).remote(), prism::InfeasibleError);
}

TEST(ResourcesViewTest, TotalsAndAvailability) {
  prism::Runtime rt({.num_cpus = 3,
                     .num_gpus = 2,
                     .memory = int64_t{1} << 30,
                     .resources = {{"res_slot", 5}},
                     .object_store_bytes = int64_t{64} << 20});
  const std::map<std::string, double> total = rt.cluster_resources();
  EXPECT_DOUBLE_EQ(total.at("CPU"), 3);
  EXPECT_DOUBLE_EQ(total.at("GPU"), 2);
  EXPECT_DOUBLE_EQ(total.at("memory"), double(int64_t{1} << 30));
  EXPECT_DOUBLE_EQ(total.at("res_slot"), 5);
  EXPECT_DOUBLE_EQ(total.at("object_store_memory"), double(int64_t{64} << 20));
  EXPECT_EQ(rt.available_resources(), total);

  prism_test::Gate started;
  prism_test::Gate release;
  auto holder = rt.task([started, release] {
                    started.open();
                    return release.wait();
                  })
                    .num_cpus(1)
                    .num_gpus(0.5)
                    .memory(1000)
                    .resource("res_slot", 2)
                    .remote();
  ASSERT_TRUE(started.wait());
  const auto busy = rt.available_resources();
  EXPECT_DOUBLE_EQ(busy.at("CPU"), 2);
  EXPECT_DOUBLE_EQ(busy.at("GPU"), 1.5);
  EXPECT_DOUBLE_EQ(busy.at("memory"), double((int64_t{1} << 30) - 1000));
  EXPECT_DOUBLE_EQ(busy.at("res_slot"), 3);
  release.open();
  EXPECT_TRUE(prism::get(holder, kTimeout));
  EXPECT_TRUE(prism_test::eventually([&] { return rt.available_resources() == total; }));
}

// The CPU a gated task asking for `n` CPUs holds while it runs on `rt` (of `cpus` CPUs).
double cpu_held_by_a_task_of(prism::Runtime& rt, double cpus, double n) {
  // (The last task's lease may still be held for a moment after its result is in.)
  EXPECT_TRUE(prism_test::eventually([&] { return rt.available_resources().at("CPU") == cpus; }));
  prism_test::Gate started, release;
  auto r = rt.task([started, release] {
               started.open();
               return release.wait();
             })
               .num_cpus(n)
               .remote();
  EXPECT_TRUE(started.wait());
  const double held = cpus - rt.available_resources().at("CPU");
  release.open();
  EXPECT_TRUE(prism::get(r, kTimeout));
  return held;
}

// A thread keeps its last request's shape (RuntimeCore::make_extras): the same request again,
// on a runtime made after the last one went, on another runtime alive beside it, or between
// other requests, still holds exactly what it asks for, and an infeasible one is refused every
// time.
TEST(ResourcesViewTest, ARepeatedRequestHoldsWhatItAsksAcrossRuntimesAndOtherRequests) {
  for (int round = 0; round < 3; ++round) {
    SCOPED_TRACE("runtime " + std::to_string(round));
    const double cpus = 2 + round;  // (another node shape each time)
    prism::Runtime rt({.num_cpus = cpus});
    // (Each round begins with the request the last one ended with: the thread's cached one,
    // whose shape belonged to the runtime before.)
    EXPECT_DOUBLE_EQ(cpu_held_by_a_task_of(rt, cpus, 0.5), 0.5);
    EXPECT_DOUBLE_EQ(cpu_held_by_a_task_of(rt, cpus, 0.5), 0.5);
    EXPECT_DOUBLE_EQ(cpu_held_by_a_task_of(rt, cpus, 1.5), 1.5);
    for (int i = 0; i < 2; ++i) {
      EXPECT_THROW(rt.task(resources_noop).num_cpus(cpus + 1).remote(), prism::InfeasibleError);
    }
    EXPECT_DOUBLE_EQ(cpu_held_by_a_task_of(rt, cpus, 0.5), 0.5);
  }
  // Two runtimes alive at once, the same request on each in turn.
  prism::Runtime two({.num_cpus = 2}), three({.num_cpus = 3});
  for (int i = 0; i < 3; ++i) {
    EXPECT_DOUBLE_EQ(cpu_held_by_a_task_of(two, 2, 0.5), 0.5);
    EXPECT_DOUBLE_EQ(cpu_held_by_a_task_of(three, 3, 0.5), 0.5);
  }
}

TEST(ResourcesViewTest, LargeObjectsUseObjectStoreMemory) {
  prism::Runtime rt({.num_cpus = 1, .object_store_bytes = int64_t{64} << 20});
  const double capacity = rt.cluster_resources().at("object_store_memory");
  auto big = rt.put(std::vector<char>(4 << 20, 'x'));
  EXPECT_LE(rt.available_resources().at("object_store_memory"), capacity - (4 << 20));
  big = {};
  EXPECT_TRUE(prism_test::eventually(
      [&] { return rt.available_resources().at("object_store_memory") == capacity; }));
}

TEST(ResourcesActorTest, ActorHoldsItsResourcesForItsLifetime) {
  prism::Runtime rt({.num_cpus = 2, .num_gpus = 1});
  auto a = rt.actor<ResourcesHolder>().num_cpus(1).num_gpus(0.5).remote();
  EXPECT_EQ(prism::get(a.task(&ResourcesHolder::ping).remote(), kTimeout), 1);
  auto held = rt.available_resources();
  EXPECT_DOUBLE_EQ(held.at("CPU"), 1);
  EXPECT_DOUBLE_EQ(held.at("GPU"), 0.5);
  // Tasks still run on the CPU that is left.
  EXPECT_EQ(prism::get(rt.task(resources_noop).remote(), kTimeout), 1);
  prism::kill(a);
  EXPECT_TRUE(prism_test::eventually([&] {
    const auto free = rt.available_resources();
    return free.at("CPU") == 2 && free.at("GPU") == 1;
  }));
}

TEST(ResourcesActorTest, InfeasibleActorIsReportedAtCreation) {
  prism::Runtime rt({.num_cpus = 2, .num_gpus = 0});
  EXPECT_THROW(rt.actor<ResourcesHolder>().num_gpus(1).remote(), prism::InfeasibleError);
  EXPECT_THROW(rt.actor<ResourcesHolder>().num_cpus(3).remote(), prism::InfeasibleError);
}

// Ranks of a launcher sharing a machine split its visible GPUs (DESIGN §2).
TEST(DeviceShare, RanksSharingAMachineSplitItsGpus) {
  using prism::internal::DeviceRange;
  using prism::internal::shared_devices;
  auto range = [](int visible, int part, int parts) {
    const DeviceRange r = shared_devices(visible, {part, parts});
    return std::pair<int, int>(r.first, r.count);
  };
  using P = std::pair<int, int>;
  EXPECT_EQ(range(4, 0, 1), P(0, 4)) << "alone: every device";
  EXPECT_EQ(range(4, 0, 2), P(0, 2));
  EXPECT_EQ(range(4, 1, 2), P(2, 2));
  EXPECT_EQ(range(3, 0, 2), P(0, 2)) << "the first ranks take the remainder";
  EXPECT_EQ(range(3, 1, 2), P(2, 1));
  EXPECT_EQ(range(8, 3, 4), P(6, 2));
  EXPECT_EQ(range(2, 0, 4), P(0, 1)) << "fewer devices than ranks: one each, shared";
  EXPECT_EQ(range(2, 1, 4), P(1, 1));
  EXPECT_EQ(range(2, 2, 4), P(0, 1));
  EXPECT_EQ(range(2, 3, 4), P(1, 1));
  EXPECT_EQ(range(0, 1, 2), P(0, 0)) << "no device: nothing to share";
  EXPECT_EQ(range(4, 5, 2), P(0, 4)) << "a part out of range takes nothing away";
  // Every device is taken by exactly one rank whenever there are enough of them.
  for (int visible = 1; visible <= 9; ++visible) {
    for (int parts = 1; parts <= visible; ++parts) {
      std::vector<int> takers(static_cast<size_t>(visible), 0);
      for (int part = 0; part < parts; ++part) {
        const DeviceRange r = shared_devices(visible, {part, parts});
        EXPECT_GE(r.count, visible / parts);
        EXPECT_LE(r.count, visible / parts + 1);
        for (int d = r.first; d < r.first + r.count; ++d) ++takers.at(static_cast<size_t>(d));
      }
      for (int t : takers) EXPECT_EQ(t, 1) << visible << " devices, " << parts << " ranks";
    }
  }
}

// The share is set before the GPU module enumerates the devices; once it has, a new share is
// refused (the caller warns) and the one taken stays.
TEST(DeviceShare, AShareSetAfterTheDevicesWereEnumeratedIsRefused) {
  EXPECT_FALSE(prism::internal::set_device_share({2, 2})) << "part out of range";
  EXPECT_FALSE(prism::internal::set_device_share({0, 0}));
  // This binary has no GPU module: nothing has taken the share yet.
  ASSERT_TRUE(prism::internal::set_device_share({1, 3}));
  const prism::internal::DeviceShare taken = prism::internal::take_device_share();
  EXPECT_EQ(taken.part, 1);
  EXPECT_EQ(taken.parts, 3);
  EXPECT_FALSE(prism::internal::set_device_share({0, 2})) << "too late: already enumerated";
}

}  // namespace
