// GPU placement and resources: which device a GPU task runs on, fractional sharing of one
// device, gpu_memory reservations, infeasible requests, and the backend this process uses.
//
// The tests run on whichever backend the process has. Without a CUDA device (this CI) that is
// the host backend: init({.num_gpus = N}) declares N logical GPUs. The CudaScheduling* tests
// need real devices and skip (with the reason) otherwise.
//
// Hand-offs are Gates and Rendezvous from core/test_util.h; every wait has a deadline
// (kTimeout), never a sleep. "Does not start yet" is shown by the waiting task itself: it
// records, when it starts, whether the tasks it must wait for had already been released.

#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <iostream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "core/test_util.h"
#include "prism/gpu.h"
#include "prism/prism.h"

namespace {

using prism::gpu::Backend;
using prism::gpu::Device;
using prism_test::Gate;
using prism_test::kTimeout;
using prism_test::Rendezvous;

// What a task sees of its placement: gpu_ids(), current_device() and current_stream().device().
struct TaskPlace {
  std::vector<int> gpu_ids;
  int device = -2;
  int stream_device = -2;
};

TaskPlace where_am_i() {
  return TaskPlace{prism::gpu_ids(), prism::gpu::current_device().index,
                   prism::gpu::current_stream().device().index};
}

bool on_host_backend() { return prism::gpu::backend() == Backend::kHost; }

// Expects `call` to throw prism::Error with code kInvalidArgument (and not InfeasibleError).
template <typename Call>
void ExpectInvalidArgument(Call&& call, const char* what) {
  try {
    call();
    ADD_FAILURE() << what << ": accepted";
  } catch (const prism::InfeasibleError& e) {
    ADD_FAILURE() << what << ": reported as infeasible, expected an invalid argument: "
                  << e.what();
  } catch (const prism::Error& e) {
    EXPECT_EQ(e.code(), prism::ErrorCode::kInvalidArgument) << what << ": " << e.what();
  }
}

// Runs a plain CPU task to completion: the scheduler has handled everything submitted before it
// (used before checking that a queued task has not started; the task itself proves the order).
void flush(prism::Runtime& rt) {
  EXPECT_EQ(prism::get(rt.task([] { return 1; }).remote(), kTimeout), 1);
}

// ---- placement ----

// Logical GPUs exist only on the host backend; with CUDA, num_gpus may not exceed the devices.
class GpuPlacementTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!on_host_backend() && prism::gpu::cuda_device_count() < 2) {
      GTEST_SKIP() << "needs 2 GPUs: " << prism::gpu::backend_description();
    }
  }
};

TEST_F(GpuPlacementTest, GpuTaskRunsOnItsGrantedDevice) {
  prism::Runtime rt({.num_cpus = 2, .num_gpus = 1});
  const TaskPlace p = prism::get(rt.task(where_am_i).num_gpus(1).remote(), kTimeout);
  EXPECT_EQ(p.gpu_ids, std::vector<int>{0});
  EXPECT_EQ(p.device, 0);
  EXPECT_EQ(p.stream_device, 0);
}

TEST_F(GpuPlacementTest, CpuTaskRunsOnTheHost) {
  // One CPU slot: the CPU task runs on the thread that has just run the GPU task, which must
  // have left the device behind.
  prism::Runtime rt({.num_cpus = 1, .num_gpus = 1});
  const TaskPlace gpu = prism::get(rt.task(where_am_i).num_gpus(1).remote(), kTimeout);
  EXPECT_EQ(gpu.device, 0);
  const TaskPlace cpu = prism::get(rt.task(where_am_i).remote(), kTimeout);
  EXPECT_TRUE(cpu.gpu_ids.empty());
  EXPECT_EQ(cpu.device, Device::host().index);
  EXPECT_EQ(cpu.stream_device, Device::host().index);
  // Outside tasks: the host too.
  EXPECT_TRUE(prism::gpu::current_device().is_host());
  EXPECT_TRUE(prism::gpu::current_stream().device().is_host());
}

