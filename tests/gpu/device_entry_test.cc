// The GPU module's DeviceSupport::enter/leave, driven directly on the test's thread: what a task
// run sees (current_device(), current_stream()) inside nested entries, an entry that finds its
// devices already current (a lease's task: Saved::kept) changing and restoring nothing, and the
// thread's own stream kept across entries. The runtime's use of them (a lease entering its
// grant once for its tasks) is tested end to end in device_affinity_test.cc and
// scheduling_test.cc.
#include <gtest/gtest.h>

#include <string>

#include "prism/gpu.h"
#include "prism/internal/device_support.h"

namespace {

using prism::gpu::Device;
using prism::internal::DeviceSupport;

DeviceSupport& support() {
  DeviceSupport* s = prism::internal::device_support();
  if (s == nullptr) ADD_FAILURE() << "the GPU module installed no DeviceSupport";
  return *s;
}

// Enters `device` (the host with -1: a CPU task inside a GPU task) for stream owner 0.
bool enter(int device, DeviceSupport::Saved* saved) {
  std::string why;
  const bool ok = device >= 0 ? support().enter(&device, 1, 0, saved, &why)
                              : support().enter(nullptr, 0, 0, saved, &why);
  EXPECT_TRUE(why.empty()) << why;
  return ok;
}

TEST(DeviceEntryTest, NestedEntriesSetAndRestoreTheTaskDevice) {
  ASSERT_TRUE(prism::gpu::current_device().is_host());
  DeviceSupport::Saved lease;
  ASSERT_TRUE(enter(0, &lease));
  EXPECT_FALSE(lease.kept) << "the thread ran on the host before";
  EXPECT_EQ(prism::gpu::current_device(), Device::gpu(0));
  const prism::gpu::Stream stream = prism::gpu::current_stream();
  EXPECT_EQ(stream.device(), Device::gpu(0));

  {  // A task of the lease: its device is current already; nothing is replaced.
    DeviceSupport::Saved task;
    ASSERT_TRUE(enter(0, &task));
    EXPECT_TRUE(task.kept);
    EXPECT_EQ(prism::gpu::current_device(), Device::gpu(0));
    EXPECT_EQ(prism::gpu::current_stream().handle(), stream.handle()) << "the thread's own stream";
    {  // Its child run inline on the host, then one granted another device.
      DeviceSupport::Saved child;
      ASSERT_TRUE(enter(-1, &child));
      EXPECT_FALSE(child.kept);
      EXPECT_TRUE(prism::gpu::current_device().is_host());
      EXPECT_TRUE(prism::gpu::current_stream().device().is_host());
      support().leave(child);
      EXPECT_EQ(prism::gpu::current_device(), Device::gpu(0));
      if (prism::gpu::backend() == prism::gpu::Backend::kCuda &&
          prism::gpu::cuda_device_count() < 2) {
        support().leave(task);
        support().leave(lease);
        GTEST_SKIP() << "the rest needs 2 GPUs: " << prism::gpu::backend_description();
      }
      ASSERT_TRUE(enter(1, &child));
      EXPECT_FALSE(child.kept);
      EXPECT_EQ(prism::gpu::current_device(), Device::gpu(1));
      const prism::gpu::Stream other = prism::gpu::current_stream();
      EXPECT_EQ(other.device(), Device::gpu(1));
      EXPECT_NE(other.handle(), stream.handle());
      support().leave(child);
    }
    EXPECT_EQ(prism::gpu::current_device(), Device::gpu(0));
    EXPECT_EQ(prism::gpu::current_stream().handle(), stream.handle());
    support().leave(task);  // kept: the lease's device stays
    EXPECT_EQ(prism::gpu::current_device(), Device::gpu(0));
  }
  support().leave(lease);
  EXPECT_TRUE(prism::gpu::current_device().is_host());
  EXPECT_TRUE(prism::gpu::current_stream().device().is_host());

  // Entered again later: the same stream of this thread's (streams stay the thread's).
  DeviceSupport::Saved again;
  ASSERT_TRUE(enter(0, &again));
  EXPECT_FALSE(again.kept);
  EXPECT_EQ(prism::gpu::current_stream().handle(), stream.handle());
  support().leave(again);
  EXPECT_TRUE(prism::gpu::current_device().is_host());
}

TEST(DeviceEntryTest, AnotherOwnersEntryIsNotKept) {
  // An actor's call (its own stream owner) inside a task on the same device replaces the owner:
  // its work goes to the actor's streams, and the task's come back after.
  DeviceSupport::Saved task;
  ASSERT_TRUE(enter(0, &task));
  const prism::gpu::Stream own = prism::gpu::current_stream();
  DeviceSupport::Saved call;
  std::string why;
  int device = 0;
  const uint64_t owner = 987654321;  // (a number no actor of this test has)
  ASSERT_TRUE(support().enter(&device, 1, owner, &call, &why)) << why;
  EXPECT_FALSE(call.kept);
  EXPECT_EQ(prism::gpu::current_device(), Device::gpu(0));
  EXPECT_NE(prism::gpu::current_stream().handle(), own.handle());
  support().leave(call);
  EXPECT_EQ(prism::gpu::current_stream().handle(), own.handle());
  support().leave(task);
  support().release_owner(owner);
  EXPECT_TRUE(prism::gpu::current_device().is_host());
}

}  // namespace
