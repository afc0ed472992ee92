// What makes the GPU module safe on real devices, driven where this machine can drive it:
//  * frees ordered after every use: a storage remembers the Prism streams that read it (a peer
//    copy's destination stream included) and its free waits for them;
//  * streams Prism orders: an actor's calls share the actor's streams whichever thread runs them,
//    a task has one stream per granted GPU;
//  * devices that fail: tasks granted a failed device fail fast naming it, and the scheduler
//    places work on the healthy ones;
//  * out of device memory (OutOfMemoryError) is retried under max_retries.
// On the host backend streams are distinct tokens, so who uses which stream is the same as on
// CUDA. The CudaDeviceTest cases need real devices and skip (with the reason) otherwise; they are
// what scripts/gpu_check.sh runs on a GPU machine.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "core/test_util.h"
#include "device_context.h"
#include "device_health.h"
#include "backend.h"
#include "kernels/kernels.h"
#include "prism/gpu.h"
#include "prism/prism.h"
#include "storage.h"

namespace {

using prism::gpu::Backend;
using prism::gpu::Device;
using prism::gpu::DType;
using prism::gpu::Tensor;
using prism_test::kTimeout;
using prism_test::Rendezvous;

bool on_host_backend() { return prism::gpu::backend() == Backend::kHost; }

uintptr_t handle_of(const prism::gpu::Stream& s) { return reinterpret_cast<uintptr_t>(s.handle()); }

// ---- frees ordered after every use ----

TEST(StorageFreeOrderTest, RemembersEveryPrismStreamThatReadIt) {
  if (!on_host_backend()) GTEST_SKIP() << "logical GPUs only on the host backend";
  const Tensor t = Tensor::zeros(DType::kFloat32, {1024}, Device::gpu(0));
  prism::gpu::internal::Storage* s = prism::gpu::internal::storage_of(t);
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->users_for_testing(), 0u) << "the stream it was made on is its home, not a user";

  // A peer copy reads the source on the destination's stream: the source's free must wait for it.
  const Tensor peer = t.to(Device::gpu(1));
  EXPECT_FALSE(peer.shares_storage(t));
  EXPECT_EQ(s->users_for_testing(), 1u);

  // A reader on another thread's stream is another user; the same stream twice counts once.
  std::thread other([&t] {
    const prism::gpu::Stream mine = prism::gpu::internal::task_stream(Device::gpu(0));
    t.wait_on(mine);
    t.wait_on(mine);
  });
  other.join();
  EXPECT_EQ(s->users_for_testing(), 2u);

  // A stream that is not Prism's may be gone by the time of the free: wait_on does not keep it
  // (record_use records an event instead, which the host backend never needs).
  int foreign_token = 0;
  t.wait_on(prism::gpu::Stream(Device::gpu(0), &foreign_token));
  t.record_use(prism::gpu::Stream(Device::gpu(0), &foreign_token));
  EXPECT_EQ(s->users_for_testing(), 2u);
  EXPECT_EQ(t.to_vector<float>(), std::vector<float>(1024, 0.f));
}

// The writer's stream needs no wait and is a user already (wait_on answers it without the
// storage's lock); a stream that wrote it later becomes the writer, and another reader's stream
// is still remembered.
TEST(StorageFreeOrderTest, AReaderOnTheWritersStreamIsAUserAlready) {
  if (!on_host_backend()) GTEST_SKIP() << "logical GPUs only on the host backend";
  const Tensor t = Tensor::zeros(DType::kFloat32, {256}, Device::gpu(0));
  prism::gpu::internal::Storage* s = prism::gpu::internal::storage_of(t);
  ASSERT_NE(s, nullptr);
  const prism::gpu::Stream home = prism::gpu::internal::task_stream(Device::gpu(0));
  t.wait_on(home);
  EXPECT_EQ(s->users_for_testing(), 0u) << "its home stream wrote it";
  std::thread writer([&t, s] {
    const prism::gpu::Stream mine = prism::gpu::internal::task_stream(Device::gpu(0));
    t.record(mine);  // written again here: this stream is the writer, and a user
    EXPECT_EQ(s->users_for_testing(), 1u);
    t.wait_on(mine);
    EXPECT_EQ(s->users_for_testing(), 1u);
    // (Started while this thread holds its stream: the reader's is another one.)
    std::thread reader([&t] { t.wait_on(prism::gpu::internal::task_stream(Device::gpu(0))); });
    reader.join();
    EXPECT_EQ(s->users_for_testing(), 2u);
  });
  writer.join();
  t.wait_on(home);
  EXPECT_EQ(s->users_for_testing(), 2u) << "the home stream is never a user";
}