TEST_F(GpuPlacementTest, TwoWholeGpuTasksAtOnceGetDifferentDevices) {
  prism::Runtime rt({.num_cpus = 2, .num_gpus = 2});
  Rendezvous both(2);
  std::vector<prism::ObjectRef<TaskPlace>> refs;
  for (int i = 0; i < 2; ++i) {
    refs.push_back(rt.task([both] {
                       if (!both.arrive_and_wait()) return TaskPlace{};
                       return where_am_i();
                     })
                       .num_gpus(1)
                       .remote());
  }
  std::set<int> devices;
  for (const TaskPlace& p : prism::get(refs, kTimeout)) {
    ASSERT_EQ(p.gpu_ids.size(), 1u) << "the two tasks never ran at once";
    EXPECT_EQ(p.device, p.gpu_ids[0]);
    EXPECT_EQ(p.stream_device, p.device);
    devices.insert(p.device);
  }
  EXPECT_EQ(devices, (std::set<int>{0, 1}));
}

TEST_F(GpuPlacementTest, MultiGpuTaskRunsOnItsFirstDevice) {
  prism::Runtime rt({.num_cpus = 2, .num_gpus = 2});
  const TaskPlace p = prism::get(rt.task(where_am_i).num_gpus(2).remote(), kTimeout);
  EXPECT_EQ(p.gpu_ids, (std::vector<int>{0, 1}));
  EXPECT_EQ(p.device, 0);
  EXPECT_EQ(p.stream_device, 0);
}

TEST_F(GpuPlacementTest, ConcurrentTasksOnOneDeviceUseTheirOwnStreams) {
  // current_stream() belongs to the running thread: two tasks sharing a GPU never share one
  // (the host backend's streams are distinct tokens, so this holds there too).
  prism::Runtime rt({.num_cpus = 2, .num_gpus = 1});
  Rendezvous both(2);
  std::vector<prism::ObjectRef<uintptr_t>> refs;
  for (int i = 0; i < 2; ++i) {
    refs.push_back(rt.task([both]() -> uintptr_t {
                       if (!both.arrive_and_wait()) return 1;
                       const prism::gpu::Stream s = prism::gpu::current_stream();
                       if (s.device() != Device::gpu(0)) return 2;
                       return reinterpret_cast<uintptr_t>(s.handle());
                     })
                       .num_gpus(0.5)
                       .remote());
  }
  const std::vector<uintptr_t> handles = prism::get(refs, kTimeout);
  for (uintptr_t h : handles) {
    ASSERT_NE(h, 1u) << "the two half-GPU tasks never ran at once";
    ASSERT_NE(h, 2u) << "a half-GPU task's stream is not on gpu:0";
  }
  EXPECT_NE(handles[0], 0u);
  EXPECT_NE(handles[0], handles[1]);
}

// ---- fractional sharing ----

TEST(GpuFractionTest, FourQuarterTasksShareTheDeviceAndAFifthWaits) {
  prism::Runtime rt({.num_cpus = 2, .num_gpus = 1});
  // The four meet inside (only possible if all four run at once), then hold their quarters
  // until `release`; the driver is the fifth party of `all_in`, so it knows they are inside.
  Rendezvous four(4);
  Rendezvous all_in(5);
  Gate release;
  std::vector<prism::ObjectRef<TaskPlace>> quarters;
  for (int i = 0; i < 4; ++i) {
    quarters.push_back(rt.task([four, all_in, release] {
                           if (!four.arrive_and_wait()) return TaskPlace{};
                           const TaskPlace p = where_am_i();
                           if (!all_in.arrive_and_wait() || !release.wait()) return TaskPlace{};
                           return p;
                         })
                           .num_gpus(0.25)
                           .num_cpus(0)
                           .remote());
  }
  ASSERT_TRUE(all_in.arrive_and_wait()) << "the four quarter-GPU tasks never ran at once";
  EXPECT_DOUBLE_EQ(rt.available_resources().at("GPU"), 0);

  auto fifth_started = std::make_shared<std::atomic<bool>>(false);
  auto fifth = rt.task([fifth_started, release] {
                   fifth_started->store(true);
                   // Started only after the four gave their quarters back.
                   return release.is_open() ? where_am_i() : TaskPlace{};
                 })
                   .num_gpus(0.25)
                   .num_cpus(0)
                   .remote();
  flush(rt);
  EXPECT_FALSE(fifth_started->load()) << "a fifth quarter ran while four held the GPU";
  EXPECT_FALSE(fifth.is_ready());

  release.open();
  for (const TaskPlace& p : prism::get(quarters, kTimeout)) {
    EXPECT_EQ(p.gpu_ids, std::vector<int>{0});
    EXPECT_EQ(p.device, 0);
    EXPECT_EQ(p.stream_device, 0);
  }
  const TaskPlace p5 = prism::get(fifth, kTimeout);
  EXPECT_EQ(p5.gpu_ids, std::vector<int>{0}) << "the fifth started before the four were released";
  EXPECT_EQ(p5.device, 0);
  EXPECT_TRUE(prism_test::eventually([&] { return rt.available_resources().at("GPU") == 1; }));
}

