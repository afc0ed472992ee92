// A GPU task runs on the device its arguments are on (prism/internal/device_affinity.h: the
// lease holder moves its lease there): a chain of GPU tasks over a tensor on gpu:1 runs on gpu:1
// and makes no peer copy, whether the tensor is passed by ref, inside a vector of refs or by
// value, for a whole GPU and for half of one; when that device has no room the task runs on
// another one at once (a peer copy) instead of waiting for it. Logical GPUs here; two real ones
// elsewhere.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "core/test_util.h"
#include "prism/gpu.h"
#include "prism/prism.h"

namespace {

using prism::gpu::Device;
using prism::gpu::Tensor;
using prism_test::kTimeout;

class DeviceAffinityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (prism::gpu::backend() != prism::gpu::Backend::kHost &&
        prism::gpu::cuda_device_count() < 2) {
      GTEST_SKIP() << "needs 2 GPUs: " << prism::gpu::backend_description();
    }
  }
};

std::vector<float> ramp(int n) {
  std::vector<float> v(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) v[static_cast<size_t>(i)] = static_cast<float>(i);
  return v;
}

// The device a GPU task ran on and the sum of its tensor's elements (read there).
struct Seen {
  int device = -1;
  double sum = 0;
};
Seen seen(const Tensor& t) {
  double s = 0;
  for (const float x : t.to_vector<float>()) s += x;
  return Seen{prism::gpu::current_device().index, s};
}

TEST_F(DeviceAffinityTest, GpuTasksRunWhereTheirTensorIsAndMakeNoPeerCopy) {
  const std::vector<float> values = ramp(4096);
  const double want = 4095.0 * 4096.0 / 2;
  // One CPU: one lease at a time (each holds the CPU). With two, a second lease of the shape
  // can hold the other device while idle, and the first cannot move there (the task then runs
  // where it is: a peer copy).
  for (const double gpus : {1.0, 0.5}) {
    prism::Runtime rt({.num_cpus = 1, .num_gpus = 2});
    for (const int home : {1, 0, 1}) {  // the lease follows the data back and forth
      const Tensor made = Tensor::from_vector(values, {4096}, Device::gpu(home));
      auto ref = rt.put(made);
      const prism::gpu::CopyStats before = prism::gpu::copy_stats();
      int at_home = 0;
      for (int i = 0; i < 10; ++i) {
        const Seen by_ref = prism::get(rt.task(seen).num_gpus(gpus).remote(ref), kTimeout);
        at_home += by_ref.device == home;
        EXPECT_EQ(by_ref.sum, want);
        const Seen by_value = prism::get(rt.task(seen).num_gpus(gpus).remote(made), kTimeout);
        at_home += by_value.device == home;
        EXPECT_EQ(by_value.sum, want);
        auto of_many = rt.task([](const std::vector<Tensor>& ts) {
                           return 10 * static_cast<int>(ts.size()) +
                                  prism::gpu::current_device().index;
                         }).num_gpus(gpus).remote(std::vector{ref, ref});
        const int got = prism::get(of_many, kTimeout);
        auto of_values = rt.task([](const std::vector<Tensor>& ts) {
                             return static_cast<int>(ts.size()) * 0 +
                                    prism::gpu::current_device().index;
                           }).num_gpus(gpus).remote(std::vector<Tensor>{made});
        EXPECT_EQ(prism::get(of_values, kTimeout), home) << "a vector of tensors, call " << i;
        EXPECT_EQ(got / 10, 2) << "a vector of two refs";
        at_home += got % 10 == home;
      }
      EXPECT_EQ(at_home, 30) << "of 30 calls, home " << home << ", gpus " << gpus;
      EXPECT_EQ((prism::gpu::copy_stats() - before).device_to_device, 0u)
          << "home " << home << ", gpus " << gpus;
    }
  }
}

// What a GPU task saw: its device, its stream's device and its grant, and its tensor's sum.
struct Placed {
  int device = -2;
  int stream_device = -2;
  std::vector<int> gpus;
  double sum = 0;
};
Placed placed(const Tensor& t) {
  double s = 0;
  for (const float x : t.to_vector<float>()) s += x;
  return Placed{prism::gpu::current_device().index,
                prism::gpu::current_stream().device().index, prism::gpu_ids(), s};
}