TEST(StorageFreeOrderTest, ConcurrentReadersOfOneDestinationShareOneCopy) {
  if (!on_host_backend()) GTEST_SKIP() << "logical GPUs only on the host backend";
  std::vector<float> values(1 << 16);
  for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(i);
  const Tensor t = Tensor::from_vector(values, {1 << 16}, Device::gpu(0));
  const uint64_t copies_before = prism::gpu::copy_stats().total();
  constexpr int kThreads = 8;
  std::vector<Tensor> seen(kThreads);
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] { seen[i] = t.to(i % 2 == 0 ? Device::gpu(1) : Device::host()); });
  }
  for (auto& th : threads) th.join();
  // Two destinations (gpu:1 and the host): one copy each, however many readers.
  EXPECT_EQ(prism::gpu::copy_stats().total() - copies_before, 2u);
  for (int i = 2; i < kThreads; ++i) EXPECT_TRUE(seen[i].shares_storage(seen[i % 2]));
  EXPECT_EQ(seen[0].to_vector<float>(), values);
  EXPECT_EQ(seen[1].to_vector<float>(), values);
}

// ---- streams Prism orders ----

struct StreamActor {
  explicit StreamActor(Rendezvous meet) : meet_(std::move(meet)) {}
  // Meets the other call (so the two run at once, on two threads) and says which stream it had.
  uintptr_t stream_when_met() {
    if (!meet_.arrive_and_wait()) return 1;
    return handle_of(prism::gpu::current_stream());
  }
  uintptr_t stream() { return handle_of(prism::gpu::current_stream()); }
  Rendezvous meet_;
};
PRISM_ACTOR(StreamActor, &StreamActor::stream_when_met, &StreamActor::stream);

TEST(StreamOwnerTest, AnActorsCallsShareItsStreamWhicheverThreadRunsThem) {
  if (!on_host_backend()) GTEST_SKIP() << "logical GPUs only on the host backend";
  prism::Runtime rt({.num_cpus = 4, .num_gpus = 1});
  Rendezvous meet(2);
  auto actor = rt.actor<StreamActor>(meet).num_gpus(0.5).max_concurrency(2).remote();
  auto a = actor.task(&StreamActor::stream_when_met).remote();
  auto b = actor.task(&StreamActor::stream_when_met).remote();
  const uintptr_t sa = prism::get(a, kTimeout), sb = prism::get(b, kTimeout);
  ASSERT_NE(sa, 1u) << "the two calls never ran at once";
  ASSERT_NE(sb, 1u) << "the two calls never ran at once";
  EXPECT_NE(sa, 0u);
  EXPECT_EQ(sa, sb) << "two calls of one actor on two threads used different streams";
  // Later calls keep it; a plain task on the same GPU has its own thread's stream.
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(prism::get(actor.task(&StreamActor::stream).remote(), kTimeout), sa);
  }
  auto call = actor.task(&StreamActor::stream).remote();
  auto task = rt.task([] { return handle_of(prism::gpu::current_stream()); }).num_gpus(0.5).remote();
  EXPECT_NE(prism::get(task, kTimeout), prism::get(call, kTimeout));
}

TEST(StreamOwnerTest, AMultiGpuTaskHasAStreamForEachGrantedDevice) {
  if (!on_host_backend()) GTEST_SKIP() << "logical GPUs only on the host backend";
  prism::Runtime rt({.num_cpus = 2, .num_gpus = 2});
  auto ref = rt.task([] {
                 const auto s0 = prism::gpu::stream_for(Device::gpu(0));
                 const auto s1 = prism::gpu::stream_for(Device::gpu(1));
                 const auto cur = prism::gpu::current_stream();
                 // A tensor written on the second GPU is recorded on that GPU's stream.
                 const Tensor t = Tensor::zeros(DType::kInt32, {8}, Device::gpu(1));
                 return s0.device() == Device::gpu(0) && s1.device() == Device::gpu(1) &&
                        s0.handle() != nullptr && s1.handle() != nullptr &&
                        s0.handle() != s1.handle() && cur.handle() == s0.handle() &&
                        t.device() == Device::gpu(1) &&
                        prism::gpu::stream_for(Device::host()).handle() == nullptr;
               })
                 .num_gpus(2)
                 .remote();
  EXPECT_TRUE(prism::get(ref, kTimeout));
}