TEST(GpuFractionTest, NumGpusLargerThanTheNodeIsInfeasible) {
  prism::Runtime rt({.num_cpus = 1, .num_gpus = 1});
  EXPECT_THROW(rt.task([] { return 1; }).num_gpus(2).remote(), prism::InfeasibleError);
  // A zero-GPU node refuses any GPU request, fractional or not.
  prism::Runtime none({.num_cpus = 1, .num_gpus = 0});
  EXPECT_THROW(none.task([] { return 1; }).num_gpus(0.25).remote(), prism::InfeasibleError);
  // The first runtime keeps working.
  EXPECT_EQ(prism::get(rt.task([] { return 1; }).num_gpus(1).remote(), kTimeout), 1);
}

// ---- gpu_memory ----

class GpuMemoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!on_host_backend() && prism::gpu::cuda_device_count() < 1) {
      GTEST_SKIP() << "no GPU: " << prism::gpu::backend_description();
    }
  }
};

TEST_F(GpuMemoryTest, ReservationsAreAccountedPerDevice) {
  prism::Runtime rt({.num_cpus = 2, .num_gpus = 1, .gpu_memory = 1000});
  EXPECT_DOUBLE_EQ(rt.cluster_resources().at("gpu_memory"), 1000);
  EXPECT_DOUBLE_EQ(rt.available_resources().at("gpu_memory"), 1000);

  Gate first_started;
  Gate first_release;
  auto first_done = std::make_shared<std::atomic<bool>>(false);
  auto first = rt.task([first_started, first_release, first_done] {
                   first_started.open();
                   const bool ok = first_release.wait();
                   first_done->store(true);
                   return ok;
                 })
                   .num_gpus(0.1)
                   .num_cpus(0)
                   .gpu_memory(600)
                   .remote();
  ASSERT_TRUE(first_started.wait());
  EXPECT_DOUBLE_EQ(rt.available_resources().at("gpu_memory"), 400);

  // GPU units are left (0.9) but not 600 bytes: the second waits for the first to finish.
  auto second_started = std::make_shared<std::atomic<bool>>(false);
  auto second = rt.task([second_started, first_done] {
                    second_started->store(true);
                    return first_done->load();
                  })
                    .num_gpus(0.1)
                    .num_cpus(0)
                    .gpu_memory(600)
                    .remote();
  // A task that fits in what is left is not held up behind it.
  EXPECT_EQ(prism::get(rt.task([] { return prism::gpu_ids(); })
                           .num_gpus(0.1)
                           .num_cpus(0)
                           .gpu_memory(400)
                           .remote(),
                       kTimeout),
            std::vector<int>{0});
  flush(rt);
  EXPECT_FALSE(second_started->load()) << "600 + 600 bytes reserved on a 1000-byte GPU";
  EXPECT_FALSE(second.is_ready());

  first_release.open();
  EXPECT_TRUE(prism::get(first, kTimeout));
  EXPECT_TRUE(prism::get(second, kTimeout)) << "the second started before the first finished";
  EXPECT_TRUE(prism_test::eventually(
      [&] { return rt.available_resources().at("gpu_memory") == 1000; }));
}

TEST_F(GpuMemoryTest, InvalidAndInfeasibleRequests) {
  prism::Runtime rt({.num_cpus = 2, .num_gpus = 1, .gpu_memory = 1000});
  auto noop = [] { return 1; };
  EXPECT_THROW(rt.task(noop).num_gpus(0.1).num_cpus(0).gpu_memory(2000).remote(),
               prism::InfeasibleError);
  ExpectInvalidArgument([&] { rt.task(noop).gpu_memory(100).remote(); },
                        "gpu_memory without num_gpus");
  ExpectInvalidArgument([&] { rt.task(noop).num_gpus(0.5).gpu_memory(-1).remote(); },
                        "gpu_memory(-1)");
  // Exactly the device's memory is feasible.
  EXPECT_EQ(prism::get(rt.task(noop).num_gpus(0.1).gpu_memory(1000).remote(), kTimeout), 1);
}

