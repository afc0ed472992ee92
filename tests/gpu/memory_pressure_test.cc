// Device memory pressure: a full GPU gives back the cached copies nobody holds (uploads and peer
// copies kept with their storage, copy_cache.h), least recently used first, instead of failing
// the allocation; primaries and copies in use are never given back. Driven on logical GPUs with
// a memory limit (the host backend's set_logical_gpu_memory): on a CUDA device a full device
// cannot be arranged deterministically, so these tests skip there.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "backend.h"
#include "copy_cache.h"
#include "prism/errors.h"
#include "prism/gpu.h"
#include "storage.h"

namespace {

using prism::gpu::Device;
using prism::gpu::DType;
using prism::gpu::Tensor;

constexpr size_t kMiB = size_t{1} << 20;

class MemoryPressureTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (prism::gpu::backend() != prism::gpu::Backend::kHost) {
      GTEST_SKIP() << "a full device is arranged with the host backend's logical memory limit";
    }
  }
  void TearDown() override { prism::gpu::internal::set_logical_gpu_memory(0); }
};

// A host tensor of `mib` MiB of floats, all `value`.
Tensor host_floats(size_t mib, float value) {
  const int64_t n = static_cast<int64_t>(mib * kMiB / sizeof(float));
  return Tensor::from_vector(std::vector<float>(static_cast<size_t>(n), value), {n},
                             Device::host());
}

bool on_device(const Tensor& t) {
  bool host = false, device = false;
  prism::gpu::internal::storage_of(t)->placed(&host, &device);
  return device;
}

TEST_F(MemoryPressureTest, UnusedCopiesAreEvictedLeastRecentlyUsedFirst) {
  prism::gpu::internal::set_logical_gpu_memory(10 * kMiB);
  const Device gpu = Device::gpu(5);  // a logical GPU of its own: nothing else is on it
  const Tensor a = host_floats(4, 1), b = host_floats(4, 2), c = host_floats(4, 3);
  EXPECT_EQ(a.to(gpu).device(), gpu);  // uploaded and cached; the handle goes at once
  EXPECT_EQ(b.to(gpu).device(), gpu);
  EXPECT_TRUE(on_device(a));
  EXPECT_TRUE(on_device(b));
  EXPECT_EQ(a.to(gpu).device(), gpu);  // a read again (no copy): b is the least recent now

  const prism::gpu::CopyStats before = prism::gpu::copy_stats();
  const Tensor c_there = c.to(gpu);  // 12 MiB would not fit: b's copy is given back
  EXPECT_TRUE(on_device(a));
  EXPECT_FALSE(on_device(b));
  EXPECT_TRUE(on_device(c));
  EXPECT_EQ((prism::gpu::copy_stats() - before).host_to_device, 1u);

  // b read again: made again; now a's copy goes (unused), not c's (held here).
  const Tensor b_there = b.to(gpu);
  EXPECT_FALSE(on_device(a));
  EXPECT_TRUE(on_device(b));
  EXPECT_TRUE(on_device(c));
  EXPECT_EQ(b_there.to_vector<float>().back(), 2.0f);
  EXPECT_EQ(c_there.to_vector<float>().front(), 3.0f);

  // With both held (8 MiB) a 4 MiB primary cannot fit: nothing may be evicted, it fails.
  try {
    (void)Tensor::empty(DType::kFloat32, {static_cast<int64_t>(kMiB)}, gpu);
    ADD_FAILURE() << "a primary that does not fit was allocated";
  } catch (const prism::Error& e) {
    EXPECT_EQ(e.code(), prism::ErrorCode::kResourceExhausted) << e.what();
  }
  // A primary is never evicted for a copy either.
  const Tensor primary = Tensor::zeros(DType::kFloat32, {static_cast<int64_t>(kMiB / 2)}, gpu);
  try {
    (void)a.to(gpu);
    ADD_FAILURE() << "10 MiB in use, 4 more asked: a copy was made";
  } catch (const prism::Error& e) {
    EXPECT_EQ(e.code(), prism::ErrorCode::kResourceExhausted) << e.what();
  }
  EXPECT_EQ(primary.to_vector<float>().front(), 0.0f);
}

TEST_F(MemoryPressureTest, CopiesOfStoragesThatAreGoneAreNotKeptListed) {
  prism::gpu::internal::set_logical_gpu_memory(64 * kMiB);
  const Device gpu = Device::gpu(6);
  auto& cache = prism::gpu::internal::CopyCache::instance();
  for (int i = 0; i < 200; ++i) {
    const Tensor t = host_floats(1, static_cast<float>(i));
    EXPECT_EQ(t.to(gpu).to_vector<float>().front(), static_cast<float>(i));
  }  // each storage is gone with its copy
  EXPECT_LT(cache.listed_for_testing(6), 100u);
  // Nothing left to evict on that device: the list is emptied.
  EXPECT_EQ(cache.evict(6, 64 * kMiB), 0u);
  EXPECT_EQ(cache.listed_for_testing(6), 0u);
}

// Many threads read tensors onto one small device at once: every read succeeds (there is always
// an unused copy to give back), with the right contents.
TEST_F(MemoryPressureTest, ConcurrentReadersOfAFullDeviceAllSucceed) {
  prism::gpu::internal::set_logical_gpu_memory(12 * kMiB);
  const Device gpu = Device::gpu(7);
  std::vector<Tensor> sources;
  for (int i = 0; i < 8; ++i) sources.push_back(host_floats(2, static_cast<float>(i)));
  constexpr int kThreads = 4;  // each holds at most one 2 MiB copy: 8 MiB, plus one being made
  const prism::gpu::CopyStats before = prism::gpu::copy_stats();
  std::atomic<int> wrong{0}, failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(static_cast<unsigned>(t));
      for (int i = 0; i < 100; ++i) {
        const size_t k = rng() % sources.size();
        try {
          const Tensor there = sources[k].to(gpu);
          if (there.to_vector<float>().back() != static_cast<float>(k)) ++wrong;
        } catch (const prism::Error&) {
          ++failed;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(failed.load(), 0);
  // 16 MiB of sources on a 12 MiB device: some copies were given back and made again.
  EXPECT_GT((prism::gpu::copy_stats() - before).host_to_device, sources.size());
}

}  // namespace