// ---- devices that fail ----

class FailedDeviceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!on_host_backend()) GTEST_SKIP() << "logical GPUs only on the host backend";
  }
  void TearDown() override { prism::gpu::internal::clear_device_failures_for_testing(); }
};

TEST_F(FailedDeviceTest, TasksAvoidAFailedDeviceAndThoseOnlyItCouldRunFailFast) {
  prism::Runtime rt({.num_cpus = 2, .num_gpus = 2});
  prism::gpu::internal::mark_device_failed(1, "cudaErrorIllegalAddress: simulated by the test");
  std::string why;
  ASSERT_TRUE(prism::gpu::internal::device_failed(1, &why));
  EXPECT_NE(why.find("gpu:1"), std::string::npos) << why;

  // Whole and fractional requests (shaped leases) all land on the healthy device.
  std::vector<prism::ObjectRef<std::vector<int>>> refs;
  for (int i = 0; i < 20; ++i) {
    refs.push_back(rt.task([] { return prism::gpu_ids(); }).num_gpus(i % 2 == 0 ? 1 : 0.5).remote());
  }
  for (const auto& ids : prism::get(refs, kTimeout)) EXPECT_EQ(ids, std::vector<int>{0});

  // Two GPUs: only with the failed one. The task fails at once, naming it, without running.
  std::atomic<bool> ran{false};
  auto both = rt.task([&ran] {
                  ran = true;
                  return 0;
                })
                  .num_gpus(2)
                  .remote();
  try {
    prism::get(both, kTimeout);
    FAIL() << "a task granted a failed device ran";
  } catch (const prism::Error& e) {
    EXPECT_EQ(e.code(), prism::ErrorCode::kUnavailable) << e.what();
    EXPECT_NE(std::string(e.what()).find("gpu:1 failed"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(ran.load());
  // The runtime goes on.
  EXPECT_EQ(prism::get(rt.task([] { return prism::gpu_ids(); }).num_gpus(1).remote(), kTimeout),
            std::vector<int>{0});
}

struct GpuHolder {
  std::vector<int> ids() { return prism::gpu_ids(); }
};
PRISM_ACTOR(GpuHolder, &GpuHolder::ids);

TEST_F(FailedDeviceTest, ATaskThatOnlyAFailedDeviceCouldRunSoonFailsInsteadOfWaiting) {
  prism::Runtime rt({.num_cpus = 2, .num_gpus = 2});
  // An actor holds one GPU for its life; the other fails.
  auto holder = rt.actor<GpuHolder>().num_gpus(1).num_cpus(0).remote();
  const std::vector<int> held = prism::get(holder.task(&GpuHolder::ids).remote(), kTimeout);
  ASSERT_EQ(held.size(), 1u);
  const int failed = 1 - held[0];
  prism::gpu::internal::mark_device_failed(failed, "cudaErrorIllegalAddress: simulated");
  auto task = rt.task([] { return 0; }).num_gpus(1).remote();
  try {
    prism::get(task, kTimeout);
    FAIL() << "ran on a failed device";
  } catch (const prism::TimeoutError&) {
    FAIL() << "waited for a device held for life instead of failing";
  } catch (const prism::Error& e) {
    EXPECT_EQ(e.code(), prism::ErrorCode::kUnavailable) << e.what();
  }
  // The actor's device keeps working.
  EXPECT_EQ(prism::get(holder.task(&GpuHolder::ids).remote(), kTimeout), held);
}

// ---- out of device memory follows the retry rules ----

TEST(DeviceMemoryRetryTest, OutOfMemoryIsRetriedUnderMaxRetriesAlone) {
  prism::Runtime rt({.num_cpus = 2, .num_gpus = 1});
  auto attempts = std::make_shared<std::atomic<int>>(0);
  auto oom_once = [attempts] {
    if (attempts->fetch_add(1) == 0) {
      throw prism::OutOfMemoryError("simulated: out of device memory");
    }
    return 7;
  };
  EXPECT_EQ(prism::get(rt.task(oom_once).num_gpus(1).max_retries(1).remote(), kTimeout), 7);
  EXPECT_EQ(attempts->load(), 2);

  // By default it has kDefaultMaxRetries (3); with max_retries(0) it fails with the error.
  attempts->store(0);
  EXPECT_EQ(prism::get(rt.task(oom_once).num_gpus(1).remote(), kTimeout), 7);
  EXPECT_EQ(attempts->load(), 2);
  auto always_oom = [attempts]() -> int {
    attempts->fetch_add(1);
    throw prism::OutOfMemoryError("simulated: out of device memory");
  };
  attempts->store(0);
  EXPECT_THROW(prism::get(rt.task(always_oom).remote(), kTimeout), prism::OutOfMemoryError);
  EXPECT_EQ(attempts->load(), 1 + prism::kDefaultMaxRetries) << "a plain task's default retries";
  attempts->store(0);
  EXPECT_THROW(prism::get(rt.task(oom_once).num_gpus(1).max_retries(0).remote(), kTimeout),
               prism::Error);
  EXPECT_EQ(attempts->load(), 1);
  // Other errors, even with the same code (a full object store), and user exceptions are not
  // system failures.
  auto store_full_count = std::make_shared<std::atomic<int>>(0);
  auto store_full = [store_full_count]() -> int {
    store_full_count->fetch_add(1);
    throw prism::ObjectStoreFullError("simulated: the object store is full");
  };
  EXPECT_THROW(prism::get(rt.task(store_full).max_retries(3).remote(), kTimeout), prism::Error);
  EXPECT_EQ(store_full_count->load(), 1);
  auto user_error_count = std::make_shared<std::atomic<int>>(0);
  auto user_error = [user_error_count]() -> int {
    user_error_count->fetch_add(1);
    throw std::runtime_error("a user error");
  };
  EXPECT_ANY_THROW(prism::get(rt.task(user_error).max_retries(3).remote(), kTimeout));
  EXPECT_EQ(user_error_count->load(), 1);
}

// ---- real devices (skip here) ----

class CudaDeviceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (prism::gpu::backend() != Backend::kCuda) {
      GTEST_SKIP() << "no CUDA device: " << prism::gpu::backend_description();
    }
  }
  static void need_gpus(int n) {
    if (prism::gpu::cuda_device_count() < n) {
      GTEST_SKIP() << "needs " << n << " CUDA devices: " << prism::gpu::backend_description();
    }
  }
};

TEST_F(CudaDeviceTest, PeerCopyOfA256MiBTensorWhoseSourceIsDroppedAtOnce) {
  need_gpus(2);
  constexpr int64_t kCount = (int64_t{256} << 20) / 4;
  std::vector<int32_t> pattern(static_cast<size_t>(kCount));
  for (int64_t i = 0; i < kCount; ++i) pattern[i] = static_cast<int32_t>(i * 2654435761u);
  for (int round = 0; round < 3; ++round) {
    Tensor copy;
    {
      const Tensor source = Tensor::from_vector(pattern, {kCount}, Device::gpu(0));
      copy = source.to(Device::gpu(1));
    }  // the source's block goes back to gpu:0's pool while the copy may still read it
    // Reuse the block at once: zeros written into it must not reach the copy.
    const Tensor reuse = Tensor::zeros(DType::kInt32, {kCount}, Device::gpu(0));
    ASSERT_EQ(copy.to_vector<int32_t>(), pattern) << "round " << round;
    EXPECT_EQ(reuse.to_vector<int32_t>()[12345], 0);
  }
}

#ifdef PRISM_GPU_CUDA
TEST_F(CudaDeviceTest, AKernelReadsAPeersTensorThroughItsPointer) {
  need_gpus(2);
  std::vector<float> ones(1 << 20, 1.f), twos(1 << 20, 2.f);
  const Tensor a = Tensor::from_vector(ones, {1 << 20}, Device::gpu(0));  // pool memory of gpu:0
  const Tensor b = Tensor::from_vector(twos, {1 << 20}, Device::gpu(1));
  const Tensor out = Tensor::empty(DType::kFloat32, {1 << 20}, Device::gpu(1));
  {
    prism::gpu::internal::DeviceGuard on(Device::gpu(1));
    const prism::gpu::Stream s = prism::gpu::internal::task_stream(Device::gpu(1));
    a.wait_on(s);
    b.wait_on(s);
    // gpu:1 runs the kernel; a is read through its gpu:0 pointer (cudaMemPoolSetAccess).
    prism::gpu::kernels::cuda::add(a.data<float>(), b.data<float>(), out.data<float>(), 1 << 20,
                                   s.handle());
    out.record(s);
  }
  EXPECT_EQ(out.to_vector<float>(), std::vector<float>(1 << 20, 3.f));
}
#endif

// A kernel that reads an illegal address leaves a sticky error: the device is marked failed, the
// next task granted it fails at once naming it. Run in a child process (the device's context is
// unusable afterwards), started afresh by gtest's threadsafe death-test style.
#ifdef PRISM_GPU_CUDA
TEST_F(CudaDeviceTest, AnIllegalAddressMarksTheDeviceFailed) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        prism::Runtime rt({.num_cpus = 2, .num_gpus = 1});
        auto bad = rt.task([] {
                       const prism::gpu::Stream s = prism::gpu::current_stream();
                       auto* bogus = reinterpret_cast<float*>(uintptr_t{16});
                       prism::gpu::kernels::cuda::add(bogus, bogus, bogus, 1 << 20, s.handle());
                       s.synchronize();  // reports the illegal address
                       return 0;
                     })
                       .num_gpus(1)
                       .remote();
        bool threw = false;
        try {
          prism::get(bad, kTimeout);
        } catch (const prism::Error&) {
          threw = true;
        }
        std::string why;
        const bool failed = prism::gpu::internal::device_failed(0, &why);
        bool next_refused = false;
        try {
          prism::get(rt.task([] { return 1; }).num_gpus(1).remote(), kTimeout);
        } catch (const prism::Error& e) {
          next_refused = e.code() == prism::ErrorCode::kUnavailable &&
                         std::string(e.what()).find("gpu:0 failed") != std::string::npos;
        }
        std::fprintf(stderr, "threw=%d failed=%d next_refused=%d why=%s\n", threw, failed,
                     next_refused, why.c_str());
        std::_Exit(threw && failed && next_refused ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "threw=1 failed=1 next_refused=1");
}
#endif