TEST_F(GpuMemoryTest, GpuMemoryIsSummedOverDevices) {
  if (!on_host_backend()) GTEST_SKIP() << "logical GPUs only on the host backend";
  prism::Runtime rt({.num_cpus = 1, .num_gpus = 2, .gpu_memory = 1000});
  EXPECT_DOUBLE_EQ(rt.cluster_resources().at("gpu_memory"), 2000);
  // 1000 bytes is feasible per device; two whole GPUs reserve it on each.
  Gate started;
  Gate release;
  auto both = rt.task([started, release] {
                  started.open();
                  return release.wait() ? prism::gpu_ids() : std::vector<int>{};
                })
                  .num_gpus(2)
                  .num_cpus(0)
                  .gpu_memory(700)
                  .remote();
  ASSERT_TRUE(started.wait());
  EXPECT_DOUBLE_EQ(rt.available_resources().at("gpu_memory"), 600);
  release.open();
  EXPECT_EQ(prism::get(both, kTimeout), (std::vector<int>{0, 1}));
}

TEST_F(GpuMemoryTest, LogicalGpuMemoryDefaultsTo16GiBEach) {
  if (!on_host_backend()) GTEST_SKIP() << "logical GPUs only on the host backend";
  prism::Runtime rt({.num_cpus = 1, .num_gpus = 2});
  EXPECT_DOUBLE_EQ(rt.cluster_resources().at("GPU"), 2);
  EXPECT_DOUBLE_EQ(rt.cluster_resources().at("gpu_memory"), 2.0 * double(int64_t{16} << 30));
}

struct GpuMemoryHolder {
  // The constructor runs with the actor's GPU too: a tensor made there lands on it.
  GpuMemoryHolder()
      : born_on(prism::gpu::current_device().index),
        state(prism::gpu::Tensor::zeros(prism::gpu::DType::kFloat32, {4})) {}
  int device() { return prism::gpu::current_device().index; }
  std::vector<int> ids() { return prism::gpu_ids(); }
  std::vector<int> birth() { return {born_on, state.device().index}; }

  int born_on;
  prism::gpu::Tensor state;
};
PRISM_ACTOR(GpuMemoryHolder, &GpuMemoryHolder::device, &GpuMemoryHolder::ids,
            &GpuMemoryHolder::birth);

TEST_F(GpuMemoryTest, ActorHoldsItsReservationForItsLife) {
  prism::Runtime rt({.num_cpus = 2, .num_gpus = 1, .gpu_memory = 1000});
  auto a = rt.actor<GpuMemoryHolder>().num_gpus(0.5).gpu_memory(700).remote();
  EXPECT_EQ(prism::get(a.task(&GpuMemoryHolder::device).remote(), kTimeout), 0);
  EXPECT_EQ(prism::get(a.task(&GpuMemoryHolder::ids).remote(), kTimeout), std::vector<int>{0});
  EXPECT_EQ(prism::get(a.task(&GpuMemoryHolder::birth).remote(), kTimeout),
            (std::vector<int>{0, 0}));
  const auto held = rt.available_resources();
  EXPECT_DOUBLE_EQ(held.at("gpu_memory"), 300);
  EXPECT_DOUBLE_EQ(held.at("GPU"), 0.5);
  // Between calls too: the reservation is the actor's, not its calls'.
  flush(rt);
  EXPECT_DOUBLE_EQ(rt.available_resources().at("gpu_memory"), 300);
  // A task that fits next to it runs; the driver is still on the host.
  EXPECT_EQ(prism::get(rt.task([] { return prism::gpu::current_device().index; })
                           .num_gpus(0.5)
                           .gpu_memory(300)
                           .remote(),
                       kTimeout),
            0);
  EXPECT_TRUE(prism::gpu::current_device().is_host());

  prism::kill(a);
  EXPECT_TRUE(prism_test::eventually([&] {
    const auto free = rt.available_resources();
    return free.at("gpu_memory") == 1000 && free.at("GPU") == 1;
  }));
}

TEST_F(GpuMemoryTest, InfeasibleActorIsReportedAtCreation) {
  prism::Runtime rt({.num_cpus = 1, .num_gpus = 1, .gpu_memory = 1000});
  EXPECT_THROW(rt.actor<GpuMemoryHolder>().num_gpus(0.5).gpu_memory(1001).remote(),
               prism::InfeasibleError);
  ExpectInvalidArgument([&] { rt.actor<GpuMemoryHolder>().gpu_memory(10).remote(); },
                        "actor gpu_memory without num_gpus");
}

