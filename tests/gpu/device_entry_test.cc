// The GPU module's DeviceSupport::enter/leave, driven directly on the test's thread: what a task
// run sees (current_device(), current_stream()) inside nested entries; an entry allowed to keep
// (a lease's task) that finds its devices current changes and restores nothing (Saved::kept),
// one inside another task's run never keeps; the thread's own stream is kept across entries.
// The runtime's use of them (a lease entering its grant once for its tasks) is tested end to end
// in device_affinity_test.cc, and the scheduler's brackets in scheduler_test.cc.
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

// One entry, left when it goes out of scope (also when a check fails on the way): `device` (the
// host with -1: a CPU task inside a GPU task) for stream owner `owner`.
class Entry {
 public:
  Entry(int device, bool may_keep, uint64_t owner = 0) {
    saved_.may_keep = may_keep;
    std::string why;
    ok_ = device >= 0 ? support().enter(&device, 1, owner, &saved_, &why)
                      : support().enter(nullptr, 0, 0, &saved_, &why);
    EXPECT_TRUE(ok_) << why;
  }
  ~Entry() { support().leave(saved_); }
  Entry(const Entry&) = delete;
  Entry& operator=(const Entry&) = delete;
  bool kept() const { return saved_.kept; }

 private:
  DeviceSupport::Saved saved_;
  bool ok_ = false;
};

bool two_devices() {
  return prism::gpu::backend() == prism::gpu::Backend::kHost ||
         prism::gpu::cuda_device_count() >= 2;
}

TEST(DeviceEntryTest, ALeasesTasksKeepItsDevicesAndNestedRunsRestoreTheirs) {
  ASSERT_TRUE(prism::gpu::current_device().is_host());
  void* stream = nullptr;
  {
    Entry lease(0, /*may_keep=*/true);
    EXPECT_FALSE(lease.kept()) << "the thread ran on the host before";
    EXPECT_EQ(prism::gpu::current_device(), Device::gpu(0));
    ASSERT_EQ(prism::gpu::current_stream().device(), Device::gpu(0));
    stream = prism::gpu::current_stream().handle();
    {
      Entry task(0, /*may_keep=*/true);  // a task of the lease: its device is current already
      EXPECT_TRUE(task.kept());
      EXPECT_EQ(prism::gpu::current_device(), Device::gpu(0));
      EXPECT_EQ(prism::gpu::current_stream().handle(), stream) << "the thread's own stream";
      {
        // Its child run inline, granted the same device: inside a task's run, never kept.
        Entry child(0, /*may_keep=*/false);
        EXPECT_FALSE(child.kept());
        EXPECT_EQ(prism::gpu::current_device(), Device::gpu(0));
        EXPECT_EQ(prism::gpu::current_stream().handle(), stream);
      }
      {
        Entry child(-1, /*may_keep=*/false);  // a CPU child: the host
        EXPECT_FALSE(child.kept());
        EXPECT_TRUE(prism::gpu::current_device().is_host());
        EXPECT_TRUE(prism::gpu::current_stream().device().is_host());
      }
      EXPECT_EQ(prism::gpu::current_device(), Device::gpu(0));
      if (two_devices()) {
        Entry child(1, /*may_keep=*/false);  // a child granted the other device
        EXPECT_FALSE(child.kept());
        EXPECT_EQ(prism::gpu::current_device(), Device::gpu(1));
        EXPECT_EQ(prism::gpu::current_stream().device(), Device::gpu(1));
        EXPECT_NE(prism::gpu::current_stream().handle(), stream);
      }
      EXPECT_EQ(prism::gpu::current_device(), Device::gpu(0));
      EXPECT_EQ(prism::gpu::current_stream().handle(), stream);
    }
    // The task kept the lease's device: it is still current.
    EXPECT_EQ(prism::gpu::current_device(), Device::gpu(0));
    if (two_devices()) {
      Entry moved(1, /*may_keep=*/true);  // a task of the lease granted another device
      EXPECT_FALSE(moved.kept());
      EXPECT_EQ(prism::gpu::current_device(), Device::gpu(1));
    }
    EXPECT_EQ(prism::gpu::current_device(), Device::gpu(0));
  }
  EXPECT_TRUE(prism::gpu::current_device().is_host());
  EXPECT_TRUE(prism::gpu::current_stream().device().is_host());
  {
    // Entered again later: the same stream of this thread's (streams stay the thread's).
    Entry again(0, /*may_keep=*/true);
    EXPECT_FALSE(again.kept());
    EXPECT_EQ(prism::gpu::current_stream().handle(), stream);
  }
  EXPECT_TRUE(prism::gpu::current_device().is_host());
}

TEST(DeviceEntryTest, AnotherOwnersEntryIsNotKept) {
  // An actor's call (its own stream owner) on the device a lease holds replaces the owner: its
  // work goes to the actor's streams, and the lease's come back after.
  const uint64_t owner = 987654321;  // (a number no actor of this test has)
  {
    Entry lease(0, /*may_keep=*/true);
    const void* own = prism::gpu::current_stream().handle();
    {
      Entry call(0, /*may_keep=*/true, owner);
      EXPECT_FALSE(call.kept());
      EXPECT_EQ(prism::gpu::current_device(), Device::gpu(0));
      EXPECT_NE(prism::gpu::current_stream().handle(), own);
    }
    EXPECT_EQ(prism::gpu::current_stream().handle(), own);
  }
  support().release_owner(owner);
  EXPECT_TRUE(prism::gpu::current_device().is_host());
}

}  // namespace