TEST_F(CudaDeviceTest, OutOfMemoryIsResourceExhaustedAndAFreshThreadsGemmRunsAfter) {
  const size_t total = static_cast<size_t>(prism::gpu::internal::backend_instance().device_memory(0));
  const int64_t block = int64_t{1} << 30;
  std::vector<Tensor> hog;
  bool exhausted = false;
  for (size_t i = 0; i < total / block + 64 && !exhausted; ++i) {
    try {
      hog.push_back(Tensor::empty(DType::kUInt8, {block}, Device::gpu(0)));
    } catch (const prism::Error& e) {
      EXPECT_EQ(e.code(), prism::ErrorCode::kResourceExhausted) << e.what();
      exhausted = true;
    }
  }
  ASSERT_TRUE(exhausted) << "allocated " << hog.size() << " GiB without running out";
  hog.clear();  // back to the pool, which keeps it cached
  bool ok = false;
  std::string error;
  std::thread fresh([&] {  // a new thread: a new cuBLAS handle and workspace
    try {
      const Tensor x = Tensor::from_vector(std::vector<float>(256 * 256, 1.f), {256, 256},
                                           Device::gpu(0));
      const Tensor y = prism::gpu::matmul(x, x);
      ok = y.to_vector<float>()[0] == 256.f;
    } catch (const std::exception& e) {
      error = e.what();
    }
  });
  fresh.join();
  EXPECT_TRUE(ok) << error;
}