// ---- the backend ----

TEST(GpuBackendTest, ReportsWhichBackendServesTheGpus) {
  const Backend b = prism::gpu::backend();
  std::cout << "backend: " << prism::gpu::backend_name(b) << " ("
            << prism::gpu::backend_description() << "), built with CUDA: " << std::boolalpha
            << prism::gpu::built_with_cuda() << ", CUDA devices: "
            << prism::gpu::cuda_device_count() << "\n";
  EXPECT_FALSE(prism::gpu::backend_description().empty());
  EXPECT_STREQ(prism::gpu::backend_name(Backend::kHost), "host");
  EXPECT_STREQ(prism::gpu::backend_name(Backend::kCuda), "cuda");
  // The choice is made once.
  EXPECT_EQ(prism::gpu::backend(), b);
  if (prism::gpu::cuda_device_count() > 0) {
    EXPECT_EQ(b, Backend::kCuda);
    EXPECT_TRUE(prism::gpu::built_with_cuda());
  } else {
    EXPECT_EQ(b, Backend::kHost);
    EXPECT_EQ(prism::gpu::cuda_device_count(), 0);
  }
  if (!prism::gpu::built_with_cuda()) {
    EXPECT_EQ(b, Backend::kHost);
  }
}

TEST(GpuBackendTest, DeviceNames) {
  EXPECT_EQ(Device::host().to_string(), "host");
  EXPECT_EQ(Device::gpu(3).to_string(), "gpu:3");
  EXPECT_TRUE(Device().is_host());
  EXPECT_FALSE(Device::gpu(0).is_host());
  EXPECT_EQ(Device::gpu(1), Device::gpu(1));
  EXPECT_FALSE(Device::gpu(0) == Device::host());
}

TEST(GpuBackendTest, NumGpusDefaultsToTheRealDevices) {
  prism::Runtime rt({.num_cpus = 1});
  const auto total = rt.cluster_resources();
  const int found = prism::gpu::cuda_device_count();
  EXPECT_DOUBLE_EQ(total.count("GPU") ? total.at("GPU") : 0.0, found);
}

// ---- real devices ----

class CudaSchedulingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (prism::gpu::backend() != Backend::kCuda) {
      GTEST_SKIP() << "no CUDA device: " << prism::gpu::backend_description();
    }
  }
};

TEST_F(CudaSchedulingTest, NumGpusDefaultsToTheDeviceCount) {
  prism::Runtime rt({.num_cpus = 1});
  const auto total = rt.cluster_resources();
  ASSERT_TRUE(total.count("GPU"));
  EXPECT_DOUBLE_EQ(total.at("GPU"), prism::gpu::cuda_device_count());
  ASSERT_TRUE(total.count("gpu_memory"));
  EXPECT_GT(total.at("gpu_memory"), 0);
}

TEST_F(CudaSchedulingTest, NumGpusAboveTheDeviceCountIsRejectedAtInit) {
  const double too_many = prism::gpu::cuda_device_count() + 1;
  ExpectInvalidArgument([&] { prism::Runtime rt({.num_cpus = 1, .num_gpus = too_many}); },
                        "InitOptions.num_gpus above the CUDA device count");
}

TEST_F(CudaSchedulingTest, EveryDeviceRunsWholeGpuTasks) {
  const int n = prism::gpu::cuda_device_count();
  prism::Runtime rt({.num_cpus = 1});
  Rendezvous all(n);
  std::vector<prism::ObjectRef<TaskPlace>> refs;
  for (int i = 0; i < n; ++i) {
    refs.push_back(rt.task([all] {
                       if (!all.arrive_and_wait()) return TaskPlace{};
                       return where_am_i();
                     })
                       .num_gpus(1)
                       .num_cpus(0)
                       .remote());
  }
  std::set<int> devices;
  for (const TaskPlace& p : prism::get(refs, kTimeout)) {
    ASSERT_EQ(p.gpu_ids.size(), 1u) << "the whole-GPU tasks never ran at once";
    EXPECT_EQ(p.device, p.gpu_ids[0]);
    EXPECT_EQ(p.stream_device, p.device);
    devices.insert(p.device);
  }
  EXPECT_EQ(static_cast<int>(devices.size()), n);
}

}  // namespace