// A burst of tasks whose tensors alternate between the devices, run by leases (one at a time:
// one CPU) that move with them. However their devices were entered (once by the lease and again
// after each move, JobRunner::lease_begin; or by the task itself), every task sees the device it
// was granted, its stream there, and its tensor in place (no copy); a CPU task afterwards sees
// the host. (The entries themselves: device_entry_test.cc; the brackets: scheduler_test.cc.)
TEST_F(DeviceAffinityTest, ALeaseFollowingItsTasksTensorsGivesEachItsOwnDevice) {
  prism::Runtime rt({.num_cpus = 1, .num_gpus = 2});
  const std::vector<float> values = ramp(256);
  const double want = 255.0 * 256.0 / 2;
  const prism::ObjectRef<Tensor> on[2] = {rt.put(Tensor::from_vector(values, {256}, Device::gpu(0))),
                                          rt.put(Tensor::from_vector(values, {256}, Device::gpu(1)))};
  const prism::gpu::CopyStats before = prism::gpu::copy_stats();
  // The only CPU held while the burst is submitted: a lease then runs it, not a task at a time.
  prism_test::Gate gate;
  auto holder = rt.task([gate] { return gate.wait(); }).remote();
  std::vector<prism::ObjectRef<Placed>> refs;
  std::vector<int> homes;
  for (int i = 0; i < 120; ++i) {
    const int home = (i / 3) % 2;  // three tasks on one device, three on the other, ...
    homes.push_back(home);
    refs.push_back(rt.task(placed).num_gpus(0.5).remote(on[home]));
  }
  gate.open();
  EXPECT_TRUE(prism::get(holder, kTimeout));
  const std::vector<Placed> seen = prism::get(refs, kTimeout);
  for (size_t i = 0; i < seen.size(); ++i) {
    EXPECT_EQ(seen[i].device, homes[i]) << "task " << i;
    EXPECT_EQ(seen[i].stream_device, seen[i].device) << "task " << i;
    EXPECT_EQ(seen[i].gpus, std::vector<int>{seen[i].device}) << "task " << i;
    EXPECT_EQ(seen[i].sum, want) << "task " << i;
  }
  EXPECT_EQ((prism::gpu::copy_stats() - before).device_to_device, 0u);
  const auto cpu_side = prism::get(rt.task([] {
                                     return std::make_pair(prism::gpu::current_device().index,
                                                           prism::gpu::current_stream().device().index);
                                   }).remote(),
                                   kTimeout);
  EXPECT_EQ(cpu_side.first, Device::host().index);
  EXPECT_EQ(cpu_side.second, Device::host().index);
}

// A node keeps at most 256 request shapes; a request beyond them is granted per task, not
// through a lease: moved to the tensor's device the same way.
TEST_F(DeviceAffinityTest, AGpuTaskGrantedOnItsOwnRunsWhereItsTensorIs) {
  // One CPU: the previous task's grant is given back before the next one is made (with two,
  // the next may be granted while the previous still holds the tensor's device).
  prism::Runtime rt({.num_cpus = 1, .num_gpus = 2});
  std::vector<prism::ObjectRef<int>> fillers;
  for (int i = 1; i <= 300; ++i) {  // (each memory amount is a shape of its own)
    fillers.push_back(rt.task([] { return 1; }).num_cpus(0.01).memory(i).remote());
  }
  for (auto& f : fillers) EXPECT_EQ(prism::get(f, kTimeout), 1);
  for (const int home : {1, 0, 1}) {
    const Tensor made = Tensor::from_vector(ramp(1000), {1000}, Device::gpu(home));
    auto ref = rt.put(made);
    const prism::gpu::CopyStats before = prism::gpu::copy_stats();
    for (int i = 0; i < 5; ++i) {
      const Seen s =
          prism::get(rt.task(seen).num_gpus(1).memory(1 << 20).remote(ref), kTimeout);
      EXPECT_EQ(s.device, home) << "call " << i;
      EXPECT_EQ(s.sum, 999.0 * 1000.0 / 2);
    }
    EXPECT_EQ((prism::gpu::copy_stats() - before).device_to_device, 0u) << "home " << home;
  }
}

// An actor that holds one GPU for its life.
struct Holder {
  int device() { return prism::gpu::current_device().index; }
};

}  // namespace
PRISM_ACTOR(Holder, &Holder::device);
namespace {

// An actor holds its GPU for its life; a task over a tensor on that GPU runs on the other one
// at once (one peer copy), not after the actor is gone.
TEST_F(DeviceAffinityTest, ADeviceWithoutRoomIsPassedOverNotWaitedFor) {
  prism::Runtime rt({.num_cpus = 2, .num_gpus = 2});
  auto holder = rt.actor<Holder>().num_gpus(1).remote();
  const int held = prism::get(holder.task(&Holder::device).remote(), kTimeout);
  ASSERT_TRUE(held == 0 || held == 1) << held;
  const Tensor made = Tensor::from_vector(ramp(100), {100}, Device::gpu(held));
  const prism::gpu::CopyStats before = prism::gpu::copy_stats();
  const Seen s = prism::get(rt.task(seen).num_gpus(1).remote(rt.put(made)), kTimeout);
  EXPECT_EQ(s.device, 1 - held);
  EXPECT_EQ(s.sum, 99.0 * 100.0 / 2);
  EXPECT_EQ((prism::gpu::copy_stats() - before).device_to_device, 1u);
}

}  // namespace