TEST_F(CudaDeviceTest, AnActorsCallsShareOneRealStream) {
  prism::Runtime rt({.num_cpus = 4, .num_gpus = 1});
  Rendezvous meet(2);
  auto actor = rt.actor<StreamActor>(meet).num_gpus(0.5).max_concurrency(2).remote();
  auto a = actor.task(&StreamActor::stream_when_met).remote();
  auto b = actor.task(&StreamActor::stream_when_met).remote();
  const uintptr_t sa = prism::get(a, kTimeout);
  EXPECT_NE(sa, 1u);
  EXPECT_EQ(sa, prism::get(b, kTimeout));
}

TEST_F(CudaDeviceTest, EveryUsableDeviceHasAnOrdinalAndMemoryForTasks) {
  std::set<int> ordinals;
  for (int d = 0; d < prism::gpu::cuda_device_count(); ++d) {
    EXPECT_GT(prism::gpu::internal::backend_instance().device_memory(d), 0u);
    const int ordinal = prism::gpu::cuda_ordinal(Device::gpu(d));
    EXPECT_GE(ordinal, 0);
    EXPECT_TRUE(ordinals.insert(ordinal).second) << "two Prism GPUs share CUDA device " << ordinal;
    EXPECT_FALSE(prism::gpu::internal::device_failed(d, nullptr));
  }
}

}  // namespace
